package can

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

// slcan (LAWICEL ASCII), as USB-CAN adapters speak it on a serial line.
// Every message ends in CR; the adapter answers a command with CR (done)
// or BEL (refused):
//
//	Sn      set the bit rate, n from SLCANBitrates (S4 = 125 kbit/s)
//	O       open the channel
//	C       close the channel
//	tIIILDD..        standard frame: 3 hex digits id, 1 digit length, 2 per byte
//	TIIIIIIIILDD..   extended frame: 8 hex digits id
//	rIIIL, RIIIIIIIIL remote frames
//
// Received frames come the same way, optionally followed by a 4-digit
// timestamp (Z1). Some adapters confirm a transmitted frame with "z" / "Z".

// SLCANBitrates maps the Sn codes to bit rates.
var SLCANBitrates = []int{10000, 20000, 50000, 100000, 125000, 250000, 500000, 800000, 1000000}

// SLCANCode is the Sn code for bitrate.
func SLCANCode(bitrate int) (int, error) {
	for i, r := range SLCANBitrates {
		if r == bitrate {
			return i, nil
		}
	}
	return 0, fmt.Errorf("slcan: bit rate %d not one of %v", bitrate, SLCANBitrates)
}

// ErrSLCANLine: a line that is not a valid slcan frame.
var ErrSLCANLine = errors.New("slcan: bad frame line")

// FormatSLCAN is f as an slcan line, CR included.
func FormatSLCAN(f Frame) []byte {
	var b []byte
	c := byte('t')
	switch {
	case f.Extended && f.RTR:
		c = 'R'
	case f.Extended:
		c = 'T'
	case f.RTR:
		c = 'r'
	}
	b = append(b, c)
	if f.Extended {
		b = fmt.Appendf(b, "%08X", f.ID)
	} else {
		b = fmt.Appendf(b, "%03X", f.ID)
	}
	b = append(b, '0'+min(f.Len, 8))
	if !f.RTR {
		for _, x := range f.Data[:min(f.Len, 8)] {
			b = fmt.Appendf(b, "%02X", x)
		}
	}
	return append(b, '\r')
}

// ParseSLCAN parses one frame line without its CR: t, T, r or R, the id,
// the length digit, the data, and optionally a 4-digit timestamp.
func ParseSLCAN(line []byte) (Frame, error) {
	var f Frame
	if len(line) == 0 {
		return f, fmt.Errorf("%w: empty", ErrSLCANLine)
	}
	idLen := 3
	switch line[0] {
	case 't':
	case 'T':
		f.Extended, idLen = true, 8
	case 'r':
		f.RTR = true
	case 'R':
		f.Extended, f.RTR, idLen = true, true, 8
	default:
		return f, fmt.Errorf("%w: %q: unknown type %q", ErrSLCANLine, line, line[0])
	}
	if len(line) < 1+idLen+1 {
		return f, fmt.Errorf("%w: %q: too short", ErrSLCANLine, line)
	}
	id, err := parseHex(line[1 : 1+idLen])
	if err != nil {
		return f, fmt.Errorf("%w: %q: identifier: %v", ErrSLCANLine, line, err)
	}
	f.ID = uint32(id)
	if (!f.Extended && f.ID > MaxStandardID) || f.ID > MaxExtendedID {
		return f, fmt.Errorf("%w: %q: identifier 0x%x out of range", ErrSLCANLine, line, f.ID)
	}
	l := line[1+idLen]
	if l < '0' || l > '8' {
		return f, fmt.Errorf("%w: %q: length %q", ErrSLCANLine, line, l)
	}
	f.Len = l - '0'
	rest := line[2+idLen:]
	n := 0
	if !f.RTR {
		n = 2 * int(f.Len)
	}
	if len(rest) != n && len(rest) != n+4 {
		return f, fmt.Errorf("%w: %q: %d characters after the length, want %d (or %d with a timestamp)", ErrSLCANLine, line, len(rest), n, n+4)
	}
	for i := 0; i < n/2; i++ {
		v, err := parseHex(rest[2*i : 2*i+2])
		if err != nil {
			return f, fmt.Errorf("%w: %q: data: %v", ErrSLCANLine, line, err)
		}
		f.Data[i] = byte(v)
	}
	if len(rest) == n+4 {
		if _, err := parseHex(rest[n:]); err != nil {
			return f, fmt.Errorf("%w: %q: timestamp: %v", ErrSLCANLine, line, err)
		}
	}
	return f, nil
}

