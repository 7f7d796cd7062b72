// Package daemon is otagw's orchestrator: it owns the configuration, the
// persisted state machine, the local API and the systemd protocol, and it
// sequences the domain packages (rootfs installs, abboot switches the boot
// slot, watchdog assesses and commits, downstream fans out MCU firmware).
//
//	cfg, _ := config.Load(path)
//	d, _ := daemon.New(daemon.Options{ConfigPath: path, Config: cfg, Log: log, Level: level})
//	err := d.Run(ctx) // READY=1 once the API listens; STOPPING=1 when ctx ends
//
// Run answers SIGHUP by reloading the config file: a file that does not
// load or validate is rejected with its reasons and the old config stays.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/buildinfo"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/state"
)

// StateSchema is the persisted state's schema version.
const StateSchema = 1

// ShutdownGrace bounds how long open API calls may run after a stop request;
// systemd's default stop timeout is far longer, the issue asks for 5 s.
const ShutdownGrace = 3 * time.Second

// Options are what the command line hands the daemon.
type Options struct {
	ConfigPath string
	Config     *config.Config
	Log        *zap.Logger
	Level      zap.AtomicLevel
	// Notify sends an sd_notify message; nil means go-systemd's SdNotify
	// (a no-op when NOTIFY_SOCKET is unset).
	Notify func(string) error
	// Clock is the one clock of the daemon and of what it drives: state
	// entries, events, maintenance windows and their scheduler, bundle
	// expiry, install rates, the boot assessment's rounds and deadline.
	// nil means the real clock.
	Clock clockwork.Clock
}

// Daemon is one running otagw service.
type Daemon struct {
	opts  Options
	log   *zap.Logger
	store *state.Store

	mu       sync.Mutex
	cfg      *config.Config
	gen      int
	st       persisted
	warnings []string
	started  time.Time

	flow *flow // the update flow's state machine (flow.go)
	bus  *bus  // its events, and the install and MCU progress (events.go)

	srv *api.Server
	// The parts, in start order (parts.go).
	boot        *bootPart
	maintenance *maintenancePart
	inst        *installPart
	health      *healthPart
	mcu         *mcuPart
	channel     *channelPart
	// beat proves the main loop alive to the health loop (nil: no loop).
	beat func()
	// serving is set once the API socket listens.
	serving atomic.Bool
	// reloadMu serialises SIGHUP, otagw reload and otagw config apply.
	reloadMu sync.Mutex
}

