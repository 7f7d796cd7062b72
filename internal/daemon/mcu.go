package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"

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
// (version, minimum, last result) live in the daemon's state.
type mcuPart struct {
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running bool
}

const mcuPartName = "mcu"

// mcuStore is fanout.Store on the daemon's HMAC-protected state.
type mcuStore struct {
	d  *Daemon
	mu sync.Mutex
}

func (s *mcuStore) all() map[string]fanout.Record {
	m := map[string]fanout.Record{}
	s.d.loadPart(mcuPartName, &m)
	return m
}

func (s *mcuStore) Load(device string) (fanout.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.all()[device]
	return r, ok, nil
}

func (s *mcuStore) Save(r fanout.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.all()
	m[r.Device] = r
	return s.d.savePart(mcuPartName, m)
}

func (m *mcuPart) start(ctx context.Context, d *Daemon) error {
	m.d = d
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return nil
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
// device takes the first package that targets it.
func (m *mcuPart) flash(ctx context.Context, opens []pkgOpener, devices []string, onEvent func(fanout.Event)) ([]fanout.Result, error) {
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
	cfg := m.d.config()
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
		m.d.log.Warn("deprecated configuration", zap.String("warning", w))
	}
	eng, err := fanout.New(cfg.Downstream, &mcuStore{d: m.d}, m.d.log.Named("downstream"))
	if err != nil {
		return nil, err
	}
	m.d.setState("flashing", fmt.Sprintf("MCU firmware %s %s", pkg.Manifest.Target.Family, pkg.Manifest.Version))
	res, err := eng.RunMany(ctx, pkgs, devices, onEvent)
	counts := map[fanout.State]int{}
	for _, r := range res {
		counts[r.State]++
		if r.State == fanout.Failed {
			m.d.log.Error("MCU update failed", zap.String("device", r.Device), zap.String("reason", r.Reason))
		}
	}
	m.d.setState("idle", fmt.Sprintf("MCU fan-out of %s: %d success, %d not needed, %d postponed, %d failed",
		pkg.Manifest.Version, counts[fanout.Success], counts[fanout.NotNeeded], counts[fanout.Postponed], counts[fanout.Failed]))
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
	if err := m.d.maintenancePart().allowed(window.Flash, req.Now); err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "outside-maintenance-window", err.Error())
		return
	}
	sw := api.NewStreamWriter(w)
	var mu sync.Mutex
	res, err := m.flash(r.Context(), opens, req.Devices, func(ev fanout.Event) {
		mu.Lock()
		defer mu.Unlock()
		sw.Send(api.MCUEvent{Type: "event", Event: ev})
	})
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		sw.Send(api.MCUEvent{Type: "error", Error: err.Error()})
		return
	}
	sw.Send(api.MCUEvent{Type: "done", Results: res})
}

// flashPayloads fans out the MCU packages a committed bundle carried.
func (m *mcuPart) flashPayloads() {
	dir := filepath.Join(m.d.config().Daemon.StateDir, "mcu-payloads")
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	sort.Strings(files)
	for _, f := range files {
		m.d.log.Info("fanning out MCU firmware from the committed release", zap.String("package", f))
		open := func(kr *sign.Keyring, threshold int) (*mcupkg.Package, error) { return mcupkg.Open(f, kr, threshold) }
		if _, err := m.flash(m.ctx, []pkgOpener{open}, nil, nil); err != nil {
			m.d.log.Error("MCU fan-out", zap.String("package", f), zap.Error(err))
			continue
		}
		os.Remove(f)
	}
}

func (m *mcuPart) status(s *api.Status) {
	cfg := m.d.config()
	recs := (&mcuStore{d: m.d}).all()
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
