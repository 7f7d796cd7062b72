package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/window"
)

// mcuPart fans signed firmware out to the microcontrollers in the config:
// buses in parallel, one device at a time per bus. Per-device records
// (version, minimum, last result) live in the release record (persisted.MCU).
// A fan-out is the flow's flashing state, entered from a resting state and
// left back to it; each device's phases and outcome are device events.
type mcuPart struct {
	log     *zap.Logger
	cfg     func() *config.Config
	flow    *flow
	bus     *bus
	windows windows
	rec     fleetRecord

	// ctx ends the fan-outs at stop; made with the part (newParts), since
	// the health part's commit may start one before this part's start.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running bool
	// releasing: the fan-out of the release's firmware is scheduled for
	// a window or running; afterCommit does not start a second one.
	releasing bool
}

// fleetRecord is the fan-out's part of the release record: each device's
// record (fanout.Store), the release firmware still to fan out, and the
// committed release.
type fleetRecord interface {
	fanout.Store
	all() map[string]fanout.Record
	payloads() []string
	payloadDone(path string) error
	committed() string
}

func (m *mcuPart) start(ctx context.Context) error {
	switch m.flow.State() {
	case api.StateFlashing:
		// The daemon stopped in the fan-out of a release's firmware: it
		// runs again (devices already done answer not-needed).
		m.mu.Lock()
		m.releasing = true
		m.mu.Unlock()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.flashPayloads()
		}()
	case api.StateCommitted:
		// The committed release's firmware was waiting for a flash
		// window when the daemon stopped: it waits for the next one
		// again (or runs now, when one is open).
		m.afterCommit()
	}
	return nil
}

// afterCommit fans out the committed release's MCU firmware, now or at
// the next flash window; while it waits, the state's message says when.
func (m *mcuPart) afterCommit() {
	if len(m.rec.payloads()) == 0 {
		return
	}
	m.mu.Lock()
	if m.releasing {
		m.mu.Unlock()
		return
	}
	m.releasing = true
	m.mu.Unlock()
	const what = "MCU firmware of the release"
	at, w, err := m.windows.whenAllowed(window.Flash, what, func() {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.flashPayloads()
		}()
	})
	if err != nil {
		m.mu.Lock()
		m.releasing = false
		m.mu.Unlock()
		return
	}
	if !at.IsZero() {
		m.flow.note(fmt.Sprintf("%s waits for maintenance window %q at %s", what, w, at.Format(time.RFC3339)))
	}
}

// mcuView is the MCU flash stream's view of the bus.
func mcuView(ev api.Event) bool {
	return ev.State == api.StateFlashing || ev.Type == api.EventLagged
}

// deviceEvent is a fan-out event in the one event shape.
func deviceEvent(e fanout.Event) api.Event {
	ev := api.Event{Type: api.EventDevice, State: api.StateFlashing, Time: e.Time, Device: e.Device, Bus: e.Bus,
		Phase: e.Phase, Retries: e.Retries, Message: e.Reason, Release: e.Version}
	switch e.Kind {
	case "start":
		ev.Message = "started"
	case "progress":
		ev.Type, ev.Done, ev.Total = api.EventProgress, int64(e.Done), int64(e.Total)
	case "retry":
		ev.Message = fmt.Sprintf("retry %d: %s", e.Retries, e.Reason)
	case "done":
		ev.Result = string(e.State)
		if e.State == fanout.Failed {
			ev.Kind, ev.Error = "device-failed", e.Reason
		}
	}
	return ev
}

func deviceResults(res []fanout.Result) []api.DeviceResult {
	out := make([]api.DeviceResult, 0, len(res))
	for _, r := range res {
		out = append(out, api.DeviceResult{Device: r.Device, Bus: r.Bus, Result: string(r.State), From: r.FromVersion,
			Version: r.ToVersion, Reason: r.Reason, Retries: r.Retries})
	}
	return out
}

func (m *mcuPart) routes(srv *api.Server) {
	srv.Read("GET /v1/mcu", m.handleList)
	srv.Write("POST /v1/mcu/flash", m.handleFlash)
}

func (m *mcuPart) handleList(w http.ResponseWriter, r *http.Request) {
	var s api.Status
	m.status(&s)
	api.WriteJSON(w, s.MCUs)
}

// pkgOpener reads and verifies one MCU package.
type pkgOpener func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error)

// flash runs one fan-out of the packages opens read and verify; each
// device takes the first package that targets it. Its events, and a done
// (with every device's result) or an error event at the end, go to the bus.
func (m *mcuPart) flash(ctx context.Context, opens []pkgOpener, devices []string) ([]fanout.Result, error) {
	res, err := m.flashOnce(ctx, opens, devices)
	if err != nil {
		m.bus.publish(api.Event{Type: api.EventError, State: api.StateFlashing, Kind: mcuKind(err), Error: err.Error()})
	}
	return res, err
}

func mcuKind(err error) string {
	if errors.Is(err, api.ErrBusy) {
		return "busy"
	}
	return "mcu-flash-failed"
}

