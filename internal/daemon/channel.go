package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"

	"github.com/jonboulle/clockwork"
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
// the daemon's normal flow (channelFlow): install through the install
// part, then after the reboot and commit the MCU fan-out through the MCU
// part, and remote configuration through internal/config/remote. It is a
// plain collaborator like the other parts: newParts hands it the
// functions it needs; it holds no *Daemon. Its downloads move the update
// flow (downloading, entered through flow.enter like every state), and
// what the agent does or waits for (a postponement and its reason, a
// refused index, a precondition) is a channel event on the bus as well as
// its section of the status.
type channelPart struct {
	log     *zap.Logger
	cfg     func() *config.Config
	clock   clockwork.Clock
	warn    func(string)
	flow    *flow
	bus     *bus
	windows windows
	// release returns the committed and the pending release versions.
	release func() (committed, pending string)
	// status is the daemon's whole status (the answer of a poll request).
	daemonStatus func() api.Status
	// install starts the install part's install of a bundle URL
	// (installPart.begin, resuming from an earlier attempt's checkpoint).
	install func(url string) (*installJob, error)
	// flash runs one MCU fan-out (mcuPart.flash).
	flash func(ctx context.Context, opens []pkgOpener, devices []string) ([]fanout.Result, error)
	// configPath and reload: the config file a remote config replaces and
	// the daemon's reload of it.
	configPath   string
	reloadConfig func() error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	agent   *channel.Agent
	report  channel.Report
	configs *remote.History
	// rest is the resting state the flow left for a channel download
	// (downloading), "" when the channel is not downloading.
	rest string
}

func (c *channelPart) start(ctx context.Context) error {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cfg := c.cfg()
	h, err := remote.OpenHistory(filepath.Join(cfg.Daemon.StateDir, "config-history"), cfg.Daemon.KeyFile)
	if err != nil {
		return fmt.Errorf("config history: %w", err)
	}
	c.configs = h
	return c.startAgent(cfg)
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
		c.warn(warn)
	}
	a, err := channel.NewAgent(channel.AgentOptions{
		Options: cfg.Channel,
		Policy: func() (channel.Policy, error) {
			cfg := c.cfg()
			kr, err := sign.LoadKeyring(cfg.Update.Keyring)
			if err != nil {
				return channel.Policy{}, fmt.Errorf("update.keyring: %w", err)
			}
			return channel.Policy{Keyring: kr, Threshold: cfg.Update.Threshold, Compatible: cfg.Update.Compatible}, nil
		},
		Store: store,
		Flow:  channelFlow{c},
		Gate:  preconditions{c.cfg},
		Dir:   filepath.Join(cfg.Daemon.StateDir, "channel-downloads"),
		Clock: c.clock,
		Log:   c.log.Named("channel"),
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
	api.WriteJSON(w, c.daemonStatus())
}

func (c *channelPart) status(s *api.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return
	}
	r := c.report
	s.Channel = &api.ChannelStatus{URL: c.agent.URL(), State: r.State, Reason: r.Reason, Sequence: r.Sequence,
		LastPoll: r.LastPoll, NextPoll: r.NextPoll, Failures: r.Failures}
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
			c.log.Warn("channel section changed: takes effect at the next restart")
		}
		a.Kick()
	}
}

// preconditions checks the preconditions of the config in force.
type preconditions struct{ cfg func() *config.Config }

func (p preconditions) Check(ctx context.Context) error {
	pc, err := precond.New(p.cfg().Preconditions)
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

func (f channelFlow) Release() (string, string) { return f.c.release() }

// Allowed checks the maintenance windows, and for a download that the
// update flow may enter downloading now (it rests: idle, installed,
// committed, rolled-back or failed); an assessment, an install or a
// fan-out under way postpones the channel's work.
func (f channelFlow) Allowed(kind string) error {
	if kind == channel.KindDownload {
		if s := f.c.flow.State(); !resting(s) || !legal(s, api.StateDownloading) {
			return fmt.Errorf("the daemon is %s", s)
		}
	}
	return f.c.windows.allowed(kind, false)
}

// Install runs the install part's normal install of the bundle URL and
// waits for it: the flow enters downloading (the bundle head) and
// installing there; Range-resumable, checkpointed, resumed after a restart
// by the install part itself, and continued from its checkpoint when the
// agent tries the same URL again after a failure.
func (f channelFlow) Install(ctx context.Context, url string, file channel.File) error {
	job, err := f.c.install(url)
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

// FlashMCU fans the downloaded packages out to every configured device
// through the MCU part (the flow's flashing state); devices postponed by
// their precondition hook are returned.
func (f channelFlow) FlashMCU(ctx context.Context, pkgs []string) ([]string, error) {
	var opens []pkgOpener
	for _, p := range pkgs {
		p := p
		opens = append(opens, func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error) { return mcupkg.Open(p, kr, threshold) })
	}
	res, err := f.c.flash(ctx, opens, nil)
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
	c := f.c
	cfg := c.cfg()
	a := &remote.Applier{Path: c.configPath, History: c.configs, Reload: c.reloadConfig,
		Deadline: cfg.Channel.ConfigHealthDeadline,
		Health: func(ctx context.Context) error {
			return health.New(c.cfg().Health, c.log.Named("health")).Run(ctx).Err()
		}}
	version := file.SHA256[:12]
	c.mu.Lock()
	if r := c.report; r.Sequence != 0 {
		version = fmt.Sprintf("sequence %d, %s", r.Sequence, version)
	}
	c.mu.Unlock()
	c.flow.note("applying configuration " + version + " from the channel")
	err := a.Apply(ctx, data, version)
	msg := "configuration " + version + " from the channel applied"
	if err != nil {
		msg = err.Error()
		c.log.Error("configuration from the channel", zap.Error(err))
	}
	c.flow.note(msg)
	return err
}

// Report takes what the agent does or waits for. Its downloads (MCU
// packages) are the flow's downloading state, entered from the resting
// state the flow was in and left back to it when the agent moves on (to
// the fan-out, a postponement or an error). Every report is a channel
// event (Kind: the agent's state, Message: the reason): a postponement
// checked again at each retry is one event per check.
func (f channelFlow) Report(r channel.Report) {
	c := f.c
	c.mu.Lock()
	c.report = r
	c.mu.Unlock()
	c.move(r)
	c.bus.publish(api.Event{Type: api.EventChannel, State: c.flow.State(), Kind: r.State, Message: r.Reason, Source: "channel"})
}

// move keeps the flow's downloading state in step with the agent's.
func (c *channelPart) move(r channel.Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	downloading := r.State == "downloading"
	switch {
	case downloading && c.rest == "":
		from := c.flow.State()
		if !resting(from) || !legal(from, api.StateDownloading) {
			c.log.Warn("channel download while the daemon is "+from, zap.String("why", r.Reason))
			return
		}
		if err := c.flow.enter(api.StateDownloading, r.Reason, entry{Source: "channel"}); err != nil {
			return
		}
		c.rest = from
		if from == api.StateFailed {
			// Back to idle, not failed: re-entering failed would count
			// one more failure of a step that did not run again.
			c.rest = api.StateIdle
		}
	case downloading:
		c.flow.note(r.Reason)
	case c.rest != "":
		rest := c.rest
		c.rest = ""
		if c.flow.State() != api.StateDownloading {
			return
		}
		why := "channel download done"
		if r.State != "flashing" {
			why = "channel download ended (" + r.State + "): " + r.Reason
		}
		c.flow.enter(rest, why, entry{Source: "channel"})
	}
}
