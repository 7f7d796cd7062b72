package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/fault"
	"github.com/otagw/otagw/internal/window"
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
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hw   *watchdog.Hardware
	loop *watchdog.Loop
	beat *watchdog.Heartbeat

	mu     sync.Mutex
	assess *api.Assessment
}

func (h *healthPart) start(ctx context.Context, d *Daemon) error {
	h.d = d
	h.ctx, h.cancel = context.WithCancel(context.Background())
	cfg := d.config()
	if cfg.Watchdog.Enabled {
		hw, err := watchdog.Open(cfg.Watchdog)
		switch {
		case err == nil:
			h.hw = hw
			bs := hw.BootStatus()
			d.log.Info("hardware watchdog armed", zap.String("device", hw.Device()), zap.Duration("timeout", hw.Timeout()),
				zap.Bool("last_boot_was_watchdog_reset", bs.WatchdogReset()), zap.Strings("boot_status", bs.Reasons()))
			if bs.WatchdogReset() {
				d.warn("the last boot was a hardware watchdog reset")
			}
		case errors.Is(err, watchdog.ErrNotSupported):
			d.log.Warn("no hardware watchdog; only the systemd watchdog is fed", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
		default:
			d.log.Error("hardware watchdog unavailable", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
			d.warn("hardware watchdog unavailable: " + err.Error())
		}
	}
	usec, _ := sddaemon.SdWatchdogEnabled(false)
	lc := watchdog.LoopConfig{
		Notify:         d.opts.Notify,
		NotifyInterval: usec / 2,
		Log:            d.log.Named("watchdog"),
		OnChange: func(s watchdog.Status) {
			if s.Healthy {
				d.log.Info("healthy again: feeding the watchdogs")
			} else {
				d.log.Error("unhealthy: not feeding the watchdogs", zap.Strings("problems", s.Problems))
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
		d.beat = h.beat.Beat
		sock := cfg.Daemon.Socket
		h.loop.AddProbe("api socket", func(ctx context.Context) error {
			if !d.serving.Load() {
				return nil // not listening yet: the start-up itself is watched by systemd's start timeout
			}
			return probeSocket(ctx, sock)
		})
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.loop.Run(h.ctx)
		}()
		d.log.Info("health loop running", zap.Duration("interval", h.loop.Interval()),
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

// boot adapts the boot part for the assessor.
type assessBoot struct{ d *Daemon }

func (b assessBoot) Booted() (string, error) {
	c, err := b.d.bootPart().chooser()
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
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	return b.d.st.Pending != "" && b.d.st.PendingSlot == booted, nil
}

func (b assessBoot) MarkGood(slot string) error {
	c, err := b.d.bootPart().chooser()
	if err != nil {
		return err
	}
	err = c.MarkGood(slot)
	fault.Point("commit.marked-good")
	return err
}

func (b assessBoot) MarkBad(slot string) error {
	c, err := b.d.bootPart().chooser()
	if err != nil {
		return err
	}
	return c.MarkBad(slot)
}

// commit records a release that passed its assessment: the stored minimum
// version and security counter rise to it, so older releases are refused
// from now on. Idempotent. The state is written first, then the floor and
// the end of the trial go to the boot environment in one write; a cut
// between the two is repaired by reconcile at the next start.
func (d *Daemon) commit(ctx context.Context, slot string) error {
	c, err := d.bootPart().chooser()
	if err != nil {
		return err
	}
	d.mu.Lock()
	if d.st.Pending == "" || d.st.PendingSlot != slot {
		d.mu.Unlock()
		return nil // already committed
	}
	v := d.st.Pending
	if higher(v, d.st.MinVersion) {
		d.st.MinVersion = v
	}
	if d.st.PendingCounter > d.st.SecurityCounter {
		d.st.SecurityCounter = d.st.PendingCounter
	}
	d.st.Seq++
	d.st.Committed, d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = v, "", "", 0
	d.st.PendingSeq, d.st.PendingSwitched = 0, false
	notes := d.anchorNotesLocked()
	notes[noteTrial] = ""
	min := d.st.MinVersion
	err = d.saveLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	fault.Point("commit.saved")
	if err := c.SetNotes(notes); err != nil {
		// The release is committed; reconcile copies the floor at the next start.
		d.log.Error("writing the floor to the boot environment", zap.Error(err))
	}
	fault.Point("commit.noted")
	d.log.Info("release committed", zap.String("version", v), zap.String("slot", slot), zap.String("min_version", min))
	return nil
}

// rebooter runs daemon.reboot_command when configured (development, the
// demo and tests), else reboots through systemd or reboot(2).
type rebooter struct{ d *Daemon }

func (r rebooter) Reboot(ctx context.Context, reason string) error {
	cfg := r.d.config()
	r.d.setState("rebooting", reason)
	if len(cfg.Daemon.RebootCommand) == 0 {
		return assess.NewRebooter(r.d.log).Reboot(ctx, reason)
	}
	r.d.log.Warn("rebooting with daemon.reboot_command", zap.Strings("command", cfg.Daemon.RebootCommand), zap.String("reason", reason))
	cmd := exec.CommandContext(ctx, cfg.Daemon.RebootCommand[0], cfg.Daemon.RebootCommand[1:]...)
	cmd.Env = append(os.Environ(), "OTAGW_REBOOT_REASON="+reason)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("reboot command %v: %w: %s", cfg.Daemon.RebootCommand, err, out)
	}
	return nil
}

func (h *healthPart) assessor() *assess.Assessor {
	cfg := h.d.config()
	d := h.d
	uptimeFile := cfg.Daemon.UptimeFile
	return &assess.Assessor{
		Options: cfg.Assessment,
		Boot:    assessBoot{d},
		Check:   health.New(cfg.Health, d.log.Named("health")).Run,
		Commit:  d.commit,
		Reboot:  rebooter{d},
		Events: func(e assess.Event) {
			d.log.Info("assessment", zap.String("event", e.Kind), zap.String("slot", e.Slot), zap.Int("round", e.Round), zap.String("reason", e.Reason))
			if e.Report != nil && !e.Report.OK {
				d.setMessage(fmt.Sprintf("assessing slot %s: round %d: %v", e.Slot, e.Round, e.Report.Err()))
			}
		},
		Uptime: func() (time.Duration, error) {
			b, err := os.ReadFile(uptimeFile)
			if err != nil {
				return 0, err
			}
			return health.ParseUptime(b)
		},
		Log: d.log.Named("assess"),
	}
}

// assessOnStart decides what this boot means for a pending release.
func (h *healthPart) assessOnStart() {
	d := h.d
	d.mu.Lock()
	pending, pslot := d.st.Pending, d.st.PendingSlot
	d.mu.Unlock()
	c, err := d.bootPart().chooser()
	if err != nil {
		return
	}
	booted, err := c.Booted()
	if err != nil {
		d.log.Warn("boot assessment skipped: booted slot unknown", zap.Error(err))
		return
	}
	if pending != "" && booted == pslot {
		h.run(true)
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
		d.log.Error("marking the booted slot good", zap.String("slot", booted), zap.Error(err))
	}
	h.run(false) // starts the committed target; nothing to decide
}

func (h *healthPart) run(pending bool) {
	d := h.d
	if pending {
		d.setState("assessing", "checking the new release before committing it")
	}
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
	switch res.Outcome {
	case assess.Committed:
		d.setState("idle", "release committed in slot "+res.Slot)
		// MCU firmware shipped with the release fans out after the commit.
		if m := d.mcuPart(); m != nil {
			d.maintenancePart().whenAllowed(window.Flash, "MCU firmware of the release", func() {
				m.wg.Add(1)
				go func() {
					defer m.wg.Done()
					m.flashPayloads()
				}()
			})
		}
	case assess.CommitFailed:
		d.setState("idle", "checks passed but the commit failed: "+a.Error)
	case assess.RolledBack:
		if err != nil {
			d.log.Error("rollback reboot failed; stopping the health loop so the hardware watchdog resets the board", zap.Error(err))
			h.cancel()
		}
	}
}

// rolledBack records a pending release that did not survive its trial.
func (h *healthPart) rolledBack(slot, version, booted string) {
	d := h.d
	d.mu.Lock()
	d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = "", "", 0
	d.saveLocked()
	d.mu.Unlock()
	var rec installRecord
	d.loadPart(installPartName, &rec)
	if rec.NotBootable == nil {
		rec.NotBootable = map[string]string{}
	}
	rec.NotBootable[slot] = "release " + version + " rolled back"
	delete(rec.Installed, slot)
	d.savePart(installPartName, &rec)
	d.log.Error("release rolled back", zap.String("version", version), zap.String("slot", slot), zap.String("booted", booted))
	d.setState("idle", fmt.Sprintf("release %s in slot %s was rolled back; running slot %s", version, slot, booted))
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
	rep := health.New(h.d.config().Health, h.d.log.Named("health")).Run(r.Context())
	api.WriteJSON(w, rep)
}

func (h *healthPart) handleMarkGood(w http.ResponseWriter, r *http.Request) {
	res, err := h.assessor().MarkGood(r.Context())
	if err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "mark-good", err.Error())
		return
	}
	h.d.setState("idle", "marked good by an operator: slot "+res.Slot)
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
	c, err := h.d.bootPart().chooser()
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
	if err := c.SetPrimary(other, h.d.config().Boot.GoodTries); err != nil {
		api.WriteError(w, http.StatusInternalServerError, "boot", err.Error())
		return
	}
	h.d.setState("idle", "rollback: slot "+other+" boots next")
	out := api.SlotRequest{Slot: other, Reboot: req.Reboot}
	if req.Reboot {
		if err := (rebooter{h.d}).Reboot(r.Context(), "operator rollback to slot "+other); err != nil {
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
			s.Health.WatchdogReset = h.hw.BootStatus().WatchdogReset()
			s.Health.BootStatus = h.hw.BootStatus().Reasons()
		}
	}
}

func (h *healthPart) reload(cfg *config.Config) {}

func (h *healthPart) stop() {
	h.cancel()
	h.wg.Wait()
	if h.beat != nil {
		h.d.beat = nil
	}
	if h.hw != nil {
		if err := h.hw.Close(); err != nil {
			h.d.log.Error("closing the hardware watchdog", zap.Error(err))
		}
	}
}
