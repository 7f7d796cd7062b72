package channel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/state"
)

// Kinds of work the agent asks the Flow about (the same names as
// internal/window's kinds).
const (
	KindDownload = "download"
	KindInstall  = "install"
	KindFlash    = "flash"
)

// Flow is what the agent needs from the daemon: its normal install, MCU
// fan-out and config apply, its release record and its maintenance
// windows. The agent decides what is due; the Flow does it.
type Flow interface {
	// Release returns the committed and the pending (installed, not yet
	// committed) rootfs release versions.
	Release() (committed, pending string)
	// Allowed returns nil when work of kind (KindDownload, KindInstall,
	// KindFlash) may start now, else why not (a closed window).
	Allowed(kind string) error
	// Install installs the bundle at url through the daemon's normal
	// install (Range-resumable, checkpointed) and returns once it is
	// verified in the inactive slot; the reboot, assessment and commit
	// follow the daemon's own policy.
	Install(ctx context.Context, url string, f File) error
	// FlashMCU fans the packages (local files, their sha256 checked
	// against the index) out to the devices; it returns the devices whose
	// precondition postponed them.
	FlashMCU(ctx context.Context, pkgs []string) (postponed []string, err error)
	// ApplyConfig applies a configuration document from the channel.
	ApplyConfig(ctx context.Context, data []byte, f File) error
	// Report shows what the agent does or waits for (status).
	Report(r Report)
}

// Gate checks the gateway's own preconditions (power, space, load, hooks)
// before work starts; internal/precond's Checker is one.
type Gate interface {
	Check(ctx context.Context) error
}

// Report is the agent's part of the daemon's status.
type Report struct {
	// State: idle, postponed, waiting, downloading, installing, flashing,
	// configuring, refused, error.
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	Sequence uint64    `json:"sequence,omitempty"` // of the index accepted last
	LastPoll time.Time `json:"last_poll,omitempty"`
	NextPoll time.Time `json:"next_poll,omitempty"`
	Failures int       `json:"failures,omitempty"` // polls failed in a row
}

// Record is the agent's persisted piece (HMAC-protected: Store).
type Record struct {
	Mark Mark `json:"mark"`
	// Config is the sha256 of the last configuration document from the
	// channel that was handed to ApplyConfig (applied or not: a rejected
	// one is not tried again until the channel carries another).
	Config string `json:"config,omitempty"`
	// MCU holds the sha256 of packages flashed to every device.
	MCU []string `json:"mcu,omitempty"`
	// Failed counts the installs of one bundle (by sha256) that failed in
	// a row; after MaxInstallAttempts it is not tried again until the
	// channel names another bundle.
	Failed *Failure `json:"failed,omitempty"`
}

// Failure is a bundle whose installs failed.
type Failure struct {
	SHA256 string `json:"sha256"`
	Count  int    `json:"count"`
	Error  string `json:"error"`
}

// MaxInstallAttempts bounds the installs of one bundle from the channel
// that fail in a row (each one already retried its transfer by itself).
const MaxInstallAttempts = 3

// Store keeps the Record.
type Store interface {
	Load(r *Record) error
	Save(r *Record) error
}

// StateStore is Store on an HMAC-protected state file (internal/state).
type StateStore struct{ st *state.Store }

// OpenStateStore opens (or starts) the agent's state file, keyed by the
// device key. A file that fails its integrity check is moved aside and the
// agent starts from sequence 0 (reported by the returned warning).
func OpenStateStore(path, keyFile string) (*StateStore, string, error) {
	st, err := state.Open(state.Options{Path: path, KeyFile: keyFile, Schema: 1})
	if err != nil {
		return nil, "", err
	}
	var r Record
	res, err := st.Load(&r)
	if err != nil {
		return nil, "", err
	}
	warn := ""
	if res.Tampered {
		warn = fmt.Sprintf("channel state %s failed its integrity check (%v); moved to %s", path, res.Reason, res.MovedTo)
	}
	return &StateStore{st: st}, warn, nil
}

// Load implements Store.
func (s *StateStore) Load(r *Record) error { _, err := s.st.Load(r); return err }

// Save implements Store.
func (s *StateStore) Save(r *Record) error { return s.st.Save(r) }

// ErrPostponed: work is due but waits (a window, a precondition); it is
// tried again after Options.Retry.
var ErrPostponed = errors.New("postponed")

