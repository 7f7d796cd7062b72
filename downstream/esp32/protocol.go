package esp32

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
)

func init() { downstream.Register(downstream.ProtocolESP32, Protocol{}) }

// DefaultFlashSize is told to the ROM in SPI_SET_PARAMS (4 MiB, the common module).
const DefaultFlashSize = 4 << 20

// Protocol is the ESP32 ROM loader as a downstream.Protocol ("esp32-rom").
type Protocol struct{}

// ValidateDevice wants a known chip name and no STM32 product ID.
func (Protocol) ValidateDevice(d downstream.Device) error {
	var errs []error
	if _, ok := LookupChip(d.Chip); !ok {
		errs = append(errs, fmt.Errorf("chip: %q: want one of %s", d.Chip, ChipNames()))
	}
	if d.ProductID != 0 {
		errs = append(errs, fmt.Errorf("product_id: 0x%x: ESP32 devices are named by chip", d.ProductID))
	}
	if d.VersionHeader != 0 {
		errs = append(errs, errors.New("version_header: ESP32 versions come from the app descriptor and flash MD5"))
	}
	return errors.Join(errs...)
}

func sameChip(a, b string) bool {
	ca, ok1 := LookupChip(a)
	cb, ok2 := LookupChip(b)
	return ok1 && ok2 && ca == cb
}

// Targets matches the package's chip.
func (Protocol) Targets(d downstream.Device, m *mcupkg.Manifest) bool {
	return sameChip(d.Chip, m.Target.Chip)
}

// Check refuses a package for another chip, images built for another
// chip, and regions not on a 4 KiB sector boundary.
func (Protocol) Check(d downstream.Device, p *mcupkg.Package) error {
	chip, ok := LookupChip(d.Chip)
	if !ok {
		return fmt.Errorf("%w: %q", downstream.ErrUnknownChip, d.Chip)
	}
	if !sameChip(p.Manifest.Target.Chip, d.Chip) {
		return fmt.Errorf("%w: package for %s, device is %s", downstream.ErrWrongTarget, p.Manifest.Target, chip)
	}
	return CheckRegions(chip, p.Segments)
}

// CheckRegions refuses regions off a sector boundary and ESP images whose
// header names another chip.
func CheckRegions(chip *Chip, segs []mcupkg.Segment) error {
	for _, s := range segs {
		if s.Addr%Sector != 0 {
			return fmt.Errorf("region at 0x%x: not on a 4 KiB sector boundary", s.Addr)
		}
		if uint64(s.Addr)+uint64(len(s.Data)) > 16<<20 {
			return fmt.Errorf("region 0x%x+%d: beyond 16 MiB of flash", s.Addr, len(s.Data))
		}
		if len(s.Data) > 0 && s.Data[0] == ImageMagic {
			info, err := ParseImage(s.Data)
			if err == nil && info.ChipID != chip.ID {
				other := fmt.Sprintf("chip ID %d", info.ChipID)
				if c, ok := ChipByID(info.ChipID); ok {
					other = c.Display
				}
				return fmt.Errorf("%w: image at 0x%x is built for %s, device is %s", downstream.ErrWrongTarget, s.Addr, other, chip)
			}
		}
	}
	return nil
}

// Parity: the ROM's UART runs 8N1.
func (Protocol) Parity() string { return "none" }

// Open returns a session; nothing is sent yet.
func (Protocol) Open(l link.Link, rs reset.Strategy, b downstream.Bus, d downstream.Device, p *mcupkg.Package, o downstream.Options) downstream.Session {
	chip, _ := LookupChip(d.Chip)
	initial := link.Baud(b.Baud)
	if initial == 0 {
		initial = 115200
	}
	return &session{c: New(l, o.ESP32), l: l, rs: rs, chip: chip, pkg: p, o: o.ESP32, initial: initial, done: map[int]bool{}}
}

type session struct {
	c          *Client
	l          link.Link
	rs         reset.Strategy
	chip       *Chip
	pkg        *mcupkg.Package
	o          Options
	initial    link.Baud
	identified bool
	done       map[int]bool // regions verified by MD5
	id         downstream.Identity
}

func (s *session) Identify(ctx context.Context) (downstream.Identity, error) {
	if err := s.rs.EnterBootloader(ctx); err != nil {
		return downstream.Identity{}, err
	}
	if s.c.baud != 0 && s.c.baud != s.initial { // the ROM restarted at the initial rate
		if bs, ok := s.l.(link.BaudSetter); ok {
			if err := bs.SetBaud(s.initial); err != nil {
				return downstream.Identity{}, err
			}
		}
		s.c.baud = 0
	}
	if err := s.c.Sync(ctx); err != nil {
		return downstream.Identity{}, err
	}
	chip, err := s.c.Detect(ctx)
	if err != nil {
		return downstream.Identity{}, err
	}
	if chip != s.chip {
		return downstream.Identity{}, downstream.Fatal(fmt.Errorf("%w: %s, device configured as %s", downstream.ErrWrongProduct, chip, s.chip))
	}
	if err := s.c.Attach(ctx, DefaultFlashSize); err != nil {
		return downstream.Identity{}, err
	}
	if b := link.Baud(s.o.Baud); b > 0 && b != s.initial {
		if err := s.c.ChangeBaud(ctx, b); err != nil {
			return downstream.Identity{}, err
		}
	}
	if s.identified {
		return s.id, nil
	}
	s.identified = true
	id := downstream.Identity{Chip: chip.Display, FlashSize: DefaultFlashSize, Source: "flash MD5 differs from the package"}
	// The ROM cannot read the app descriptor back cheaply, but it can
	// hash flash: a device whose regions all match runs this package.
	match := true
	for _, sg := range s.pkg.Segments {
		got, err := s.c.MD5(ctx, sg.Addr, len(sg.Data))
		if err != nil {
			return downstream.Identity{}, err
		}
		if got != md5.Sum(sg.Data) {
			match = false
			break
		}
	}
	if match {
		id.Version, id.FromDevice, id.Source = s.pkg.Manifest.Version, true, "flash MD5 matches the package"
	}
	s.id = id
	return id, nil
}

func (s *session) Flash(ctx context.Context, progress func(downstream.Progress)) error {
	total := 0
	for _, sg := range s.pkg.Segments {
		total += len(sg.Data)
	}
	base := 0
	for i, sg := range s.pkg.Segments {
		if !s.done[i] {
			err := s.c.WriteRegion(ctx, sg.Addr, sg.Data, func(phase string, done, _ int) {
				progress(downstream.Progress{Phase: phase, Done: base + done, Total: total})
			})
			if errors.Is(err, ErrVerify) || errors.Is(err, ErrUnsupported) {
				return downstream.Fatal(err)
			}
			if err != nil {
				return fmt.Errorf("region %d at 0x%x: %w", i, sg.Addr, err)
			}
			s.done[i] = true
		}
		base += len(sg.Data)
	}
	return nil
}

// Start leaves the ROM with FLASH_END (reboot), then runs the reset
// strategy's application start (an EN pulse with the strap released).
func (s *session) Start(ctx context.Context) error {
	err := s.c.Finish(ctx)
	if rerr := s.rs.Run(ctx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

func (s *session) Retries() int { return s.c.Retries() }

func (s *session) Verified() int {
	n := 0
	for i, sg := range s.pkg.Segments {
		if s.done[i] {
			n += len(sg.Data)
		}
	}
	return n
}
