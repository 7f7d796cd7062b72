// Package stm32 is a client for the STM32 system memory (ROM) bootloader
// over USART, as specified by ST's AN3155: init (0x7F autobaud), Get, Get
// Version, Get ID, Read Memory, Write Memory, Erase (0x43) and Extended
// Erase (0x44), write/readout unprotect, Get Checksum (0xA1) and Go. It
// talks over a link.Link and never opens a device itself.
//
//	c := stm32.New(port, stm32.DefaultOptions())
//	if err := c.Init(ctx); err != nil { ... }           // sync, Get, Get Version, Get ID
//	chip, _ := chips.Lookup(c.Info().PID)
//	f, err := stm32.NewFlasher(c, chip, segments, stm32.DefaultOptions())
//	err = f.Run(ctx, progress)   // erase, write, verify; resumable after an error
//	err = c.Go(ctx, chip.FlashStart)
//
// Errors are typed: errors.Is(err, stm32.ErrNACK), ErrTimeout, ErrGarbled
// are transient line errors (Transient reports them); ErrNoCommand,
// ErrProtected, ErrVerify and ErrRetries are not.
package stm32

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/link"
)

// Reply bytes.
const (
	ACK  = 0x79
	NACK = 0x1F
	BUSY = 0x76
)

// Command opcodes.
const (
	CmdGet              = 0x00
	CmdGetVersion       = 0x01
	CmdGetID            = 0x02
	CmdReadMemory       = 0x11
	CmdGo               = 0x21
	CmdWriteMemory      = 0x31
	CmdErase            = 0x43
	CmdExtendedErase    = 0x44
	CmdWriteProtect     = 0x63
	CmdWriteUnprotect   = 0x73
	CmdReadoutProtect   = 0x82
	CmdReadoutUnprotect = 0x92
	CmdChecksum         = 0xA1
)

var (
	// ErrNACK: the bootloader answered NACK.
	ErrNACK = errors.New("bootloader answered NACK")
	// ErrTimeout: no reply within the operation's timeout.
	ErrTimeout = errors.New("no reply from the bootloader")
	// ErrGarbled: a reply byte that is neither ACK nor NACK, or a bad reply checksum.
	ErrGarbled = errors.New("garbled reply from the bootloader")
	// ErrNoCommand: the bootloader does not list a command the operation needs.
	ErrNoCommand = errors.New("command not offered by this bootloader")
	// ErrProtected: flash is read- or write-protected and unprotecting is not enabled.
	ErrProtected = errors.New("flash is protected")
	// ErrVerify: flash content differs from the image after all repair attempts.
	ErrVerify = errors.New("verify failed")
	// ErrRetries: the retry budget for line errors is used up.
	ErrRetries = errors.New("too many line errors")
	// ErrNotSynced: the bootloader could not be brought back in step.
	ErrNotSynced = errors.New("cannot synchronise with the bootloader")
)

// Transient reports whether err is a line error worth retrying.
func Transient(err error) bool {
	return errors.Is(err, ErrNACK) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrGarbled) || errors.Is(err, ErrNotSynced)
}

// Options tune timeouts, retries and the flashing strategy; they are the
// "downstream.stm32:" configuration section, declared in the root package.
type Options = downstream.STM32Options

// DefaultOptions are stm32flash's timeouts.
func DefaultOptions() Options { return downstream.DefaultSTM32Options() }

// Info is what Init learnt about the bootloader.
type Info struct {
	Version  byte   `json:"bootloader_version"`
	Commands []byte `json:"commands"`
	Option1  byte   `json:"option1"`
	Option2  byte   `json:"option2"`
	PID      uint16 `json:"pid"`
}

// Has reports whether the bootloader lists op.
func (i Info) Has(op byte) bool {
	for _, c := range i.Commands {
		if c == op {
			return true
		}
	}
	return false
}

