package stm32sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net"
	"sync"
	"time"

	"github.com/otagw/otagw/downstream/spi"
)

// SPI face (AN4286). The bootloader is an SPI slave: every byte the host
// clocks in is answered, in the same clock, by the byte in its shift
// register. The register is loaded at the end of each byte from the reply
// queue (or with the filler 0xA5 when the queue is empty or the part is
// busy), so a reply to a byte leaves two clocks later: MOSI `00 00 79`,
// MISO `xx 79 xx`, as AN4286 draws the ACK procedure. The protocol itself
// is straight-line code run as a coroutine that takes one MOSI byte per
// clock.
//
//	face, err := sim.SPI()                     // the chip needs an SPI bootloader
//	bus := spi.NewFake(face, spi.FakeOptions{}) // or ServeSPISocket for another process
//	c := stm32.NewSPI(bus, opts)
//
// The face shares the chip, the flash model, the faults and the counters
// of the simulator: NACK injection, corrupted bytes (both directions),
// dropped host bytes (not clocked into the part), Delay (busy before every
// reply) and DisconnectAfter (a reset after that many host bytes).
// EraseTime makes the part busy while it erases.

const spiFiller = 0xA5

var (
	errSPIStop  = errors.New("spi face stopped")
	errSPIReset = errors.New("spi face reset")
)

// SPIFace is the simulator's SPI slave; it implements spi.Slave and
// spi.Resetter.
type SPIFace struct {
	s *Sim

	mu        sync.Mutex
	shift     byte
	out       []byte
	busyUntil time.Time
	cur       byte
	replay    bool
	resetReq  bool
	gen       int
	next      func() (struct{}, bool)
	stop      func()
}

// SPI returns the simulator's SPI face. Only parts whose bootloader erases
// with Extended Erase (0x44) have an SPI bootloader in the database (the
// F1 and the oldest F0 parts have none).
func (s *Sim) SPI() (*SPIFace, error) {
	if !s.chip.ExtendedErase {
		return nil, fmt.Errorf("stm32sim: %s: its ROM bootloader has no SPI interface (AN2606); pick a part with Extended Erase, e.g. 0x413 or 0x460", s.chip)
	}
	f := &SPIFace{s: s, shift: spiFiller}
	s.mu.Lock()
	f.gen = s.resetGen
	s.mu.Unlock()
	f.next, f.stop = iter.Pull(f.body)
	f.next() // run to the first byte it waits for
	return f, nil
}

// ServeSPISocket serves the SPI face on a Unix socket (the simulator link
// of package spi: device "sim:PATH" on an spi bus) until ctx ends.
func ServeSPISocket(ctx context.Context, s *Sim, path string) (net.Listener, error) {
	f, err := s.SPI()
	if err != nil {
		return nil, err
	}
	return spi.ServeSim(ctx, path, f)
}

// Close ends the face's coroutine; the face answers only filler after it.
func (f *SPIFace) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stop()
	f.next = func() (struct{}, bool) { return struct{}{}, false }
}

// Reset pulses NRST (with BOOT0 high): the part waits for the sync byte.
func (f *SPIFace) Reset() { f.s.Reset() }

// Clock shifts one byte each way.
func (f *SPIFace) Clock(mosi byte) byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	miso := f.shift
	now := time.Now()
	switch {
	case now.Before(f.busyUntil) || len(f.out) == 0:
		f.shift = spiFiller
	default:
		f.shift, f.out = f.out[0], f.out[1:]
	}
	s.mu.Lock()
	if miso == spiFiller {
		s.stats.IdleClocks++
	} else {
		s.stats.DeviceBytes++
	}
	fl := s.opts.Faults
	if fl.CorruptPerKiB > 0 && s.rng.Float64() < fl.CorruptPerKiB/1024 {
		miso ^= byte(1 + s.rng.Intn(255))
		s.stats.Injected.Corrupted++
	}
	if f.gen != s.resetGen { // reset from outside: this byte is the first after it
		f.gen = s.resetGen
		f.out, f.shift, f.busyUntil = nil, spiFiller, time.Time{}
		f.resetReq, f.replay = true, true
		s.mu.Unlock()
		f.cur = mosi
		f.next()
		return miso
	}
	if now.Before(f.busyUntil) { // programming or erasing: the host's bytes are lost
		s.mu.Unlock()
		return miso
	}
	mosi, dropped, disconnected := s.hostByteLocked(mosi)
	if dropped {
		s.mu.Unlock()
		return miso
	}
	if disconnected {
		f.gen = s.resetGen
		f.out, f.shift, f.busyUntil = nil, spiFiller, time.Time{}
		f.resetReq = true // the byte is lost with the rest of the frame
		s.mu.Unlock()
		f.cur = mosi
		f.next()
		return miso
	}
	s.mu.Unlock()
	f.cur = mosi
	f.next()
	return miso
}

