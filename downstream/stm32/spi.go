package stm32

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/otagw/otagw/downstream/spi"
)

// AN4286 frame bytes.
const (
	// SPISync starts every command frame, and synchronises the bootloader
	// after reset.
	SPISync = 0x5A
	// SPIDummy is what the host clocks out to read or poll.
	SPIDummy = 0x00
	// SPIFiller is what the bootloader shifts out when it has nothing to
	// say (during the sync byte, while busy).
	SPIFiller = 0xA5
)

// SPIClient speaks the STM32 ROM bootloader's SPI protocol (AN4286) as
// bus master over an spi.Conn. It differs from the USART client in the
// framing only: every command frame starts with 0x5A; an ACK is polled for
// with dummy bytes and acknowledged by the host with 0x79; data frames the
// bootloader sends are preceded by one dummy byte; Extended Erase (the only
// erase on SPI) sends the page count and the page list as two ACKed
// frames; Get Version returns the version byte only. Get Checksum is not
// offered over SPI (verification reads back).
type SPIClient struct {
	c    spi.Conn
	o    Options
	info Info
	tx   []byte
	rx   []byte
	// pend is the host's closing 0x79 of the last ACK procedure: it leads
	// the next transfer (the bytes on the wire are the same as sending it
	// alone, with one transfer less per frame); flush sends it alone.
	pend  bool
	polls int64
}

// NewSPI returns a client on c with the UART client's defaults for zero
// timeouts.
func NewSPI(c spi.Conn, o Options) *SPIClient {
	return &SPIClient{c: c, o: New(nil, o).o}
}

// Info returns what Init learnt.
func (c *SPIClient) Info() Info { return c.info }

// Polls is the number of bytes clocked while polling for ACKs, busy
// periods included.
func (c *SPIClient) Polls() int64 { return c.polls }

// xfer clocks tx, after a pending closing 0x79, and returns what came
// back during tx (valid until the next xfer).
func (c *SPIClient) xfer(tx []byte) ([]byte, error) {
	c.tx = c.tx[:0]
	if c.pend {
		c.tx = append(c.tx, ACK)
	}
	c.tx = append(c.tx, tx...)
	if cap(c.rx) < len(c.tx) {
		c.rx = make([]byte, len(c.tx)+64)
	}
	rx := c.rx[:len(c.tx)]
	if err := c.c.Transfer(c.tx, rx); err != nil {
		return nil, fmt.Errorf("spi transfer: %w", err)
	}
	skip := len(c.tx) - len(tx)
	c.pend = false
	return rx[skip:], nil
}

// flush sends a pending closing 0x79 (before the part jumps or resets).
func (c *SPIClient) flush() error {
	if !c.pend {
		return nil
	}
	_, err := c.xfer(nil)
	return err
}

func (c *SPIClient) send(tx ...byte) error {
	_, err := c.xfer(tx)
	return err
}

// getAck runs AN4286's ACK procedure after a frame: clock dummy bytes
// until the bootloader returns ACK or NACK (it returns filler while it
// works: this is the busy polling of erase and write), then acknowledge
// with 0x79 (pending: it leads the next transfer). sendFrame clocks the
// frame, the procedure's dummy byte and the first poll in one transfer and
// passes their answer as first; AN4286's host ignores the byte clocked
// during the dummy, this one looks at it too, which tolerates a bootloader
// that answers a byte early. Polling backs off to one byte per 100µs after
// 64 quick polls.
func (c *SPIClient) getAck(ctx context.Context, timeout time.Duration, first []byte) error {
	for _, b := range first {
		switch b {
		case ACK:
			c.pend = true
			return nil
		case NACK:
			c.pend = true
			return ErrNACK
		}
	}
	dl := deadline(ctx, c.o.Now, timeout)
	dummy := []byte{SPIDummy}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !c.o.Now().Before(dl) {
			return fmt.Errorf("no ACK in %d polls (%v): %w", n+len(first), timeout, ErrTimeout)
		}
		if n >= 64 {
			time.Sleep(100 * time.Microsecond)
		}
		rx, err := c.xfer(dummy)
		if err != nil {
			return err
		}
		c.polls++
		switch rx[0] {
		case ACK:
			c.pend = true
			return nil
		case NACK:
			c.pend = true
			return ErrNACK
		}
	}
}

// ack is the ACK procedure alone (after a data frame the bootloader sent).
func (c *SPIClient) ack(ctx context.Context, timeout time.Duration) error {
	rx, err := c.xfer([]byte{SPIDummy})
	if err != nil {
		return err
	}
	c.polls++
	return c.getAck(ctx, timeout, rx)
}