// AgentOptions wire an Agent.
type AgentOptions struct {
	Options Options
	// Policy returns the acceptance policy (keyring, threshold,
	// compatible) in force; the agent fills Now, Channel and Tags.
	Policy func() (Policy, error)
	Store  Store
	Flow   Flow
	Gate   Gate // nil: no gateway preconditions
	// Dir keeps downloads (MCU packages, config documents) between polls.
	Dir   string
	Clock clockwork.Clock // nil: the real clock
	Log   *zap.Logger
	// HTTP overrides the client built from Options (tests).
	HTTP *http.Client
}

// Agent polls a channel and hands what is due to the Flow.
type Agent struct {
	o      AgentOptions
	client *Client
	hc     *http.Client

	mu     sync.Mutex
	cur    *Accepted
	report Report
	rnd    *rand.Rand
	kick   chan struct{}
}

// NewAgent checks the options and builds the agent.
func NewAgent(o AgentOptions) (*Agent, error) {
	if err := o.Options.Validate(); err != nil {
		return nil, err
	}
	if o.Options.URL == "" {
		return nil, errors.New("channel.url: empty")
	}
	if o.Policy == nil || o.Store == nil || o.Flow == nil || o.Dir == "" {
		return nil, errors.New("channel agent: policy, store, flow and dir are required")
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	hc := o.HTTP
	if hc == nil {
		var err error
		if hc, err = HTTPClient(o.Options); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("channel download dir: %w", err)
	}
	return &Agent{o: o, client: NewClient(o.Options.URL, hc), hc: hc,
		rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0)), kick: make(chan struct{}, 1)}, nil
}

// URL is the index the agent polls.
func (a *Agent) URL() string { return a.o.Options.URL }

// Report returns what the agent last reported.
func (a *Agent) Report() Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.report
}

func (a *Agent) set(state, reason string) {
	a.mu.Lock()
	a.report.State, a.report.Reason = state, reason
	r := a.report
	a.mu.Unlock()
	a.o.Flow.Report(r)
}

// Kick makes a running agent poll now (otagw channel poll; config reload).
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run polls until ctx ends: Interval plus jitter after a good poll,
// Retry while work is postponed, Backoff doubling up to MaxBackoff after
// failures.
func (a *Agent) Run(ctx context.Context) {
	failures := 0
	for {
		err := a.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		o := a.o.Options
		var wait time.Duration
		switch {
		case err == nil:
			failures = 0
			wait = o.Interval
			if o.Jitter > 0 {
				wait += time.Duration(a.rnd.Int64N(int64(o.Jitter) + 1))
			}
		case errors.Is(err, ErrPostponed):
			failures = 0
			wait = o.Retry
		default:
			failures++
			wait = Backoff(o.Backoff, o.MaxBackoff, failures)
		}
		a.mu.Lock()
		a.report.Failures = failures
		a.report.NextPoll = a.o.Clock.Now().Add(wait)
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-a.o.Clock.After(wait):
		}
	}
}

// Backoff is the wait after n failures in a row: base doubled n-1 times,
// at most max.
func Backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// Poll fetches the index once and, when it is accepted, hands the work
// that is due to the Flow. Nothing is downloaded unless the index passed
// every check.
func (a *Agent) Poll(ctx context.Context) error {
	now := a.o.Clock.Now()
	a.mu.Lock()
	a.report.LastPoll = now
	a.mu.Unlock()
	acc, err := a.check(ctx, now)
	if err != nil {
		state := "error"
		if errors.Is(err, ErrRefused) {
			state = "refused"
		}
		a.o.Log.Error("channel poll failed", zap.String("url", a.o.Options.URL), zap.Error(err))
		a.set(state, err.Error())
		return err
	}
	return a.work(ctx, acc)
}

