package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/fault"
	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/assess"
	"github.com/otagw/otagw/watchdog/health"
)

// healthPart ties the daemon to the watchdogs and decides about new
// releases: one health loop pets the hardware watchdog and sends
// WATCHDOG=1 only while the daemon's own liveness probes pass (the main
// loop's heartbeat, the API socket answering); on the first boot of a
// freshly installed slot it runs the boot assessment, which commits the
// release or marks the slot bad and reboots into the other one.
type healthPart struct {
	log      *zap.Logger
	clock    clockwork.Clock
	cfg      func() *config.Config
	notify   func(string) error // sd_notify
	warn     func(string)       // a warning in otagw status
	serving  func() bool        // the API socket listens
	setBeat  func(func())       // hands the main loop its heartbeat (nil: none)
	boot     func() (bootSelection, error)
	release  releaseRecord
	flow     *flow
	bus      *bus
	reboot   func(ctx context.Context, reason string) error
	released func() // a release was committed: its MCU firmware fans out

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hw   *watchdog.Hardware
	loop *watchdog.Loop
	beat *watchdog.Heartbeat

	mu     sync.Mutex
	assess *api.Assessment
}

// releaseRecord is the assessment's part of the release record.
type releaseRecord interface {
	// pending is the release installed and not yet committed, and its slot.
	pending() (version, slot string)
	// commit records the pending release in slot as committed (idempotent).
	commit(ctx context.Context, slot string) error
	// dropPending records that the release in slot did not survive its trial.
	dropPending(slot, version string)
}

func (h *healthPart) start(ctx context.Context) error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	cfg := h.cfg()
	if cfg.Watchdog.Enabled {
		hw, err := watchdog.Open(cfg.Watchdog)
		switch {
		case err == nil:
			h.hw = hw
			bs := hw.BootStatus()
			h.log.Info("hardware watchdog armed", zap.String("device", hw.Device()), zap.Duration("timeout", hw.Timeout()),
				zap.Bool("last_boot_was_watchdog_reset", bs.WatchdogReset()), zap.Strings("boot_status", bs.Reasons()))
			if bs.WatchdogReset() {
				h.warn("the last boot was a hardware watchdog reset")
			}
		case errors.Is(err, watchdog.ErrNotSupported):
			h.log.Warn("no hardware watchdog; only the systemd watchdog is fed", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
		default:
			h.log.Error("hardware watchdog unavailable", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
			h.warn("hardware watchdog unavailable: " + err.Error())
		}
	}
	usec, _ := sddaemon.SdWatchdogEnabled(false)
	lc := watchdog.LoopConfig{
		Notify:         h.notify,
		NotifyInterval: usec / 2,
		Log:            h.log.Named("watchdog"),
		OnChange: func(s watchdog.Status) {
			if s.Healthy {
				h.log.Info("healthy again: feeding the watchdogs")
			} else {
				h.log.Error("unhealthy: not feeding the watchdogs", zap.Strings("problems", s.Problems))
			}
		},
	}
	if usec == 0 {
		lc.Notify = nil
	}
	if h.hw != nil {
		lc.Hardware, lc.HardwareInterval = h.hw, h.hw.PetInterval()
	}
	h.loop = watchdog.NewLoop(lc)
	if h.loop.Interval() > 0 {
		// The main loop beats every second (see Daemon.Run); allow for a
		// slow config reload or state write.
		h.beat = h.loop.Heartbeat("main loop", max(10*time.Second, 4*h.loop.Interval()))
		h.setBeat(h.beat.Beat)
		sock := cfg.Daemon.Socket
		h.loop.AddProbe("api socket", func(ctx context.Context) error {
			if !h.serving() {
				return nil // not listening yet: the start-up itself is watched by systemd's start timeout
			}
			return probeSocket(ctx, sock)
		})
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.loop.Run(h.ctx)
		}()
		h.log.Info("health loop running", zap.Duration("interval", h.loop.Interval()),
			zap.Bool("hardware", h.hw != nil), zap.Bool("systemd", lc.Notify != nil))
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.assessOnStart()
	}()
	return nil
}

// probeSocket: the CLI must be able to reach us. A socket file removed
// behind our back (a tmpfiles clean-up, a second daemon) is a failure that
// a restart repairs.
func probeSocket(ctx context.Context, path string) error {
	if os.Getenv("LISTEN_FDS") != "" {
		return nil // systemd owns the socket file
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("API socket %s: %w", path, err)
	}
	return c.Close()
}

// assessBoot is the assessor's view of the boot selection and the record.
type assessBoot struct {
	boot    func() (bootSelection, error)
	release releaseRecord
}