// readData reads an n-byte data frame: one dummy byte, then the data.
func (c *SPIClient) readData(n int) ([]byte, error) {
	rx, err := c.xfer(make([]byte, n+1))
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), rx[1:]...), nil
}

func (c *SPIClient) command(ctx context.Context, op byte) error {
	if c.info.Commands != nil && !c.info.Has(op) {
		return fmt.Errorf("command 0x%02x: %w", op, ErrNoCommand)
	}
	if err := c.sendFrame(ctx, fmt.Sprintf("command 0x%02x", op), []byte{SPISync, op, op ^ 0xFF}, c.o.ByteTimeout); err != nil {
		return err
	}
	return nil
}

// sendFrame clocks frame, the ACK procedure's dummy byte and a first poll
// in one transfer, then completes the procedure.
func (c *SPIClient) sendFrame(ctx context.Context, what string, frame []byte, timeout time.Duration) error {
	rx, err := c.xfer(append(append(make([]byte, 0, len(frame)+2), frame...), SPIDummy, SPIDummy))
	if err != nil {
		return err
	}
	c.polls++
	if err := c.getAck(ctx, timeout, rx[len(frame):]); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Sync sends the sync byte 0x5A and runs the ACK procedure. A bootloader
// that is already synchronised takes 0x5A as the start of a command frame,
// the poll dummies as an invalid opcode pair, and NACKs: in step too.
func (c *SPIClient) Sync(ctx context.Context) error {
	err := c.sendFrame(ctx, "sync", []byte{SPISync}, c.o.ByteTimeout)
	if err == nil || errors.Is(err, ErrNACK) {
		return nil
	}
	if !Transient(err) {
		return err
	}
	return c.Recover(ctx)
}

// Init synchronises and reads Get Version, Get and Get ID, retrying line
// errors a few times.
func (c *SPIClient) Init(ctx context.Context) error {
	return initRetry(ctx, c.init, recoverUnlessNACK(c))
}

func (c *SPIClient) init(ctx context.Context) error {
	if err := c.Sync(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	c.info = Info{}
	if _, err := c.GetVersion(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	// Get and Get ID replies carry no checksum: each is read twice and
	// must agree, so that a corrupted byte cannot drop a command from the
	// list or change the product ID (a refusal no retry would undo).
	var v byte
	var cmds []byte
	for i := 0; i < 2; i++ {
		v2, cmds2, err := c.Get(ctx)
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		if i == 1 && (v2 != v || !bytes.Equal(cmds2, cmds)) {
			return fmt.Errorf("init: two Get replies differ (% x, % x): %w", cmds, cmds2, ErrGarbled)
		}
		v, cmds = v2, cmds2
	}
	// Get Checksum's SPI framing is not in AN4286: leave it out so that
	// verification reads back.
	cmds = bytes.ReplaceAll(cmds, []byte{CmdChecksum}, nil)
	c.info = Info{Version: v, Commands: cmds}
	var pid uint16
	for i := 0; i < 2; i++ {
		p, err := c.GetID(ctx)
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		if i == 1 && p != pid {
			return fmt.Errorf("init: two Get ID replies differ (0x%03x, 0x%03x): %w", pid, p, ErrGarbled)
		}
		pid = p
	}
	c.info.PID = pid
	return nil
}

// Get returns the bootloader version and the opcodes it lists.
func (c *SPIClient) Get(ctx context.Context) (byte, []byte, error) {
	p, err := c.variableFrame(ctx, CmdGet)
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	v, cmds, err := ParseSPIGet(p)
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	return v, cmds, nil
}

// variableFrame sends op and reads its data frame (dummy, N, N+1 bytes)
// and the closing ACK; it returns N and the N+1 bytes.
func (c *SPIClient) variableFrame(ctx context.Context, op byte) ([]byte, error) {
	if err := c.command(ctx, op); err != nil {
		return nil, err
	}
	h, err := c.xfer(make([]byte, 2)) // the dummy byte, N
	if err != nil {
		return nil, err
	}
	frame := append([]byte(nil), h...)
	rest, err := c.xfer(make([]byte, int(h[1])+1))
	if err != nil {
		return nil, err
	}
	p, err := ParseSPIFrame(append(frame, rest...))
	if err != nil {
		return nil, err
	}
	if err := c.ack(ctx, c.o.ByteTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// ParseSPIGet parses Get's data frame over SPI (the dummy byte removed):
// N, version, N opcodes.
func ParseSPIGet(p []byte) (version byte, cmds []byte, err error) {
	return ParseGet(append(append([]byte(nil), p...), ACK))
}

// ParseSPIID parses Get ID's data frame over SPI (the dummy byte
// removed): N, N+1 ID bytes.
func ParseSPIID(p []byte) (uint16, error) {
	return ParseID(append(append([]byte(nil), p...), ACK))
}

// ParseSPIFrame splits a variable-length data frame as clocked in (the
// dummy byte, N, N+1 bytes, then anything) and returns N and its N+1 bytes.
func ParseSPIFrame(p []byte) ([]byte, error) {
	if len(p) < 3 {
		return nil, fmt.Errorf("data frame of %d bytes: %w", len(p), ErrGarbled)
	}
	n := int(p[1]) + 1
	if len(p) < 2+n {
		return nil, fmt.Errorf("data frame of %d bytes for N=%d: %w", len(p), n-1, ErrGarbled)
	}
	return p[1 : 2+n], nil
}

// GetVersion returns the bootloader version (over SPI, without the option
// bytes the USART variant adds).
func (c *SPIClient) GetVersion(ctx context.Context) (byte, error) {
	if err := c.command(ctx, CmdGetVersion); err != nil {
		return 0, fmt.Errorf("get version: %w", err)
	}
	p, err := c.readData(1)
	if err != nil {
		return 0, fmt.Errorf("get version: %w", err)
	}
	if err := c.ack(ctx, c.o.ByteTimeout); err != nil {
		return 0, fmt.Errorf("get version: %w", err)
	}
	return p[0], nil
}

// GetID returns the 12-bit product ID.
func (c *SPIClient) GetID(ctx context.Context) (uint16, error) {
	p, err := c.variableFrame(ctx, CmdGetID)
	if err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	pid, err := ParseSPIID(p)
	if err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	return pid, nil
}

// ReadMemory reads n (1..256) bytes at addr.
func (c *SPIClient) ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error) {
	if n < 1 || n > 256 {
		return nil, fmt.Errorf("read 0x%08x: length %d not in 1..256", addr, n)
	}
	if err := c.command(ctx, CmdReadMemory); err != nil {
		return nil, fmt.Errorf("read 0x%08x: %w", addr, err)
	}
	if err := c.sendFrame(ctx, fmt.Sprintf("read address 0x%08x", addr), addrFrame(addr), c.o.ByteTimeout); err != nil {
		return nil, err
	}
	if err := c.sendFrame(ctx, fmt.Sprintf("read 0x%08x length", addr), []byte{byte(n - 1), byte(n-1) ^ 0xFF}, c.o.ByteTimeout); err != nil {
		return nil, err
	}
	p, err := c.readData(n)
	if err != nil {
		return nil, fmt.Errorf("read 0x%08x data: %w", addr, err)
	}
	return p, nil
}

// WriteMemory writes up to 256 bytes at a 4-byte aligned addr, padded with
// 0xFF to a multiple of 4 (AN4286 wants an even count; 4 suits every part).
// The bootloader is busy while it programs: the ACK is polled for up to
// WriteTimeout.
func (c *SPIClient) WriteMemory(ctx context.Context, addr uint32, data []byte) error {
	if len(data) == 0 || len(data) > 256 || addr%4 != 0 {
		return fmt.Errorf("write 0x%08x: %d bytes: need 1..256 bytes at a 4-byte aligned address", addr, len(data))
	}
	if err := c.command(ctx, CmdWriteMemory); err != nil {
		return fmt.Errorf("write 0x%08x: %w", addr, err)
	}
	if err := c.sendFrame(ctx, fmt.Sprintf("write address 0x%08x", addr), addrFrame(addr), c.o.ByteTimeout); err != nil {
		return err
	}
	n := (len(data) + 3) &^ 3
	frame := make([]byte, 0, n+2)
	frame = append(frame, byte(n-1))
	frame = append(frame, data...)
	for len(frame) < n+1 {
		frame = append(frame, 0xFF)
	}
	frame = append(frame, xorOf(frame))
	return c.sendFrame(ctx, fmt.Sprintf("write 0x%08x data", addr), frame, c.o.WriteTimeout)
}

func xorOf(p []byte) byte {
	var x byte
	for _, b := range p {
		x ^= b
	}
	return x
}

// ErasePages erases the listed pages with Extended Erase, at most 512 per
// command: the count frame, then the page list frame, each ACKed; the
// list's ACK comes when the pages are erased (busy polling).
func (c *SPIClient) ErasePages(ctx context.Context, pages []int) error {
	if !c.info.Has(CmdExtendedErase) {
		return fmt.Errorf("erase over SPI needs Extended Erase (0x44): %w", ErrNoCommand)
	}
	for len(pages) > 0 {
		n := min(len(pages), 512)
		if err := c.erase(ctx, pages[:n]); err != nil {
			return err
		}
		pages = pages[n:]
	}
	return nil
}

func (c *SPIClient) erase(ctx context.Context, pages []int) error {
	if err := c.command(ctx, CmdExtendedErase); err != nil {
		return fmt.Errorf("erase: %w", err)
	}
	h := binary.BigEndian.AppendUint16(nil, uint16(len(pages)-1))
	if err := c.sendFrame(ctx, "erase count", append(h, xorOf(h)), c.o.ByteTimeout); err != nil {
		return err
	}
	var list []byte
	for _, p := range pages {
		list = binary.BigEndian.AppendUint16(list, uint16(p))
	}
	list = append(list, xorOf(list))
	return c.sendFrame(ctx, fmt.Sprintf("erase %d pages from %d", len(pages), pages[0]), list, c.o.ByteTimeout+time.Duration(len(pages))*c.o.PageEraseTimeout)
}

// MassErase erases the whole flash (Extended Erase 0xFFFF, one frame).
func (c *SPIClient) MassErase(ctx context.Context) error {
	if !c.info.Has(CmdExtendedErase) {
		return fmt.Errorf("mass erase over SPI needs Extended Erase (0x44): %w", ErrNoCommand)
	}
	if err := c.command(ctx, CmdExtendedErase); err != nil {
		return fmt.Errorf("mass erase: %w", err)
	}
	return c.sendFrame(ctx, "mass erase", []byte{0xFF, 0xFF, 0x00}, c.o.MassEraseTimeout)
}

// Checksum: Get Checksum is not offered over SPI.
func (c *SPIClient) Checksum(context.Context, uint32, uint32) (uint32, error) {
	return 0, fmt.Errorf("checksum over SPI: %w", ErrNoCommand)
}

// WriteUnprotect removes write protection; the part resets (Init again).
func (c *SPIClient) WriteUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdWriteUnprotect); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	if err := c.ack(ctx, c.o.WriteTimeout); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	return c.flush()
}

// ReadoutUnprotect removes readout protection, mass-erasing the flash; the
// part resets (Init again).
func (c *SPIClient) ReadoutUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdReadoutUnprotect); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	if err := c.ack(ctx, c.o.MassEraseTimeout); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	return c.flush()
}

