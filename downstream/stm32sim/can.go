package stm32sim

import (
	"context"
	"encoding/binary"
	"errors"
	"io"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/simpty"
)

// The CAN face (AN3154): the same chip, flash model, protection, faults and
// counters as the USART face, on a can.Conn. Frames are the unit: the
// command's identifier is its opcode, replies come on the same identifier,
// ACK and NACK are one-byte frames, Write Memory data arrive on 0x04.
//
// Several simulators may share one bus; only one whose reset line was
// pulsed with BOOT0 high (Reset) is in its bootloader and answers. One that
// RunApplication put in its application (BOOT0 low), or that took a Go,
// ignores bootloader traffic, as the real part's application does.
//
// Faults on CAN: a frame with a corrupted byte fails the receiver's CRC-15
// and is lost (a real bus would retransmit it; a node that goes bus-off
// loses it), so CorruptPerKiB and DropPerKiB both lose whole frames, in
// both directions for corruption and host to device for drops. NACK
// replaces a command's first or final ACK (where the bootloader decides
// on the operation; the per-frame ACKs of data and page lists only confirm
// reception), so a 256-byte write meets it twice as on USART it meets it
// three times. Delay and DisconnectAfter (counted in data bytes) are as on
// USART. A frame with an identifier the running command does not expect ends that
// command with a NACK and is then taken as a new command (so the host's
// init frame always brings the bootloader back).

// CAN identifiers.
const (
	canInit  = 0x79
	canWrite = 0x04
)

// CANCommands lists the opcodes the CAN bootloader reports in Get: AN3154
// has Speed (0x03) and only the one-byte-page Erase (0x43), and no Get
// Checksum.
func (s *Sim) CANCommands() []byte {
	return []byte{0x00, 0x01, 0x02, 0x03, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92}
}

// CANBitrate is the bit rate the last Speed command selected (125000 after reset).
func (s *Sim) CANBitrate() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.canRate == 0 {
		return 125000
	}
	return s.canRate
}

// RunApplication restarts the part with BOOT0 low: its application runs
// and the bootloader answers nothing until the next Reset.
func (s *Sim) RunApplication() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
	s.running = true
	s.goAddr = s.chip.FlashStart
}

// canConn is one ServeCAN session.
type canConn struct {
	s       *Sim
	c       can.Conn
	gen     int
	pending *can.Frame // a frame that ended a command, to be taken as a new one
}

var errAbort = errors.New("command ended by another frame")

// ServeCAN runs the CAN bootloader on c until c fails (nil when it was
// closed or reached EOF) or ctx ends; when ctx ends it closes c.
func (s *Sim) ServeCAN(ctx context.Context, c can.Conn) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	cc := &canConn{s: s, c: c}
	for {
		err := cc.step()
		if err == nil || errors.Is(err, errReset) || errors.Is(err, errAbort) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, can.ErrClosed) || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}

// ServeSLCANPTY serves sims on one in-memory CAN bus behind an slcan
// adapter on a new pseudo-terminal: its Path is what a host opens as
// transport can with a port (otagw's slcan transport, slcand).
func ServeSLCANPTY(ctx context.Context, sims ...*Sim) (*simpty.PTY, error) {
	return simpty.Serve(ctx, func(ctx context.Context, rw io.ReadWriter) error {
		bus := can.NewBus(can.BusOptions{})
		host := bus.Attach()
		done := make(chan error, len(sims))
		var conns []can.Conn
		for _, s := range sims {
			c := bus.Attach()
			conns = append(conns, c)
			go func() { done <- s.ServeCAN(ctx, c) }()
		}
		ad := can.NewSLCANAdapter(rw)
		go func() { // bus to host
			for {
				f, err := host.Recv()
				if err != nil {
					return
				}
				if ad.Send(f) != nil {
					return
				}
			}
		}()
		var err error
		for { // host to bus
			var f can.Frame
			if f, err = ad.Recv(); err != nil {
				break
			}
			host.Send(f)
		}
		host.Close()
		for _, c := range conns {
			c.Close()
		}
		for range sims {
			<-done
		}
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		return err
	})
}

