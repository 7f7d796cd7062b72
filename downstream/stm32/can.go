package stm32

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/otagw/otagw/downstream/can"
)

// AN3154: the STM32 system bootloader on CAN. Standard 11-bit identifiers;
// the identifier of a command frame is its opcode, and the bootloader
// answers on the same identifier: ACK is a one-byte frame 0x79, NACK 0x1F.
// There are no complement or XOR bytes (the CAN CRC guards every frame).
//
//	init         host 079#          -> 079#79
//	Get          host 000#          -> ACK, N, version, N opcodes (one per frame), ACK
//	Get Version  host 001#          -> ACK, version, 2 option bytes (one frame), ACK
//	Get ID       host 002#          -> ACK, PID MSB+LSB (one frame), ACK
//	Read Memory  host 011#AAAAAAAANN -> ACK, data frames of up to 8 bytes, ACK
//	Go           host 021#AAAAAAAA   -> ACK
//	Write Memory host 031#AAAAAAAANN -> ACK; then per 8 data bytes host 004#DD.. -> ACK; then ACK
//	Erase        host 043#NN         -> ACK; then page numbers, up to 8 per
//	             host 043# frame     -> ACK each; then ACK when erased (NN=FF: mass erase, no list)
//	Write Unprotect 073#, Readout Unprotect 092# -> ACK, ACK, then the part resets
//
// NN is the number of bytes or pages minus one. Extended Erase (0x44) and
// Get Checksum (0xA1) are not part of AN3154; pages above 255 cannot be
// erased one by one over CAN.

// CAN identifiers beyond the opcodes.
const (
	CANInitID  = 0x79 // the host's synchronisation frame; the ACK comes on it
	CANWriteID = 0x04 // Write Memory data frames
	CmdSpeed   = 0x03 // CAN only: change the bit rate
)

// CANClient speaks AN3154 on a can.Conn.
type CANClient struct {
	c    can.Conn
	o    Options
	info Info
}

// NewCAN returns a client on c. Zero timeouts in o take the defaults.
func NewCAN(c can.Conn, o Options) *CANClient {
	return &CANClient{c: c, o: New(nil, o).o}
}

// Info returns what Init learnt.
func (c *CANClient) Info() Info { return c.info }

func (c *CANClient) send(id uint32, data ...byte) error {
	if err := c.c.Send(can.NewFrame(id, data...)); err != nil {
		return fmt.Errorf("send frame 0x%03x: %w", id, err)
	}
	return nil
}

// recv waits up to timeout for the next frame with identifier id; frames
// with other identifiers (other nodes' traffic) are skipped.
func (c *CANClient) recv(ctx context.Context, id uint32, timeout time.Duration) (can.Frame, error) {
	if err := ctx.Err(); err != nil {
		return can.Frame{}, err
	}
	dl := c.o.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.c.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		f, err := c.c.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return can.Frame{}, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return can.Frame{}, fmt.Errorf("frame 0x%03x within %v: %w", id, timeout, ErrTimeout)
			}
			return can.Frame{}, fmt.Errorf("receive: %w", err)
		}
		if !f.Extended && !f.RTR && f.ID == id {
			return f, nil
		}
	}
}

// ParseCANAck reads an ACK or NACK frame.
func ParseCANAck(f can.Frame) error {
	if f.Len != 1 || f.RTR {
		return fmt.Errorf("frame %v instead of ACK: %w", f, ErrGarbled)
	}
	switch f.Data[0] {
	case ACK:
		return nil
	case NACK:
		return ErrNACK
	}
	return fmt.Errorf("frame %v instead of ACK: %w", f, ErrGarbled)
}

func (c *CANClient) getAck(ctx context.Context, id uint32, timeout time.Duration) error {
	f, err := c.recv(ctx, id, timeout)
	if err != nil {
		return err
	}
	return ParseCANAck(f)
}

// command sends a command frame and waits for its ACK.
func (c *CANClient) command(ctx context.Context, op byte, args ...byte) error {
	if c.info.Commands != nil && !c.info.Has(op) {
		return fmt.Errorf("command 0x%02x: %w", op, ErrNoCommand)
	}
	if err := c.send(uint32(op), args...); err != nil {
		return err
	}
	if err := c.getAck(ctx, uint32(op), c.o.ByteTimeout); err != nil {
		return fmt.Errorf("command 0x%02x: %w", op, err)
	}
	return nil
}

