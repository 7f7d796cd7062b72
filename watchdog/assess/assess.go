// Package assess decides, on the first boot of a freshly installed slot,
// whether the new system is good: it runs the health checks until all
// required ones pass or the deadline (counted from kernel boot) passes,
// then commits (mark good, then the daemon's commit) or marks the slot bad
// and reboots into the other one. It knows nothing of abboot or rootfs:
// the daemon passes small interfaces.
//
//	a := &assess.Assessor{
//		Options: opts,                      // YAML `assessment:`
//		Boot:    bootAdapter,               // Booted, Pending, MarkGood, MarkBad
//		Check:   checker.Run,               // health.Checker
//		Commit:  func(ctx context.Context, slot string) error { ... }, // min version, security counter, release record
//		Reboot:  assess.NewRebooter(),      // systemd over D-Bus, else reboot(2)
//		Events:  func(e assess.Event) { ... },
//	}
//	res, err := a.Run(ctx)                  // NotPending, Committed, RolledBack or CommitFailed
//
// Order on success: MarkGood first (the boot loader stops counting tries:
// availability), then Commit. A commit error does not roll back a system
// that passed its checks: Run retries Commit, then returns CommitFailed and
// an error wrapping ErrCommit, and the daemon keeps retrying (Commit must be
// idempotent). Order on failure: MarkBad, event, Reboot; a MarkBad error
// does not stop the reboot (the try counter then does the fallback).
package assess

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/otagw/otagw/watchdog/health"
	"github.com/otagw/otagw/watchdog/internal/systemd"
)

// Sentinel errors.
var (
	ErrMarkGood       = errors.New("mark good failed")
	ErrCommit         = errors.New("commit failed")
	ErrMarkBad        = errors.New("mark bad failed")
	ErrReboot         = errors.New("reboot failed")
	ErrBoot           = errors.New("boot state unreadable")
	ErrInvalidOptions = errors.New("invalid assessment options")
)

// Boot is the boot loader as assessment needs it (the daemon adapts
// abboot). Slots are names ("A", "B").
type Boot interface {
	// Booted is the slot running now.
	Booted() (string, error)
	// Pending reports whether the booted slot is freshly installed and
	// still on trial (tries pending, not yet marked good).
	Pending() (bool, error)
	MarkGood(slot string) error
	MarkBad(slot string) error
}

// Committer records the commit after MarkGood: the new minimum version and
// security counter, the committed release. It must be idempotent.
type Committer func(ctx context.Context, slot string) error

// Checker runs the health checks: (*health.Checker).Run.
type Checker func(ctx context.Context) health.Report

// Rebooter reboots the machine; NewRebooter gives the real one.
type Rebooter interface {
	Reboot(ctx context.Context, reason string) error
}

// UnitStarter starts a systemd unit (the commit target).
type UnitStarter interface {
	StartUnit(ctx context.Context, unit string) error
}

// Options are the YAML `assessment:` key.
type Options struct {
	// Deadline is how long after kernel boot the required checks may take
	// to pass (default 5m). Counting from boot, not from the daemon's
	// start, means a daemon that keeps crashing during assessment still
	// reaches the deadline and rolls back.
	Deadline time.Duration `yaml:"deadline"`
	// RetryInterval is the pause between check rounds (default 10s).
	RetryInterval time.Duration `yaml:"retry_interval"`
	// FailFast marks the slot bad on the first round where a required check
	// fails instead of retrying until the deadline.
	FailFast bool `yaml:"fail_fast"`
	// CommitAttempts bounds Commit retries after MarkGood (default 3).
	CommitAttempts int `yaml:"commit_attempts"`
	// CommittedUnit is started after a commit, for units ordered after it
	// (default otagw-committed.target; "" for none).
	CommittedUnit string `yaml:"committed_unit"`
}