// body is the coroutine: it serves until stopped, starting again from
// "wait for sync" after every reset.
func (f *SPIFace) body(yield func(struct{}) bool) {
	defer func() {
		if r := recover(); r != nil && r != errSPIStop {
			panic(r)
		}
	}()
	in := func() byte {
		if f.replay && !f.resetReq {
			f.replay = false
			return f.cur
		}
		if f.resetReq {
			f.resetReq = false
			panic(errSPIReset)
		}
		if !yield(struct{}{}) {
			panic(errSPIStop)
		}
		if f.resetReq {
			f.resetReq = false
			panic(errSPIReset)
		}
		return f.cur
	}
	for {
		func() {
			defer func() {
				if r := recover(); r != nil && r != errSPIReset {
					panic(r)
				}
			}()
			f.serve(in)
		}()
	}
}

// queue appends reply bytes (the shift register picks them up), after the
// fault Delay as a busy period.
func (f *SPIFace) queue(p ...byte) {
	s := f.s
	s.mu.Lock()
	if d := s.opts.Faults.Delay; d > 0 {
		f.busy(d)
	}
	if s.rxSince {
		s.stats.RoundTrips++
		s.rxSince = false
	}
	s.mu.Unlock()
	f.out = append(f.out, p...)
}

func (f *SPIFace) busy(d time.Duration) {
	if t := time.Now().Add(d); t.After(f.busyUntil) {
		f.busyUntil = t
	}
}

// hostAck waits for the host's 0x79 that closes the ACK procedure; other
// bytes (the host's poll dummies) are ignored.
func (f *SPIFace) hostAck(in func() byte) {
	for in() != ack {
	}
}

// reply sends ACK, or an injected NACK, and waits for the host's ACK; it
// reports whether ACK was sent.
func (f *SPIFace) reply(in func() byte) bool {
	s := f.s
	s.mu.Lock()
	inject := s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	}
	s.mu.Unlock()
	if inject {
		f.queue(nack)
	} else {
		f.queue(ack)
	}
	f.hostAck(in)
	return !inject
}

func (f *SPIFace) refuse(in func() byte) {
	f.queue(nack)
	f.hostAck(in)
}

func (f *SPIFace) read(in func() byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = in()
	}
	return p
}

// selfReset ends a protection command: the part resets after its last ACK
// (which still leaves the shift register) and waits for the sync byte.
func (f *SPIFace) selfReset() {
	s := f.s
	s.mu.Lock()
	s.resetLocked()
	f.gen = s.resetGen
	s.mu.Unlock()
}

func (f *SPIFace) commands() []byte {
	var c []byte
	for _, op := range f.s.Commands() {
		if op != 0xA1 { // Get Checksum is not offered over SPI
			c = append(c, op)
		}
	}
	return c
}

func (f *SPIFace) serve(in func() byte) {
	s := f.s
	for {
		s.mu.Lock()
		synced, running := s.synced, s.running
		s.mu.Unlock()
		b := in()
		if running {
			continue // the application ignores bootloader traffic
		}
		if !synced {
			if b == 0x5A {
				s.mu.Lock()
				s.synced = true
				s.mu.Unlock()
				f.queue(ack)
				f.hostAck(in)
			}
			continue
		}
		if b != 0x5A {
			continue // between frames: dummies, the host's stray ACKs
		}
		f.out = f.out[:0] // a new frame: what the host did not read is gone
		op, cop := in(), in()
		listed := false
		for _, c := range f.commands() {
			listed = listed || c == op
		}
		if cop != op^0xFF || !listed {
			f.refuse(in)
			continue
		}
		f.command(op, in)
	}
}

func (f *SPIFace) command(op byte, in func() byte) {
	s := f.s
	s.mu.Lock()
	rdp := s.rdp
	s.mu.Unlock()
	if rdp && (op == 0x11 || op == 0x31 || op == 0x21 || op == 0x44) {
		f.refuse(in)
		return
	}
	if !f.reply(in) {
		return
	}
	s.mu.Lock()
	s.stats.Commands[op]++
	s.mu.Unlock()
	ch := s.chip
	switch op {
	case 0x00:
		cmds := f.commands()
		f.queue(append(append([]byte{byte(len(cmds)), ch.BootloaderVersion}, cmds...), ack)...)
		f.hostAck(in)
	case 0x01:
		f.queue(ch.BootloaderVersion, ack)
		f.hostAck(in)
	case 0x02:
		f.queue(1, byte(ch.PID>>8), byte(ch.PID), ack)
		f.hostAck(in)
	case 0x11:
		f.readMemory(in)
	case 0x31:
		f.writeMemory(in)
	case 0x21:
		f.goCmd(in)
	case 0x44:
		f.extendedErase(in)
	case 0x63:
		n := in()
		p := f.read(in, int(n)+1)
		if in() != n^xor(p) {
			f.refuse(in)
			return
		}
		s.mu.Lock()
		s.wrp = true
		s.mu.Unlock()
		f.queue(ack)
		f.selfReset()
	case 0x73, 0x82:
		s.mu.Lock()
		if op == 0x73 {
			s.wrp = false
		} else {
			s.rdp = true
		}
		s.mu.Unlock()
		f.queue(ack)
		f.selfReset()
	case 0x92:
		s.mu.Lock()
		s.readoutUnprotectLocked()
		s.mu.Unlock()
		f.busy(s.opts.EraseTime * time.Duration(len(ch.Pages())))
		f.queue(ack)
		f.selfReset()
	}
}