// Sync sends the init frame (identifier 0x79) and waits for its ACK.
func (c *CANClient) Sync(ctx context.Context) error {
	c.Drain(ctx)
	if err := c.send(CANInitID); err != nil {
		return err
	}
	if err := c.getAck(ctx, CANInitID, c.o.ByteTimeout); err != nil {
		return fmt.Errorf("init frame: %w", err)
	}
	return nil
}

// Init synchronises and reads Get Version, Get and Get ID; line errors are
// retried a few times, after draining the frames still in flight.
func (c *CANClient) Init(ctx context.Context) error {
	return initRetry(ctx, func(ctx context.Context) error { return identify(ctx, c, &c.info) },
		func(ctx context.Context, _ error) error { c.Drain(ctx); return nil })
}

// collect gathers n frames on id after a command's ACK.
func (c *CANClient) collect(ctx context.Context, id uint32, n int) ([]can.Frame, error) {
	fs := make([]can.Frame, 0, n)
	for len(fs) < n {
		f, err := c.recv(ctx, id, c.o.ByteTimeout)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// Get returns the bootloader version and the opcodes it lists.
func (c *CANClient) Get(ctx context.Context) (byte, []byte, error) {
	if err := c.command(ctx, CmdGet); err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	first, err := c.recv(ctx, CmdGet, c.o.ByteTimeout)
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	if first.Len != 1 {
		return 0, nil, fmt.Errorf("get: count frame %v: %w", first, ErrGarbled)
	}
	rest, err := c.collect(ctx, CmdGet, int(first.Data[0])+2) // version, N opcodes, ACK
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	v, cmds, err := ParseCANGet(append([]can.Frame{first}, rest...))
	if err != nil {
		return 0, nil, fmt.Errorf("get: %w", err)
	}
	return v, cmds, nil
}

// ParseCANGet parses the frames of a Get reply after the command's ACK:
// N, the version, N opcodes, each a one-byte frame, then ACK.
func ParseCANGet(fs []can.Frame) (version byte, cmds []byte, err error) {
	p := make([]byte, 0, len(fs))
	for _, f := range fs {
		if f.Len != 1 || f.RTR || f.ID != CmdGet {
			return 0, nil, fmt.Errorf("reply frame %v: want one byte on 0x000: %w", f, ErrGarbled)
		}
		p = append(p, f.Data[0])
	}
	return ParseGet(p)
}

// GetVersion returns the bootloader version and the two option bytes.
func (c *CANClient) GetVersion(ctx context.Context) (ver, opt1, opt2 byte, err error) {
	if err := c.command(ctx, CmdGetVersion); err != nil {
		return 0, 0, 0, fmt.Errorf("get version: %w", err)
	}
	fs, err := c.collect(ctx, CmdGetVersion, 3)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("get version: %w", err)
	}
	ver, opt1, opt2, err = ParseCANVersion(fs)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("get version: %w", err)
	}
	return ver, opt1, opt2, nil
}

// ParseCANVersion parses a Get Version reply after the command's ACK: the
// version (one byte), the two option bytes (one frame), ACK.
func ParseCANVersion(fs []can.Frame) (ver, opt1, opt2 byte, err error) {
	if len(fs) != 3 || fs[0].Len != 1 || fs[1].Len != 2 || fs[0].RTR || fs[1].RTR {
		return 0, 0, 0, fmt.Errorf("version reply %v: %w", fs, ErrGarbled)
	}
	if err := ParseCANAck(fs[2]); err != nil {
		return 0, 0, 0, fmt.Errorf("version reply trailer: %w", err)
	}
	return fs[0].Data[0], fs[1].Data[0], fs[1].Data[1], nil
}

// GetID returns the 12-bit product ID.
func (c *CANClient) GetID(ctx context.Context) (uint16, error) {
	if err := c.command(ctx, CmdGetID); err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	fs, err := c.collect(ctx, CmdGetID, 2)
	if err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	pid, err := ParseCANID(fs)
	if err != nil {
		return 0, fmt.Errorf("get id: %w", err)
	}
	return pid, nil
}