// Go starts execution at addr.
func (c *SPIClient) Go(ctx context.Context, addr uint32) error {
	if err := c.command(ctx, CmdGo); err != nil {
		return fmt.Errorf("go: %w", err)
	}
	if err := c.sendFrame(ctx, fmt.Sprintf("go address 0x%08x", addr), addrFrame(addr), c.o.ByteTimeout); err != nil {
		return err
	}
	return c.flush()
}

// Drain does nothing: an SPI slave sends nothing the host does not clock.
func (c *SPIClient) Drain(context.Context) {}

// deadline is the earlier of now+timeout and ctx's deadline.
func deadline(ctx context.Context, now func() time.Time, timeout time.Duration) time.Time {
	dl := now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	return dl
}

// Recover brings the bootloader back to "waiting for a command frame". The
// probe 0x79 0x5A 0x00 0x00 ends an ACK handshake the bootloader still
// waits for (0x79), then is NACKed as an invalid command by a bootloader
// waiting for a command, or synchronises (ACK) one that was reset; a
// bootloader inside a data frame takes it as data, so 0xFF bytes are fed
// until the frame ends (at most 8 rounds of 256, enough for the longest
// frame, a 512-page erase list). A frame filled with 0xFF cannot turn into
// an erase (page 0xFFFF does not exist, and 0xFFFF 0xFF fails the
// checksum) nor change flash (programming 0xFF leaves bytes as they are).
func (c *SPIClient) Recover(ctx context.Context) error {
	fill := bytes.Repeat([]byte{0xFF}, 256)
	for attempt := 0; attempt < 8; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.pend = false // the probe starts with 0x79 anyway
		err := c.sendFrame(ctx, "recover", []byte{ACK, SPISync, 0x00, 0x00}, c.o.ByteTimeout)
		if err == nil || errors.Is(err, ErrNACK) {
			return nil
		}
		if !Transient(err) {
			return fmt.Errorf("recover: %w", err)
		}
		if err := c.send(fill...); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	return ErrNotSynced
}
