// Package fanout updates a fleet of MCUs from one signed package: one
// worker per bus, buses in parallel, devices on a bus one after another.
// Per device: precondition hook, identify (product ID must match), skip if
// already current, refuse a downgrade below the recorded minimum, erase,
// write, verify, start, record. Transient failures are retried with
// backoff, resuming from the last verified block. Every device ends in one
// terminal state: Success, NotNeeded, Postponed or Failed (with a reason).
//
//	eng, err := fanout.New(opts, store, log)           // opts: downstream.Options
//	pkg, err := mcupkg.Open(path, keyring, 1)          // verified package
//	results := eng.Run(ctx, pkg, nil, func(ev fanout.Event) { ... })
//	for _, r := range results { fmt.Println(r.Device, r.State, r.Reason) }
package fanout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/spi"
	"github.com/otagw/otagw/downstream/uart"
)

// State is a device's state in a run.
type State string

// States. Running is the only non-terminal one.
const (
	Running   State = "running"
	Success   State = "success"
	NotNeeded State = "not-needed"
	Postponed State = "postponed"
	Failed    State = "failed"
)

// Refusal reasons (wrapped in Result.Err). The target and chip refusals
// come from the protocols, in the root package's words.
var (
	ErrUnverified   = errors.New("package signature not verified")
	ErrWrongTarget  = downstream.ErrWrongTarget
	ErrWrongProduct = downstream.ErrWrongProduct
	ErrUnknownChip  = downstream.ErrUnknownChip
	ErrDowngrade    = errors.New("package version is below the device's minimum")
	ErrPrecondition = errors.New("precondition not met")
	ErrNoSuchDevice = errors.New("no such device")
)

// Event reports progress. Kind is "start", "phase", "progress", "retry" or "done".
type Event struct {
	Time    time.Time `json:"time"`
	Device  string    `json:"device"`
	Bus     string    `json:"bus"`
	Kind    string    `json:"kind"`
	Phase   string    `json:"phase,omitempty"` // precondition, identify, erase, write, verify, start
	Done    int       `json:"done,omitempty"`
	Total   int       `json:"total,omitempty"`
	State   State     `json:"state,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Retries int       `json:"retries,omitempty"`
	Version string    `json:"version,omitempty"`
}

// Result is a device's terminal outcome.
type Result struct {
	Device      string        `json:"device"`
	Bus         string        `json:"bus"`
	State       State         `json:"state"`
	Reason      string        `json:"reason,omitempty"`
	Err         error         `json:"-"`
	FromVersion string        `json:"from_version,omitempty"`
	ToVersion   string        `json:"to_version"`
	Retries     int           `json:"retries"`
	Attempts    int           `json:"attempts"`
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished"`
	Bytes       int           `json:"bytes"`
	Duration    time.Duration `json:"duration"`
}

// Hardware opens buses and builds reset strategies; tests replace it.
type Hardware interface {
	OpenBus(ctx context.Context, b downstream.Bus) (link.Link, error)
	Reset(b downstream.Bus, d downstream.Device, l link.Link, o reset.Options) (reset.Strategy, error)
}

// Serial is the real Hardware: the bus's transport (uart.Open, spi.Open)
// and reset.Parse.
type Serial struct{}

// OpenBus opens the bus's transport. An SPI bus comes back as an
// spi.Link, which the STM32 protocol unwraps.
func (Serial) OpenBus(_ context.Context, b downstream.Bus) (link.Link, error) {
	switch t := b.TransportName(); t {
	case downstream.TransportSPI:
		c, err := spi.Open(b.SPIConfig())
		if err != nil {
			return nil, err
		}
		return spi.Link{Conn: c}, nil
	case downstream.TransportCAN:
		return openCAN(b)
	case downstream.TransportUART:
	default:
		return nil, fmt.Errorf("transport %q: not supported", t)
	}
	o := uart.DefaultOptions()
	if b.Baud > 0 {
		o.Baud = link.Baud(b.Baud)
	}
	if b.Parity != "" {
		o.Parity = uart.Parity(b.Parity)
	}
	return uart.Open(b.Port, o)
}

