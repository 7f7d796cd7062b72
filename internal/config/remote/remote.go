// Package remote applies a configuration document that arrived from
// the update channel: validated whole with the same loader as the local
// file (file:line:col errors), the keys marked local-only kept from the
// local file, written atomically, reloaded, and watched: when the health
// checks fail within a deadline after the change, the previous file is
// restored and the version is reported as reverted. Every outcome goes
// into a persisted history (otagw config history).
//
//	a := &remote.Applier{Path: "/etc/otagw/otagw.yaml", History: h, Reload: d.reload,
//		Health: check, Deadline: 2 * time.Minute}
//	err := a.Apply(ctx, data, "sha256:...")
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/state"
)

// LocalOnly lists the keys a remote config never sets: the device's
// identity, its keys, its socket and where its channel is. Their values
// always come from the local file (or the defaults, when it has none).
var LocalOnly = []string{
	"daemon.socket", "daemon.read_group", "daemon.admin_group", "daemon.socket_group",
	"daemon.state_dir", "daemon.key_file", "daemon.remote_config", "daemon.uptime_file",
	"update.keyring", "update.threshold", "update.compatible",
	"channel.url", "channel.name", "channel.tags", "channel.ca_file", "channel.cert_file", "channel.key_file", "channel.allow_http",
}

// Outcomes in the history.
const (
	Applied  = "applied"
	Rejected = "rejected" // did not validate, or the local policy refused it; nothing changed
	Reverted = "reverted" // applied, then health failed within the deadline; the previous file is back
)

var (
	// ErrRejected: the document did not validate or was refused by the
	// local policy; the running config is untouched.
	ErrRejected = errors.New("remote configuration rejected")
	// ErrReverted: the document was applied, health checks failed within
	// the deadline, and the previous file was restored.
	ErrReverted = errors.New("remote configuration reverted")
)