// DefaultOptions: 5 minute deadline, a round every 10 s, retry until the
// deadline, start otagw-committed.target after the commit.
func DefaultOptions() Options {
	return Options{
		Deadline:       5 * time.Minute,
		RetryInterval:  10 * time.Second,
		CommitAttempts: 3,
		CommittedUnit:  "otagw-committed.target",
	}
}

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.Deadline <= 0:
		return fmt.Errorf("%w: assessment.deadline %v must be positive", ErrInvalidOptions, o.Deadline)
	case o.RetryInterval <= 0 || o.RetryInterval > o.Deadline:
		return fmt.Errorf("%w: assessment.retry_interval %v must be positive and not longer than the deadline %v", ErrInvalidOptions, o.RetryInterval, o.Deadline)
	case o.CommitAttempts < 1:
		return fmt.Errorf("%w: assessment.commit_attempts %d must be at least 1", ErrInvalidOptions, o.CommitAttempts)
	}
	return nil
}

// Outcome of an assessment.
type Outcome string

const (
	NotPending   Outcome = "not-pending"   // nothing to assess: the booted slot is committed
	Committed    Outcome = "committed"     // checks passed, marked good, committed
	RolledBack   Outcome = "rolled-back"   // marked bad, reboot requested
	CommitFailed Outcome = "commit-failed" // checks passed but mark good or commit failed; no rollback
)

// Event kinds.
const (
	EventStarted   = "assessment-started"
	EventRound     = "assessment-round"
	EventCommitted = "assessment-committed"
	EventCommitErr = "assessment-commit-failed"
	EventMarkedBad = "assessment-marked-bad"
	EventReboot    = "assessment-reboot"
	EventUnitErr   = "assessment-committed-unit-failed"
)

// Event is what the assessor reports while it works.
type Event struct {
	Kind   string         `json:"kind"`
	Slot   string         `json:"slot"`
	Time   time.Time      `json:"time"`
	Round  int            `json:"round,omitempty"`
	Reason string         `json:"reason,omitempty"`
	Report *health.Report `json:"report,omitempty"`
}

// Result is what Run decided.
type Result struct {
	Outcome Outcome       `json:"outcome"`
	Slot    string        `json:"slot"`
	Reason  string        `json:"reason,omitempty"`
	Rounds  int           `json:"rounds"`
	Report  health.Report `json:"report"`
}

// Assessor runs one assessment. Boot, Check and (for a real rollback)
// Reboot are required; the rest may be nil.
type Assessor struct {
	Options Options
	Boot    Boot
	Check   Checker
	Commit  Committer
	Reboot  Rebooter
	// Units starts Options.CommittedUnit; nil: systemd when it runs.
	Units  UnitStarter
	Events func(Event)
	// Uptime is the time since kernel boot; nil reads /proc/uptime.
	Uptime func() (time.Duration, error)
	Clock  clockwork.Clock
	Log    *zap.Logger
}

func (a *Assessor) clock() clockwork.Clock {
	if a.Clock == nil {
		a.Clock = clockwork.NewRealClock()
	}
	return a.Clock
}

func (a *Assessor) log() *zap.Logger {
	if a.Log == nil {
		a.Log = zap.NewNop()
	}
	return a.Log
}

func (a *Assessor) emit(e Event) {
	e.Time = a.clock().Now()
	if a.Events != nil {
		a.Events(e)
	}
}

func (a *Assessor) uptime() (time.Duration, error) {
	if a.Uptime != nil {
		return a.Uptime()
	}
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	return health.ParseUptime(b)
}