// Reset parses the device's (or else the bus's) strategy.
func (Serial) Reset(b downstream.Bus, d downstream.Device, l link.Link, o reset.Options) (reset.Strategy, error) {
	spec := d.Reset
	if spec == "" {
		spec = b.Reset
	}
	return reset.Parse(spec, l, o)
}

// Engine runs fan-outs.
type Engine struct {
	o     downstream.Options
	store Store
	log   *zap.Logger
	hw    Hardware
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// Option configures an Engine.
type Option func(*Engine)

// WithHardware replaces the serial ports and reset lines (tests, simulators).
func WithHardware(h Hardware) Option { return func(e *Engine) { e.hw = h } }

// WithClock replaces time.Now and the backoff sleep.
func WithClock(now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(e *Engine) { e.now, e.sleep = now, sleep }
}

// New returns an engine for the fleet in o. store keeps the per-device
// records (versions, minimums, outcomes); log may be nil.
func New(o downstream.Options, store Store, log *zap.Logger, opts ...Option) (*Engine, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("fanout: nil store")
	}
	if log == nil {
		log = zap.NewNop()
	}
	e := &Engine{o: o, store: store, log: log, hw: Serial{}, now: time.Now, sleep: sleepCtx}
	for _, f := range opts {
		f(e)
	}
	return e, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Targets lists the configured devices the package is meant for (same
// product ID), or the named ones.
func (e *Engine) Targets(pkg *mcupkg.Package, names []string) ([]downstream.Device, error) {
	if len(names) == 0 {
		var out []downstream.Device
		for _, d := range e.o.Devices {
			if p, err := downstream.Lookup(e.o.ProtocolOf(d)); err == nil && p.Targets(d, &pkg.Manifest) {
				out = append(out, d)
			}
		}
		return out, nil
	}
	var out []downstream.Device
	for _, n := range names {
		found := false
		for _, d := range e.o.Devices {
			if d.Name == n {
				out = append(out, d)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("device %q: %w", n, ErrNoSuchDevice)
		}
	}
	return out, nil
}

// Run updates the named devices (nil: every device the package targets)
// and returns one Result per device in configuration order. onEvent (may be
// nil) is called from the bus workers, one call at a time.
func (e *Engine) Run(ctx context.Context, pkg *mcupkg.Package, names []string, onEvent func(Event)) ([]Result, error) {
	return e.RunMany(ctx, []*mcupkg.Package{pkg}, names, onEvent)
}

// RunMany updates a mixed fleet from several packages in one run (an STM32
// and an ESP32 package, say): each device gets the first package that
// targets it, and all buses run in parallel. Without names, every device
// some package targets; a named device no package targets is refused with
// the first package.
func (e *Engine) RunMany(ctx context.Context, pkgs []*mcupkg.Package, names []string, onEvent func(Event)) ([]Result, error) {
	if len(pkgs) == 0 {
		return nil, errors.New("fanout: no package")
	}
	var devs []downstream.Device
	var dpkg []*mcupkg.Package
	seen := map[string]bool{}
	for _, pkg := range pkgs {
		ds, err := e.Targets(pkg, names)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if seen[d.Name] {
				continue
			}
			if len(names) > 0 && len(pkgs) > 1 { // a named device takes the package that targets it
				p, err := downstream.Lookup(e.o.ProtocolOf(d))
				if err != nil || !p.Targets(d, &pkg.Manifest) {
					continue
				}
			}
			seen[d.Name] = true
			devs, dpkg = append(devs, d), append(dpkg, pkg)
		}
	}
	for _, n := range names { // named, but no package targets it: refused with the first
		if !seen[n] {
			seen[n] = true
			for _, d := range e.o.Devices {
				if d.Name == n {
					devs, dpkg = append(devs, d), append(dpkg, pkgs[0])
				}
			}
		}
	}
	// configuration order
	order := map[string]int{}
	for i, d := range e.o.Devices {
		order[d.Name] = i
	}
	idx := make([]int, len(devs))
	for i := range idx {
		idx[i] = i
	}
	if len(pkgs) > 1 { // one package keeps Targets' order (the names as given)
		sort.SliceStable(idx, func(a, b int) bool { return order[devs[idx[a]].Name] < order[devs[idx[b]].Name] })
	}
	sd, sp := make([]downstream.Device, len(devs)), make([]*mcupkg.Package, len(devs))
	for i, j := range idx {
		sd[i], sp[i] = devs[j], dpkg[j]
	}
	devs, dpkg = sd, sp
	var emu sync.Mutex
	emit := func(ev Event) {
		if onEvent == nil {
			return
		}
		if ev.Time.IsZero() {
			ev.Time = e.now()
		}
		emu.Lock()
		defer emu.Unlock()
		onEvent(ev)
	}
	byBus := map[string][]int{}
	var busOrder []string
	for i, d := range devs {
		if _, ok := byBus[d.Bus]; !ok {
			busOrder = append(busOrder, d.Bus)
		}
		byBus[d.Bus] = append(byBus[d.Bus], i)
	}
	results := make([]Result, len(devs))
	var wg sync.WaitGroup
	for _, bn := range busOrder {
		bus, _ := e.o.BusByName(bn)
		idx := byBus[bn]
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.runBus(ctx, bus, dpkg, devs, idx, results, emit)
		}()
	}
	wg.Wait()
	return results, nil
}

func (e *Engine) runBus(ctx context.Context, bus downstream.Bus, pkgs []*mcupkg.Package, devs []downstream.Device, idx []int, results []Result, emit func(Event)) {
	var l link.Link
	var openErr error
	opened := false
	open := func() (link.Link, error) { // the bus is opened for the first device that needs it
		if !opened {
			opened = true
			b := bus
			if b.Parity == "" { // what the bus's first device's protocol wants
				if p, err := downstream.Lookup(e.o.ProtocolOf(devs[idx[0]])); err == nil {
					b.Parity = p.Parity()
				}
			}
			if l, openErr = e.hw.OpenBus(ctx, b); openErr != nil {
				openErr = fmt.Errorf("bus %s (%s): %w", bus.Name, bus.Port, openErr)
			}
		}
		return l, openErr
	}
	for _, i := range idx {
		w := &worker{e: e, bus: bus, dev: devs[i], pkg: pkgs[i], emit: emit}
		results[i] = w.run(ctx, open)
	}
	if c, ok := l.(io.Closer); ok {
		c.Close()
	}
}

type worker struct {
	e     *Engine
	proto downstream.Protocol
	bus   downstream.Bus
	dev   downstream.Device
	pkg   *mcupkg.Package
	emit  func(Event)
	rec   Record
	res   Result
}

func (w *worker) ev(kind string) Event {
	return Event{Device: w.dev.Name, Bus: w.bus.Name, Kind: kind}
}

// offline checks what can be refused without touching the device.
func (w *worker) offline() error {
	m := w.pkg.Manifest
	if !w.pkg.Verified() {
		return ErrUnverified
	}
	p, err := downstream.Lookup(w.e.o.ProtocolOf(w.dev))
	if err != nil {
		return err
	}
	w.proto = p
	if err := p.Check(w.dev, w.pkg); err != nil {
		return err
	}
	if len(m.Target.HWRevs) > 0 {
		ok := false
		for _, r := range m.Target.HWRevs {
			ok = ok || r == w.dev.HWRev
		}
		if !ok {
			return fmt.Errorf("%w: package for hardware revisions %v, device is %q", ErrWrongTarget, m.Target.HWRevs, w.dev.HWRev)
		}
	}
	pv, _ := mcupkg.ParseVersion(m.Version)
	if min, ok := w.minimum(); ok && pv.Compare(min) < 0 {
		return fmt.Errorf("%w: package %s, minimum %s", ErrDowngrade, pv, min)
	}
	return nil
}

// minimum is the larger of the configured and the recorded minimum.
func (w *worker) minimum() (mcupkg.Version, bool) {
	var min mcupkg.Version
	have := false
	for _, s := range []string{w.dev.MinVersion, w.rec.MinVersion} {
		if v, err := mcupkg.ParseVersion(s); s != "" && err == nil && (!have || v.Compare(min) > 0) {
			min, have = v, true
		}
	}
	return min, have
}

func (w *worker) precondition(ctx context.Context) error {
	if w.dev.Precondition == "" {
		return nil
	}
	w.emit(Event{Device: w.dev.Name, Bus: w.bus.Name, Kind: "phase", Phase: "precondition"})
	if t := w.e.o.PreconditionTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", w.dev.Precondition)
	cmd.Env = append(os.Environ(), "OTAGW_DEVICE="+w.dev.Name, "OTAGW_VERSION="+w.pkg.Manifest.Version)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return fmt.Errorf("%w: %q: %v: %s", ErrPrecondition, w.dev.Precondition, err, msg)
}

func (w *worker) finish(st State, err error) Result {
	r := &w.res
	r.State, r.Err, r.Finished = st, err, w.e.now()
	if err != nil {
		r.Reason = err.Error()
	}
	r.Duration = r.Finished.Sub(r.Started)
	w.rec.State, w.rec.Reason, w.rec.FinishedAt = st, r.Reason, r.Finished
	w.rec.Retries, w.rec.Attempts = r.Retries, r.Attempts
	if serr := w.e.store.Save(w.rec); serr != nil && r.Err == nil {
		r.State, r.Err, r.Reason = Failed, serr, "record result: "+serr.Error()
	}
	w.e.log.Info("mcu update finished", zap.String("device", w.dev.Name), zap.String("state", string(r.State)), zap.String("reason", r.Reason), zap.Int("retries", r.Retries))
	ev := w.ev("done")
	ev.State, ev.Reason, ev.Retries, ev.Version = r.State, r.Reason, r.Retries, w.rec.Version
	w.emit(ev)
	return *r
}

func (w *worker) run(ctx context.Context, open func() (link.Link, error)) Result {
	m := w.pkg.Manifest
	w.res = Result{Device: w.dev.Name, Bus: w.bus.Name, ToVersion: m.Version, Started: w.e.now(), Bytes: m.ImageSize}
	rec, _, err := w.e.store.Load(w.dev.Name)
	if err != nil {
		return w.finish(Failed, fmt.Errorf("load record: %w", err))
	}
	w.rec = rec
	w.rec.Device, w.rec.Bus, w.rec.TargetVersion, w.rec.StartedAt = w.dev.Name, w.bus.Name, m.Version, w.res.Started
	w.rec.FinishedAt, w.rec.BytesVerified = time.Time{}, 0
	w.res.FromVersion = rec.Version
	w.emit(w.ev("start"))
	if err := w.offline(); err != nil {
		return w.finish(Failed, err)
	}
	if err := w.precondition(ctx); err != nil {
		if errors.Is(err, ErrPrecondition) {
			return w.finish(Postponed, err)
		}
		return w.finish(Failed, err)
	}
	// Without a version header on the device the recorded version is all
	// there is: a device that took this very version successfully is
	// current, and is not disturbed (its application is running).
	if w.dev.VersionHeader == 0 && rec.State == Success && rec.Version != "" {
		rv, err1 := mcupkg.ParseVersion(rec.Version)
		pv, err2 := mcupkg.ParseVersion(m.Version)
		if err1 == nil && err2 == nil && rv.Compare(pv) == 0 {
			return w.finish(NotNeeded, nil)
		}
	}
	l, err := open()
	if err != nil {
		return w.finish(Failed, err)
	}
	w.rec.State = Running
	w.e.store.Save(w.rec)
	rs, err := w.e.hw.Reset(w.bus, w.dev, l, w.e.o.Reset)
	if err != nil {
		return w.finish(Failed, fmt.Errorf("reset strategy: %w", err))
	}
	sess := w.proto.Open(l, rs, w.bus, w.dev, w.pkg, w.e.o)
	identified := false
	backoff := w.e.o.Backoff
	var last error
	for attempt := 1; attempt <= w.e.o.Attempts; attempt++ {
		w.res.Attempts = attempt
		if attempt > 1 {
			ev := w.ev("retry")
			ev.Reason, ev.Retries = last.Error(), w.res.Retries
			w.emit(ev)
			if err := w.e.sleep(ctx, backoff); err != nil {
				return w.finish(Failed, err)
			}
			backoff = min(2*backoff, w.e.o.MaxBackoff)
		}
		st, err := w.attempt(ctx, sess, &identified)
		w.res.Retries = attempt - 1 + sess.Retries()
		w.rec.BytesVerified = sess.Verified()
		if err == nil || st != "" {
			return w.finish(st, err)
		}
		if downstream.IsFatal(err) {
			return w.finish(Failed, err)
		}
		if ctx.Err() != nil {
			return w.finish(Failed, ctx.Err())
		}
		last = err
		w.e.log.Debug("mcu attempt failed", zap.String("device", w.dev.Name), zap.Int("attempt", attempt), zap.Error(err))
	}
	return w.finish(Failed, fmt.Errorf("after %d attempts: %w", w.res.Attempts, last))
}

// attempt does one pass; a non-empty State is terminal, otherwise err is
// worth another attempt unless downstream.IsFatal says otherwise.
func (w *worker) attempt(ctx context.Context, sess downstream.Session, identified *bool) (State, error) {
	m := w.pkg.Manifest
	phase := func(p string) {
		ev := w.ev("phase")
		ev.Phase = p
		w.emit(ev)
	}
	phase("identify")
	id, err := sess.Identify(ctx)
	if err != nil {
		return "", err
	}
	if !*identified {
		*identified = true
		// the running version: from the device when it tells, else the record
		cur, src := w.rec.Version, "recorded"
		if id.FromDevice {
			cur, src = id.Version, id.Source
		}
		w.res.FromVersion = cur
		w.e.log.Info("mcu identified", zap.String("device", w.dev.Name), zap.String("chip", id.Chip), zap.String("version", cur), zap.String("source", src))
		pv, _ := mcupkg.ParseVersion(m.Version)
		if cv, err := mcupkg.ParseVersion(cur); cur != "" && err == nil {
			w.rec.Version = cv.String()
			if cv.Compare(pv) == 0 {
				sess.Start(ctx)
				return NotNeeded, nil
			}
		}
	}
	last := ""
	err = sess.Flash(ctx, func(p downstream.Progress) {
		if p.Phase != last {
			phase(p.Phase)
			last = p.Phase
		}
		if p.Total == 0 {
			return
		}
		ev := w.ev("progress")
		ev.Phase, ev.Done, ev.Total = p.Phase, p.Done, p.Total
		w.emit(ev)
	})
	if err != nil {
		if downstream.IsFatal(err) {
			return Failed, err
		}
		return "", err
	}
	// Verified: record the version before starting, so that a failure to
	// start does not hide what is in flash.
	w.rec.Version = m.Version
	if v, err := mcupkg.ParseVersion(m.Version); err == nil {
		w.rec.Version = v.String()
	}
	phase("start")
	if err := sess.Start(ctx); err != nil {
		return Failed, fmt.Errorf("flashed and verified, but start failed: %w", err)
	}
	return Success, nil
}