// Entry is one version in the history.
type Entry struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"` // e.g. the channel's sequence and the document's sha256
	SHA256  string    `json:"sha256"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
}

// MaxHistory bounds the entries kept.
const MaxHistory = 100

// History is the persisted list of remote config versions (HMAC-protected).
type History struct {
	mu sync.Mutex
	st *state.Store
}

// OpenHistory opens the history file.
func OpenHistory(path, keyFile string) (*History, error) {
	st, err := state.Open(state.Options{Path: path, KeyFile: keyFile, Schema: 1})
	if err != nil {
		return nil, err
	}
	return &History{st: st}, nil
}

// List returns the entries, oldest first.
func (h *History) List() ([]Entry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var es []Entry
	if _, err := h.st.Load(&es); err != nil {
		return nil, err
	}
	return es, nil
}

// Add appends an entry.
func (h *History) Add(e Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var es []Entry
	if _, err := h.st.Load(&es); err != nil {
		return err
	}
	es = append(es, e)
	if len(es) > MaxHistory {
		es = es[len(es)-MaxHistory:]
	}
	return h.st.Save(es)
}

// Applier applies remote config documents to one config file.
type Applier struct {
	Path    string // the local config file
	History *History
	// Reload makes the daemon load Path again (its normal reload).
	Reload func() error
	// Health runs the health checks of the config in force; nil error is
	// healthy.
	Health func(ctx context.Context) error
	// Deadline is how long health is watched after a change; Every is
	// how often it is checked in that time (default Deadline/10).
	Deadline time.Duration
	Every    time.Duration
	Clock    clockwork.Clock // nil: the real clock
	mu       sync.Mutex
}

// Merge returns the remote document with every local-only key taken from
// the local file (or removed, so the default applies, when the local file
// does not set it).
func Merge(local, remote []byte) ([]byte, error) {
	var ln, rn yaml.Node
	if err := yaml.Unmarshal(local, &ln); err != nil {
		return nil, fmt.Errorf("local config: %w", err)
	}
	if err := yaml.Unmarshal(remote, &rn); err != nil {
		return nil, err
	}
	lroot := docMap(&ln)
	rroot := docMap(&rn)
	if rroot == nil {
		rroot = &yaml.Node{Kind: yaml.MappingNode}
	}
	for _, key := range LocalOnly {
		section, name, _ := strings.Cut(key, ".")
		rs := lookup(rroot, section)
		if rs != nil && rs.Kind == yaml.MappingNode {
			remove(rs, name)
		}
		ls := lookup(lroot, section)
		if ls == nil || ls.Kind != yaml.MappingNode {
			continue
		}
		lv := lookup(ls, name)
		if lv == nil {
			continue
		}
		if rs == nil || rs.Kind != yaml.MappingNode {
			rs = &yaml.Node{Kind: yaml.MappingNode}
			remove(rroot, section)
			rroot.Content = append(rroot.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: section}, rs)
		}
		rs.Content = append(rs.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, lv)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(rroot); err != nil {
		return nil, err
	}
	enc.Close()
	return b.Bytes(), nil
}

func docMap(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode {
		return n.Content[0]
	}
	return nil
}

func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			i -= 2
		}
	}
}

// Apply validates data (a whole config document) and applies it; version
// names it in the history. A document that does not validate or that the
// local policy refuses (daemon.remote_config) returns ErrRejected and
// changes nothing. One that breaks health within the deadline is
// reverted and returns ErrReverted.
func (a *Applier) Apply(ctx context.Context, data []byte, version string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	clock := a.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	sum := sha256.Sum256(data)
	e := Entry{Time: clock.Now().UTC(), Version: version, SHA256: hex.EncodeToString(sum[:])}
	reject := func(err error) error {
		e.Outcome, e.Reason = Rejected, err.Error()
		if herr := a.History.Add(e); herr != nil {
			return fmt.Errorf("%w: %v (and the history: %v)", ErrRejected, err, herr)
		}
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	name := "remote config " + version
	// The document as published first, so the errors point into it.
	if _, err := config.Parse(name, data); err != nil {
		return reject(err)
	}
	old, err := os.ReadFile(a.Path)
	if err != nil {
		return fmt.Errorf("config %s: %w", a.Path, err)
	}
	cur, err := config.Parse(a.Path, old)
	if err != nil {
		return reject(fmt.Errorf("the local file does not load, so nothing can be merged into it: %w", err))
	}
	merged, err := Merge(old, data)
	if err != nil {
		return reject(err)
	}
	next, err := config.Parse(name+" (merged with the local-only keys of "+a.Path+")", merged)
	if err != nil {
		return reject(err)
	}
	if err := config.CheckRemoteApply(cur, next); err != nil {
		return reject(err)
	}
	if bytes.Equal(merged, old) {
		e.Outcome, e.Reason = Applied, "identical to the file in force"
		return a.History.Add(e)
	}
	if err := state.WriteFileAtomic(a.Path, merged, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", a.Path, err)
	}
	restore := func(why string) error {
		if err := state.WriteFileAtomic(a.Path, old, 0o644); err != nil {
			return fmt.Errorf("restore %s after %s: %w", a.Path, why, err)
		}
		rerr := a.Reload()
		e.Outcome, e.Reason = Reverted, why
		a.History.Add(e)
		if rerr != nil {
			return fmt.Errorf("%w: %s; reloading the restored file: %v", ErrReverted, why, rerr)
		}
		return fmt.Errorf("%w: %s", ErrReverted, why)
	}
	if err := a.Reload(); err != nil {
		return restore("reload failed: " + err.Error())
	}
	if err := a.watch(ctx, clock); err != nil {
		return restore("health check failed within " + a.Deadline.String() + " of the change: " + err.Error())
	}
	e.Outcome = Applied
	return a.History.Add(e)
}

// watch runs the health checks every Every until Deadline; the first
// failure ends it.
func (a *Applier) watch(ctx context.Context, clock clockwork.Clock) error {
	if a.Health == nil || a.Deadline <= 0 {
		return nil
	}
	every := a.Every
	if every <= 0 {
		every = a.Deadline / 10
	}
	end := clock.Now().Add(a.Deadline)
	for {
		if err := a.Health(ctx); err != nil {
			return err
		}
		if !clock.Now().Before(end) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clock.After(min(every, end.Sub(clock.Now()))):
		}
	}
}