func (f *SPIFace) addr(in func() byte) (uint32, bool) {
	p := f.read(in, 5)
	return binary.BigEndian.Uint32(p), xor(p[:4]) == p[4]
}

func (f *SPIFace) readMemory(in func() byte) {
	s := f.s
	a, ok := f.addr(in)
	s.mu.Lock()
	_, reg := s.mem(a, 1)
	s.mu.Unlock()
	if !ok || reg == regNone {
		f.refuse(in)
		return
	}
	if !f.reply(in) {
		return
	}
	n, nn := in(), in()
	s.mu.Lock()
	m, reg := s.mem(a, int(n)+1)
	data := append([]byte(nil), m...)
	s.mu.Unlock()
	if nn != n^0xFF || reg == regNone {
		f.refuse(in)
		return
	}
	if !f.reply(in) {
		return
	}
	f.queue(data...)
}

func (f *SPIFace) writeMemory(in func() byte) {
	s := f.s
	a, ok := f.addr(in)
	s.mu.Lock()
	_, reg := s.mem(a, 1)
	s.mu.Unlock()
	if !ok || reg == regNone || reg == regSys || a%4 != 0 {
		f.refuse(in)
		return
	}
	if !f.reply(in) {
		return
	}
	n := in()
	data := f.read(in, int(n)+1)
	if in() != n^xor(data) {
		f.refuse(in)
		return
	}
	s.mu.Lock()
	m, reg := s.mem(a, len(data))
	good := reg != regNone && reg != regSys && !(reg == regFlash && s.wrp)
	if good && reg == regFlash {
		for i, b := range data {
			if b != 0xFF && m[i] != 0xFF {
				good = false
				break
			}
		}
	}
	inject := good && s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	} else if good {
		for i, b := range data {
			if reg == regFlash {
				m[i] &= b
			} else {
				m[i] = b
			}
		}
	}
	s.mu.Unlock()
	if !good || inject {
		f.refuse(in)
		return
	}
	f.queue(ack)
	f.hostAck(in)
}

func (f *SPIFace) goCmd(in func() byte) {
	s := f.s
	a, ok := f.addr(in)
	s.mu.Lock()
	_, reg := s.mem(a, 4)
	s.mu.Unlock()
	if !ok || (reg != regFlash && reg != regRAM) {
		f.refuse(in)
		return
	}
	s.mu.Lock()
	inject := s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	} else {
		s.running, s.goAddr = true, a
	}
	s.mu.Unlock()
	if inject {
		f.refuse(in)
		return
	}
	f.queue(ack) // the jump follows; the host's closing 0x79 reaches the application
}

func (f *SPIFace) erasePages(pages []int, in func() byte) {
	s := f.s
	s.mu.Lock()
	all := s.chip.Pages()
	good := !s.wrp
	for _, p := range pages {
		good = good && p >= 0 && p < len(all)
	}
	inject := good && s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	}
	if good && !inject {
		s.erasePagesLocked(all, pages)
	}
	s.mu.Unlock()
	if !good || inject {
		f.refuse(in)
		return
	}
	f.busy(s.opts.EraseTime * time.Duration(len(pages)))
	f.queue(ack)
	f.hostAck(in)
}

// extendedErase: over SPI the count and the page list are two frames,
// each ACKed; the special codes (0xFFFF mass, 0xFFFE/0xFFFD banks) send
// only the first.
func (f *SPIFace) extendedErase(in func() byte) {
	s := f.s
	h := f.read(in, 2)
	cs := in()
	if cs != h[0]^h[1] {
		f.refuse(in)
		return
	}
	n := int(binary.BigEndian.Uint16(h))
	all := len(s.chip.Pages())
	if n >= 0xFFF0 {
		var pages []int
		switch {
		case n == 0xFFFF && !s.chip.NoMassErase:
			for i := 0; i < all; i++ {
				pages = append(pages, i)
			}
		case n == 0xFFFE:
			for i := 0; i < all/2; i++ {
				pages = append(pages, i)
			}
		case n == 0xFFFD:
			for i := all / 2; i < all; i++ {
				pages = append(pages, i)
			}
		default:
			f.refuse(in)
			return
		}
		f.erasePages(pages, in)
		return
	}
	if !f.reply(in) {
		return
	}
	p := f.read(in, 2*(n+1))
	if in() != xor(p) {
		f.refuse(in)
		return
	}
	pages := make([]int, n+1)
	for i := range pages {
		pages[i] = int(binary.BigEndian.Uint16(p[2*i:]))
	}
	f.erasePages(pages, in)
}
