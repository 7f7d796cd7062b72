package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/fault"
	"github.com/otagw/otagw/watchdog/assess"
	"github.com/otagw/otagw/watchdog/health"
)

// The boot assessment (the health part's second job, beside the health
// loop in health.go): on the first boot of a freshly installed slot it
// runs the assessor, which commits the release or marks the slot bad and
// reboots into the other one; and the operator's verbs on slots
// (mark-good, mark-bad, rollback).

// releaseRecord is the assessment's part of the release record.
type releaseRecord interface {
	// pending is the release installed and not yet committed, and its slot.
	pending() (version, slot string)
	// commit records the pending release in slot as committed (idempotent).
	commit(ctx context.Context, slot string) error
	// dropPending records that the release in slot did not survive its trial.
	dropPending(slot, version string)
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
	fellBack := false
	if pending != "" {
		primary, err := c.Primary()
		if err != nil || primary == pslot {
			return // installed, waiting for the reboot
		}
		// U-Boot fell back (tries used up) or the slot was marked bad:
		// the release is rolled back.
		fellBack = true
	}
	// The booted slot is the committed one: it booted far enough to run
	// us, so it gets its tries back (rauc-mark-good.service does the same
	// each boot), or U-Boot would count it down to nothing. This comes
	// before the rollback is reported, so that whoever sees the outcome
	// also sees the restored tries.
	if err := c.MarkGood(booted); err != nil {
		h.log.Error("marking the booted slot good", zap.String("slot", booted), zap.Error(err))
	}
	if fellBack {
		h.rolledBack(pslot, pending, booted)
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
	a := &api.Assessment{Outcome: string(res.Outcome), Slot: res.Slot, Reason: res.Reason, Rounds: res.Rounds, Report: res.Report.API()}
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
