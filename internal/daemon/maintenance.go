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
	// whenAllowed runs fn now, or at the start of the next window.
	whenAllowed(kind, what string, fn func())
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
	m.mu.Unlock()
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

// whenAllowed runs fn now when work of kind may start, else at the start
// of the next window (a gocron one-time job).
func (m *maintenancePart) whenAllowed(kind, what string, fn func()) {
	if m.allowed(kind, false) == nil {
		fn()
		return
	}
	m.mu.Lock()
	at, w := m.plan.Next(m.clock.Now())
	m.mu.Unlock()
	if _, err := m.sched.NewJob(gocron.OneTimeJob(gocron.OneTimeJobStartDateTime(at)), gocron.NewTask(fn)); err != nil {
		m.log.Error("scheduling "+what, zap.Error(err))
		return
	}
	m.log.Info(what+" waits for the maintenance window", zap.String("window", w.Name), zap.Time("at", at))
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
	s.Maintenance = mt
}

func (m *maintenancePart) stop() {
	if m.sched != nil {
		m.sched.Shutdown()
	}
}