func (b assessBoot) Booted() (string, error) {
	c, err := b.boot()
	if err != nil {
		return "", err
	}
	return c.Booted()
}

func (b assessBoot) Pending() (bool, error) {
	booted, err := b.Booted()
	if err != nil {
		return false, err
	}
	v, slot := b.release.pending()
	return v != "" && slot == booted, nil
}

func (b assessBoot) MarkGood(slot string) error {
	c, err := b.boot()
	if err != nil {
		return err
	}
	err = c.MarkGood(slot)
	fault.Point("commit.marked-good")
	return err
}

func (b assessBoot) MarkBad(slot string) error {
	c, err := b.boot()
	if err != nil {
		return err
	}
	return c.MarkBad(slot)
}

func (h *healthPart) assessor() *assess.Assessor {
	cfg := h.cfg()
	uptimeFile := cfg.Daemon.UptimeFile
	return &assess.Assessor{
		Options: cfg.Assessment,
		Boot:    assessBoot{boot: h.boot, release: h.release},
		Check:   health.New(cfg.Health, h.log.Named("health")).Run,
		Commit:  h.release.commit,
		Reboot:  rebootFunc(h.reboot),
		Events: func(e assess.Event) {
			h.log.Info("assessment", zap.String("event", e.Kind), zap.String("slot", e.Slot), zap.Int("round", e.Round), zap.String("reason", e.Reason))
			if e.Report != nil && !e.Report.OK {
				h.flow.note(fmt.Sprintf("assessing slot %s: round %d: %v", e.Slot, e.Round, e.Report.Err()))
			}
			switch {
			case e.Kind == assess.EventMarkedBad && h.flow.State() == api.StateAssessing:
				// The new release failed its trial: rolled back before
				// the reboot into the old slot.
				h.flow.enter(api.StateRolledBack, "release in slot "+e.Slot+" failed its assessment: "+e.Reason,
					entry{Slot: e.Slot, Kind: "assessment-failed", Error: e.Reason})
			case e.Kind == assess.EventRound || e.Kind == assess.EventStarted:
				ev := api.Event{Type: api.EventProgress, State: api.StateAssessing, Slot: e.Slot, Done: int64(e.Round), Message: e.Reason}
				if e.Report != nil && !e.Report.OK {
					ev.Message, ev.Kind = e.Report.Err().Error(), "check-failed"
				}
				h.bus.publish(ev)
			}
		},
		Uptime: func() (time.Duration, error) {
			b, err := os.ReadFile(uptimeFile)
			if err != nil {
				return 0, err
			}
			return health.ParseUptime(b)
		},
		Log:   h.log.Named("assess"),
		Clock: h.clock,
	}
}

// assessOnStart decides what this boot means for a pending release.
func (h *healthPart) assessOnStart() {
	pending, pslot := h.release.pending()
	c, err := h.boot()
	if err != nil {
		return
	}
	booted, err := c.Booted()
	if err != nil {
		h.log.Warn("boot assessment skipped: booted slot unknown", zap.Error(err))
		return
	}
	if pending != "" && booted == pslot {
		h.run(true, pending)
		return
	}
	if pending != "" {
		primary, err := c.Primary()
		if err != nil || primary == pslot {
			return // installed, waiting for the reboot
		}
		// U-Boot fell back (tries used up) or the slot was marked bad:
		// the release is rolled back.
		h.rolledBack(pslot, pending, booted)
	}
	// The booted slot is the committed one: it booted far enough to run
	// us, so it gets its tries back (rauc-mark-good.service does the same
	// each boot), or U-Boot would count it down to nothing.
	if err := c.MarkGood(booted); err != nil {
		h.log.Error("marking the booted slot good", zap.String("slot", booted), zap.Error(err))
	}
	h.run(false, "") // starts the committed target; nothing to decide
}

// run runs the assessor; for a pending release (version) the flow is in
// assessing (restore put it there) and leaves it by the outcome.
func (h *healthPart) run(pending bool, version string) {
	res, err := h.assessor().Run(h.ctx)
	if h.ctx.Err() != nil {
		return
	}
	a := &api.Assessment{Outcome: string(res.Outcome), Slot: res.Slot, Reason: res.Reason, Rounds: res.Rounds, Report: &res.Report}
	if err != nil {
		a.Error = err.Error()
	}
	h.mu.Lock()
	if pending || h.assess == nil { // keep a rollback found at start
		h.assess = a
	}
	h.mu.Unlock()
	if !pending {
		return
	}
	switch res.Outcome {
	case assess.Committed:
		h.flow.enter(api.StateCommitted, "release "+version+" committed in slot "+res.Slot,
			entry{Release: version, Slot: res.Slot})
		// MCU firmware shipped with the release fans out after the commit.
		h.released()
	case assess.CommitFailed:
		h.flow.enter(api.StateFailed, "checks passed but the commit failed: "+a.Error,
			entry{Release: version, Slot: res.Slot, Kind: "commit-failed", Error: a.Error})
	case assess.RolledBack:
		if err != nil {
			h.log.Error("rollback reboot failed; stopping the health loop so the hardware watchdog resets the board", zap.Error(err))
			h.cancel()
		}
	}
}