func parseHex(p []byte) (uint64, error) {
	for _, c := range p {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return 0, fmt.Errorf("%q is not hexadecimal", p)
		}
	}
	return strconv.ParseUint(string(p), 16, 32)
}

// lineReader splits a byte stream into CR-terminated messages; BEL is a
// message of its own (an adapter's "refused").
type lineReader struct {
	buf []byte
	tmp [256]byte
}

// next returns the next message (without CR), reading with read as needed.
func (r *lineReader) next(read func([]byte) (int, error)) ([]byte, error) {
	for {
		if i := bytes.IndexAny(r.buf, "\r\a"); i >= 0 {
			line := r.buf[:i]
			if r.buf[i] == '\a' {
				line = r.buf[:i+1]
			}
			out := append([]byte(nil), line...)
			r.buf = r.buf[i+1:]
			return out, nil
		}
		if len(r.buf) > 4096 { // no terminator in sight: garbage
			r.buf = r.buf[:0]
		}
		n, err := read(r.tmp[:])
		r.buf = append(r.buf, r.tmp[:n]...)
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// slcanConn is the host end: otagw talking to a USB-CAN adapter.
type slcanConn struct {
	l    link.Link
	port string
	rd   lineReader
	wmu  sync.Mutex
	// Bad counts received lines that were not valid frames.
	bad int
}

// OpenSLCAN opens the CAN channel of an slcan adapter on l at bitrate: C
// (close whatever was open), Sn, O, each answered with CR. port names the
// serial device in errors.
func OpenSLCAN(l link.Link, port string, bitrate int) (Conn, error) {
	code, err := SLCANCode(bitrate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", port, err)
	}
	c := &slcanConn{l: l, port: port}
	// A channel left open answers C with CR, a closed one with BEL: both fine.
	if err := c.command("C", true); err != nil {
		return nil, err
	}
	if err := c.command(fmt.Sprintf("S%d", code), false); err != nil {
		return nil, err
	}
	if err := c.command("O", false); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *slcanConn) command(cmd string, belOK bool) error {
	if _, err := c.l.Write([]byte(cmd + "\r")); err != nil {
		return fmt.Errorf("slcan %s: %s: %w", c.port, cmd, err)
	}
	c.l.SetReadDeadline(time.Now().Add(time.Second))
	for {
		line, err := c.rd.next(c.l.Read)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("slcan %s: no answer to %q within 1s (is it an slcan adapter?): %w", c.port, cmd, err)
			}
			return fmt.Errorf("slcan %s: %s: %w", c.port, cmd, err)
		}
		switch {
		case len(line) == 0:
			return nil
		case line[0] == '\a':
			if belOK {
				return nil
			}
			return fmt.Errorf("slcan %s: adapter refused %q", c.port, cmd)
		}
		// a frame received meanwhile, or a transmit confirmation: skip
	}
}

func (c *slcanConn) Send(f Frame) error {
	if err := f.Validate(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.l.Write(FormatSLCAN(f)); err != nil {
		return fmt.Errorf("slcan %s: send: %w", c.port, err)
	}
	return nil
}

func (c *slcanConn) Recv() (Frame, error) {
	for {
		line, err := c.rd.next(c.l.Read)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Frame{}, err
			}
			return Frame{}, fmt.Errorf("slcan %s: recv: %w", c.port, err)
		}
		if len(line) == 0 || line[0] == 'z' || line[0] == 'Z' || line[0] == '\a' {
			continue
		}
		f, err := ParseSLCAN(line)
		if err != nil {
			c.bad++
			continue // a garbled line is a lost frame
		}
		return f, nil
	}
}

func (c *slcanConn) SetReadDeadline(t time.Time) error { return c.l.SetReadDeadline(t) }