// EraseCommand is 0x44 when listed, else 0x43, else 0.
func (i Info) EraseCommand() byte {
	switch {
	case i.Has(CmdExtendedErase):
		return CmdExtendedErase
	case i.Has(CmdErase):
		return CmdErase
	}
	return 0
}

// Client speaks AN3155 over a link.
type Client struct {
	l    link.Link
	o    Options
	info Info
}

// New returns a client on l. Zero timeouts in o take the defaults.
func New(l link.Link, o Options) *Client {
	d := DefaultOptions()
	if o.ByteTimeout <= 0 {
		o.ByteTimeout = d.ByteTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.PageEraseTimeout <= 0 {
		o.PageEraseTimeout = d.PageEraseTimeout
	}
	if o.MassEraseTimeout <= 0 {
		o.MassEraseTimeout = d.MassEraseTimeout
	}
	if o.Verify == "" {
		o.Verify = d.Verify
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{l: l, o: o}
}

// Info returns what Init learnt.
func (c *Client) Info() Info { return c.info }

func (c *Client) write(p []byte) error {
	if _, err := c.l.Write(p); err != nil {
		return fmt.Errorf("write to link: %w", err)
	}
	return nil
}

// readFull reads len(p) bytes within timeout.
func (c *Client) readFull(ctx context.Context, p []byte, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dl := c.o.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.l.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.l.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for n := 0; n < len(p); {
		m, err := c.l.Read(p[n:])
		n += m
		if n == len(p) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%d of %d bytes in %v: %w", n, len(p), timeout, ErrTimeout)
			}
			return fmt.Errorf("read from link: %w", err)
		}
	}
	return nil
}

func (c *Client) getAck(ctx context.Context, timeout time.Duration) error {
	var b [1]byte
	for {
		if err := c.readFull(ctx, b[:], timeout); err != nil {
			return err
		}
		switch b[0] {
		case ACK:
			return nil
		case NACK:
			return ErrNACK
		case BUSY:
			continue
		}
		return fmt.Errorf("byte 0x%02x: %w", b[0], ErrGarbled)
	}
}

func (c *Client) command(ctx context.Context, op byte) error {
	if c.info.Commands != nil && !c.info.Has(op) {
		return fmt.Errorf("command 0x%02x: %w", op, ErrNoCommand)
	}
	if err := c.write([]byte{op, op ^ 0xFF}); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout); err != nil {
		return fmt.Errorf("command 0x%02x: %w", op, err)
	}
	return nil
}

func addrFrame(a uint32) []byte {
	p := make([]byte, 5)
	binary.BigEndian.PutUint32(p, a)
	p[4] = p[0] ^ p[1] ^ p[2] ^ p[3]
	return p
}

func (c *Client) sendAddr(ctx context.Context, what string, a uint32) error {
	if err := c.write(addrFrame(a)); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout); err != nil {
		return fmt.Errorf("%s address 0x%08x: %w", what, a, err)
	}
	return nil
}

// Sync sends 0x7F for autobaud. A bootloader that is already synchronised
// takes 0x7F as the first byte of a command: then the read times out, a
// second 0x7F completes an invalid command and the NACK means "in step"
// (stm32flash's handling).
func (c *Client) Sync(ctx context.Context) error {
	c.drain(ctx)
	if err := c.write([]byte{0x7F}); err != nil {
		return err
	}
	err := c.getAck(ctx, c.o.ByteTimeout)
	if err == nil || errors.Is(err, ErrNACK) {
		return nil
	}
	if !errors.Is(err, ErrTimeout) {
		return c.Recover(ctx)
	}
	if err := c.write([]byte{0x7F}); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout); err == nil || errors.Is(err, ErrNACK) {
		return nil
	}
	return c.Recover(ctx)
}

// Init synchronises and reads Get Version, Get and Get ID. Line errors are
// retried a few times (the replies are short); a NACK leaves the bootloader
// in step, other errors are followed by Recover.
func (c *Client) Init(ctx context.Context) error {
	return initRetry(ctx, func(ctx context.Context) error { return identify(ctx, c, &c.info) }, recoverUnlessNACK(c))
}

