package stm32

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/spi"
	"github.com/otagw/otagw/downstream/stm32/chips"
)

func init() { downstream.Register(downstream.ProtocolSTM32, Protocol{}) }

// Protocol is the STM32 ROM bootloader as a downstream.Protocol
// ("stm32-rom"): the fan-out engine drives it without importing this package.
type Protocol struct{}

// ValidateDevice wants a family and a 12-bit product ID.
func (Protocol) ValidateDevice(d downstream.Device) error {
	var errs []error
	if d.ProductID == 0 || d.ProductID > 0xFFF {
		errs = append(errs, fmt.Errorf("product_id: 0x%x is not a 12-bit STM32 product ID", d.ProductID))
	}
	if d.Family == "" {
		errs = append(errs, errors.New("family: empty"))
	}
	if d.Chip != "" {
		errs = append(errs, fmt.Errorf("chip: %q: STM32 devices are named by family and product_id", d.Chip))
	}
	return errors.Join(errs...)
}

// Targets matches the package's product ID.
func (Protocol) Targets(d downstream.Device, m *mcupkg.Manifest) bool {
	return m.Target.Chip == "" && d.ProductID == m.Target.ProductID
}

// Check refuses another family or product ID and segments outside flash.
func (Protocol) Check(d downstream.Device, p *mcupkg.Package) error {
	m := p.Manifest
	if m.Target.Chip != "" || m.Target.ProductID != d.ProductID || !strings.EqualFold(m.Target.Family, d.Family) {
		return fmt.Errorf("%w: package %s, device configured as %s/0x%03x", downstream.ErrWrongTarget, m.Target, d.Family, d.ProductID)
	}
	chip, ok := chips.Lookup(d.ProductID)
	if !ok {
		return fmt.Errorf("%w: 0x%03x", downstream.ErrUnknownChip, d.ProductID)
	}
	for _, s := range p.Segments {
		if !chip.InFlash(s.Addr, len(s.Data)) {
			return fmt.Errorf("segment 0x%08x+%d on %s: %w", s.Addr, len(s.Data), chip, chips.ErrOutOfFlash)
		}
	}
	return nil
}

// Parity: the ROM bootloader's USART runs 8E1.
func (Protocol) Parity() string { return "even" }

// Open returns a session; nothing is sent yet. On an SPI bus (l made by
// spi.Link) the session speaks AN4286, on a CAN bus (l made by
// can.AsLink) AN3154, on a serial line AN3155.
func (Protocol) Open(l link.Link, rs reset.Strategy, _ downstream.Bus, d downstream.Device, p *mcupkg.Package, o downstream.Options) downstream.Session {
	chip, _ := chips.Lookup(d.ProductID)
	var c Bootloader
	if sc, ok := spi.ConnOf(l); ok {
		c = NewSPI(sc, o.STM32)
	} else if cc, ok := can.FromLink(l); ok {
		c = NewCAN(cc, o.STM32)
	} else {
		c = New(l, o.STM32)
	}
	return &session{c: c, rs: rs, dev: d, pkg: p, chip: chip, o: o.STM32}
}

type session struct {
	c    Bootloader
	rs   reset.Strategy
	dev  downstream.Device
	pkg  *mcupkg.Package
	chip *chips.Chip
	o    Options
	f    *Flasher
	id   downstream.Identity
}

func (s *session) Identify(ctx context.Context) (downstream.Identity, error) {
	if err := s.rs.EnterBootloader(ctx); err != nil {
		return downstream.Identity{}, err
	}
	if err := s.c.Init(ctx); err != nil {
		return downstream.Identity{}, err
	}
	m := s.pkg.Manifest
	if pid := s.c.Info().PID; pid != m.Target.ProductID {
		return downstream.Identity{}, downstream.Fatal(fmt.Errorf("%w: 0x%03x, package for 0x%03x", downstream.ErrWrongProduct, pid, m.Target.ProductID))
	}
	if s.f != nil { // a resumed flash: the version was read before
		return s.id, nil
	}
	id := downstream.Identity{Chip: s.chip.String(), FlashSize: int(s.chip.FlashSize())}
	if s.dev.VersionHeader != 0 {
		id.FromDevice = true
		if p, err := s.c.ReadMemory(ctx, s.dev.VersionHeader, mcupkg.HeaderSize); err == nil {
			if v, ok := mcupkg.ParseMCUbootHeader(p); ok {
				id.Version, id.Source = v.String(), "device"
			} else {
				id.Source = "device (no image header)"
			}
		} else if !errors.Is(err, ErrNACK) {
			return downstream.Identity{}, err
		} else {
			id.FromDevice = false
		}
	}
	s.id = id
	return id, nil
}

func (s *session) prepare(ctx context.Context, progress func(downstream.Progress)) error {
	if s.o.WriteUnprotect {
		progress(downstream.Progress{Phase: "unprotect"})
		if err := s.c.WriteUnprotect(ctx); err != nil {
			return err
		}
		if err := s.c.Init(ctx); err != nil {
			return err
		}
	}
	if _, err := s.c.ReadMemory(ctx, s.chip.FlashStart, 4); errors.Is(err, ErrNACK) {
		if !s.o.ReadoutUnprotect {
			return downstream.Fatal(fmt.Errorf("%w: reads refused (readout protection?) and readout_unprotect is off", ErrProtected))
		}
		progress(downstream.Progress{Phase: "unprotect"})
		if err := s.c.ReadoutUnprotect(ctx); err != nil {
			return err
		}
		if err := s.c.Init(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	segs := make([]Segment, len(s.pkg.Segments))
	for i, sg := range s.pkg.Segments {
		segs[i] = Segment{Addr: sg.Addr, Data: sg.Data}
	}
	f, err := NewFlasher(s.c, s.chip, segs, s.o)
	if err != nil {
		return downstream.Fatal(err)
	}
	s.f = f
	return nil
}

func (s *session) Flash(ctx context.Context, progress func(downstream.Progress)) error {
	if s.f == nil {
		if err := s.prepare(ctx, progress); err != nil {
			return err
		}
	}
	err := s.f.Run(ctx, func(p Progress) {
		progress(downstream.Progress{Phase: p.Phase, Done: p.Done, Total: p.Total})
	})
	if errors.Is(err, ErrNoCommand) || errors.Is(err, ErrProtected) {
		return downstream.Fatal(err)
	}
	return err
}

// Start runs the application: Go to the load address, or a reset with
// BOOT0 low when Go fails.
func (s *session) Start(ctx context.Context) error {
	addr := s.pkg.Manifest.LoadAddress
	if addr == 0 {
		addr = s.chip.FlashStart
	}
	var err error
	for i := 0; i < 5; i++ {
		if err = s.c.Go(ctx, addr); err == nil {
			return nil
		}
		if !Transient(err) || s.c.Recover(ctx) != nil {
			break // the part may have started with the ACK lost
		}
	}
	if rerr := s.rs.Run(ctx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return nil
}

func (s *session) Retries() int {
	if s.f == nil {
		return 0
	}
	return s.f.Retries()
}

func (s *session) Verified() int {
	if s.f == nil {
		return 0
	}
	return s.f.Verified()
}
