package stm32sim

import (
	"encoding/binary"
)

func xor(p []byte) byte {
	var x byte
	for _, b := range p {
		x ^= b
	}
	return x
}

// readAddr reads 4 address bytes and their XOR; ok is false on a bad checksum.
func (c *conn) readAddr() (uint32, bool, error) {
	p, err := c.read(5)
	if err != nil {
		return 0, false, err
	}
	return binary.BigEndian.Uint32(p), xor(p[:4]) == p[4], nil
}

// readList reads the n+1 bytes that follow a count byte n and their
// checksum (n XOR the bytes); ok is false on a bad checksum.
func (c *conn) readList(n byte) ([]byte, bool, error) {
	p, err := c.read(int(n) + 1)
	if err != nil {
		return nil, false, err
	}
	cs, err := c.next()
	if err != nil {
		return nil, false, err
	}
	return p, cs == n^xor(p), nil
}

type region int

const (
	regNone region = iota
	regFlash
	regRAM
	regOpt
	regSys
)

// mem returns the backing slice for [addr, addr+n) when it lies in one region.
func (s *Sim) mem(addr uint32, n int) ([]byte, region) {
	in := func(start, end uint32) bool {
		return addr >= start && uint64(addr)+uint64(n) <= uint64(end)
	}
	ch := s.chip
	switch {
	case in(ch.FlashStart, ch.FlashEnd):
		o := addr - ch.FlashStart
		return s.flash[o : o+uint32(n)], regFlash
	case in(0x20000000, ch.RAMEnd):
		o := addr - 0x20000000
		return s.ram[o : o+uint32(n)], regRAM
	case s.opt != nil && in(ch.OptStart, ch.OptEnd+1):
		o := addr - ch.OptStart
		return s.opt[o : o+uint32(n)], regOpt
	case in(ch.SysStart, ch.SysEnd):
		o := addr - ch.SysStart
		return s.sysmem[o : o+uint32(n)], regSys
	}
	return nil, regNone
}

func (c *conn) command(op byte) error {
	s := c.s
	s.mu.Lock()
	rdp := s.rdp
	s.mu.Unlock()
	if rdp && (op == 0x11 || op == 0x31 || op == 0x21 || op == 0x43 || op == 0x44 || op == 0xA1) {
		return c.nack()
	}
	ok, err := c.ack()
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	s.stats.Commands[op]++
	s.mu.Unlock()
	switch op {
	case 0x00: // Get
		cmds := s.Commands()
		p := append([]byte{byte(len(cmds)), s.chip.BootloaderVersion}, cmds...)
		return c.send(append(p, ack)...)
	case 0x01: // Get Version & Read Protection
		return c.send(s.chip.BootloaderVersion, 0, 0, ack)
	case 0x02: // Get ID
		return c.send(1, byte(s.chip.PID>>8), byte(s.chip.PID), ack)
	case 0x11:
		return c.readMemory()
	case 0x31:
		return c.writeMemory()
	case 0x21:
		return c.goCmd()
	case 0x43:
		return c.erase()
	case 0x44:
		return c.extendedErase()
	case 0x63:
		return c.writeProtect()
	case 0x73, 0x82:
		return c.protectToggle(op)
	case 0x92:
		return c.readoutUnprotect()
	case 0xA1:
		return c.checksum()
	}
	return c.nack()
}

func (c *conn) readMemory() error {
	s := c.s
	addr, ok, err := c.readAddr()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, reg := s.mem(addr, 1)
	s.mu.Unlock()
	if !ok || reg == regNone {
		return c.nack()
	}
	if ok, err := c.ack(); err != nil || !ok {
		return err
	}
	p, err := c.read(2)
	if err != nil {
		return err
	}
	n := int(p[0]) + 1
	s.mu.Lock()
	m, reg := s.mem(addr, n)
	out := append([]byte(nil), m...)
	s.mu.Unlock()
	if p[1] != p[0]^0xFF || reg == regNone {
		return c.nack()
	}
	if ok, err := c.ack(); err != nil || !ok {
		return err
	}
	return c.send(out...)
}

func (c *conn) writeMemory() error {
	s := c.s
	addr, ok, err := c.readAddr()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, reg := s.mem(addr, 1)
	s.mu.Unlock()
	if !ok || reg == regNone || reg == regSys || addr%4 != 0 {
		return c.nack()
	}
	if ok, err := c.ack(); err != nil || !ok {
		return err
	}
	nb, err := c.next()
	if err != nil {
		return err
	}
	data, ok, err := c.readList(nb)
	if err != nil {
		return err
	}
	if !ok {
		return c.nack()
	}
	s.mu.Lock()
	m, reg := s.mem(addr, len(data))
	good := reg != regNone && reg != regSys && !(reg == regFlash && s.wrp)
	if good && reg == regFlash {
		// flash programs only erased bytes
		for i, b := range data {
			if b != 0xFF && m[i] != 0xFF {
				good = false
				break
			}
		}
	}
	if good {
		if ok, err := c.ackLocked(); err != nil || !ok {
			s.mu.Unlock()
			return err
		}
		for i, b := range data {
			if reg == regFlash {
				m[i] &= b
			} else {
				m[i] = b
			}
		}
		s.mu.Unlock()
		return c.send(ack)
	}
	s.mu.Unlock()
	return c.nack()
}

// ackLocked decides on an injected NACK with s.mu held; it sends nothing on
// success (the caller sends the ACK after doing the work).
func (c *conn) ackLocked() (bool, error) {
	s := c.s
	if s.opts.Faults.NACK > 0 && s.rng.Float64() < s.opts.Faults.NACK {
		s.stats.Injected.NACKs++
		s.mu.Unlock()
		err := c.send(nack)
		s.mu.Lock()
		return false, err
	}
	return true, nil
}

