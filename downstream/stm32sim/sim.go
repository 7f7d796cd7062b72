// Package stm32sim simulates the STM32 system memory (ROM) bootloader over
// USART (AN3155) for one chip of the chips database: autobaud on 0x7F, the
// command set the real part lists (Erase 0x43 or Extended Erase 0x44 per
// family, Get Checksum 0xA1 on newer parts), a flash model with the chip's
// erase granularity that only programs erased bytes, option bytes, read and
// write protection, and fault injection (NACKs, corrupted and dropped bytes,
// delays, a disconnect). It counts bytes and round trips.
//
//	chip, _ := chips.Lookup(0x410)
//	sim := stm32sim.New(chip, stm32sim.Options{Faults: f, Seed: 1})
//	go sim.Serve(ctx, devEnd)            // an in-memory link end or a pty master
//	... flash through the host end ...
//	got := sim.Flash(); st := sim.Stats()
//
// ServePTY opens a pseudo-terminal and serves on it; its slave path is what
// a host program (otagw, stm32flash) opens.
package stm32sim

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"time"

	"github.com/otagw/otagw/downstream/stm32/chips"
)

const (
	ack  = 0x79
	nack = 0x1F
)

// Options configure a simulator.
type Options struct {
	Faults Faults
	Seed   int64
	// EraseTime is the simulated time to erase one page or sector.
	EraseTime time.Duration
	// ReadProtected starts the part with readout protection (RDP level 1):
	// Read, Write, Go and Erase are refused until Readout Unprotect.
	ReadProtected bool
	// WriteProtected starts the part with every page write-protected until
	// Write Unprotect.
	WriteProtected bool
	// Sleep waits; nil means time.Sleep.
	Sleep func(time.Duration)
}

// Stats are counted by the simulator.
type Stats struct {
	HostBytes   int64 `json:"host_bytes"`   // bytes that reached the bootloader
	DeviceBytes int64 `json:"device_bytes"` // bytes the bootloader sent
	RoundTrips  int64 `json:"round_trips"`  // turnarounds: replies sent after host input
	// HostFrames and DeviceFrames count CAN frames (the CAN face only).
	HostFrames   int64        `json:"host_frames,omitempty"`
	DeviceFrames int64        `json:"device_frames,omitempty"`
	Commands     map[byte]int `json:"commands"` // accepted commands by opcode
	Erases       int          `json:"erases"`   // erase operations performed (incl. mass erase)
	PagesErased  int          `json:"pages_erased"`
	Resets       int          `json:"resets"`
	// IdleClocks (SPI face) counts bytes the host clocked while the
	// bootloader had nothing to send: ACK polls, busy periods, dummies.
	IdleClocks int64    `json:"idle_clocks,omitempty"`
	Injected   Injected `json:"injected"`
}

// Injected counts the faults injected.
type Injected struct {
	NACKs, Corrupted, Dropped, Disconnects int
}

// Sim is one simulated part.
type Sim struct {
	chip *chips.Chip
	opts Options

	mu       sync.Mutex
	flash    []byte
	ram      []byte
	opt      []byte
	sysmem   []byte
	rdp, wrp bool
	synced   bool
	running  bool
	goAddr   uint32
	resetGen int
	rng      *rand.Rand
	stats    Stats
	rxSince  bool
	disc     bool
	canRate  int // CAN face: bit rate chosen by Speed (0: 125 kbit/s)
}

// New returns a simulator of chip with erased flash.
func New(chip *chips.Chip, o Options) *Sim {
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	s := &Sim{
		chip:   chip,
		opts:   o,
		flash:  make([]byte, chip.FlashSize()),
		ram:    make([]byte, chip.RAMEnd-0x20000000),
		sysmem: make([]byte, chip.SysEnd-chip.SysStart),
		rdp:    o.ReadProtected,
		wrp:    o.WriteProtected,
		rng:    rand.New(rand.NewSource(o.Seed)),
	}
	if chip.OptEnd > chip.OptStart {
		s.opt = make([]byte, chip.OptEnd-chip.OptStart+1)
		for i := range s.opt {
			s.opt[i] = 0xFF
		}
		s.opt[0], s.opt[1] = 0xA5, 0x5A // RDP level 0 and its complement (F1 layout)
	}
	for i := range s.flash {
		s.flash[i] = 0xFF
	}
	for i := range s.sysmem {
		s.sysmem[i] = byte(i*7 + 3)
	}
	s.stats.Commands = map[byte]int{}
	return s
}