// recv returns the next host frame after faults.
func (c *canConn) recv() (can.Frame, error) {
	s := c.s
	for {
		var f can.Frame
		if c.pending != nil {
			f, c.pending = *c.pending, nil
		} else {
			var err error
			if f, err = c.c.Recv(); err != nil {
				return f, err
			}
		}
		s.mu.Lock()
		if c.gen != s.resetGen {
			c.gen = s.resetGen
			s.mu.Unlock()
			c.pending = &f
			return f, errReset
		}
		if s.running {
			s.mu.Unlock()
			return f, nil // the caller ignores it
		}
		fa := s.opts.Faults
		n := max(1, int(f.Len))
		if fa.DropPerKiB > 0 && s.rng.Float64() < fa.DropPerKiB*float64(n)/1024 {
			s.stats.Injected.Dropped++
			s.mu.Unlock()
			continue
		}
		if fa.CorruptPerKiB > 0 && s.rng.Float64() < fa.CorruptPerKiB*float64(n)/1024 {
			s.stats.Injected.Corrupted++ // CRC error: the frame is lost
			s.mu.Unlock()
			continue
		}
		s.stats.HostBytes += int64(f.Len)
		s.stats.HostFrames++
		s.rxSince = true
		if fa.DisconnectAfter > 0 && !s.disc && s.stats.HostBytes >= fa.DisconnectAfter {
			s.disc = true
			s.stats.Injected.Disconnects++
			s.resetLocked()
			c.gen = s.resetGen
			s.mu.Unlock()
			return f, errReset // this frame is lost with the reset
		}
		s.mu.Unlock()
		return f, nil
	}
}

// expect receives the next frame of a running command: one with identifier
// id, or else the command ends (NACK on op) and the frame is kept as the
// next command.
func (c *canConn) expect(op byte, id uint32) (can.Frame, error) {
	f, err := c.recv()
	if err != nil {
		return f, err
	}
	if f.ID != id || f.Extended || f.RTR {
		c.pending = &f
		if err := c.send(op, nack); err != nil {
			return f, err
		}
		return f, errAbort
	}
	return f, nil
}

// send transmits one reply frame on identifier op.
func (c *canConn) send(op byte, data ...byte) error {
	return c.sendID(uint32(op), data...)
}

func (c *canConn) sendID(id uint32, data ...byte) error {
	s := c.s
	s.mu.Lock()
	if s.opts.Faults.Delay > 0 {
		s.mu.Unlock()
		s.opts.Sleep(s.opts.Faults.Delay)
		s.mu.Lock()
	}
	n := max(1, len(data))
	lost := s.opts.Faults.CorruptPerKiB > 0 && s.rng.Float64() < s.opts.Faults.CorruptPerKiB*float64(n)/1024
	if lost {
		s.stats.Injected.Corrupted++
	}
	s.stats.DeviceBytes += int64(len(data))
	s.stats.DeviceFrames++
	if s.rxSince {
		s.stats.RoundTrips++
		s.rxSince = false
	}
	s.mu.Unlock()
	if lost {
		return nil
	}
	return c.c.Send(can.NewFrame(id, data...))
}

// ack sends ACK on op, or an injected NACK; it reports whether ACK was sent.
func (c *canConn) ack(op byte) (bool, error) {
	s := c.s
	s.mu.Lock()
	inject := s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
	if inject {
		s.stats.Injected.NACKs++
	}
	s.mu.Unlock()
	if inject {
		return false, c.send(op, nack)
	}
	return true, c.send(op, ack)
}

func (c *canConn) listed(op byte) bool {
	for _, x := range c.s.CANCommands() {
		if x == op {
			return true
		}
	}
	return false
}