func (c *conn) goCmd() error {
	s := c.s
	addr, ok, err := c.readAddr()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, reg := s.mem(addr, 4)
	s.mu.Unlock()
	if !ok || (reg != regFlash && reg != regRAM) {
		return c.nack()
	}
	s.mu.Lock()
	ok, err = c.ackLocked()
	if err == nil && ok {
		s.running, s.goAddr = true, addr // before the ACK leaves: the jump follows it
	}
	s.mu.Unlock()
	if err != nil || !ok {
		return err
	}
	return c.send(ack)
}

func (c *conn) erasePages(pages []int) error {
	s := c.s
	s.mu.Lock()
	all := s.chip.Pages()
	for _, p := range pages {
		if p < 0 || p >= len(all) || s.wrp {
			s.mu.Unlock()
			return c.nack()
		}
	}
	ok, err := c.ackLocked()
	if err != nil || !ok {
		s.mu.Unlock()
		return err
	}
	s.erasePagesLocked(all, pages)
	s.mu.Unlock()
	s.eraseSleep(len(pages))
	return c.send(ack)
}

func (c *conn) massErase() error {
	s := c.s
	if s.chip.NoMassErase {
		return c.nack()
	}
	pages := make([]int, len(s.chip.Pages()))
	for i := range pages {
		pages[i] = i
	}
	return c.erasePages(pages)
}

func (c *conn) erase() error {
	n, err := c.next()
	if err != nil {
		return err
	}
	if n == 0xFF {
		cs, err := c.next()
		if err != nil {
			return err
		}
		if cs != 0x00 {
			return c.nack()
		}
		return c.massErase()
	}
	p, ok, err := c.readList(n)
	if err != nil {
		return err
	}
	if !ok {
		return c.nack()
	}
	pages := make([]int, len(p))
	for i, b := range p {
		pages[i] = int(b)
	}
	return c.erasePages(pages)
}

func (c *conn) extendedErase() error {
	s := c.s
	h, err := c.read(2)
	if err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(h))
	if n >= 0xFFF0 {
		cs, err := c.next()
		if err != nil {
			return err
		}
		if cs != h[0]^h[1] {
			return c.nack()
		}
		all := len(s.chip.Pages())
		var pages []int
		switch n {
		case 0xFFFF:
			return c.massErase()
		case 0xFFFE:
			for i := 0; i < all/2; i++ {
				pages = append(pages, i)
			}
		case 0xFFFD:
			for i := all / 2; i < all; i++ {
				pages = append(pages, i)
			}
		default:
			return c.nack()
		}
		return c.erasePages(pages)
	}
	p, err := c.read(2 * (n + 1))
	if err != nil {
		return err
	}
	cs, err := c.next()
	if err != nil {
		return err
	}
	if cs != xor(h)^xor(p) {
		return c.nack()
	}
	pages := make([]int, n+1)
	for i := range pages {
		pages[i] = int(binary.BigEndian.Uint16(p[2*i:]))
	}
	return c.erasePages(pages)
}

func (c *conn) writeProtect() error {
	s := c.s
	n, err := c.next()
	if err != nil {
		return err
	}
	// The sector list is read and checked; the model protects everything.
	if _, ok, err := c.readList(n); err != nil {
		return err
	} else if !ok {
		return c.nack()
	}
	s.mu.Lock()
	s.wrp = true
	s.mu.Unlock()
	return c.ackReset()
}

// ackReset sends the final ACK of a protection command, then resets the
// part as the ROM does; the host must synchronise again.
func (c *conn) ackReset() error {
	if err := c.send(ack); err != nil {
		return err
	}
	c.s.mu.Lock()
	c.s.resetLocked()
	c.s.mu.Unlock()
	return errReset
}

// protectToggle handles Write Unprotect (0x73) and Readout Protect (0x82):
// a second ACK, then a system reset.
func (c *conn) protectToggle(op byte) error {
	s := c.s
	s.mu.Lock()
	if op == 0x73 {
		s.wrp = false
	} else {
		s.rdp = true
	}
	s.mu.Unlock()
	return c.ackReset()
}

func (c *conn) readoutUnprotect() error {
	s := c.s
	s.mu.Lock()
	s.readoutUnprotectLocked()
	s.mu.Unlock()
	return c.ackReset()
}

func (c *conn) checksum() error {
	s := c.s
	addr, ok, err := c.readAddr()
	if err != nil {
		return err
	}
	if !ok || addr%4 != 0 {
		return c.nack()
	}
	if ok, err := c.ack(); err != nil || !ok {
		return err
	}
	n, ok, err := c.readAddr()
	if err != nil {
		return err
	}
	s.mu.Lock()
	m, reg := s.mem(addr, int(n))
	var crc uint32
	if reg != regNone {
		crc = CRC(m)
	}
	s.mu.Unlock()
	if !ok || n%4 != 0 || n == 0 || reg == regNone {
		return c.nack()
	}
	if ok, err := c.ack(); err != nil || !ok {
		return err
	}
	var out [5]byte
	binary.BigEndian.PutUint32(out[:], crc)
	out[4] = xor(out[:4])
	return c.send(append([]byte{ack}, out[:]...)...)
}

// CRC is the STM32 CRC unit's CRC-32 (polynomial 0x04C11DB7, initial
// 0xFFFFFFFF, no final XOR) over little-endian 32-bit words, as the
// bootloader's Get Checksum command computes it. len(p) must be a multiple of 4.
func CRC(p []byte) uint32 {
	crc := uint32(0xFFFFFFFF)
	for i := 0; i+4 <= len(p); i += 4 {
		crc ^= binary.LittleEndian.Uint32(p[i:])
		for b := 0; b < 32; b++ {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04C11DB7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
