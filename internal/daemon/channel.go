package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"

	"go.uber.org/zap"

	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/channel"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/config/remote"
	"github.com/otagw/otagw/internal/precond"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/watchdog/health"
)

// channelPart runs the update channel agent (internal/channel) when
// channel.url is set: it polls the signed index and hands what is due to
// the daemon's normal flow (channelFlow): install, then after the reboot
// and commit the MCU fan-out, and remote configuration through
// internal/remote. All of its logic lives in those packages; this
// file only wires them to the other parts.
type channelPart struct {
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	agent   *channel.Agent
	report  channel.Report
	history []string
	configs *remote.History
}

// maxStateHistory bounds the daemon states kept for status.
const maxStateHistory = 64

func (c *channelPart) start(ctx context.Context, d *Daemon) error {
	c.d = d
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cfg := d.config()
	h, err := remote.OpenHistory(filepath.Join(cfg.Daemon.StateDir, "config-history"), cfg.Daemon.KeyFile)
	if err != nil {
		return fmt.Errorf("config history: %w", err)
	}
	c.configs = h
	d.mu.Lock()
	if s := d.st.State; s != "" {
		c.history = append(c.history, s)
	}
	d.onState = c.recordState
	d.mu.Unlock()
	return c.startAgent(cfg)
}

// recordState keeps the daemon's states in order for status.
func (c *channelPart) recordState(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.history); n > 0 && c.history[n-1] == s {
		return
	}
	c.history = append(c.history, s)
	if len(c.history) > maxStateHistory {
		c.history = c.history[len(c.history)-maxStateHistory:]
	}
}

func (c *channelPart) startAgent(cfg *config.Config) error {
	if cfg.Channel.URL == "" {
		return nil
	}
	store, warn, err := channel.OpenStateStore(filepath.Join(cfg.Daemon.StateDir, "channel-state"), cfg.Daemon.KeyFile)
	if err != nil {
		return fmt.Errorf("channel state: %w", err)
	}
	if warn != "" {
		c.d.warn(warn)
	}
	a, err := channel.NewAgent(channel.AgentOptions{
		Options: cfg.Channel,
		Policy: func() (channel.Policy, error) {
			cfg := c.d.config()
			kr, err := sign.LoadKeyring(cfg.Update.Keyring)
			if err != nil {
				return channel.Policy{}, fmt.Errorf("update.keyring: %w", err)
			}
			return channel.Policy{Keyring: kr, Threshold: cfg.Update.Threshold, Compatible: cfg.Update.Compatible}, nil
		},
		Store: store,
		Flow:  channelFlow{c},
		Gate:  preconditions{c.d},
		Dir:   filepath.Join(cfg.Daemon.StateDir, "channel-downloads"),
		Log:   c.d.log.Named("channel"),
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.agent = a
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		a.Run(c.ctx)
	}()
	return nil
}

func (c *channelPart) routes(srv *api.Server) {
	srv.Read("GET /v1/config/history", c.handleHistory)
	srv.Write("POST /v1/channel/poll", c.handlePoll)
}

func (c *channelPart) handleHistory(w http.ResponseWriter, r *http.Request) {
	es, err := c.configs.List()
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "io-error", err.Error())
		return
	}
	out := []api.ConfigVersion{}
	for _, e := range es {
		out = append(out, api.ConfigVersion{Time: e.Time, Version: e.Version, SHA256: e.SHA256, Outcome: e.Outcome, Reason: e.Reason})
	}
	api.WriteJSON(w, out)
}

// handlePoll makes the agent poll now (otagw channel poll).
func (c *channelPart) handlePoll(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a == nil {
		api.WriteError(w, http.StatusPreconditionFailed, "no-channel", "channel.url is not set")
		return
	}
	a.Kick()
	api.WriteJSON(w, c.d.status())
}

func (c *channelPart) status(s *api.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil && len(c.history) == 0 {
		return
	}
	r := c.report
	s.Channel = &api.ChannelStatus{URL: c.d.config().Channel.URL, State: r.State, Reason: r.Reason, Sequence: r.Sequence,
		LastPoll: r.LastPoll, NextPoll: r.NextPoll, Failures: r.Failures, History: append([]string(nil), c.history...)}
}