// Get returns the bootloader version and the opcodes it lists.
func (c *Client) Get(ctx context.Context) (byte, []byte, error) {
	if err := c.command(ctx, CmdGet); err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	var n [1]byte
	if err := c.readFull(ctx, n[:], c.o.ByteTimeout); err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	rest := make([]byte, int(n[0])+2) // version + N opcodes + ACK
	if err := c.readFull(ctx, rest, c.o.ByteTimeout); err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	v, cmds, err := ParseGet(append(n[:], rest...))
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	return v, cmds, nil
}

// ParseGet parses a Get reply: N, version, N opcodes, ACK.
func ParseGet(p []byte) (version byte, cmds []byte, err error) {
	if len(p) < 3 {
		return 0, nil, fmt.Errorf("reply of %d bytes: %w", len(p), ErrGarbled)
	}
	n := int(p[0])
	if len(p) != n+3 {
		return 0, nil, fmt.Errorf("reply of %d bytes for N=%d: %w", len(p), n, ErrGarbled)
	}
	if p[len(p)-1] != ACK {
		return 0, nil, fmt.Errorf("reply ends in 0x%02x: %w", p[len(p)-1], ErrGarbled)
	}
	cmds = append([]byte(nil), p[2:2+n]...)
	for _, must := range []byte{CmdGet, CmdGetID, CmdReadMemory} {
		if !bytesHas(cmds, must) {
			return 0, nil, fmt.Errorf("command list % x lacks 0x%02x: %w", cmds, must, ErrGarbled)
		}
	}
	return p[1], cmds, nil
}

func bytesHas(p []byte, b byte) bool {
	for _, x := range p {
		if x == b {
			return true
		}
	}
	return false
}

// GetVersion returns the bootloader version and the two option bytes.
func (c *Client) GetVersion(ctx context.Context) (ver, opt1, opt2 byte, err error) {
	if err := c.command(ctx, CmdGetVersion); err != nil {
		return 0, 0, 0, fmt.Errorf("get version: %w", err)
	}
	p := make([]byte, 4)
	if err := c.readFull(ctx, p, c.o.ByteTimeout); err != nil {
		return 0, 0, 0, fmt.Errorf("get version: %w", err)
	}
	if p[3] != ACK {
		return 0, 0, 0, fmt.Errorf("get version: trailer 0x%02x: %w", p[3], ErrGarbled)
	}
	return p[0], p[1], p[2], nil
}

// GetID returns the 12-bit product ID.
func (c *Client) GetID(ctx context.Context) (uint16, error) {
	if err := c.command(ctx, CmdGetID); err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	var n [1]byte
	if err := c.readFull(ctx, n[:], c.o.ByteTimeout); err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	rest := make([]byte, int(n[0])+2)
	if err := c.readFull(ctx, rest, c.o.ByteTimeout); err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	pid, err := ParseID(append(n[:], rest...))
	if err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	return pid, nil
}

// ParseID parses a Get ID reply: N, N+1 ID bytes, ACK.
func ParseID(p []byte) (uint16, error) {
	if len(p) < 4 || len(p) != int(p[0])+3 || p[len(p)-1] != ACK || p[0] < 1 {
		return 0, fmt.Errorf("id reply % x: %w", p, ErrGarbled)
	}
	return uint16(p[1])<<8 | uint16(p[2]), nil
}