// ParseCANID parses a Get ID reply after the command's ACK: the product ID
// MSB first in one two-byte frame, then ACK.
func ParseCANID(fs []can.Frame) (uint16, error) {
	if len(fs) != 2 || fs[0].Len != 2 || fs[0].RTR {
		return 0, fmt.Errorf("id reply %v: %w", fs, ErrGarbled)
	}
	if err := ParseCANAck(fs[1]); err != nil {
		return 0, fmt.Errorf("id reply trailer: %w", err)
	}
	return binary.BigEndian.Uint16(fs[0].Data[:2]), nil
}

func addrLen(a uint32, n int) []byte {
	p := binary.BigEndian.AppendUint32(nil, a)
	return append(p, byte(n-1))
}

// ReadMemory reads n (1..256) bytes at addr.
func (c *CANClient) ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error) {
	if n < 1 || n > 256 {
		return nil, fmt.Errorf("read 0x%08x: length %d not in 1..256", addr, n)
	}
	if err := c.command(ctx, CmdReadMemory, addrLen(addr, n)...); err != nil {
		return nil, fmt.Errorf("read 0x%08x: %w", addr, err)
	}
	p := make([]byte, 0, n)
	for len(p) < n {
		f, err := c.recv(ctx, CmdReadMemory, c.o.ByteTimeout)
		if err != nil {
			return nil, fmt.Errorf("read 0x%08x data: %w", addr, err)
		}
		if f.RTR || f.Len == 0 || len(p)+int(f.Len) > n {
			return nil, fmt.Errorf("read 0x%08x: data frame %v after %d of %d bytes: %w", addr, f, len(p), n, ErrGarbled)
		}
		p = append(p, f.Payload()...)
	}
	if err := c.getAck(ctx, CmdReadMemory, c.o.ByteTimeout); err != nil {
		return nil, fmt.Errorf("read 0x%08x end: %w", addr, err)
	}
	return p, nil
}

// WriteMemory writes up to 256 bytes at a 4-byte aligned addr, padded with
// 0xFF to a multiple of 4, in data frames of 8 bytes, each ACKed.
func (c *CANClient) WriteMemory(ctx context.Context, addr uint32, data []byte) error {
	if len(data) == 0 || len(data) > 256 || addr%4 != 0 {
		return fmt.Errorf("write 0x%08x: %d bytes: need 1..256 bytes at a 4-byte aligned address", addr, len(data))
	}
	n := (len(data) + 3) &^ 3
	buf := make([]byte, n)
	copy(buf, data)
	for i := len(data); i < n; i++ {
		buf[i] = 0xFF
	}
	if err := c.command(ctx, CmdWriteMemory, addrLen(addr, n)...); err != nil {
		return fmt.Errorf("write 0x%08x: %w", addr, err)
	}
	for off := 0; off < n; off += 8 {
		if err := c.send(CANWriteID, buf[off:min(off+8, n)]...); err != nil {
			return err
		}
		if err := c.getAck(ctx, CmdWriteMemory, c.o.ByteTimeout); err != nil {
			return fmt.Errorf("write 0x%08x data frame at +%d: %w", addr, off, err)
		}
	}
	if err := c.getAck(ctx, CmdWriteMemory, c.o.WriteTimeout); err != nil {
		return fmt.Errorf("write 0x%08x: %w", addr, err)
	}
	return nil
}

// ErasePages erases the listed pages with Erase (0x43), at most 255 per
// command (the count byte 0xFF means mass erase).
func (c *CANClient) ErasePages(ctx context.Context, pages []int) error {
	if !c.info.Has(CmdErase) {
		return fmt.Errorf("erase: 0x43: %w", ErrNoCommand)
	}
	for _, p := range pages {
		if p < 0 || p > 255 {
			return fmt.Errorf("erase page %d: %w: AN3154's Erase (0x43) numbers pages 0-255", p, ErrNoCommand)
		}
	}
	for len(pages) > 0 {
		n := min(len(pages), 255)
		if err := c.erase(ctx, pages[:n]); err != nil {
			return err
		}
		pages = pages[n:]
	}
	return nil
}

