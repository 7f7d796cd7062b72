package daemon

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
)

// bootSelection is what the daemon asks of the boot loader's environment
// (abboot.Chooser): which slot runs and boots next, tries, good and bad,
// and the notes that keep the anti-downgrade floor (anchor.go).
type bootSelection interface {
	Booted() (string, error)
	Primary() (string, error)
	Status() ([]abboot.SlotStatus, error)
	SetPrimary(slot string, tries int) error
	MarkGood(slot string) error
	MarkBad(slot string) error
	Notes() (map[string]string, error)
	SetNotes(notes map[string]string) error
	SetPrimaryNoting(slot string, tries int, notes map[string]string) error
}

// bootPart owns the boot selection (abboot) and reopens it on reload.
// The other parts ask it through chooser().
type bootPart struct {
	log *zap.Logger
	cfg func() *config.Config

	mu  sync.Mutex
	c   bootSelection
	err error // why there is no chooser
}

func (b *bootPart) start(ctx context.Context) error {
	b.open(b.cfg().Boot)
	return nil
}

// open builds the chooser. A boot environment that cannot be opened is not
// fatal: the daemon still runs, reports why, and refuses what needs it.
func (b *bootPart) open(o abboot.Options) {
	c, err := abboot.New(o, b.log.Named("abboot"))
	b.mu.Lock()
	if err != nil {
		b.c, b.err = nil, err
	} else {
		b.c, b.err = c, nil
	}
	b.mu.Unlock()
	if err != nil {
		b.log.Error("boot selection unavailable", zap.String("backend", o.Backend), zap.Error(err))
		return
	}
	if booted, err := c.Booted(); err != nil {
		b.log.Warn("booted slot unknown", zap.Error(err))
	} else {
		b.log.Info("booted slot", zap.String("slot", booted))
	}
}

func (b *bootPart) chooser() (bootSelection, error) {
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