// ReadMemory reads n (1..256) bytes at addr.
func (c *Client) ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error) {
	if n < 1 || n > 256 {
		return nil, fmt.Errorf("read 0x%08x: length %d not in 1..256", addr, n)
	}
	if err := c.command(ctx, CmdReadMemory); err != nil {
		return nil, fmt.Errorf("read 0x%08x: %w", addr, err)
	}
	if err := c.sendAddr(ctx, "read", addr); err != nil {
		return nil, err
	}
	if err := c.write([]byte{byte(n - 1), byte(n-1) ^ 0xFF}); err != nil {
		return nil, err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout); err != nil {
		return nil, fmt.Errorf("read 0x%08x length: %w", addr, err)
	}
	p := make([]byte, n)
	if err := c.readFull(ctx, p, c.o.ByteTimeout+time.Duration(n)*c.o.ByteTimeout/64); err != nil {
		return nil, fmt.Errorf("read 0x%08x data: %w", addr, err)
	}
	return p, nil
}

// WriteMemory writes up to 256 bytes at a 4-byte aligned addr; the data
// are padded with 0xFF to a multiple of 4.
func (c *Client) WriteMemory(ctx context.Context, addr uint32, data []byte) error {
	if len(data) == 0 || len(data) > 256 || addr%4 != 0 {
		return fmt.Errorf("write 0x%08x: %d bytes: need 1..256 bytes at a 4-byte aligned address", addr, len(data))
	}
	if err := c.command(ctx, CmdWriteMemory); err != nil {
		return fmt.Errorf("write 0x%08x: %w", addr, err)
	}
	if err := c.sendAddr(ctx, "write", addr); err != nil {
		return err
	}
	n := (len(data) + 3) &^ 3
	frame := make([]byte, 0, n+2)
	frame = append(frame, byte(n-1))
	frame = append(frame, data...)
	for len(frame) < n+1 {
		frame = append(frame, 0xFF)
	}
	var cs byte
	for _, b := range frame {
		cs ^= b
	}
	frame = append(frame, cs)
	if err := c.write(frame); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.WriteTimeout); err != nil {
		return fmt.Errorf("write 0x%08x data: %w", addr, err)
	}
	return nil
}

// ErasePages erases the listed pages (sectors), splitting the list into
// commands of at most 512 pages (Extended Erase) or 256 pages (Erase).
// The timeout scales with the number of pages.
func (c *Client) ErasePages(ctx context.Context, pages []int) error {
	op := c.info.EraseCommand()
	if op == 0 {
		return fmt.Errorf("erase: %w", ErrNoCommand)
	}
	max := 512
	if op == CmdErase {
		max = 256
	}
	for len(pages) > 0 {
		n := min(len(pages), max)
		if err := c.erase(ctx, op, pages[:n]); err != nil {
			return err
		}
		pages = pages[n:]
	}
	return nil
}

func (c *Client) erase(ctx context.Context, op byte, pages []int) error {
	var frame []byte
	if op == CmdErase {
		frame = append(frame, byte(len(pages)-1))
		for _, p := range pages {
			if p > 255 {
				return fmt.Errorf("erase page %d: Erase (0x43) addresses pages 0-255 only", p)
			}
			frame = append(frame, byte(p))
		}
	} else {
		frame = binary.BigEndian.AppendUint16(frame, uint16(len(pages)-1))
		for _, p := range pages {
			frame = binary.BigEndian.AppendUint16(frame, uint16(p))
		}
	}
	var cs byte
	for _, b := range frame {
		cs ^= b
	}
	frame = append(frame, cs)
	if err := c.command(ctx, op); err != nil {
		return fmt.Errorf("erase: %w", err)
	}
	if err := c.write(frame); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout+time.Duration(len(pages))*c.o.PageEraseTimeout); err != nil {
		return fmt.Errorf("erase %d pages from %d: %w", len(pages), pages[0], err)
	}
	return nil
}

// MassErase erases the whole flash.
func (c *Client) MassErase(ctx context.Context) error {
	op := c.info.EraseCommand()
	if op == 0 {
		return fmt.Errorf("mass erase: %w", ErrNoCommand)
	}
	if err := c.command(ctx, op); err != nil {
		return fmt.Errorf("mass erase: %w", err)
	}
	frame := []byte{0xFF, 0x00}
	if op == CmdExtendedErase {
		frame = []byte{0xFF, 0xFF, 0x00}
	}
	if err := c.write(frame); err != nil {
		return err
	}
	if err := c.getAck(ctx, c.o.MassEraseTimeout); err != nil {
		return fmt.Errorf("mass erase: %w", err)
	}
	return nil
}

