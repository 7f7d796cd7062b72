package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/window"
)

// windows is what the other parts ask of the maintenance windows.
type windows interface {
	// allowed says whether work of kind (window.Install, window.Flash)
	// may start now; force is the operator's --now.
	allowed(kind string, force bool) error
	// whenAllowed runs fn now and returns the zero time, or schedules it
	// at the start of the next window and returns that start and the
	// window's name; the error says it could do neither.
	whenAllowed(kind, what string, fn func()) (time.Time, string, error)
	// scheduleReboot arranges the reboot into version when the policy
	// says maintenance.reboot: window.
	scheduleReboot(version string)
}

// maintenancePart keeps risky work inside the maintenance windows: it
// refuses installs and MCU flashing outside them when the config says so
// (an operator may override with --now), and reboots into a newly
// installed release at the next window when maintenance.reboot is window.
// The reboot is a gocron one-time job.
type maintenancePart struct {
	log   *zap.Logger
	cfg   func() *config.Config
	clock clockwork.Clock // the windows' time and the scheduler's
	// reboot reboots (rebooter.Reboot: through the flow).
	reboot func(ctx context.Context, reason string) error
	// waiting names the release waiting for its reboot, if any.
	waiting func() (version string, ok bool)

	sched gocron.Scheduler

	mu       sync.Mutex
	plan     *window.Plan
	rebootAt time.Time
	job      gocron.Job
	// work is what whenAllowed put off to a window, by its description.
	work map[string]*waitingWork
}

// waitingWork is work put off to the start of a window.
type waitingWork struct {
	kind   string
	fn     func()
	job    gocron.Job
	at     time.Time
	window string
}

func (m *maintenancePart) start(ctx context.Context) error {
	s, err := gocron.NewScheduler(gocron.WithClock(m.clock))
	if err != nil {
		return fmt.Errorf("maintenance scheduler: %w", err)
	}
	m.sched = s
	s.Start()
	m.reload(m.cfg())
	return nil
}

func (m *maintenancePart) reload(cfg *config.Config) {
	p, err := window.New(cfg.Maintenance)
	if err != nil { // validated with the config; cannot happen
		m.log.Error("maintenance windows", zap.Error(err))
		return
	}
	m.mu.Lock()
	m.plan = p
	// Work waiting for a window is planned again on the new windows (it
	// runs now when the new config allows it).
	work := m.work
	m.work = nil
	for _, ww := range work {
		m.sched.RemoveJob(ww.job.ID())
	}
	m.mu.Unlock()
	for what, ww := range work {
		m.whenAllowed(ww.kind, what, ww.fn)
	}
	// A release waiting for its reboot gets it scheduled (again).
	if v, ok := m.waiting(); ok {
		m.scheduleReboot(v)
	} else {
		m.cancelReboot()
	}
}

// allowed says whether work of kind may start now; force is the
// operator's --now.
func (m *maintenancePart) allowed(kind string, force bool) error {
	m.mu.Lock()
	p := m.plan
	m.mu.Unlock()
	if force || p == nil {
		return nil
	}
	return p.Allowed(kind, m.clock.Now())
}

// scheduleReboot arranges the reboot into version at the next window,
// when the policy asks for it.
func (m *maintenancePart) scheduleReboot(version string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.plan == nil || m.plan.Options().Reboot != window.InWindow {
		return
	}
	m.cancelRebootLocked()
	at, w := m.plan.Next(m.clock.Now())
	if at.IsZero() {
		return
	}
	start := gocron.OneTimeJobStartImmediately()
	if at.After(m.clock.Now()) {
		start = gocron.OneTimeJobStartDateTime(at)
	}
	job, err := m.sched.NewJob(gocron.OneTimeJob(start), gocron.NewTask(func() {
		m.mu.Lock()
		m.rebootAt, m.job = time.Time{}, nil
		m.mu.Unlock()
		reason := fmt.Sprintf("maintenance window %q: rebooting into release %s", w.Name, version)
		if err := m.reboot(context.Background(), reason); err != nil {
			m.log.Error("maintenance reboot failed", zap.Error(err)) // the flow is back in installed
		}
	}))
	if err != nil {
		m.log.Error("scheduling the maintenance reboot", zap.Error(err))
		return
	}
	m.rebootAt, m.job = at, job
	m.log.Info("reboot into the new release scheduled", zap.String("window", w.Name), zap.Time("at", at), zap.String("version", version))
}

