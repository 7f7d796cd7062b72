package reset

import (
	"context"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux GPIO character device uAPI v2 (include/uapi/linux/gpio.h).
const (
	gpioV2LinesMax       = 64
	gpioMaxNameSize      = 32
	gpioV2NumAttrsMax    = 10
	gpioV2LineFlagOutput = 1 << 3
	gpioV2GetLineIoctl   = 0xC250B407 // _IOWR(0xB4, 0x07, struct gpio_v2_line_request)
	gpioV2SetValuesIoctl = 0xC010B40F // _IOWR(0xB4, 0x0F, struct gpio_v2_line_values)
)

type gpioV2LineAttribute struct {
	ID      uint32
	Padding uint32
	Value   uint64
}

type gpioV2LineConfigAttribute struct {
	Attr gpioV2LineAttribute
	Mask uint64
}

type gpioV2LineConfig struct {
	Flags    uint64
	NumAttrs uint32
	Padding  [5]uint32
	Attrs    [gpioV2NumAttrsMax]gpioV2LineConfigAttribute
}

type gpioV2LineRequest struct {
	Offsets         [gpioV2LinesMax]uint32
	Consumer        [gpioMaxNameSize]byte
	Config          gpioV2LineConfig
	NumLines        uint32
	EventBufferSize uint32
	Padding         [5]uint32
	Fd              int32
}

type gpioV2LineValues struct {
	Bits uint64
	Mask uint64
}

// gpioSys is the seam around the chardev ioctls.
type gpioSys interface {
	open(path string) (int, error)
	getLine(fd int, req *gpioV2LineRequest) error
	setValues(fd int, v *gpioV2LineValues) error
	close(fd int) error
}

type linuxGPIO struct{}

func (linuxGPIO) open(path string) (int, error) {
	return unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
}

func (linuxGPIO) getLine(fd int, req *gpioV2LineRequest) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), gpioV2GetLineIoctl, uintptr(unsafe.Pointer(req)))
	if e != 0 {
		return e
	}
	return nil
}

func (linuxGPIO) setValues(fd int, v *gpioV2LineValues) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), gpioV2SetValuesIoctl, uintptr(unsafe.Pointer(v)))
	if e != 0 {
		return e
	}
	return nil
}

func (linuxGPIO) close(fd int) error { return unix.Close(fd) }

// GPIO drives BOOT0 and NRST through two output lines of a GPIO chip. NRST
// is driven low to reset. The lines are requested on first use and held
// until Close.
type GPIO struct {
	Chip        string
	Boot0, NRST int
	O           Options
	// StrapLow: the boot line selects the ROM when low (an ESP32's GPIO0
	// or GPIO9, "gpio-esp32:"), not when high (STM32 BOOT0).
	StrapLow bool

	mu     sync.Mutex
	sys    gpioSys
	lineFd int
	values uint64 // bit 0 = BOOT0, bit 1 = NRST (physical level)
	opened bool
}

func (g *GPIO) request() error {
	if g.opened {
		return nil
	}
	if g.sys == nil {
		g.sys = linuxGPIO{}
	}
	fd, err := g.sys.open(g.Chip)
	if err != nil {
		return fmt.Errorf("gpio %s: %w", g.Chip, err)
	}
	defer g.sys.close(fd)
	var req gpioV2LineRequest
	req.Offsets[0], req.Offsets[1] = uint32(g.Boot0), uint32(g.NRST)
	req.NumLines = 2
	copy(req.Consumer[:], "otagw")
	req.Config.Flags = gpioV2LineFlagOutput
	// initial levels: BOOT0 low, NRST high (running)
	req.Config.NumAttrs = 1
	req.Config.Attrs[0] = gpioV2LineConfigAttribute{Attr: gpioV2LineAttribute{ID: 2 /* GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES */, Value: 0b10}, Mask: 0b11}
	if err := g.sys.getLine(fd, &req); err != nil {
		return fmt.Errorf("gpio %s lines %d,%d: %w", g.Chip, g.Boot0, g.NRST, err)
	}
	g.lineFd, g.values, g.opened = int(req.Fd), 0b10, true
	return nil
}

func (g *GPIO) set(bit uint64, level bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.request(); err != nil {
		return err
	}
	if level {
		g.values |= bit
	} else {
		g.values &^= bit
	}
	v := gpioV2LineValues{Bits: g.values, Mask: 0b11}
	if err := g.sys.setValues(g.lineFd, &v); err != nil {
		return fmt.Errorf("gpio %s: set lines: %w", g.Chip, err)
	}
	return nil
}

// SetBoot0 selects the ROM bootloader (true) or the application on the
// boot line: BOOT0 high, or with StrapLow the ESP32 strap low.
func (g *GPIO) SetBoot0(high bool) error { return g.set(0b01, high != g.StrapLow) }

// SetReset drives NRST low when asserted.
func (g *GPIO) SetReset(asserted bool) error { return g.set(0b10, !asserted) }

// EnterBootloader resets with BOOT0 high.
func (g *GPIO) EnterBootloader(ctx context.Context) error {
	return Sequence{L: g, O: g.O}.EnterBootloader(ctx)
}

// Run resets with BOOT0 low.
func (g *GPIO) Run(ctx context.Context) error { return Sequence{L: g, O: g.O}.Run(ctx) }

// Close releases the lines.
func (g *GPIO) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		return nil
	}
	g.opened = false
	return g.sys.close(g.lineFd)
}