// New checks what can be checked before Run.
func New(o Options) (*Daemon, error) {
	if o.Config == nil {
		return nil, errors.New("daemon: no config")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Notify == nil {
		o.Notify = func(s string) error { _, err := sddaemon.SdNotify(false, s); return err }
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	d := &Daemon{opts: o, log: o.Log, cfg: o.Config, gen: 1}
	d.bus = newBus(o.Clock.Now)
	d.flow = newFlow(o.Clock.Now, o.Log, d.notify, d.persistState, d.bus)
	d.newParts()
	return d, nil
}

// access resolves the configured groups. A group missing on this machine
// leaves only root (and the other group) able to call; it is logged.
func (d *Daemon) access(c *config.Config) (api.Access, int) {
	var a api.Access
	sockGID := -1
	if g, err := config.Group(c.Daemon.ReadGroup); err == nil {
		a.ReadGIDs = []int{g}
	} else {
		d.log.Warn("read group unavailable; only root and the admin group can read", zap.Error(err))
	}
	if g, err := config.Group(c.Daemon.AdminGroup); err == nil {
		a.AdminGIDs = []int{g}
	} else {
		d.log.Warn("admin group unavailable; only root can make changes", zap.Error(err))
	}
	if g, err := config.Group(c.Daemon.SocketGroup); err == nil {
		sockGID = g
	}
	return a, sockGID
}

// Run serves until ctx ends, then stops cleanly.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = d.opts.Clock.Now()
	cfg := d.config()
	if err := os.MkdirAll(cfg.Daemon.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", cfg.Daemon.StateDir, err)
	}
	if err := d.openState(cfg); err != nil {
		return err
	}

	access, sockGID := d.access(cfg)
	d.srv = api.NewServer(access, d.log)
	d.routes()
	parts := d.parts()
	for i, p := range parts {
		if err := p.start(ctx); err != nil {
			for _, q := range parts[:i] {
				q.stop()
			}
			return err
		}
		p.routes(d.srv)
		if p == part(d.boot) {
			// The boot selection is open: the stores agree (reconcile)
			// and the flow leaves starting for the state the record and
			// the boot environment say; the parts move on from there (an
			// interrupted install resumes, a pending release is assessed).
			d.restore()
		}
	}
	defer func() {
		for i := len(parts) - 1; i >= 0; i-- {
			parts[i].stop()
		}
	}()

	ln, activated, err := d.listen(cfg, sockGID)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- d.srv.Serve(ln) }()
	d.serving.Store(true)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	st := d.status()
	d.notify("READY=1\nSTATUS=" + st.State + ": " + st.Message + "\nMAINPID=" + strconv.Itoa(os.Getpid()))
	d.log.Info("otagw daemon ready", zap.String("socket", cfg.Daemon.Socket),
		zap.Bool("socket_activated", activated), zap.String("version", buildinfo.Version),
		zap.String("config", d.opts.ConfigPath))

	// The health loop (healthPart) feeds the hardware and systemd
	// watchdogs only while this loop keeps beating.
	beat := time.NewTicker(time.Second)
	defer beat.Stop()

	for {
		select {
		case <-ctx.Done():
			return d.stop(activated)
		case err := <-serveErr:
			d.notify("STOPPING=1")
			return fmt.Errorf("API server: %w", err)
		case <-hup:
			d.reload()
		case <-beat.C:
			d.mu.Lock()
			f := d.beat
			d.mu.Unlock()
			if f != nil {
				f()
			}
		}
	}
}

// watchdogForUs honours WATCHDOG_PID as sd_watchdog_enabled(3) does.
func watchdogForUs() bool {
	pid := os.Getenv("WATCHDOG_PID")
	return pid == "" || pid == strconv.Itoa(os.Getpid())
}

func (d *Daemon) listen(cfg *config.Config, gid int) (net.Listener, bool, error) {
	if os.Getenv("LISTEN_FDS") != "" {
		lns, err := activation.Listeners()
		if err != nil {
			return nil, false, fmt.Errorf("socket activation: %w", err)
		}
		for _, l := range lns {
			if l != nil {
				return l, true, nil
			}
		}
		return nil, false, errors.New("socket activation: LISTEN_FDS set but no listening socket was passed")
	}
	ln, err := api.Listen(cfg.Daemon.Socket, gid)
	return ln, false, err
}

func (d *Daemon) stop(activated bool) error {
	d.notify("STOPPING=1\nSTATUS=stopping")
	d.log.Info("stopping", zap.String("state", d.status().State))
	d.bus.close() // the event streams end now, not at the grace period
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	d.srv.Shutdown(ctx)
	if !activated {
		os.Remove(d.config().Daemon.Socket)
	}
	d.log.Info("otagw daemon stopped")
	return nil
}

func (d *Daemon) openState(cfg *config.Config) error {
	st, err := state.Open(state.Options{
		Path:    cfg.Daemon.StateDir + "/state",
		KeyFile: cfg.Daemon.KeyFile,
		Schema:  StateSchema,
	})
	if err != nil {
		return err
	}
	d.store = st
	p := persisted{State: api.StateIdle}
	res, err := st.Load(&p)
	if err != nil {
		return err
	}
	if res.NewKey {
		d.log.Info("created device key for the state file", zap.String("key_file", cfg.Daemon.KeyFile))
	}
	if res.Tampered {
		msg := fmt.Sprintf("state file %s failed its integrity check (possible tampering): %v; moved to %s, continuing from safe defaults",
			st.Path(), res.Reason, res.MovedTo)
		d.log.Error("state tampering detected", zap.String("file", st.Path()), zap.String("moved_to", res.MovedTo), zap.Error(res.Reason))
		d.warnings = append(d.warnings, msg)
		p = persisted{State: api.StateIdle}
	}
	if err := migrate(&p, cfg.Daemon.StateDir); err != nil {
		d.log.Error("state file: migrating the old layout", zap.String("file", st.Path()), zap.Error(err))
		d.warnings = append(d.warnings, fmt.Sprintf("state file %s: migrating the old layout: %v", st.Path(), err))
	}
	p.Starts++
	d.st = p
	d.flow.restoreFailure(p.Failure)
	return d.saveLocked()
}

