package watchdog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"
)

// ErrUnhealthy is wrapped by Status.Err when a probe failed or a heartbeat
// went stale.
var ErrUnhealthy = errors.New("unhealthy")

// Petter is what the loop pets: *Hardware.
type Petter interface {
	KeepAlive() error
}

// LoopConfig wires a Loop. Everything is optional except at least one of
// Hardware or Notify (a loop with neither has nothing to pet).
type LoopConfig struct {
	// Hardware is the hardware watchdog; nil when it is disabled.
	Hardware Petter
	// HardwareInterval is how often to pet it: Hardware.PetInterval().
	HardwareInterval time.Duration
	// Notify sends an sd_notify state; the daemon passes
	// func(s string) error { _, err := daemon.SdNotify(false, s); return err }.
	Notify func(state string) error
	// NotifyInterval is how often to send WATCHDOG=1: half of WATCHDOG_USEC
	// (go-systemd's daemon.SdWatchdogEnabled), 0 when systemd did not ask.
	NotifyInterval time.Duration
	// ProbeTimeout bounds each probe; 0 means one tick interval.
	ProbeTimeout time.Duration
	// OnChange is called from the loop when health changes (log, event).
	OnChange func(Status)
	Clock    clockwork.Clock // nil: the real clock
	Log      *zap.Logger     // nil: no logging
}

// Status is the loop's view after its latest tick.
type Status struct {
	Healthy  bool      `json:"healthy"`
	Problems []string  `json:"problems,omitempty"`
	Ticks    uint64    `json:"ticks"`
	LastPet  time.Time `json:"last_pet,omitzero"`
	LastTick time.Time `json:"last_tick,omitzero"`
	// PetErr is the last error of petting the hardware or notifying systemd.
	PetErr string `json:"pet_error,omitempty"`
}

// Err is nil when healthy, else an error wrapping ErrUnhealthy naming the
// problems.
func (s Status) Err() error {
	if s.Healthy {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrUnhealthy, s.Problems)
}

// Loop is the daemon's single health loop: on every tick it runs the probes
// and checks the heartbeats, and only when all are fine it pets the hardware
// watchdog and sends WATCHDOG=1. If the loop itself stalls (a probe that
// ignores its context, a deadlock) nothing is petted either.
type Loop struct {
	cfg      LoopConfig
	clock    clockwork.Clock
	log      *zap.Logger
	interval time.Duration

	mu     sync.Mutex
	probes map[string]probe
	beats  map[string]*Heartbeat
	status Status
	nextID int
}

type probe struct {
	id int
	fn func(ctx context.Context) error
}

// NewLoop makes a loop; Run starts it.
func NewLoop(cfg LoopConfig) *Loop {
	if hw, ok := cfg.Hardware.(*Hardware); ok && hw == nil {
		cfg.Hardware = nil // a disabled watchdog passed as a typed nil
	}
	l := &Loop{cfg: cfg, clock: cfg.Clock, log: cfg.Log, probes: map[string]probe{}, beats: map[string]*Heartbeat{}}
	if l.clock == nil {
		l.clock = clockwork.NewRealClock()
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	for _, d := range []time.Duration{cfg.HardwareInterval, cfg.NotifyInterval} {
		if d > 0 && (l.interval == 0 || d < l.interval) {
			l.interval = d
		}
	}
	l.status.Healthy = true
	return l
}

// Interval is the tick period: the shorter of the hardware and systemd
// intervals.
func (l *Loop) Interval() time.Duration { return l.interval }

// AddProbe adds a liveness probe run on every tick; it must return within
// its context. The returned func removes it (assessment adds its own probe
// for its duration). Adding a name twice replaces the first.
func (l *Loop) AddProbe(name string, fn func(ctx context.Context) error) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	id := l.nextID
	l.probes[name] = probe{id: id, fn: fn}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if p, ok := l.probes[name]; ok && p.id == id {
			delete(l.probes, name)
		}
	}
}

// Heartbeat registers a goroutine that must call Beat at least every maxAge;
// a stale heartbeat makes the loop unhealthy. It counts as fresh from now.
func (l *Loop) Heartbeat(name string, maxAge time.Duration) *Heartbeat {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := &Heartbeat{name: name, maxAge: maxAge, clock: l.clock, last: l.clock.Now(), loop: l}
	l.beats[name] = h
	return h
}

