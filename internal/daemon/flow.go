package daemon

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
)

// The update flow, in one place. Every state the daemon reports is one of
// the api.State* names; it moves between them only along this table, and
// only through flow.enter, which persists the state with the release
// record, logs it (zap field event=<state>), sends systemd STATUS= and
// publishes one api.Event of type state. A move the table does not have is
// an error, never a silent overwrite.
//
//	starting ─▶ idle | installing | installed | assessing | committed | rolled-back | flashing | failed   (restore)
//	idle ─▶ downloading ─▶ installing ─▶ installed ─▶ rebooting ┄(reboot)┄▶ starting ─▶ assessing
//	assessing ─▶ committed ─▶ flashing (MCU firmware of the release) ─▶ committed | idle
//	assessing ─▶ rolled-back ─▶ rebooting ┄(reboot)┄▶ starting ─▶ rolled-back
//	downloading | installing ─▶ failed (reason, error kind, attempt)    downloading ─▶ idle (refused, nothing written)
//	idle | installed | committed | rolled-back ─▶ downloading (channel MCU packages) ─▶ the same
var transitions = map[string][]string{
	api.StateStarting: {api.StateIdle, api.StateInstalling, api.StateInstalled, api.StateAssessing,
		api.StateCommitted, api.StateRolledBack, api.StateFlashing, api.StateFailed},
	api.StateIdle: {api.StateDownloading, api.StateFlashing, api.StateRebooting},
	// downloading → installed | committed | rolled-back (and idle): a
	// channel download (MCU packages) ends and the flow goes back to the
	// resting state it left; → idle is also an install refused before
	// anything was written.
	api.StateDownloading: {api.StateInstalling, api.StateIdle, api.StateInstalled, api.StateCommitted,
		api.StateRolledBack, api.StateFailed},
	// installing → installing: an automatic retry of an interrupted
	// install; → downloading: the retry reads the bundle head again;
	// → idle: cancelled, or interrupted with no way to resume (the slot
	// stays not bootable).
	api.StateInstalling: {api.StateInstalling, api.StateDownloading, api.StateInstalled, api.StateIdle, api.StateFailed},
	// installed → downloading: a newer bundle replaces the pending one.
	api.StateInstalled: {api.StateDownloading, api.StateRebooting, api.StateFlashing},
	// The reboot ends the process; a reboot that failed returns.
	api.StateRebooting:  {api.StateIdle, api.StateInstalled, api.StateFailed},
	api.StateAssessing:  {api.StateCommitted, api.StateRolledBack, api.StateFailed, api.StateRebooting},
	api.StateCommitted:  {api.StateDownloading, api.StateFlashing, api.StateRebooting},
	api.StateRolledBack: {api.StateDownloading, api.StateFlashing, api.StateRebooting},
	// A fan-out returns to the resting state it started from.
	api.StateFlashing: {api.StateIdle, api.StateInstalled, api.StateCommitted, api.StateRolledBack, api.StateFailed},
	api.StateFailed:   {api.StateDownloading, api.StateFlashing, api.StateRebooting},
}

// states lists every state of the table, in a fixed order.
var states = []string{api.StateStarting, api.StateIdle, api.StateDownloading, api.StateInstalling, api.StateInstalled,
	api.StateRebooting, api.StateAssessing, api.StateCommitted, api.StateRolledBack, api.StateFlashing, api.StateFailed}

// legal reports whether the table has from → to.
func legal(from, to string) bool { return slices.Contains(transitions[from], to) }

// resting states are those a fan-out started from and returns to.
func resting(s string) bool {
	switch s {
	case api.StateIdle, api.StateInstalled, api.StateCommitted, api.StateRolledBack, api.StateFailed:
		return true
	}
	return false
}

// TransitionError is a move the table does not have.
type TransitionError struct{ From, To string }

func (e *TransitionError) Error() string {
	return fmt.Sprintf("update flow: no transition from %s to %s", e.From, e.To)
}

// failure is why the flow is in the failed state; it is persisted with
// the state, so a restart reports the same failure.
type failure struct {
	Reason  string `json:"reason"`
	Kind    string `json:"kind,omitempty"`
	Attempt int    `json:"attempt"` // failures of this step in a row
}

// entry is one state entry's details; State and Message are set by enter.
type entry = api.Event

// flow is the state machine. Its collaborators are functions, so a test
// drives it with an injected clock and a memory "disk".
type flow struct {
	now     func() time.Time
	log     *zap.Logger
	notify  func(string)
	persist func(state string, f *failure) error // saves the release record with the new state
	bus     *bus

	mu      sync.Mutex
	state   string
	message string
	fail    *failure
	since   time.Time
}

func newFlow(now func() time.Time, log *zap.Logger, notify func(string), persist func(string, *failure) error, b *bus) *flow {
	return &flow{now: now, log: log, notify: notify, persist: persist, bus: b, state: api.StateStarting, since: now()}
}

// restoreFailure puts back the failure the record holds (at load).
func (f *flow) restoreFailure(fl *failure) {
	f.mu.Lock()
	f.fail = fl
	f.mu.Unlock()
}