// restore leaves starting: reconcile, then the state restore() decides.
func (d *Daemon) restore() {
	var facts bootFacts
	if c, err := d.boot.chooser(); err == nil {
		d.reconcile(c)
		b, err1 := c.Booted()
		p, err2 := c.Primary()
		facts = bootFacts{Known: err1 == nil && err2 == nil, Booted: b, Primary: p}
	}
	d.mu.Lock()
	last := d.st.State
	to := restore(last, &d.st, facts)
	pending, pslot, src := d.st.Pending, d.st.PendingSlot, d.st.Install.Source
	d.mu.Unlock()
	why := "ready"
	e := entry{Release: pending, Slot: pslot}
	switch to {
	case api.StateInstalled:
		why = "release " + pending + " installed in slot " + pslot + "; it boots next"
	case api.StateAssessing:
		why = "booted the new release " + pending + " in slot " + pslot + ": checking it before committing it"
	case api.StateRolledBack:
		why = "release " + pending + " in slot " + pslot + " did not boot; the boot loader fell back"
		if pending == "" {
			why = "the last release was rolled back"
		}
	case api.StateInstalling:
		why, e = "an install of "+src+" was interrupted", entry{Source: "resume"}
	case api.StateFlashing:
		why = "resuming the fan-out of the release's MCU firmware"
	case api.StateFailed:
		why = "the last step failed; see last_error, or start a new one"
		d.mu.Lock()
		if f := d.st.Failure; f != nil {
			e.Kind, e.Error = f.Kind, f.Reason
		}
		d.mu.Unlock()
	case api.StateCommitted:
		e.Release = d.committed()
		why = "release " + e.Release + " committed"
	}
	if last != to && last != api.StateIdle {
		why += " (the daemon stopped in state " + last + ")"
	}
	if err := d.flow.enter(to, why, e); err != nil {
		d.log.Error("restoring the state", zap.Error(err))
	}
}

func (d *Daemon) committed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Committed
}

func (d *Daemon) saveLocked() error {
	if err := d.store.Save(&d.st); err != nil {
		d.log.Error("saving state failed", zap.Error(err))
		return err
	}
	return nil
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// reload answers SIGHUP and POST /v1/reload.
func (d *Daemon) reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.reloadLocked()
}

func (d *Daemon) reloadLocked() error {
	d.log.Info("reloading configuration", zap.String("config", d.opts.ConfigPath))
	d.notify("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
	defer d.notify("READY=1")
	nc, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.log.Error("new configuration rejected; the old one stays in force", zap.String("config", d.opts.ConfigPath), zap.Error(err))
		d.flow.note("config reload rejected: " + firstLine(err.Error()))
		return err
	}
	old := d.config()
	if nc.Daemon.Socket != old.Daemon.Socket {
		d.log.Warn("daemon.socket changed: takes effect at the next restart", zap.String("old", old.Daemon.Socket), zap.String("new", nc.Daemon.Socket))
	}
	if nc.Daemon.StateDir != old.Daemon.StateDir || nc.Daemon.KeyFile != old.Daemon.KeyFile {
		d.log.Warn("daemon.state_dir/key_file changed: takes effect at the next restart")
	}
	access, _ := d.access(nc)
	d.srv.SetAccess(access)
	if err := d.opts.Level.UnmarshalText([]byte(nc.Daemon.LogLevel)); err != nil {
		d.log.Warn("log level", zap.Error(err))
	}
	d.mu.Lock()
	d.cfg = nc
	d.gen++
	gen := d.gen
	d.mu.Unlock()
	for _, p := range d.parts() {
		p.reload(nc)
	}
	d.log.Info("configuration reloaded", zap.Int("generation", gen))
	d.flow.note("config reloaded")
	return nil
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " (and more)"
		}
	}
	return s
}