// Chip returns the simulated chip.
func (s *Sim) Chip() *chips.Chip { return s.chip }

// Flash returns a copy of the flash contents (index 0 = FlashStart).
func (s *Sim) Flash() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.flash...)
}

// Program stores data at addr as if it had been flashed earlier (test setup).
func (s *Sim) Program(addr uint32, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.flash[addr-s.chip.FlashStart:], data)
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Commands = map[byte]int{}
	for k, v := range s.stats.Commands {
		st.Commands[k] = v
	}
	return st
}

// ResetStats zeroes the counters.
func (s *Sim) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{Commands: map[byte]int{}}
}

// Reset restarts the part into its ROM bootloader (NRST pulsed with BOOT0
// high): it waits for 0x7F again. A command in progress is abandoned.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Sim) resetLocked() {
	s.synced = false
	s.canRate = 0 // the CAN bootloader restarts at 125 kbit/s
	s.running = false
	s.resetGen++
	s.stats.Resets++
}

// Running reports whether Go was accepted, and its address.
func (s *Sim) Running() (bool, uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running, s.goAddr
}

// Protection reports the readout and write protection state.
func (s *Sim) Protection() (readout, write bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rdp, s.wrp
}

// Commands lists the opcodes the bootloader reports in Get.
func (s *Sim) Commands() []byte {
	erase := byte(0x43)
	if s.chip.ExtendedErase {
		erase = 0x44
	}
	c := []byte{0x00, 0x01, 0x02, 0x11, 0x21, 0x31, erase, 0x63, 0x73, 0x82, 0x92}
	if s.chip.ChecksumCommand {
		c = append(c, 0xA1)
	}
	return c
}

var errReset = errors.New("device reset")

// conn is one Serve session: the byte stream with faults applied.
type conn struct {
	s   *Sim
	l   io.ReadWriter
	buf []byte
	pos int
	gen int
}