// current returns the state, its message and the failure (nil unless failed).
func (f *flow) current() (string, string, *failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fl *failure
	if f.fail != nil && f.state == api.StateFailed {
		c := *f.fail
		fl = &c
	}
	return f.state, f.message, fl
}

// State returns the current state.
func (f *flow) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// enter moves the flow to state to, explained by detail; e adds what the
// event names (release, slot, source, kind, error). Entering failed
// counts the attempt: failures in a row until the next installed or
// committed. The state is changed in memory even when persisting fails
// (the error is returned): the daemon must not report what it no longer does.
func (f *flow) enter(to, detail string, e entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := f.state
	if !legal(from, to) {
		err := &TransitionError{From: from, To: to}
		f.log.Error("illegal state transition refused", zap.String("event", "illegal-transition"),
			zap.String("state", from), zap.String("to", to), zap.String("why", detail))
		return err
	}
	var fl *failure
	switch to {
	case api.StateFailed:
		if from == api.StateStarting && f.fail != nil {
			// Restored after a restart: the same failure, not one more.
			c := *f.fail
			fl = &c
			e.Kind, e.Error, e.Attempt = c.Kind, c.Reason, c.Attempt
			break
		}
		prev := 0
		if f.fail != nil {
			prev = f.fail.Attempt
		}
		reason := detail
		if e.Error != "" {
			reason = e.Error
		}
		fl = &failure{Reason: reason, Kind: e.Kind, Attempt: prev + 1}
		e.Attempt = fl.Attempt
		if e.Error == "" {
			e.Error = reason
		}
	case api.StateInstalled, api.StateCommitted:
		fl = nil // success: the count starts again
	default:
		fl = f.fail // kept for the attempt count
	}
	f.state, f.message, f.fail, f.since = to, detail, fl, f.now()
	err := f.persist(to, fl)
	fields := []zap.Field{zap.String("event", to), zap.String("state", to), zap.String("from", from), zap.String("why", detail)}
	if e.Release != "" {
		fields = append(fields, zap.String("release", e.Release))
	}
	if e.Slot != "" {
		fields = append(fields, zap.String("slot", e.Slot))
	}
	if e.Kind != "" {
		fields = append(fields, zap.String("kind", e.Kind), zap.Int("attempt", e.Attempt))
	}
	if to == api.StateFailed {
		f.log.Error("state", fields...)
	} else {
		f.log.Info("state", fields...)
	}
	if err != nil {
		f.log.Error("persisting the state failed", zap.String("state", to), zap.Error(err))
	}
	f.notify("STATUS=" + to + ": " + detail)
	e.Type, e.State, e.From, e.Message = api.EventState, to, from, detail
	e.Time = f.since
	f.bus.publish(e)
	if err != nil {
		return fmt.Errorf("state %s: %w", to, err)
	}
	return nil
}

// note changes the explanation of the current state without moving it
// (a retry's countdown, an operator's verb, a rejected reload).
func (f *flow) note(detail string) {
	f.mu.Lock()
	s := f.state
	f.message = detail
	f.mu.Unlock()
	f.notify("STATUS=" + s + ": " + detail)
}

// subscribe registers a subscriber and returns it together with a state
// event of the current state, taken atomically with the registration: no
// transition falls between the two.
func (f *flow) subscribe(size int, keep func(api.Event) bool) (*subscriber, api.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, seq := f.bus.subscribe(size, keep)
	ev := api.Event{Seq: seq, Time: f.since, Type: api.EventState, State: f.state, Message: f.message}
	if f.state == api.StateFailed && f.fail != nil {
		ev.Kind, ev.Error, ev.Attempt = f.fail.Kind, f.fail.Reason, f.fail.Attempt
	}
	return s, ev
}

// bootFacts is what the boot environment says at start.
type bootFacts struct {
	Known   bool   // the booted and primary slots could be read
	Booted  string // bootname of the running slot
	Primary string // bootname of the slot that boots next
}

// restore decides the state to enter from starting, from the state the
// record was left in (by a stop, a crash or a power cut) and the boot
// facts. An install that was running is the install part's to decide
// (resume, or not bootable): restore says installing and the install part
// moves on from there.
//
//	installing / downloading, record active    → installing (resume or give up)
//	pending release, booted in its slot        → assessing
//	pending release, its slot boots next       → installed
//	pending release, neither (U-Boot fell back) → rolled-back
//	flashing with release firmware left        → flashing (resume the fan-out)
//	failed                                     → failed
//	committed, rolled-back                     → the same
//	anything else                              → idle
func restore(last string, r *persisted, boot bootFacts) string {
	if r.Install.Active {
		return api.StateInstalling
	}
	if r.Pending != "" && boot.Known {
		switch {
		case boot.Booted == r.PendingSlot:
			return api.StateAssessing
		case boot.Primary == r.PendingSlot:
			return api.StateInstalled
		default:
			return api.StateRolledBack
		}
	}
	if r.Pending != "" && r.PendingSwitched {
		return api.StateInstalled // boot environment unreadable: what the record says
	}
	switch last {
	case api.StateFlashing:
		if len(r.MCUPayloads) > 0 {
			return api.StateFlashing
		}
	case api.StateFailed, api.StateCommitted, api.StateRolledBack:
		return last
	}
	return api.StateIdle
}