// step handles one frame: the init frame, or a command.
func (c *canConn) step() error {
	s := c.s
	s.mu.Lock()
	c.gen = s.resetGen
	s.mu.Unlock()
	f, err := c.recv()
	if err != nil {
		return err
	}
	s.mu.Lock()
	synced, running := s.synced, s.running
	s.mu.Unlock()
	if running || f.Extended || f.RTR {
		return nil
	}
	if f.ID == canInit {
		s.mu.Lock()
		s.synced = true
		s.mu.Unlock()
		return c.sendID(canInit, ack)
	}
	if !synced || f.ID > 0xFF || f.ID == canWrite {
		return nil // before init the bootloader is not listening on CAN
	}
	op := byte(f.ID)
	if !c.listed(op) {
		return c.send(op, nack)
	}
	s.mu.Lock()
	rdp := s.rdp
	s.mu.Unlock()
	if rdp && (op == 0x11 || op == 0x31 || op == 0x21 || op == 0x43) {
		return c.send(op, nack)
	}
	want := map[byte]uint8{0x03: 1, 0x11: 5, 0x21: 4, 0x31: 5, 0x43: 1, 0x63: 1}[op]
	if f.Len != want {
		return c.send(op, nack)
	}
	arg := f.Data
	switch op {
	case 0x00, 0x01, 0x02, 0x73, 0x82, 0x92:
		if ok, err := c.ack(op); err != nil || !ok {
			return err
		}
		c.count(op)
	}
	switch op {
	case 0x00:
		cmds := c.s.CANCommands()
		if err := c.send(op, byte(len(cmds))); err != nil {
			return err
		}
		if err := c.send(op, s.chip.BootloaderVersion); err != nil {
			return err
		}
		for _, x := range cmds {
			if err := c.send(op, x); err != nil {
				return err
			}
		}
		return c.send(op, ack)
	case 0x01:
		if err := c.send(op, s.chip.BootloaderVersion); err != nil {
			return err
		}
		if err := c.send(op, 0, 0); err != nil {
			return err
		}
		return c.send(op, ack)
	case 0x02:
		if err := c.send(op, byte(s.chip.PID>>8), byte(s.chip.PID)); err != nil {
			return err
		}
		return c.send(op, ack)
	case 0x03:
		return c.speed(arg[0])
	case 0x11:
		return c.readMemory(binary.BigEndian.Uint32(arg[:4]), int(arg[4])+1)
	case 0x21:
		return c.goCmd(binary.BigEndian.Uint32(arg[:4]))
	case 0x31:
		return c.writeMemory(binary.BigEndian.Uint32(arg[:4]), int(arg[4])+1)
	case 0x43:
		return c.erase(arg[0])
	case 0x63:
		return c.writeProtect(arg[0])
	case 0x73, 0x82:
		s.mu.Lock()
		if op == 0x73 {
			s.wrp = false
		} else {
			s.rdp = true
		}
		s.mu.Unlock()
		return c.ackReset(op)
	case 0x92:
		s.mu.Lock()
		s.readoutUnprotectLocked()
		s.mu.Unlock()
		return c.ackReset(op)
	}
	return c.send(op, nack)
}

func (c *canConn) count(op byte) {
	c.s.mu.Lock()
	c.s.stats.Commands[op]++
	c.s.mu.Unlock()
}

// ackReset sends the second ACK of a protection command and resets.
func (c *canConn) ackReset(op byte) error {
	if err := c.send(op, ack); err != nil {
		return err
	}
	c.s.mu.Lock()
	c.s.resetLocked()
	c.s.mu.Unlock()
	return errReset
}

// speed: codes 1..4 select 125, 250, 500 and 1000 kbit/s; ACK at the old
// rate, ACK again at the new one.
func (c *canConn) speed(code byte) error {
	rates := map[byte]int{1: 125000, 2: 250000, 3: 500000, 4: 1000000}
	r, ok := rates[code]
	if !ok {
		return c.send(0x03, nack)
	}
	if ok, err := c.ack(0x03); err != nil || !ok {
		return err
	}
	c.count(0x03)
	c.s.mu.Lock()
	c.s.canRate = r
	c.s.mu.Unlock()
	return c.send(0x03, ack)
}

func (c *canConn) readMemory(addr uint32, n int) error {
	s := c.s
	s.mu.Lock()
	m, reg := s.mem(addr, n)
	out := append([]byte(nil), m...)
	s.mu.Unlock()
	if reg == regNone {
		return c.send(0x11, nack)
	}
	if ok, err := c.ack(0x11); err != nil || !ok {
		return err
	}
	c.count(0x11)
	for off := 0; off < n; off += 8 {
		if err := c.send(0x11, out[off:min(off+8, n)]...); err != nil {
			return err
		}
	}
	return c.send(0x11, ack)
}