// check fetches and verifies the index; the mark is saved when it is new.
func (a *Agent) check(ctx context.Context, now time.Time) (*Accepted, error) {
	var rec Record
	if err := a.o.Store.Load(&rec); err != nil {
		return nil, fmt.Errorf("channel state: %w", err)
	}
	pol, err := a.o.Policy()
	if err != nil {
		return nil, err
	}
	pol.Now, pol.Channel, pol.Tags = now, a.o.Options.Name, a.o.Options.Tags
	data, notMod, err := a.client.Fetch(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	cur := a.cur
	a.mu.Unlock()
	if notMod && cur != nil {
		// The server says the index is the one accepted last; it must
		// still be in date (a frozen channel is one that stops changing).
		if !now.Before(cur.Index.Expires) {
			return nil, fmt.Errorf("%w at %s (sequence %d, unchanged on the server)", ErrExpired, cur.Index.Expires.Format(time.RFC3339), cur.Index.Sequence)
		}
		return cur, nil
	}
	if notMod {
		return nil, fmt.Errorf("channel %s: 304 Not Modified to a request without validators", a.o.Options.URL)
	}
	acc, err := Read(data, pol, rec.Mark)
	if err != nil {
		return nil, err
	}
	if !acc.Unchanged {
		rec.Mark = acc.Mark(rec.Mark)
		if err := a.o.Store.Save(&rec); err != nil {
			return nil, fmt.Errorf("channel state: %w", err)
		}
		a.o.Log.Info("channel index accepted", zap.Uint64("sequence", acc.Index.Sequence), zap.String("digest", acc.Digest))
	}
	a.client.Commit()
	a.mu.Lock()
	a.cur = acc
	a.report.Sequence = acc.Index.Sequence
	a.mu.Unlock()
	return acc, nil
}

func (a *Agent) postpone(state, why string) error {
	a.o.Log.Info("channel work postponed", zap.String("reason", why))
	a.set(state, why)
	return fmt.Errorf("%w: %s", ErrPostponed, why)
}

// gate runs the gateway preconditions and the window checks for kinds.
func (a *Agent) gate(ctx context.Context, what string, kinds ...string) error {
	if a.o.Gate != nil {
		if err := a.o.Gate.Check(ctx); err != nil {
			return a.postpone("postponed", what+": "+err.Error())
		}
	}
	for _, k := range kinds {
		if err := a.o.Flow.Allowed(k); err != nil {
			return a.postpone("waiting", what+": "+err.Error())
		}
	}
	return nil
}

// work does what the accepted entry asks, in order: configuration, then
// the rootfs release, then (once that release is committed) the MCU
// packages.
func (a *Agent) work(ctx context.Context, acc *Accepted) error {
	e := acc.Entry
	var rec Record
	if err := a.o.Store.Load(&rec); err != nil {
		return fmt.Errorf("channel state: %w", err)
	}
	if e.Config != nil && e.Config.SHA256 != rec.Config {
		if err := a.gate(ctx, "config from the channel", KindDownload); err != nil {
			return err
		}
		a.set("configuring", "fetching configuration "+e.Config.SHA256[:12])
		data, err := a.fetchSmall(ctx, *e.Config)
		if err != nil {
			a.set("error", err.Error())
			return err
		}
		aerr := a.o.Flow.ApplyConfig(ctx, data, *e.Config)
		rec.Config = e.Config.SHA256 // applied or rejected: not tried again
		if err := a.o.Store.Save(&rec); err != nil {
			return fmt.Errorf("channel state: %w", err)
		}
		if aerr != nil {
			a.o.Log.Error("configuration from the channel not applied", zap.Error(aerr))
			a.set("error", "configuration from the channel not applied: "+aerr.Error())
		}
	}
	if e.Bundle != nil {
		committed, pending := a.o.Flow.Release()
		switch e.Bundle.Version {
		case committed:
		case pending:
			a.set("waiting", "release "+pending+" is installed; waiting for its reboot and commit")
			return fmt.Errorf("%w: release %s waits for its reboot and commit", ErrPostponed, pending)
		default:
			if f := rec.Failed; f != nil && f.SHA256 == e.Bundle.SHA256 && f.Count >= MaxInstallAttempts {
				why := fmt.Sprintf("release %s failed to install %d times (last: %s); not tried again until the channel names another bundle",
					e.Bundle.Version, f.Count, f.Error)
				a.set("error", why)
				return errors.New(why)
			}
			if err := a.gate(ctx, "release "+e.Bundle.Version, KindDownload, KindInstall); err != nil {
				return err
			}
			u, err := Resolve(a.o.Options.URL, e.Bundle.URL)
			if err != nil {
				return err
			}
			a.set("installing", "downloading and installing release "+e.Bundle.Version+" from "+u)
			if err := a.o.Flow.Install(ctx, u, *e.Bundle); err != nil {
				if errors.Is(err, ErrPostponed) { // e.g. another install is running
					return a.postpone("waiting", "release "+e.Bundle.Version+": "+err.Error())
				}
				if rec.Failed == nil || rec.Failed.SHA256 != e.Bundle.SHA256 {
					rec.Failed = &Failure{SHA256: e.Bundle.SHA256}
				}
				rec.Failed.Count++
				rec.Failed.Error = err.Error()
				if serr := a.o.Store.Save(&rec); serr != nil {
					return fmt.Errorf("channel state: %w", serr)
				}
				a.set("error", fmt.Sprintf("install of release %s (attempt %d of %d): %v", e.Bundle.Version, rec.Failed.Count, MaxInstallAttempts, err))
				return err
			}
			if rec.Failed != nil {
				rec.Failed = nil
				if err := a.o.Store.Save(&rec); err != nil {
					return fmt.Errorf("channel state: %w", err)
				}
			}
			a.set("waiting", "release "+e.Bundle.Version+" installed; waiting for its reboot and commit")
			return fmt.Errorf("%w: release %s waits for its reboot and commit", ErrPostponed, e.Bundle.Version)
		}
	}
	var due []File
	for _, f := range e.MCU {
		if !slices.Contains(rec.MCU, f.SHA256) {
			due = append(due, f)
		}
	}
	if len(due) > 0 {
		if err := a.gate(ctx, "MCU firmware", KindDownload); err != nil {
			return err
		}
		var paths []string
		for _, f := range due {
			a.set("downloading", "MCU package "+f.Name+" "+f.Version)
			p, err := a.download(ctx, f)
			if err != nil {
				a.set("error", err.Error())
				return err
			}
			paths = append(paths, p)
		}
		if err := a.gate(ctx, "MCU firmware", KindFlash); err != nil {
			return err
		}
		a.set("flashing", fmt.Sprintf("%d MCU package(s)", len(paths)))
		postponed, err := a.o.Flow.FlashMCU(ctx, paths)
		if err != nil {
			a.set("error", "MCU fan-out: "+err.Error())
			return err
		}
		if len(postponed) > 0 {
			return a.postpone("postponed", fmt.Sprintf("MCU device(s) %v: precondition not met", postponed))
		}
		for _, f := range due {
			rec.MCU = append(rec.MCU, f.SHA256)
			os.Remove(a.path(f))
		}
		if err := a.o.Store.Save(&rec); err != nil {
			return fmt.Errorf("channel state: %w", err)
		}
	}
	a.set("idle", fmt.Sprintf("up to date with sequence %d", acc.Index.Sequence))
	return nil
}

// path is where f is downloaded to: by content, so a partial download
// continues after a restart.
func (a *Agent) path(f File) string {
	return filepath.Join(a.o.Dir, f.SHA256)
}

// download fetches f into the download dir, continuing a partial file
// with a Range request, and checks its size and sha256.
func (a *Agent) download(ctx context.Context, f File) (string, error) {
	dst := a.path(f)
	if st, err := os.Stat(dst); err == nil && st.Size() == f.Size {
		if sum, err := fileSum(dst); err == nil && sum == f.SHA256 {
			return dst, nil
		}
		os.Remove(dst)
	}
	u, err := Resolve(a.o.Options.URL, f.URL)
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", f.Name, err)
	}
	defer out.Close()
	if err := a.fetchTo(ctx, u, out, f.Size); err != nil {
		return "", err
	}
	if err := out.Sync(); err != nil {
		return "", err
	}
	sum, err := fileSum(dst)
	if err != nil {
		return "", err
	}
	if sum != f.SHA256 {
		os.Remove(dst)
		return "", fmt.Errorf("download %s: sha256 %s, the index says %s", u, sum, f.SHA256)
	}
	return dst, nil
}