// WriteUnprotect removes write protection; the part resets and Init must
// be called again.
func (c *Client) WriteUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdWriteUnprotect); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	if err := c.getAck(ctx, c.o.WriteTimeout); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	return nil
}

// ReadoutUnprotect removes readout protection, which mass-erases the
// flash; the part resets and Init must be called again.
func (c *Client) ReadoutUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdReadoutUnprotect); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	if err := c.getAck(ctx, c.o.MassEraseTimeout); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	return nil
}

// Checksum asks the bootloader for the CRC of [addr, addr+n) (0xA1).
func (c *Client) Checksum(ctx context.Context, addr uint32, n uint32) (uint32, error) {
	if addr%4 != 0 || n%4 != 0 || n == 0 {
		return 0, fmt.Errorf("checksum 0x%08x+%d: address and length must be multiples of 4", addr, n)
	}
	if err := c.command(ctx, CmdChecksum); err != nil {
		return 0, fmt.Errorf("checksum: %w", err)
	}
	if err := c.sendAddr(ctx, "checksum", addr); err != nil {
		return 0, err
	}
	if err := c.sendAddr(ctx, "checksum length", n); err != nil {
		return 0, err
	}
	if err := c.getAck(ctx, c.o.ByteTimeout+time.Duration(n/1024)*time.Millisecond); err != nil {
		return 0, fmt.Errorf("checksum: %w", err)
	}
	p := make([]byte, 5)
	if err := c.readFull(ctx, p, c.o.ByteTimeout); err != nil {
		return 0, fmt.Errorf("checksum: %w", err)
	}
	if p[4] != p[0]^p[1]^p[2]^p[3] {
		return 0, fmt.Errorf("checksum reply % x: %w", p, ErrGarbled)
	}
	return binary.BigEndian.Uint32(p), nil
}

// Go starts execution at addr (the vector table: MSP at addr, PC at addr+4).
func (c *Client) Go(ctx context.Context, addr uint32) error {
	if err := c.command(ctx, CmdGo); err != nil {
		return fmt.Errorf("go: %w", err)
	}
	return c.sendAddr(ctx, "go", addr)
}

// drain discards input until the line has been quiet for a short while.
func (c *Client) drain(ctx context.Context) {
	buf := make([]byte, 512)
	quiet := min(c.o.ByteTimeout/4, 50*time.Millisecond)
	for i := 0; i < 64 && ctx.Err() == nil; i++ {
		c.l.SetReadDeadline(c.o.Now().Add(quiet))
		n, err := c.l.Read(buf)
		if n == 0 || err != nil {
			return
		}
	}
}

// Recover brings the bootloader back to "waiting for a command" after a
// lost byte, a corrupted frame or a reset: it probes with 0x7F (answered
// by ACK in autobaud state, or by NACK once an invalid command completes)
// and, when the bootloader is still inside a frame, feeds 0xFF bytes until
// the frame ends (at most 8 rounds of 256 bytes, enough for the longest
// frame, a 512-page Extended Erase list). 0xFF is chosen so that no
// filled-up frame can turn into a mass erase.
func (c *Client) Recover(ctx context.Context) error {
	var b [1]byte
	probe := func() bool {
		if c.write([]byte{0x7F}) != nil {
			return false
		}
		err := c.readFull(ctx, b[:], c.o.ByteTimeout)
		return err == nil && (b[0] == ACK || b[0] == NACK)
	}
	for attempt := 0; attempt < 8; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.drain(ctx)
		if probe() || probe() {
			c.drain(ctx)
			return nil
		}
		fill := make([]byte, 256)
		for i := range fill {
			fill[i] = 0xFF
		}
		if err := c.write(fill); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	return ErrNotSynced
}