// Close closes the channel (C) and, if the link can, the link.
func (c *slcanConn) Close() error {
	c.wmu.Lock()
	c.l.Write([]byte("C\r"))
	c.wmu.Unlock()
	if cl, ok := c.l.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// SLCANAdapter is the other end of an slcan line: what a USB-CAN adapter
// does, reduced to one bus with one node behind it. A simulator serving
// on a pseudo-terminal uses it as its Conn: frames the host sends with
// t/T/r/R arrive at Recv (once the host opened the channel with O), and
// Send writes t/T lines to the host. S, O and C are answered with CR, other
// commands (V, N, F, Z...) with BEL.
type SLCANAdapter struct {
	rw      io.ReadWriter
	wmu     sync.Mutex
	frames  chan Frame
	done    chan struct{}
	errOnce sync.Once
	err     error
	mu      sync.Mutex
	open    bool
	bitrate int
	dl      time.Time
	dlWake  chan struct{}
	closeMu sync.Once
}

// NewSLCANAdapter starts reading rw.
func NewSLCANAdapter(rw io.ReadWriter) *SLCANAdapter {
	a := &SLCANAdapter{rw: rw, frames: make(chan Frame, 1024), done: make(chan struct{}), dlWake: make(chan struct{})}
	go a.read()
	return a
}

// Bitrate is the rate the host last set with Sn (0 before).
func (a *SLCANAdapter) Bitrate() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bitrate
}

func (a *SLCANAdapter) reply(p string) {
	a.wmu.Lock()
	a.rw.Write([]byte(p))
	a.wmu.Unlock()
}

func (a *SLCANAdapter) read() {
	var rd lineReader
	defer close(a.done)
	for {
		line, err := rd.next(a.rw.Read)
		if err != nil {
			a.errOnce.Do(func() { a.err = err })
			return
		}
		if len(line) == 0 {
			continue
		}
		switch line[0] {
		case 't', 'T', 'r', 'R':
			f, err := ParseSLCAN(line)
			a.mu.Lock()
			open := a.open
			a.mu.Unlock()
			if err != nil || !open {
				a.reply("\a")
				continue
			}
			a.frames <- f
		case 'S':
			code, err := strconv.Atoi(string(line[1:]))
			if err != nil || code < 0 || code >= len(SLCANBitrates) {
				a.reply("\a")
				continue
			}
			a.mu.Lock()
			a.bitrate = SLCANBitrates[code]
			a.mu.Unlock()
			a.reply("\r")
		case 'O', 'C':
			a.mu.Lock()
			was := a.open
			a.open = line[0] == 'O'
			a.mu.Unlock()
			if was == (line[0] == 'O') {
				a.reply("\a") // already in that state, as LAWICEL adapters answer
			} else {
				a.reply("\r")
			}
		default:
			a.reply("\a")
		}
	}
}

// Send writes f to the host as an slcan line.
func (a *SLCANAdapter) Send(f Frame) error {
	if err := f.Validate(); err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_, err := a.rw.Write(FormatSLCAN(f))
	return err
}

// Recv returns the next frame the host sent; after the line ends it
// returns the read error (io.EOF when the host side closed).
func (a *SLCANAdapter) Recv() (Frame, error) {
	for {
		a.mu.Lock()
		dl, wake := a.dl, a.dlWake
		a.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return Frame{}, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		f, again, err := a.wait(timeout, wake)
		if t != nil {
			t.Stop()
		}
		if !again {
			return f, err
		}
	}
}

func (a *SLCANAdapter) wait(timeout <-chan time.Time, wake chan struct{}) (Frame, bool, error) {
	select {
	case f := <-a.frames:
		return f, false, nil
	case <-a.done:
		select {
		case f := <-a.frames:
			return f, false, nil
		default:
		}
		return Frame{}, false, a.err
	case <-timeout:
		return Frame{}, false, os.ErrDeadlineExceeded
	case <-wake:
		return Frame{}, true, nil
	}
}

// SetReadDeadline sets Recv's deadline.
func (a *SLCANAdapter) SetReadDeadline(t time.Time) error {
	a.mu.Lock()
	a.dl = t
	close(a.dlWake)
	a.dlWake = make(chan struct{})
	a.mu.Unlock()
	return nil
}

// Close closes rw when it is an io.Closer.
func (a *SLCANAdapter) Close() error {
	var err error
	a.closeMu.Do(func() {
		if c, ok := a.rw.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}