func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(int64(ts.Sec)*1e6+int64(ts.Nsec)/1e3, 10)
}

// warn adds a warning shown by `otagw status` until the next start.
func (d *Daemon) warn(msg string) {
	d.mu.Lock()
	d.warnings = append(d.warnings, msg)
	d.mu.Unlock()
}

func (d *Daemon) notify(s string) {
	if err := d.opts.Notify(s); err != nil {
		d.log.Debug("sd_notify failed", zap.Error(err))
	}
}

func (d *Daemon) routes() {
	d.srv.Read("GET /v1/status", d.handleStatus)
	d.srv.Read("GET /v1/events", d.handleEvents)
	d.srv.Write("POST /v1/reload", d.handleReload)
	d.srv.Write("POST /v1/config", d.handleApply)
}

// handleApply takes a whole new config file (remote configuration): it
// is validated whole, written over the config file atomically and then
// loaded. An invalid one is refused with every error and changes nothing.
func (d *Daemon) handleApply(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil || len(data) > 1<<20 {
		api.WriteError(w, http.StatusBadRequest, "bad-request", "config body unreadable or over 1 MiB")
		return
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	next, err := config.Parse(d.opts.ConfigPath, data)
	if err != nil {
		d.log.Error("config apply refused; nothing changed", zap.Error(err))
		api.WriteError(w, http.StatusPreconditionFailed, "config-invalid", err.Error())
		return
	}
	// What runs as root (command checks, hooks) arrives through the API
	// only where the local file allows it (daemon.remote_config).
	if err := config.CheckRemoteApply(d.config(), next); err != nil {
		d.log.Error("config apply refused by daemon.remote_config; nothing changed", zap.Error(err))
		api.WriteError(w, http.StatusPreconditionFailed, "remote-config-refused", err.Error())
		return
	}
	old, _ := os.ReadFile(d.opts.ConfigPath)
	if err := state.WriteFileAtomic(d.opts.ConfigPath, data, 0o644); err != nil {
		api.WriteError(w, http.StatusInternalServerError, "io-error", fmt.Sprintf("write %s: %v", d.opts.ConfigPath, err))
		return
	}
	if err := d.reloadLocked(); err != nil {
		state.WriteFileAtomic(d.opts.ConfigPath, old, 0o644) // cannot happen: Parse accepted it
		api.WriteError(w, http.StatusPreconditionFailed, "config-invalid", err.Error())
		return
	}
	d.log.Info("configuration applied through the API", zap.String("config", d.opts.ConfigPath))
	api.WriteJSON(w, d.status())
}

// handleReload is SIGHUP over the API: 200 when the new config is in
// force, 412 with every error when it was rejected.
func (d *Daemon) handleReload(w http.ResponseWriter, r *http.Request) {
	if err := d.reload(); err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "config-invalid", err.Error())
		return
	}
	api.WriteJSON(w, d.status())
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	api.WriteJSON(w, d.status())
}

func (d *Daemon) status() api.Status {
	s := d.baseStatus()
	for _, p := range d.parts() {
		p.status(&s)
	}
	return s
}

func (d *Daemon) baseStatus() api.Status {
	state, msg, fail := d.flow.current()
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Clock.Now()
	s := api.Status{
		State:            state,
		Message:          msg,
		Version:          buildinfo.Version,
		PID:              os.Getpid(),
		ConfigPath:       d.opts.ConfigPath,
		ConfigGeneration: d.gen,
		LogLevel:         d.cfg.Daemon.LogLevel,
		StartedAt:        d.started,
		UptimeSeconds:    now.Sub(d.started).Seconds(),
		Warnings:         append([]string(nil), d.warnings...),
	}
	if fail != nil {
		s.LastError = &api.LastError{Kind: fail.Kind, Error: fail.Reason}
	}
	if d.st.Committed != "" || d.st.MinVersion != "" || d.st.Pending != "" {
		s.Release = &api.Release{Committed: d.st.Committed, Pending: d.st.Pending,
			MinVersion: d.st.MinVersion, SecurityCounter: d.st.SecurityCounter}
	}
	return s
}