// reload makes the agent poll again. The preconditions in force are read
// at every check; a changed channel: section takes effect at the next
// start (the agent may be in the middle of applying this very config).
func (c *channelPart) reload(cfg *config.Config) {
	c.mu.Lock()
	a := c.agent
	c.mu.Unlock()
	if a != nil {
		if cfg.Channel.URL != a.URL() {
			c.d.log.Warn("channel section changed: takes effect at the next restart")
		}
		a.Kick()
	}
}

// preconditions checks the preconditions of the config in force.
type preconditions struct{ d *Daemon }

func (p preconditions) Check(ctx context.Context) error {
	pc, err := precond.New(p.d.config().Preconditions)
	if err != nil { // validated with the config; cannot happen
		return err
	}
	return pc.Check(ctx)
}

func (c *channelPart) stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// channelFlow is channel.Flow on the daemon's parts.
type channelFlow struct{ c *channelPart }

func (f channelFlow) Release() (string, string) {
	d := f.c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Committed, d.st.Pending
}

func (f channelFlow) Allowed(kind string) error {
	return f.c.d.maintenancePart().allowed(kind, false)
}

// Install runs the install part's normal install of the bundle URL and
// waits for it: Range-resumable, checkpointed, resumed after a restart
// by the install part itself, and continued from its checkpoint when the
// agent tries the same URL again after a failure.
func (f channelFlow) Install(ctx context.Context, url string, file channel.File) error {
	var ip *installPart
	for _, p := range f.c.d.parts {
		if x, ok := p.(*installPart); ok {
			ip = x
		}
	}
	// resume: an earlier attempt at the same URL that failed in transit
	// continues from its checkpoint (the installer checks the slot's
	// earlier chunks and starts over when they do not fit).
	job, err := ip.begin(nil, url, "", true, false)
	if errors.Is(err, api.ErrBusy) {
		return fmt.Errorf("%w: %v", channel.ErrPostponed, err)
	}
	if err != nil {
		return err
	}
	select {
	case <-job.done:
		return job.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FlashMCU fans the downloaded packages out to every configured device;
// devices postponed by their precondition hook are returned.
func (f channelFlow) FlashMCU(ctx context.Context, pkgs []string) ([]string, error) {
	var opens []pkgOpener
	for _, p := range pkgs {
		p := p
		opens = append(opens, func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error) { return mcupkg.Open(p, kr, threshold) })
	}
	res, err := f.c.d.mcuPart().flash(ctx, opens, nil, nil)
	if err != nil {
		return nil, err
	}
	var postponed []string
	for _, r := range res {
		if r.State == fanout.Postponed {
			postponed = append(postponed, r.Device)
		}
	}
	return postponed, nil
}

// ApplyConfig applies a config document from the channel (internal/config/remote):
// validated, local-only keys kept, written, reloaded, reverted when the
// health checks fail within channel.config_health_deadline.
func (f channelFlow) ApplyConfig(ctx context.Context, data []byte, file channel.File) error {
	d := f.c.d
	cfg := d.config()
	a := &remote.Applier{Path: d.opts.ConfigPath, History: f.c.configs, Reload: d.reload,
		Deadline: cfg.Channel.ConfigHealthDeadline,
		Health: func(ctx context.Context) error {
			return health.New(d.config().Health, d.log.Named("health")).Run(ctx).Err()
		}}
	version := file.SHA256[:12]
	f.c.mu.Lock()
	if r := f.c.report; r.Sequence != 0 {
		version = fmt.Sprintf("sequence %d, %s", r.Sequence, version)
	}
	f.c.mu.Unlock()
	d.setMessage("applying configuration " + version + " from the channel")
	err := a.Apply(ctx, data, version)
	msg := "configuration " + version + " from the channel applied"
	if err != nil {
		msg = err.Error()
		d.log.Error("configuration from the channel", zap.Error(err))
	}
	d.setMessage(msg)
	return err
}

func (f channelFlow) Report(r channel.Report) {
	f.c.mu.Lock()
	f.c.report = r
	f.c.mu.Unlock()
}
