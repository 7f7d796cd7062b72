// Package reset puts an MCU into its ROM bootloader and back into its
// application: BOOT0 high while NRST is pulsed, then BOOT0 low and another
// pulse. The lines are driven through the serial port's DTR/RTS, through
// GPIO lines of the Linux GPIO character device (uAPI v2), or not at all
// ("manual": the MCU is already in its bootloader).
//
//	s, err := reset.Parse("gpio:gpiochip0:17:27", port, reset.DefaultOptions())
//	err = s.EnterBootloader(ctx)   // BOOT0=1, pulse NRST, wait for the ROM
//	... flash ...
//	err = s.Run(ctx)               // BOOT0=0, pulse NRST: the application starts
package reset

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

// ErrNoLines: the strategy needs control lines the link does not have.
var ErrNoLines = errors.New("link has no modem control lines")

// Strategy enters and leaves the ROM bootloader.
type Strategy interface {
	EnterBootloader(ctx context.Context) error
	Run(ctx context.Context) error
}

// Options time the sequences.
type Options struct {
	Pulse  time.Duration `yaml:"pulse"`  // NRST held low
	Settle time.Duration `yaml:"settle"` // after NRST release, before the first byte
	// Sleep waits; nil means a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error `yaml:"-" json:"-"`
}

// DefaultOptions: 50 ms reset pulse, 100 ms for the ROM to start.
func DefaultOptions() Options {
	return Options{Pulse: 50 * time.Millisecond, Settle: 100 * time.Millisecond}
}