func (m *mcuPart) flashOnce(ctx context.Context, opens []pkgOpener, devices []string) ([]fanout.Result, error) {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: a fan-out is running", api.ErrBusy)
	}
	m.running = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()
	cfg := m.cfg()
	kr, err := sign.LoadKeyring(cfg.Update.Keyring)
	if err != nil {
		return nil, fmt.Errorf("update.keyring: %w", err)
	}
	var pkgs []*mcupkg.Package
	for _, open := range opens {
		p, err := open(kr, cfg.Update.Threshold)
		if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
	pkg := pkgs[0]
	for _, w := range cfg.Downstream.Warnings() {
		m.log.Warn("deprecated configuration", zap.String("warning", w))
	}
	eng, err := fanout.New(cfg.Downstream, m.rec, m.log.Named("downstream"))
	if err != nil {
		return nil, err
	}
	prev := m.flow.State()
	if prev == api.StateStarting || prev == api.StateFailed {
		// Back to idle, not failed: re-entering failed would count one
		// more failure of a step that did not run again.
		prev = api.StateIdle
	}
	if prev != api.StateFlashing { // flashing: a fan-out resumed at start
		if err := m.flow.enter(api.StateFlashing, fmt.Sprintf("MCU firmware %s %s", pkg.Manifest.Target.Family, pkg.Manifest.Version),
			entry{Release: pkg.Manifest.Version}); err != nil {
			return nil, fmt.Errorf("%w: %v", api.ErrBusy, err)
		}
	} else {
		prev = api.StateIdle
		if m.rec.committed() != "" {
			prev = api.StateCommitted
		}
	}
	res, err := eng.RunMany(ctx, pkgs, devices, func(e fanout.Event) { m.bus.publish(deviceEvent(e)) })
	counts := map[fanout.State]int{}
	for _, r := range res {
		counts[r.State]++
		if r.State == fanout.Failed {
			m.log.Error("MCU update failed", zap.String("device", r.Device), zap.String("reason", r.Reason))
		}
	}
	summary := fmt.Sprintf("MCU fan-out of %s: %d success, %d not needed, %d postponed, %d failed",
		pkg.Manifest.Version, counts[fanout.Success], counts[fanout.NotNeeded], counts[fanout.Postponed], counts[fanout.Failed])
	if err == nil {
		m.bus.publish(api.Event{Type: api.EventDone, State: api.StateFlashing, Release: pkg.Manifest.Version,
			Message: summary, Devices: deviceResults(res)})
	}
	m.flow.enter(prev, summary, entry{Release: pkg.Manifest.Version})
	return res, err
}

func (m *mcuPart) handleFlash(w http.ResponseWriter, r *http.Request) {
	var req api.MCUFlashRequest
	if err := decodeJSON(r, &req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
		return
	}
	if req.Package == "" || (!req.All && len(req.Devices) == 0) {
		api.WriteError(w, http.StatusBadRequest, "bad-request", "name the devices or all, and the package")
		return
	}
	// The package arrives as a descriptor the client opened with its own
	// credentials: the daemon opens no path a caller names.
	name, ok := api.IsFDSource(req.Package)
	if !ok {
		api.WriteError(w, http.StatusBadRequest, "bad-request",
			"the daemon opens no paths a caller names; let otagw mcu flash open the package and pass it")
		return
	}
	var opens []pkgOpener
	for i, src := range append([]string{req.Package}, req.More...) {
		if i > 0 {
			if name, ok = api.IsFDSource(src); !ok {
				api.WriteError(w, http.StatusBadRequest, "bad-request", "more_packages: pass each package as a descriptor")
				return
			}
		}
		f, err := api.PassedFile(r)
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("package %s: %v", name, err))
			return
		}
		defer f.Close()
		name := name
		opens = append(opens, func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error) {
			p, err := mcupkg.Read(f)
			if err == nil {
				err = p.Verify(kr, threshold)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return p, nil
		})
	}
	if err := m.windows.allowed(window.Flash, req.Now); err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "outside-maintenance-window", err.Error())
		return
	}
	// The answer is the fan-out's view of the bus; the fan-out runs
	// beside it (and stops if the client goes away).
	sub, _ := m.bus.subscribe(RequestBuffer, mcuView)
	defer m.bus.unsubscribe(sub)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.flash(r.Context(), opens, req.Devices)
	}()
	follow(api.NewStreamWriter(w), r, sub)
	<-done
}

// flashPayloads fans out the MCU packages a committed bundle carried, as
// the install returned them (persisted.MCUPayloads); each leaves the
// record once its fan-out ran.
func (m *mcuPart) flashPayloads() {
	defer func() {
		m.mu.Lock()
		m.releasing = false
		m.mu.Unlock()
	}()
	for _, f := range m.rec.payloads() {
		if m.ctx.Err() != nil {
			return // stopping: the rest runs at the next start
		}
		m.log.Info("fanning out MCU firmware from the committed release", zap.String("package", f))
		open := func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error) { return mcupkg.Open(f, kr, threshold) }
		if _, err := m.flash(m.ctx, []pkgOpener{open}, nil); err != nil {
			m.log.Error("MCU fan-out", zap.String("package", f), zap.Error(err))
			if m.ctx.Err() != nil || errors.Is(err, api.ErrBusy) {
				// Stopping, or an operator's fan-out holds the buses:
				// the package stays for the next start or commit.
				return
			}
		}
		if err := m.rec.payloadDone(f); err != nil {
			m.log.Error("MCU fan-out: recording the end", zap.String("package", f), zap.Error(err))
		}
		os.Remove(f)
	}
}

func (m *mcuPart) status(s *api.Status) {
	cfg := m.cfg()
	recs := m.rec.all()
	for _, dev := range cfg.Downstream.Devices {
		st := api.MCUStatus{Name: dev.Name, Bus: dev.Bus}
		if r, ok := recs[dev.Name]; ok {
			st.Version, st.Result, st.Reason, st.At = r.Version, string(r.State), r.Reason, r.FinishedAt
			st.Retries, st.MinVersion = r.Retries, r.MinVersion
		}
		s.MCUs = append(s.MCUs, st)
	}
}

func (m *mcuPart) reload(cfg *config.Config) {}

func (m *mcuPart) stop() {
	m.cancel()
	m.wg.Wait()
}