// whenAllowed runs fn now when work of kind may start (and returns the
// zero time), else schedules it at the start of the next window (a gocron
// one-time job on the daemon's clock) and returns that start and the
// window's name. what names the work: the same work asked again replaces
// the earlier request, and a reload plans it again on the new windows. A
// job that cannot be scheduled because the clock reached the window
// meanwhile runs now.
func (m *maintenancePart) whenAllowed(kind, what string, fn func()) (time.Time, string, error) {
	m.mu.Lock()
	if ww := m.work[what]; ww != nil {
		m.sched.RemoveJob(ww.job.ID())
		delete(m.work, what)
	}
	m.mu.Unlock()
	if m.allowed(kind, false) == nil {
		fn()
		return time.Time{}, "", nil
	}
	m.mu.Lock()
	at, w := m.plan.Next(m.clock.Now())
	ww := &waitingWork{kind: kind, fn: fn, at: at, window: w.Name}
	job, err := m.sched.NewJob(gocron.OneTimeJob(gocron.OneTimeJobStartDateTime(at)), gocron.NewTask(func() {
		m.mu.Lock()
		if m.work[what] != ww { // replaced or planned again meanwhile
			m.mu.Unlock()
			return
		}
		delete(m.work, what)
		m.mu.Unlock()
		fn()
	}))
	if err == nil {
		ww.job = job
		if m.work == nil {
			m.work = map[string]*waitingWork{}
		}
		m.work[what] = ww
	}
	m.mu.Unlock()
	if err != nil {
		if m.allowed(kind, false) == nil {
			fn()
			return time.Time{}, "", nil
		}
		m.log.Error("scheduling "+what, zap.String("window", w.Name), zap.Time("at", at), zap.Error(err))
		return time.Time{}, "", fmt.Errorf("scheduling %s for maintenance window %q at %s: %w", what, w.Name, at.Format(time.RFC3339), err)
	}
	m.log.Info(what+" waits for the maintenance window", zap.String("window", w.Name), zap.Time("at", at))
	return at, w.Name, nil
}

func (m *maintenancePart) cancelReboot() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cancelRebootLocked()
}

func (m *maintenancePart) cancelRebootLocked() {
	if m.job != nil {
		m.sched.RemoveJob(m.job.ID())
	}
	m.rebootAt, m.job = time.Time{}, nil
}

func (m *maintenancePart) routes(srv *api.Server) {}

func (m *maintenancePart) status(s *api.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.plan == nil || len(m.plan.Options().Windows) == 0 {
		return
	}
	now := m.clock.Now()
	open, w := m.plan.Open(now)
	next, nw := m.plan.Next(now)
	mt := &api.Maintenance{Open: open, Install: m.plan.Options().Install, Flash: m.plan.Options().Flash, Reboot: m.plan.Options().Reboot,
		Download: m.plan.Options().Download}
	if open {
		mt.Window = w.Name
	} else {
		mt.Window, mt.NextStart = nw.Name, next
	}
	if !m.rebootAt.IsZero() {
		at := m.rebootAt
		mt.RebootAt = &at
	}
	for _, ww := range m.work {
		if ww.kind == window.Flash && (mt.FlashAt == nil || ww.at.Before(*mt.FlashAt)) {
			at := ww.at
			mt.FlashAt = &at
		}
	}
	s.Maintenance = mt
}

func (m *maintenancePart) stop() {
	if m.sched != nil {
		m.sched.Shutdown()
	}
}