// fetchSmall reads a small file (a config document) whole and checks it.
func (a *Agent) fetchSmall(ctx context.Context, f File) ([]byte, error) {
	if f.Size > MaxIndexSize {
		return nil, fmt.Errorf("%s: %d bytes is too large for a config document", f.URL, f.Size)
	}
	p, err := a.download(ctx, f)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	os.Remove(p)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, fmt.Errorf("%s changed after its check", p)
	}
	return data, nil
}

// fetchTo appends to out until it holds size bytes, each request starting
// where the file ends (Range), with a few retries without progress.
func (a *Agent) fetchTo(ctx context.Context, u string, out *os.File, size int64) error {
	off, err := out.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if off > size {
		if err := out.Truncate(0); err != nil {
			return err
		}
		off, _ = out.Seek(0, io.SeekStart)
	}
	fails := 0
	delay := time.Second
	for off < size {
		n, err := a.fetchRange(ctx, u, out, off, size)
		off += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n > 0 {
			fails, delay = 0, time.Second
		}
		if fails++; fails > 5 {
			return fmt.Errorf("download %s: at %d of %d bytes: %w", u, off, size, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.o.Clock.After(delay):
		}
		delay *= 2
	}
	return nil
}

func (a *Agent) fetchRange(ctx context.Context, u string, out *os.File, off, size int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, size-1)) // the end named: a server stops there
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && off == 0:
	case resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", off)):
	default:
		return 0, fmt.Errorf("%s (Range from %d): %s", u, off, resp.Status)
	}
	return io.Copy(out, io.LimitReader(resp.Body, size-off))
}