// Heartbeat is one goroutine's proof of life.
type Heartbeat struct {
	name   string
	maxAge time.Duration
	clock  clockwork.Clock
	loop   *Loop

	mu   sync.Mutex
	last time.Time
}

// Beat records that the goroutine is alive.
func (h *Heartbeat) Beat() {
	h.mu.Lock()
	h.last = h.clock.Now()
	h.mu.Unlock()
}

// Stop unregisters the heartbeat.
func (h *Heartbeat) Stop() {
	h.loop.mu.Lock()
	defer h.loop.mu.Unlock()
	if h.loop.beats[h.name] == h {
		delete(h.loop.beats, h.name)
	}
}

func (h *Heartbeat) age(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Sub(h.last)
}

// Status is the result of the latest tick.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.Problems = append([]string(nil), s.Problems...)
	return s
}

// Run ticks until ctx ends. It pets once right away, then every Interval.
// It returns ctx.Err(), or an error when there is nothing to pet.
func (l *Loop) Run(ctx context.Context) error {
	if l.interval <= 0 || (l.cfg.Hardware == nil && l.cfg.Notify == nil) {
		return errors.New("watchdog loop: nothing to pet (no hardware watchdog and no systemd watchdog interval)")
	}
	t := l.clock.NewTicker(l.interval)
	defer t.Stop()
	l.Tick(ctx)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.Chan():
			l.Tick(ctx)
		}
	}
}

// Tick runs the probes, checks the heartbeats and, when all are fine, pets
// the hardware and notifies systemd. Run calls it; it is exported so the
// daemon can tick at once after a state change.
func (l *Loop) Tick(ctx context.Context) Status {
	if ctx.Err() != nil {
		return l.Status() // stopping: neither pet nor count it as a failure
	}
	l.mu.Lock()
	names := make([]string, 0, len(l.probes))
	probes := make(map[string]probe, len(l.probes))
	for n, p := range l.probes {
		names = append(names, n)
		probes[n] = p
	}
	beats := make([]*Heartbeat, 0, len(l.beats))
	for _, h := range l.beats {
		beats = append(beats, h)
	}
	l.mu.Unlock()
	sort.Strings(names)

	var problems []string
	timeout := l.cfg.ProbeTimeout
	if timeout <= 0 {
		timeout = l.interval
	}
	for _, n := range names {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := probes[n].fn(pctx)
		cancel()
		if err != nil {
			problems = append(problems, fmt.Sprintf("probe %s: %v", n, err))
		}
	}
	now := l.clock.Now()
	for _, h := range beats {
		if age := h.age(now); age > h.maxAge {
			problems = append(problems, fmt.Sprintf("heartbeat %s: last beat %v ago (limit %v)", h.name, age.Round(time.Millisecond), h.maxAge))
		}
	}
	sort.Strings(problems)
	healthy := len(problems) == 0

	var petErr error
	if healthy {
		if l.cfg.Hardware != nil {
			if err := l.cfg.Hardware.KeepAlive(); err != nil {
				petErr = err
			}
		}
		if l.cfg.Notify != nil && l.cfg.NotifyInterval > 0 {
			if err := l.cfg.Notify("WATCHDOG=1"); err != nil && petErr == nil {
				petErr = fmt.Errorf("sd_notify WATCHDOG=1: %w", err)
			}
		}
	}

	l.mu.Lock()
	changed := l.status.Healthy != healthy
	l.status.Healthy = healthy
	l.status.Problems = problems
	l.status.Ticks++
	l.status.LastTick = now
	if healthy && petErr == nil {
		l.status.LastPet = now
	}
	l.status.PetErr = ""
	if petErr != nil {
		l.status.PetErr = petErr.Error()
	}
	s := l.status
	l.mu.Unlock()

	if changed {
		if healthy {
			l.log.Info("watchdog loop healthy again, petting resumed")
		} else {
			l.log.Warn("watchdog loop unhealthy, petting stopped", zap.Strings("problems", problems))
		}
		if l.cfg.OnChange != nil {
			l.cfg.OnChange(s)
		}
	}
	if petErr != nil {
		l.log.Warn("watchdog pet failed", zap.Error(petErr))
	}
	return s
}
