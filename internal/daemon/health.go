package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/health"
)

// healthPart ties the daemon to the watchdogs and decides about new
// releases: one health loop pets the hardware watchdog and sends
// WATCHDOG=1 only while the daemon's own liveness probes pass (the main
// loop's heartbeat, the API socket answering); on the first boot of a
// freshly installed slot it runs the boot assessment (assess.go), which
// commits the release or marks the slot bad and reboots into the other one.
type healthPart struct {
	log      *zap.Logger
	clock    clockwork.Clock
	cfg      func() *config.Config
	notify   func(string) error // sd_notify
	warn     func(string)       // a warning in otagw status
	serving  func() bool        // the API socket listens
	setBeat  func(func())       // hands the main loop its heartbeat (nil: none)
	boot     func() (bootSelection, error)
	release  releaseRecord
	flow     *flow
	bus      *bus
	reboot   func(ctx context.Context, reason string) error
	released func() // a release was committed: its MCU firmware fans out

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hw   *watchdog.Hardware
	loop *watchdog.Loop
	beat *watchdog.Heartbeat

	mu     sync.Mutex
	assess *api.Assessment
}

func (h *healthPart) start(ctx context.Context) error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	cfg := h.cfg()
	if cfg.Watchdog.Enabled {
		hw, err := watchdog.Open(cfg.Watchdog)
		switch {
		case err == nil:
			h.hw = hw
			bs := hw.BootStatus()
			h.log.Info("hardware watchdog armed", zap.String("device", hw.Device()), zap.Duration("timeout", hw.Timeout()),
				zap.Bool("last_boot_was_watchdog_reset", bs.WatchdogReset()), zap.Strings("boot_status", bs.Reasons()))
			if bs.WatchdogReset() {
				h.warn("the last boot was a hardware watchdog reset")
			}
		case errors.Is(err, watchdog.ErrNotSupported):
			h.log.Warn("no hardware watchdog; only the systemd watchdog is fed", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
		default:
			h.log.Error("hardware watchdog unavailable", zap.String("device", cfg.Watchdog.Device), zap.Error(err))
			h.warn("hardware watchdog unavailable: " + err.Error())
		}
	}
	usec, _ := sddaemon.SdWatchdogEnabled(false)
	lc := watchdog.LoopConfig{
		Notify:         h.notify,
		NotifyInterval: usec / 2,
		Log:            h.log.Named("watchdog"),
		OnChange: func(s watchdog.Status) {
			if s.Healthy {
				h.log.Info("healthy again: feeding the watchdogs")
			} else {
				h.log.Error("unhealthy: not feeding the watchdogs", zap.Strings("problems", s.Problems))
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
		h.setBeat(h.beat.Beat)
		sock := cfg.Daemon.Socket
		h.loop.AddProbe("api socket", func(ctx context.Context) error {
			if !h.serving() {
				return nil // not listening yet: the start-up itself is watched by systemd's start timeout
			}
			return probeSocket(ctx, sock)
		})
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.loop.Run(h.ctx)
		}()
		h.log.Info("health loop running", zap.Duration("interval", h.loop.Interval()),
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

func (h *healthPart) routes(srv *api.Server) {
	srv.Read("GET /v1/health", h.handleHealth)
	srv.Write("POST /v1/mark-good", h.handleMarkGood)
	srv.Write("POST /v1/mark-bad", h.handleMarkBad)
	srv.Write("POST /v1/rollback", h.handleRollback)
}

func (h *healthPart) handleHealth(w http.ResponseWriter, r *http.Request) {
	rep := health.New(h.cfg().Health, h.log.Named("health")).Run(r.Context())
	api.WriteJSON(w, rep)
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
		h.setBeat(nil)
	}
	if h.hw != nil {
		if err := h.hw.Close(); err != nil {
			h.log.Error("closing the hardware watchdog", zap.Error(err))
		}
	}
}