// rolledBack records a pending release that did not survive its trial.
func (h *healthPart) rolledBack(slot, version, booted string) {
	h.release.dropPending(slot, version)
	h.log.Error("release rolled back", zap.String("event", "rolled-back"), zap.String("release", version), zap.String("slot", slot), zap.String("booted", booted))
	h.flow.note(fmt.Sprintf("release %s in slot %s was rolled back; running slot %s", version, slot, booted))
	h.mu.Lock()
	h.assess = &api.Assessment{Outcome: string(assess.RolledBack), Slot: slot, Reason: "the boot loader fell back to slot " + booted}
	h.mu.Unlock()
}

func (h *healthPart) routes(srv *api.Server) {
	srv.Read("GET /v1/health", h.handleHealth)
	srv.Write("POST /v1/mark-good", h.handleMarkGood)
	srv.Write("POST /v1/mark-bad", h.handleMarkBad)
	srv.Write("POST /v1/rollback", h.handleRollback)
}

func (h *healthPart) handleHealth(w http.ResponseWriter, r *http.Request) {
	rep := health.New(h.cfg().Health, h.log.Named("health")).Run(r.Context())
	api.WriteJSON(w, rep)
}

func (h *healthPart) handleMarkGood(w http.ResponseWriter, r *http.Request) {
	res, err := h.assessor().MarkGood(r.Context())
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "mark-good", err.Error())
		return
	}
	h.flow.note("marked good by an operator: slot " + res.Slot)
	api.WriteJSON(w, res)
}

func (h *healthPart) handleMarkBad(w http.ResponseWriter, r *http.Request) {
	var req api.SlotRequest
	if err := decodeJSON(r, &req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
		return
	}
	res, err := h.assessor().MarkBad(r.Context(), req.Slot, req.Reboot)
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "mark-bad", err.Error())
		return
	}
	api.WriteJSON(w, res)
}

// handleRollback makes the other slot primary if it is good, then
// reboots when asked.
func (h *healthPart) handleRollback(w http.ResponseWriter, r *http.Request) {
	var req api.SlotRequest
	if err := decodeJSON(r, &req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
		return
	}
	c, err := h.boot()
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "boot", err.Error())
		return
	}
	booted, err := c.Booted()
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "boot", err.Error())
		return
	}
	slots, err := c.Status()
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "boot", err.Error())
		return
	}
	other := ""
	for _, s := range slots {
		if s.Bootname != booted && s.State == "good" {
			other = s.Bootname
		}
	}
	if other == "" {
		api.WriteError(w, http.StatusPreconditionFailed, "no-good-slot", "no other slot is good: nothing to roll back to")
		return
	}
	if err := c.SetPrimary(other, h.cfg().Boot.GoodTries); err != nil {
		api.WriteError(w, http.StatusInternalServerError, "boot", err.Error())
		return
	}
	h.flow.note("rollback: slot " + other + " boots next")
	out := api.SlotRequest{Slot: other, Reboot: req.Reboot}
	if req.Reboot {
		if err := h.reboot(r.Context(), "operator rollback to slot "+other); err != nil {
			api.WriteError(w, http.StatusInternalServerError, "reboot", err.Error())
			return
		}
	}
	api.WriteJSON(w, out)
}

func (h *healthPart) status(s *api.Status) {
	h.mu.Lock()
	s.Assessment = h.assess
	h.mu.Unlock()
	if h.loop != nil && h.loop.Interval() > 0 {
		st := h.loop.Status()
		s.Health = &api.Liveness{Healthy: st.Healthy, Problems: st.Problems, Hardware: h.hw != nil}
		if h.hw != nil {
			s.Health.Device = h.hw.Device()
			s.Health.Timeout = h.hw.Timeout().String()
		}
	}
}

func (h *healthPart) reload(cfg *config.Config) {}

func (h *healthPart) stop() {
	h.cancel()
	h.wg.Wait()
	if h.beat != nil {
		h.setBeat(nil)
	}
	if h.hw != nil {
		if err := h.hw.Close(); err != nil {
			h.log.Error("closing the hardware watchdog", zap.Error(err))
		}
	}
}