func (c *canConn) goCmd(addr uint32) error {
	s := c.s
	s.mu.Lock()
	_, reg := s.mem(addr, 4)
	s.mu.Unlock()
	if reg != regFlash && reg != regRAM {
		return c.send(0x21, nack)
	}
	ok, err := c.ack(0x21)
	if err != nil || !ok {
		return err
	}
	c.count(0x21)
	s.mu.Lock()
	s.running, s.goAddr = true, addr
	s.mu.Unlock()
	return nil
}

func (c *canConn) writeMemory(addr uint32, n int) error {
	s := c.s
	s.mu.Lock()
	_, reg := s.mem(addr, 1)
	s.mu.Unlock()
	if reg == regNone || reg == regSys || addr%4 != 0 {
		return c.send(0x31, nack)
	}
	if ok, err := c.ack(0x31); err != nil || !ok {
		return err
	}
	c.count(0x31)
	data := make([]byte, 0, n)
	for len(data) < n {
		f, err := c.expect(0x31, canWrite)
		if err != nil {
			return err
		}
		if f.Len == 0 || len(data)+int(f.Len) > n {
			return c.send(0x31, nack)
		}
		data = append(data, f.Payload()...)
		if err := c.send(0x31, ack); err != nil {
			return err
		}
	}
	s.mu.Lock()
	m, reg := s.mem(addr, len(data))
	good := reg != regNone && reg != regSys && !(reg == regFlash && s.wrp)
	if good && reg == regFlash {
		for i, b := range data { // flash programs only erased bytes
			if b != 0xFF && m[i] != 0xFF {
				good = false
				break
			}
		}
	}
	if good {
		inject := s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK
		if inject {
			s.stats.Injected.NACKs++
			s.mu.Unlock()
			return c.send(0x31, nack)
		}
		for i, b := range data {
			if reg == regFlash {
				m[i] &= b
			} else {
				m[i] = b
			}
		}
		s.mu.Unlock()
		return c.send(0x31, ack)
	}
	s.mu.Unlock()
	return c.send(0x31, nack)
}

// list receives n bytes in frames on op's identifier, each ACKed.
func (c *canConn) list(op byte, n int) ([]byte, bool, error) {
	var p []byte
	for len(p) < n {
		f, err := c.expect(op, uint32(op))
		if err != nil {
			return nil, false, err
		}
		if f.Len == 0 || len(p)+int(f.Len) > n {
			return nil, false, c.send(op, nack)
		}
		p = append(p, f.Payload()...)
		if err := c.send(op, ack); err != nil {
			return nil, false, err
		}
	}
	return p, true, nil
}

func (c *canConn) erase(nb byte) error {
	s := c.s
	var pages []int
	if ok, err := c.ack(0x43); err != nil || !ok {
		return err
	}
	c.count(0x43)
	if nb == 0xFF {
		if s.chip.NoMassErase {
			return c.send(0x43, nack)
		}
		for i := range s.chip.Pages() {
			pages = append(pages, i)
		}
	} else {
		p, ok, err := c.list(0x43, int(nb)+1)
		if err != nil || !ok {
			return err
		}
		for _, b := range p {
			pages = append(pages, int(b))
		}
	}
	s.mu.Lock()
	all := s.chip.Pages()
	for _, p := range pages {
		if p >= len(all) || s.wrp {
			s.mu.Unlock()
			return c.send(0x43, nack)
		}
	}
	if s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK {
		s.stats.Injected.NACKs++
		s.mu.Unlock()
		return c.send(0x43, nack)
	}
	s.erasePagesLocked(all, pages)
	s.mu.Unlock()
	s.eraseSleep(len(pages))
	return c.send(0x43, ack)
}

func (c *canConn) writeProtect(nb byte) error {
	if ok, err := c.ack(0x63); err != nil || !ok {
		return err
	}
	if _, ok, err := c.list(0x63, int(nb)+1); err != nil || !ok {
		return err
	}
	c.count(0x63)
	c.s.mu.Lock()
	c.s.wrp = true // the model protects everything
	c.s.mu.Unlock()
	return c.ackReset(0x63)
}
