// Package can is the gateway's classic CAN transport: a Frame, a Conn that
// sends and receives frames, and three Conns behind it:
//
//   - Dial: SocketCAN (a CAN_RAW socket on can0, vcan0, slcan0...), Linux only;
//
//   - OpenSLCAN: LAWICEL ASCII ("slcan") over a serial link.Link, as USB-CAN
//     adapters (CANable, CANtact, USBtin...) speak it without a kernel driver;
//
//   - NewBus: an in-memory bus for tests and simulators, with fault injection
//     and optional pacing at a bit rate.
//
//     c, err := can.Dial("can0")          // the link is brought up by the OS
//     c.Send(can.Frame{ID: 0x79})
//     c.SetReadDeadline(time.Now().Add(time.Second))
//     f, err := c.Recv()                  // errors.Is(err, os.ErrDeadlineExceeded) on timeout
//
// FrameBits gives the exact length on the wire of a frame, bit stuffing
// included, for throughput limits.
package can

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

// Frame is one classic CAN 2.0 frame.
type Frame struct {
	ID       uint32 // 11 bits, or 29 bits when Extended
	Len      uint8  // data length code, 0..8
	Data     [8]byte
	Extended bool // 29-bit identifier
	RTR      bool // remote transmission request (no data field)
}

// Limits of identifiers.
const (
	MaxStandardID = 0x7FF
	MaxExtendedID = 0x1FFFFFFF
)

// NewFrame builds a standard data frame with up to 8 data bytes.
func NewFrame(id uint32, data ...byte) Frame {
	f := Frame{ID: id, Len: uint8(min(len(data), 8))}
	copy(f.Data[:], data)
	return f
}

// Payload is the frame's data bytes (none for a remote frame).
func (f Frame) Payload() []byte {
	if f.RTR {
		return nil
	}
	return f.Data[:min(f.Len, 8)]
}

// Validate checks the identifier range and the length.
func (f Frame) Validate() error {
	if f.Len > 8 {
		return fmt.Errorf("can frame 0x%x: length %d over 8", f.ID, f.Len)
	}
	if !f.Extended && f.ID > MaxStandardID {
		return fmt.Errorf("can frame 0x%x: standard identifier over 0x7FF", f.ID)
	}
	if f.ID > MaxExtendedID {
		return fmt.Errorf("can frame 0x%x: identifier over 29 bits", f.ID)
	}
	return nil
}

// String is the frame in can-utils' notation: 079#, 011#0800000000FF,
// 12345678#01, 123#R.
func (f Frame) String() string {
	var b strings.Builder
	if f.Extended {
		fmt.Fprintf(&b, "%08X#", f.ID)
	} else {
		fmt.Fprintf(&b, "%03X#", f.ID)
	}
	if f.RTR {
		b.WriteString("R")
		return b.String()
	}
	for _, x := range f.Payload() {
		fmt.Fprintf(&b, "%02X", x)
	}
	return b.String()
}

// Conn sends and receives frames on one CAN bus. Recv returns frames other
// nodes sent (not the Conn's own); a Recv that reaches the read deadline
// returns an error satisfying errors.Is(err, os.ErrDeadlineExceeded).
type Conn interface {
	Send(f Frame) error
	Recv() (Frame, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// ErrClosed is returned by a Conn after Close.
var ErrClosed = errors.New("can: connection closed")

// FrameBits is the number of bit times f occupies on a classic CAN bus:
// the stuffed part (SOF, arbitration, control, data and CRC fields, with a
// stuff bit after every five equal bits) plus CRC delimiter, ACK slot, ACK
// delimiter, seven EOF bits and the three-bit intermission. The CRC-15 is
// computed, so the stuffing is exact for the frame's own bits.
func FrameBits(f Frame) int {
	var bits []byte
	put := func(v uint32, n int) {
		for i := n - 1; i >= 0; i-- {
			bits = append(bits, byte(v>>uint(i)&1))
		}
	}
	rtr := uint32(0)
	if f.RTR {
		rtr = 1
	}
	dlc := uint32(min(f.Len, 8))
	put(0, 1) // SOF (dominant)
	if f.Extended {
		put(f.ID>>18, 11)
		put(1, 1) // SRR (recessive)
		put(1, 1) // IDE
		put(f.ID&0x3FFFF, 18)
		put(rtr, 1)
		put(0, 2) // r1, r0
	} else {
		put(f.ID, 11)
		put(rtr, 1)
		put(0, 1) // IDE (dominant: standard)
		put(0, 1) // r0
	}
	put(dlc, 4)
	if !f.RTR {
		for _, x := range f.Data[:dlc] {
			put(uint32(x), 8)
		}
	}
	put(uint32(crc15(bits)), 15)
	stuffed := len(bits)
	run, last := 0, byte(2)
	for _, b := range bits {
		if b == last {
			run++
		} else {
			last, run = b, 1
		}
		if run == 5 {
			stuffed++
			last, run = 1-b, 1 // the stuff bit starts the next run
		}
	}
	return stuffed + 1 + 1 + 1 + 7 + 3
}

// crc15 is CAN's CRC (polynomial 0x4599) over bits, one bit per byte.
func crc15(bits []byte) uint16 {
	var crc uint16
	for _, b := range bits {
		nxt := b ^ byte(crc>>14&1)
		crc = crc << 1 & 0x7FFF
		if nxt != 0 {
			crc ^= 0x4599
		}
	}
	return crc
}

// BitTime is how long f occupies a bus running at bitrate bit/s.
func BitTime(f Frame, bitrate int) time.Duration {
	if bitrate <= 0 {
		return 0
	}
	return time.Duration(FrameBits(f)) * time.Second / time.Duration(bitrate)
}

// CRC15Bytes is CAN's CRC-15 over whole bytes, most significant bit first
// (for checking against the published CRC-15/CAN check value).
func CRC15Bytes(p []byte) uint16 {
	bits := make([]byte, 0, 8*len(p))
	for _, x := range p {
		for i := 7; i >= 0; i-- {
			bits = append(bits, x>>uint(i)&1)
		}
	}
	return crc15(bits)
}

// busLink carries a Conn through seams typed link.Link (the fan-out
// engine opens every bus as one); protocols that speak CAN take the Conn
// back with FromLink. As a byte stream it refuses all I/O.
type busLink struct {
	Conn
	name string
}

// AsLink wraps c, the bus named name, as a link.Link.
func AsLink(c Conn, name string) link.Link {
	return &busLink{Conn: c, name: name}
}

func (b *busLink) Read([]byte) (int, error) {
	return 0, fmt.Errorf("bus %s is a CAN bus: it carries frames, not a byte stream (protocol not usable on CAN)", b.name)
}

func (b *busLink) Write([]byte) (int, error) {
	return 0, fmt.Errorf("bus %s is a CAN bus: it carries frames, not a byte stream (protocol not usable on CAN)", b.name)
}

// FromLink returns the Conn inside a link made by AsLink.
func FromLink(l link.Link) (Conn, bool) {
	b, ok := l.(*busLink)
	if !ok {
		return nil, false
	}
	return b.Conn, true
}