// Serve runs the bootloader on l until l reports an error (EOF when the
// peer closes) or ctx ends; when ctx ends it closes l if l is an io.Closer.
func (s *Sim) Serve(ctx context.Context, l io.ReadWriter) error {
	if c, ok := l.(io.Closer); ok {
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
	}
	c := &conn{s: s, l: l, buf: make([]byte, 0, 4096)}
	for {
		err := c.step()
		if err == nil || errors.Is(err, errReset) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}

func (c *conn) fill() error {
	if c.pos < len(c.buf) {
		return nil
	}
	c.buf = c.buf[:cap(c.buf)]
	n, err := c.l.Read(c.buf)
	c.buf, c.pos = c.buf[:n], 0
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// next returns the next host byte after line faults.
func (c *conn) next() (byte, error) {
	s := c.s
	for {
		if err := c.fill(); err != nil {
			return 0, err
		}
		b := c.buf[c.pos]
		c.pos++
		s.mu.Lock()
		if c.gen != s.resetGen {
			// reset from outside: this byte is the first one after it
			c.gen = s.resetGen
			s.mu.Unlock()
			c.pos--
			return 0, errReset
		}
		b, dropped, disconnected := s.hostByteLocked(b)
		if dropped {
			s.mu.Unlock()
			continue
		}
		if disconnected {
			c.gen = s.resetGen
			c.pos = len(c.buf) // input in flight is lost
			s.mu.Unlock()
			return 0, errReset
		}
		s.mu.Unlock()
		return b, nil
	}
}

// hostByteLocked applies the configured line faults to one byte from the
// host, on any face: it may be dropped, or arrive corrupted; the byte that
// reaches the configured count triggers the injected disconnect, which
// resets the simulator (the face then drops what it had in flight).
func (s *Sim) hostByteLocked(b byte) (got byte, dropped, disconnected bool) {
	f := s.opts.Faults
	if f.DropPerKiB > 0 && s.rng.Float64() < f.DropPerKiB/1024 {
		s.stats.Injected.Dropped++
		return b, true, false
	}
	s.stats.HostBytes++
	s.rxSince = true
	if f.CorruptPerKiB > 0 && s.rng.Float64() < f.CorruptPerKiB/1024 {
		b ^= byte(1 + s.rng.Intn(255))
		s.stats.Injected.Corrupted++
	}
	if f.DisconnectAfter > 0 && !s.disc && s.stats.HostBytes >= f.DisconnectAfter {
		s.disc = true
		s.stats.Injected.Disconnects++
		s.resetLocked()
		return b, false, true
	}
	return b, false, false
}

func (c *conn) read(n int) ([]byte, error) {
	p := make([]byte, n)
	for i := range p {
		b, err := c.next()
		if err != nil {
			return nil, err
		}
		p[i] = b
	}
	return p, nil
}

func (c *conn) send(p ...byte) error {
	s := c.s
	s.mu.Lock()
	if s.opts.Faults.Delay > 0 {
		s.mu.Unlock()
		s.opts.Sleep(s.opts.Faults.Delay)
		s.mu.Lock()
	}
	out := append([]byte(nil), p...)
	if f := s.opts.Faults.CorruptPerKiB; f > 0 {
		for i := range out {
			if s.rng.Float64() < f/1024 {
				out[i] ^= byte(1 + s.rng.Intn(255))
				s.stats.Injected.Corrupted++
			}
		}
	}
	s.stats.DeviceBytes += int64(len(out))
	if s.rxSince {
		s.stats.RoundTrips++
		s.rxSince = false
	}
	s.mu.Unlock()
	_, err := c.l.Write(out)
	return err
}

// ack sends ACK, or an injected NACK; it reports whether ACK was sent.
func (c *conn) ack() (bool, error) {
	s := c.s
	s.mu.Lock()
	inject := s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	}
	s.mu.Unlock()
	if inject {
		return false, c.send(nack)
	}
	return true, c.send(ack)
}

func (c *conn) nack() error { return c.send(nack) }

// step handles one autobaud byte or one command.
func (c *conn) step() error {
	s := c.s
	s.mu.Lock()
	synced, running := s.synced, s.running
	c.gen = s.resetGen
	s.mu.Unlock()
	b, err := c.next()
	if err != nil {
		return err
	}
	if running {
		return nil // the application ignores bootloader traffic
	}
	if !synced {
		if b == 0x7F {
			s.mu.Lock()
			s.synced = true
			s.mu.Unlock()
			return c.send(ack)
		}
		return nil
	}
	cb, err := c.next()
	if err != nil {
		return err
	}
	if cb != b^0xFF || !s.lists(b) {
		return c.nack()
	}
	return c.command(b)
}

func (s *Sim) lists(op byte) bool {
	for _, c := range s.Commands() {
		if c == op {
			return true
		}
	}
	return false
}

// erasePagesLocked sets the pages (indices into all, the chip's page
// list) to 0xFF and counts the erase, for every face; s.mu is held.
func (s *Sim) erasePagesLocked(all []chips.Page, pages []int) {
	for _, p := range pages {
		pg := all[p]
		o := pg.Addr - s.chip.FlashStart
		for i := o; i < o+pg.Size; i++ {
			s.flash[i] = 0xFF
		}
	}
	s.stats.Erases++
	s.stats.PagesErased += len(pages)
}

// eraseSleep waits the simulated time to erase n pages (the UART and CAN
// faces; the SPI face answers busy instead).
func (s *Sim) eraseSleep(n int) {
	if s.opts.EraseTime > 0 {
		s.opts.Sleep(s.opts.EraseTime * time.Duration(n))
	}
}

// readoutUnprotectLocked is Readout Unprotect's effect, for every face:
// the whole flash erased, RDP back to level 0; s.mu is held.
func (s *Sim) readoutUnprotectLocked() {
	for i := range s.flash {
		s.flash[i] = 0xFF
	}
	s.rdp = false
	s.stats.Erases++
	s.stats.PagesErased += len(s.chip.Pages())
}