// Run assesses the booted slot if it is pending. It blocks until the
// outcome is reached; on RolledBack it has already asked for the reboot.
func (a *Assessor) Run(ctx context.Context) (Result, error) {
	if err := a.Options.Validate(); err != nil {
		return Result{}, err
	}
	slot, err := a.Boot.Booted()
	if err != nil {
		return Result{}, fmt.Errorf("assessment: booted slot: %w: %w", ErrBoot, err)
	}
	res := Result{Slot: slot}
	pending, err := a.Boot.Pending()
	if err != nil {
		return res, fmt.Errorf("assessment: slot %s pending: %w: %w", slot, ErrBoot, err)
	}
	if !pending {
		// Committed before: units ordered after the commit may run.
		res.Outcome = NotPending
		a.startCommittedUnit(ctx, slot)
		return res, nil
	}

	remaining := a.Options.Deadline
	if up, err := a.uptime(); err == nil {
		remaining -= up
	} else {
		a.log().Warn("assessment: no uptime, counting the deadline from now", zap.Error(err))
	}
	lastChance := false
	if remaining <= 0 {
		// The deadline passed before this start (the daemon was down or
		// crashing): one round, no retries.
		lastChance = true
		remaining = a.Options.RetryInterval
	}
	a.emit(Event{Kind: EventStarted, Slot: slot, Reason: fmt.Sprintf("deadline in %v", remaining.Round(time.Second))})
	a.log().Info("assessing new slot", zap.String("slot", slot), zap.Duration("remaining", remaining))

	// Decisions use the clock's Now, not the deadline context's timer, so
	// that they do not race with it; the context only bounds the checks.
	end := a.clock().Now().Add(remaining)
	dctx, cancel := deadlineOn(ctx, a.clock(), end)
	defer cancel()
	var reason string
	for {
		res.Rounds++
		rep := a.Check(dctx)
		res.Report = rep
		a.emit(Event{Kind: EventRound, Slot: slot, Round: res.Rounds, Report: &rep})
		if ctx.Err() != nil {
			return res, ctx.Err() // the daemon is stopping: decide nothing
		}
		if rep.OK {
			return a.commit(ctx, res)
		}
		if a.Options.FailFast {
			reason = fmt.Sprintf("required check failed in round %d: %v", res.Rounds, rep.Err())
			break
		}
		if lastChance {
			reason = fmt.Sprintf("assessment deadline (%v after boot) had passed when the daemon started; last round: %v",
				a.Options.Deadline, errOrDeadline(rep))
			break
		}
		left := end.Sub(a.clock().Now())
		if left > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-a.clock().After(min(left, a.Options.RetryInterval)):
			}
		}
		if !a.clock().Now().Before(end) {
			reason = fmt.Sprintf("assessment deadline (%v after boot) passed after %d rounds; last round: %v",
				a.Options.Deadline, res.Rounds, errOrDeadline(rep))
			break
		}
	}
	return a.rollback(ctx, res, reason)
}