func (o Options) sleep(ctx context.Context, d time.Duration) error {
	if o.Sleep != nil {
		return o.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Lines drives BOOT0 (true = high) and NRST (true = reset asserted, i.e. low).
type Lines interface {
	SetBoot0(high bool) error
	SetReset(asserted bool) error
}

// Sequence is a Strategy over Lines.
type Sequence struct {
	L Lines
	O Options
}

func (s Sequence) pulse(ctx context.Context, boot0 bool) error {
	if err := s.L.SetBoot0(boot0); err != nil {
		return err
	}
	if err := s.L.SetReset(true); err != nil {
		return err
	}
	if err := s.O.sleep(ctx, s.O.Pulse); err != nil {
		return err
	}
	if err := s.L.SetReset(false); err != nil {
		return err
	}
	return s.O.sleep(ctx, s.O.Settle)
}

// EnterBootloader resets with BOOT0 high.
func (s Sequence) EnterBootloader(ctx context.Context) error {
	if err := s.pulse(ctx, true); err != nil {
		return fmt.Errorf("enter bootloader: %w", err)
	}
	return nil
}

// Run resets with BOOT0 low.
func (s Sequence) Run(ctx context.Context) error {
	if err := s.pulse(ctx, false); err != nil {
		return fmt.Errorf("reset to application: %w", err)
	}
	return nil
}

// Manual does nothing: the MCU is put into its bootloader by hand (or by
// a previous step) and started with the bootloader's Go command.
type Manual struct{}

// EnterBootloader does nothing.
func (Manual) EnterBootloader(context.Context) error { return nil }

// Run does nothing.
func (Manual) Run(context.Context) error { return nil }

// Func adapts two functions (tests, simulators, custom hooks).
type Func struct {
	Enter, Start func(ctx context.Context) error
}

// EnterBootloader calls Enter.
func (f Func) EnterBootloader(ctx context.Context) error {
	if f.Enter == nil {
		return nil
	}
	return f.Enter(ctx)
}

// Run calls Start.
func (f Func) Run(ctx context.Context) error {
	if f.Start == nil {
		return nil
	}
	return f.Start(ctx)
}

// ModemLines maps RTS to BOOT0 (asserted = high) and DTR to NRST
// (asserted = reset), the usual wiring of USB-serial boot adapters.
type ModemLines struct{ LC link.LineControl }

// SetBoot0 drives RTS.
func (m ModemLines) SetBoot0(high bool) error { return m.LC.SetRTS(high) }

// SetReset drives DTR.
func (m ModemLines) SetReset(asserted bool) error { return m.LC.SetDTR(asserted) }

// ESP32Classic is esptool's classic DTR/RTS auto-reset for ESP32 boards:
// DTR drives GPIO0 (the strap, low = download) and RTS drives EN through
// the usual two-transistor circuit; both lines are active-low.
type ESP32Classic struct {
	LC link.LineControl
	O  Options
}

// EnterBootloader: EN low 100 ms, then EN released while the strap is held
// low for 50 ms, then the strap released.
func (e ESP32Classic) EnterBootloader(ctx context.Context) error {
	steps := []struct {
		dtr, rts bool
		wait     time.Duration
	}{{false, true, 100 * time.Millisecond}, {true, false, 50 * time.Millisecond}, {false, false, 0}}
	for _, s := range steps {
		if err := e.LC.SetDTR(s.dtr); err != nil {
			return fmt.Errorf("enter bootloader: %w", err)
		}
		if err := e.LC.SetRTS(s.rts); err != nil {
			return fmt.Errorf("enter bootloader: %w", err)
		}
		if err := e.O.sleep(ctx, s.wait); err != nil {
			return err
		}
	}
	return nil
}

// Run pulses EN (RTS) with the strap released: the application starts.
func (e ESP32Classic) Run(ctx context.Context) error {
	if err := e.LC.SetDTR(false); err != nil {
		return fmt.Errorf("reset to application: %w", err)
	}
	if err := e.LC.SetRTS(true); err != nil {
		return fmt.Errorf("reset to application: %w", err)
	}
	if err := e.O.sleep(ctx, 100*time.Millisecond); err != nil {
		return err
	}
	if err := e.LC.SetRTS(false); err != nil {
		return fmt.Errorf("reset to application: %w", err)
	}
	return nil
}

// Parse builds a strategy from "manual", "dtr-rts", "esp32-classic" or
// "gpio:CHIP:BOOT0LINE:NRSTLINE" (CHIP as "gpiochip0", "0" or a path).
// "gpio-esp32:CHIP:STRAPLINE:ENLINE" drives an ESP32's strap (GPIO0/GPIO9)
// low for the ROM and EN low to reset.
func Parse(spec string, l link.Link, o Options) (Strategy, error) {
	switch {
	case spec == "" || spec == "manual":
		return Manual{}, nil
	case spec == "dtr-rts":
		lc, ok := l.(link.LineControl)
		if !ok {
			return nil, fmt.Errorf("reset dtr-rts: %w", ErrNoLines)
		}
		return Sequence{L: ModemLines{lc}, O: o}, nil
	case spec == "esp32-classic":
		lc, ok := l.(link.LineControl)
		if !ok {
			return nil, fmt.Errorf("reset esp32-classic: %w", ErrNoLines)
		}
		return ESP32Classic{LC: lc, O: o}, nil
	case strings.HasPrefix(spec, "gpio:"):
		chip, boot0, nrst, err := ParseGPIO(spec)
		if err != nil {
			return nil, err
		}
		return &GPIO{Chip: chip, Boot0: boot0, NRST: nrst, O: o}, nil
	case strings.HasPrefix(spec, "sim:"): // simulator lines: tests and demo only
		return ParseSimLines(spec)
	case strings.HasPrefix(spec, "gpio-esp32:"):
		chip, strap, en, err := ParseGPIO("gpio:" + strings.TrimPrefix(spec, "gpio-esp32:"))
		if err != nil {
			return nil, fmt.Errorf("reset %q: want gpio-esp32:CHIP:STRAPLINE:ENLINE", spec)
		}
		return &GPIO{Chip: chip, Boot0: strap, NRST: en, O: o, StrapLow: true}, nil
	}
	return nil, fmt.Errorf("reset %q: want manual, dtr-rts, esp32-classic, gpio:CHIP:BOOT0LINE:NRSTLINE or gpio-esp32:CHIP:STRAPLINE:ENLINE", spec)
}

// ParseGPIO splits "gpio:CHIP:BOOT0LINE:NRSTLINE".
func ParseGPIO(spec string) (chip string, boot0, nrst int, err error) {
	f := strings.Split(spec, ":")
	if len(f) != 4 || f[0] != "gpio" || f[1] == "" {
		return "", 0, 0, fmt.Errorf("reset %q: want gpio:CHIP:BOOT0LINE:NRSTLINE", spec)
	}
	chip = f[1]
	if _, err := strconv.Atoi(chip); err == nil {
		chip = "/dev/gpiochip" + chip
	} else if !strings.HasPrefix(chip, "/") {
		chip = "/dev/" + chip
	}
	b, err1 := strconv.ParseUint(f[2], 10, 16)
	n, err2 := strconv.ParseUint(f[3], 10, 16)
	if err1 != nil || err2 != nil || b == n {
		return "", 0, 0, fmt.Errorf("reset %q: BOOT0 and NRST must be two different line numbers", spec)
	}
	return chip, int(b), int(n), nil
}
