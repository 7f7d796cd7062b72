package daemon

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
)

// bootPart owns the boot selection (abboot): which slot boots next, tries,
// good and bad. Other parts reach it through d.boot.
type bootPart struct {
	d   *Daemon
	mu  sync.Mutex
	c   *abboot.Chooser
	err error // why there is no chooser
}

func (b *bootPart) start(ctx context.Context, d *Daemon) error {
	b.d = d
	b.open(d.config().Boot)
	return nil
}

// open builds the chooser. A boot environment that cannot be opened is not
// fatal: the daemon still runs, reports why, and refuses what needs it.
func (b *bootPart) open(o abboot.Options) {
	c, err := abboot.New(o, b.d.log.Named("abboot"))
	b.mu.Lock()
	b.c, b.err = c, err
	b.mu.Unlock()
	if err != nil {
		b.d.log.Error("boot selection unavailable", zap.String("backend", o.Backend), zap.Error(err))
		return
	}
	if booted, err := c.Booted(); err != nil {
		b.d.log.Warn("booted slot unknown", zap.Error(err))
	} else {
		b.d.log.Info("booted slot", zap.String("slot", booted))
	}
}

func (b *bootPart) chooser() (*abboot.Chooser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c, b.err
}

func (b *bootPart) routes(srv *api.Server) {}

func (b *bootPart) status(s *api.Status) {
	c, err := b.chooser()
	if err != nil {
		s.Warnings = append(s.Warnings, "boot selection unavailable: "+err.Error())
		return
	}
	slots, err := c.Status()
	if err != nil {
		s.Warnings = append(s.Warnings, "boot environment: "+err.Error())
		return
	}
	for _, sl := range slots {
		s.Slots = append(s.Slots, api.SlotStatus{Bootname: sl.Bootname, State: sl.State,
			Primary: sl.Primary, Booted: sl.Booted, TriesLeft: sl.TriesLeft})
	}
}

func (b *bootPart) reload(cfg *config.Config) { b.open(cfg.Boot) }

func (b *bootPart) stop() {}