func (c *CANClient) erase(ctx context.Context, pages []int) error {
	if err := c.command(ctx, CmdErase, byte(len(pages)-1)); err != nil {
		return fmt.Errorf("erase: %w", err)
	}
	list := make([]byte, len(pages))
	for i, p := range pages {
		list[i] = byte(p)
	}
	for off := 0; off < len(list); off += 8 {
		if err := c.send(CmdErase, list[off:min(off+8, len(list))]...); err != nil {
			return err
		}
		if err := c.getAck(ctx, CmdErase, c.o.ByteTimeout); err != nil {
			return fmt.Errorf("erase page list at %d: %w", off, err)
		}
	}
	if err := c.getAck(ctx, CmdErase, c.o.ByteTimeout+time.Duration(len(pages))*c.o.PageEraseTimeout); err != nil {
		return fmt.Errorf("erase %d pages from %d: %w", len(pages), pages[0], err)
	}
	return nil
}

// MassErase erases the whole flash (Erase with count 0xFF).
func (c *CANClient) MassErase(ctx context.Context) error {
	if err := c.command(ctx, CmdErase, 0xFF); err != nil {
		return fmt.Errorf("mass erase: %w", err)
	}
	if err := c.getAck(ctx, CmdErase, c.o.MassEraseTimeout); err != nil {
		return fmt.Errorf("mass erase: %w", err)
	}
	return nil
}

// WriteUnprotect removes write protection; the part resets and Init must
// be called again.
func (c *CANClient) WriteUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdWriteUnprotect); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	if err := c.getAck(ctx, CmdWriteUnprotect, c.o.WriteTimeout); err != nil {
		return fmt.Errorf("write unprotect: %w", err)
	}
	return nil
}

// ReadoutUnprotect removes readout protection, which mass-erases the
// flash; the part resets and Init must be called again.
func (c *CANClient) ReadoutUnprotect(ctx context.Context) error {
	if err := c.command(ctx, CmdReadoutUnprotect); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	if err := c.getAck(ctx, CmdReadoutUnprotect, c.o.MassEraseTimeout); err != nil {
		return fmt.Errorf("readout unprotect: %w", err)
	}
	return nil
}

// Checksum: AN3154 has no Get Checksum; verification reads back.
func (c *CANClient) Checksum(context.Context, uint32, uint32) (uint32, error) {
	return 0, fmt.Errorf("checksum over CAN: %w", ErrNoCommand)
}

// Go starts execution at addr.
func (c *CANClient) Go(ctx context.Context, addr uint32) error {
	if err := c.command(ctx, CmdGo, binary.BigEndian.AppendUint32(nil, addr)...); err != nil {
		return fmt.Errorf("go 0x%08x: %w", addr, err)
	}
	return nil
}

// Drain discards frames until the bus has been quiet for a short while.
func (c *CANClient) Drain(ctx context.Context) {
	quiet := min(c.o.ByteTimeout/4, 50*time.Millisecond)
	for i := 0; i < 512 && ctx.Err() == nil; i++ {
		c.c.SetReadDeadline(c.o.Now().Add(quiet))
		if _, err := c.c.Recv(); err != nil {
			return
		}
	}
}

// Recover brings the bootloader back to "waiting for a command": it sends
// the init frame, which a bootloader waiting inside a command takes as the
// end of that command, and waits for its ACK. A bootloader that ignores
// other identifiers while it waits for Write Memory data gets the rest of
// the block as 0xFF data frames (programming nothing), then the init frame
// again.
func (c *CANClient) Recover(ctx context.Context) error {
	probe := func() bool {
		if c.send(CANInitID) != nil {
			return false
		}
		return c.getAck(ctx, CANInitID, c.o.ByteTimeout) == nil
	}
	fill := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	for attempt := 0; attempt < 4; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.Drain(ctx)
		if probe() || probe() {
			c.Drain(ctx)
			return nil
		}
		for i := 0; i < 32; i++ {
			if err := c.send(CANWriteID, fill...); err != nil {
				return fmt.Errorf("recover: %w", err)
			}
		}
	}
	return ErrNotSynced
}
