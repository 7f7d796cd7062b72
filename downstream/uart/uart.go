// Package uart opens a Linux serial port as a link.Link: raw mode, the
// configured baud rate, parity (8E1 for the STM32 ROM bootloader) and stop
// bits, read deadlines through the runtime poller, and DTR/RTS control.
//
//	p, err := uart.Open("/dev/ttyUSB0", uart.Options{Baud: 115200, Parity: uart.ParityEven})
//	defer p.Close()
//	client := stm32.New(p, stm32.DefaultOptions())
//	p.SetDTR(false)                   // link.LineControl
//
// Pseudo-terminals accept the settings but silently drop PARENB and have no
// modem lines: SetDTR/SetRTS then fail with ENOTTY.
package uart

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

// Parity of the line.
type Parity string

// Parities.
const (
	ParityNone Parity = "none"
	ParityEven Parity = "even"
	ParityOdd  Parity = "odd"
)

// ErrBaud: the baud rate has no termios constant.
var ErrBaud = errors.New("unsupported baud rate")

// Options configure a port.
type Options struct {
	Baud     link.Baud `yaml:"baud"`
	Parity   Parity    `yaml:"parity"`
	StopBits int       `yaml:"stop_bits"`
}

// DefaultOptions are the STM32 ROM bootloader's 115200 8E1.
func DefaultOptions() Options { return Options{Baud: 115200, Parity: ParityEven, StopBits: 1} }

// Validate checks the options.
func (o Options) Validate() error {
	if _, ok := baudConst(o.Baud); !ok {
		return fmt.Errorf("uart: baud %d: %w", o.Baud, ErrBaud)
	}
	switch o.Parity {
	case ParityNone, ParityEven, ParityOdd:
	default:
		return fmt.Errorf("uart: parity %q: want none, even or odd", o.Parity)
	}
	if o.StopBits != 1 && o.StopBits != 2 {
		return fmt.Errorf("uart: stop bits %d: want 1 or 2", o.StopBits)
	}
	return nil
}

// sys is the seam around the ioctls.
type sys interface {
	getTermios(fd int) (*termios, error)
	setTermios(fd int, t *termios) error
	getModem(fd int) (int, error)
	setModem(fd int, bits int) error
}

// Port is an open serial port.
type Port struct {
	f   *os.File
	sys sys
}

// Read reads from the port.
func (p *Port) Read(b []byte) (int, error) { return p.f.Read(b) }

// Write writes to the port.
func (p *Port) Write(b []byte) (int, error) { return p.f.Write(b) }

// SetReadDeadline sets the read deadline.
func (p *Port) SetReadDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }

// Close closes the port.
func (p *Port) Close() error { return p.f.Close() }

// Name is the device path.
func (p *Port) Name() string { return p.f.Name() }