// deadlineOn bounds ctx by end as told by clock. clockwork.WithDeadline
// knows the real and the fake clock; any other clock (the e2e tests' file
// clock, whose time is not the real time) would have its deadline measured
// in real time, so there a timer of that clock cancels the context.
func deadlineOn(ctx context.Context, clock clockwork.Clock, end time.Time) (context.Context, context.CancelFunc) {
	if _, fake := clock.(*clockwork.FakeClock); fake || clock == clockwork.NewRealClock() {
		return clockwork.WithDeadline(ctx, clock, end)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	t := clock.AfterFunc(clock.Until(end), func() { cancel(context.DeadlineExceeded) })
	return cctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

func errOrDeadline(rep health.Report) string {
	if err := rep.Err(); err != nil {
		return err.Error()
	}
	return "checks still running at the deadline"
}

func (a *Assessor) commit(ctx context.Context, res Result) (Result, error) {
	slot := res.Slot
	if err := a.Boot.MarkGood(slot); err != nil {
		res.Outcome = CommitFailed
		res.Reason = fmt.Sprintf("mark slot %s good: %v", slot, err)
		a.emit(Event{Kind: EventCommitErr, Slot: slot, Reason: res.Reason})
		return res, fmt.Errorf("assessment: slot %s: %w: %w", slot, ErrMarkGood, err)
	}
	if a.Commit != nil {
		var err error
		for i := 1; i <= a.Options.CommitAttempts; i++ {
			if err = a.Commit(ctx, slot); err == nil {
				break
			}
			a.log().Warn("commit failed", zap.String("slot", slot), zap.Int("attempt", i), zap.Error(err))
			if i < a.Options.CommitAttempts {
				select {
				case <-ctx.Done():
					return res, ctx.Err()
				case <-a.clock().After(a.Options.RetryInterval):
				}
			}
		}
		if err != nil {
			res.Outcome = CommitFailed
			res.Reason = fmt.Sprintf("slot %s is marked good but the commit failed %d times: %v", slot, a.Options.CommitAttempts, err)
			a.emit(Event{Kind: EventCommitErr, Slot: slot, Reason: res.Reason})
			return res, fmt.Errorf("assessment: slot %s: %w: %w", slot, ErrCommit, err)
		}
	}
	res.Outcome = Committed
	res.Reason = fmt.Sprintf("all required checks passed in round %d", res.Rounds)
	a.emit(Event{Kind: EventCommitted, Slot: slot, Round: res.Rounds, Reason: res.Reason})
	a.log().Info("slot committed", zap.String("slot", slot), zap.Int("rounds", res.Rounds))
	a.startCommittedUnit(ctx, slot)
	return res, nil
}

// startCommittedUnit starts Options.CommittedUnit; a failure is an event
// and a log line, never a reason to roll back.
func (a *Assessor) startCommittedUnit(ctx context.Context, slot string) {
	unit := a.Options.CommittedUnit
	if unit == "" {
		return
	}
	units := a.Units
	if units == nil && systemd.Booted() {
		units = systemd.DBus{}
	}
	if units == nil {
		return
	}
	if err := units.StartUnit(ctx, unit); err != nil {
		a.emit(Event{Kind: EventUnitErr, Slot: slot, Reason: err.Error()})
		a.log().Warn("start committed unit", zap.String("unit", unit), zap.Error(err))
	}
}

func (a *Assessor) rollback(ctx context.Context, res Result, reason string) (Result, error) {
	slot := res.Slot
	res.Outcome = RolledBack
	res.Reason = reason
	var errs []error
	if err := a.Boot.MarkBad(slot); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrMarkBad, err))
		reason += fmt.Sprintf(" (mark bad failed: %v; the try counter falls back)", err)
	}
	a.emit(Event{Kind: EventMarkedBad, Slot: slot, Round: res.Rounds, Reason: reason, Report: &res.Report})
	a.log().Warn("slot marked bad", zap.String("slot", slot), zap.String("reason", reason))
	a.emit(Event{Kind: EventReboot, Slot: slot, Reason: "rolling back: " + res.Reason})
	if a.Reboot == nil {
		errs = append(errs, fmt.Errorf("%w: no rebooter", ErrReboot))
	} else if err := a.Reboot.Reboot(ctx, "otagw: slot "+slot+" failed its assessment"); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrReboot, err))
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("assessment: slot %s: %w", slot, errors.Join(errs...))
	}
	return res, nil
}

// MarkGood is `otagw mark-good`: commit the booted slot now, without checks.
func (a *Assessor) MarkGood(ctx context.Context) (Result, error) {
	slot, err := a.Boot.Booted()
	if err != nil {
		return Result{}, fmt.Errorf("mark good: booted slot: %w: %w", ErrBoot, err)
	}
	if a.Options.CommitAttempts < 1 {
		a.Options.CommitAttempts = 1
	}
	return a.commit(ctx, Result{Slot: slot, Rounds: 0})
}

// MarkBad is `otagw mark-bad [SLOT]`: mark slot (the booted one when "")
// bad, and reboot when asked to and it is the booted one.
func (a *Assessor) MarkBad(ctx context.Context, slot string, reboot bool) (Result, error) {
	booted, err := a.Boot.Booted()
	if err != nil {
		return Result{}, fmt.Errorf("mark bad: booted slot: %w: %w", ErrBoot, err)
	}
	if slot == "" {
		slot = booted
	}
	if !reboot || slot != booted {
		if err := a.Boot.MarkBad(slot); err != nil {
			return Result{Slot: slot}, fmt.Errorf("mark bad: slot %s: %w: %w", slot, ErrMarkBad, err)
		}
		a.emit(Event{Kind: EventMarkedBad, Slot: slot, Reason: "marked bad by request"})
		return Result{Outcome: RolledBack, Slot: slot, Reason: "marked bad by request"}, nil
	}
	return a.rollback(ctx, Result{Slot: slot}, "marked bad by request")
}
