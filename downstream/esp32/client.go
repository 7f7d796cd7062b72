// Package esp32 is a client for the Espressif ROM serial bootloader (the
// protocol esptool speaks): SLIP framing, SYNC, chip detection
// (GET_SECURITY_INFO, else the magic register), SPI_ATTACH and
// SPI_SET_PARAMS, CHANGE_BAUDRATE, FLASH_BEGIN/DATA/END and the compressed
// FLASH_DEFL_*, and SPI_FLASH_MD5 verification with repair of the sectors
// that differ. It talks over a link.Link and never opens a device itself;
// as a downstream.Protocol it is registered as "esp32-rom".
//
//	c := esp32.New(port, downstream.DefaultESP32Options())
//	err := c.Sync(ctx)                       // after the reset strategy entered the ROM
//	chip, err := c.Detect(ctx)               // ESP32, ESP32-S3, ESP32-C3
//	err = c.Attach(ctx, 4<<20)               // SPI_ATTACH + SPI_SET_PARAMS
//	err = c.ChangeBaud(ctx, 921600)          // optional
//	err = c.WriteRegion(ctx, 0x10000, image, progress) // write, MD5-verify, repair
//	err = c.Finish(ctx)                      // FLASH_END: leave the ROM, run the app
//
// Errors: ErrTimeout and checksum/inflate status errors are transient and
// retried per block (Transient reports them); ErrUnsupported, ErrVerify
// and ErrRetries are not.
package esp32

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/link"
)

// Options are the "downstream.esp32:" section.
type Options = downstream.ESP32Options

var (
	// ErrTimeout: no reply in time.
	ErrTimeout = errors.New("no reply from the ESP32 ROM")
	// ErrUnsupported: the ROM does not implement the command.
	ErrUnsupported = errors.New("command not supported by this ROM")
	// ErrVerify: SPI_FLASH_MD5 differs from the image after every repair.
	ErrVerify = errors.New("flash MD5 does not match the image")
	// ErrRetries: the line-error budget is used up.
	ErrRetries = errors.New("too many line errors")
	// ErrNotSynced: SYNC was never answered.
	ErrNotSynced = errors.New("cannot synchronise with the ESP32 ROM")
	// ErrChip: the chip is not one this client knows.
	ErrChip = errors.New("unknown ESP chip")
)

// StatusError is a failure status from the ROM.
type StatusError struct {
	Op   byte
	Code byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("ROM refused op 0x%02x: error 0x%02x (%s)", e.Op, e.Code, codeName(e.Code))
}

func codeName(c byte) string {
	switch c {
	case ErrCodeInvalid:
		return "invalid message"
	case ErrCodeResult:
		return "wrong result"
	case ErrCodeChecksum:
		return "checksum"
	case ErrCodeWrite:
		return "flash write"
	case ErrCodeRead:
		return "flash read"
	case ErrCodeLength:
		return "read length"
	case ErrCodeInflate:
		return "inflate"
	case ErrCodeAdler:
		return "Adler-32"
	}
	return "unknown"
}

// Transient reports whether err is a line error worth resending for.
func Transient(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		switch se.Code {
		case ErrCodeChecksum, ErrCodeWrite, ErrCodeRead, ErrCodeInflate, ErrCodeAdler, 0xC1:
			return true
		}
		return false
	}
	return errors.Is(err, ErrTimeout) || errors.Is(err, ErrFrame)
}

// Client talks to one ROM.
type Client struct {
	l       link.Link
	o       Options
	dec     Decoder
	buf     []byte
	chip    *Chip
	retries int
	baud    link.Baud
}

// New returns a client over l.
func New(l link.Link, o Options) *Client {
	return &Client{l: l, o: o, buf: make([]byte, 4096)}
}

// Chip is what Detect found (nil before).
func (c *Client) Chip() *Chip { return c.chip }

// Retries counts the resends so far.
func (c *Client) Retries() int { return c.retries }

func (c *Client) now() time.Time {
	if c.o.Now != nil {
		return c.o.Now()
	}
	return time.Now()
}

func (c *Client) send(r Request) error {
	if _, err := c.l.Write(SLIPEncode(r.Encode())); err != nil {
		return fmt.Errorf("write op 0x%02x: %w", r.Op, err)
	}
	return nil
}

// frame waits for the next frame until the deadline.
func (c *Client) frame(ctx context.Context, deadline time.Time) ([]byte, error) {
	for {
		if f, ok := c.dec.Next(); ok {
			return f, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dl := deadline
		if t := c.now().Add(100 * time.Millisecond); t.Before(dl) {
			dl = t // wake up for ctx
		}
		if !c.now().Before(deadline) {
			return nil, ErrTimeout
		}
		c.l.SetReadDeadline(dl)
		n, err := c.l.Read(c.buf)
		c.dec.Write(c.buf[:n])
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("read: %w", err)
		}
	}
}

// drain discards input until the line is quiet for d.
func (c *Client) drain(ctx context.Context, d time.Duration) {
	for ctx.Err() == nil {
		c.l.SetReadDeadline(c.now().Add(d))
		n, err := c.l.Read(c.buf)
		if n == 0 || err != nil {
			break
		}
	}
	c.dec.Reset()
}

// command sends r and waits for the response to its opcode; n is the
// payload length before the status bytes.
func (c *Client) command(ctx context.Context, r Request, n int, timeout time.Duration) (Response, error) {
	if err := c.send(r); err != nil {
		return Response{}, err
	}
	deadline := c.now().Add(timeout)
	for {
		f, err := c.frame(ctx, deadline)
		if err != nil {
			return Response{}, fmt.Errorf("op 0x%02x: %w", r.Op, err)
		}
		resp, err := ParseResponse(f)
		if err != nil {
			continue // noise or a request echo
		}
		if resp.Op != r.Op {
			// The ROM answers an unknown opcode with another opcode and
			// status "invalid message".
			if failed, code, err := resp.Status(len(resp.Data) - 4); err == nil && failed && code == ErrCodeInvalid && len(resp.Data) <= 4 {
				return Response{}, fmt.Errorf("op 0x%02x: %w", r.Op, ErrUnsupported)
			}
			if failed, code, err := resp.Status(len(resp.Data) - 2); err == nil && failed && code == ErrCodeInvalid && len(resp.Data) <= 2 {
				return Response{}, fmt.Errorf("op 0x%02x: %w", r.Op, ErrUnsupported)
			}
			continue // a late reply to an earlier command
		}
		if r.Op == OpSPIFlashMD5 && len(resp.Data) != 18 {
			n = 32 // the ROM answers in hex, the stub (18 bytes) raw
		}
		failed, code, err := resp.Status(n)
		if err != nil {
			return Response{}, err
		}
		if failed {
			if code == ErrCodeInvalid && r.Op == OpGetSecurityInfo {
				return Response{}, fmt.Errorf("op 0x%02x: %w", r.Op, ErrUnsupported)
			}
			return Response{}, &StatusError{Op: r.Op, Code: code}
		}
		return resp, nil
	}
}

// Sync sends SYNC until the ROM answers (SyncAttempts tries of 100 ms),
// then drains the ROM's further answers.
func (c *Client) Sync(ctx context.Context) error {
	c.drain(ctx, 20*time.Millisecond)
	var last error
	for i := 0; i < c.o.SyncAttempts; i++ {
		_, err := c.command(ctx, Request{Op: OpSync, Data: SyncPayload}, 0, 100*time.Millisecond)
		if err == nil {
			c.drain(ctx, 50*time.Millisecond)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
	}
	return fmt.Errorf("%w after %d tries: %v", ErrNotSynced, c.o.SyncAttempts, last)
}

// ReadReg reads a 32-bit register.
func (c *Client) ReadReg(ctx context.Context, addr uint32) (uint32, error) {
	r, err := c.command(ctx, Request{Op: OpReadReg, Data: words(addr)}, 0, c.o.Timeout)
	return r.Value, err
}

// Detect finds the chip: GET_SECURITY_INFO's chip ID, or the magic register.
func (c *Client) Detect(ctx context.Context) (*Chip, error) {
	r, err := c.command(ctx, Request{Op: OpGetSecurityInfo}, 20, 500*time.Millisecond)
	if err == nil {
		id := binary.LittleEndian.Uint32(r.Data[12:])
		if chip, ok := ChipByID(uint16(id)); ok && chip.SecurityInfo && id < 0x10000 {
			c.chip = chip
			return chip, nil
		}
	} else if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrFrame) {
		var se *StatusError
		if !errors.As(err, &se) {
			return nil, err
		}
	}
	c.drain(ctx, 20*time.Millisecond)
	magic, err := c.ReadReg(ctx, MagicRegister)
	if err != nil {
		return nil, fmt.Errorf("read magic register: %w", err)
	}
	chip, ok := ChipByMagic(magic)
	if !ok {
		return nil, fmt.Errorf("%w: magic 0x%08x", ErrChip, magic)
	}
	c.chip = chip
	return chip, nil
}

// Attach selects the default SPI flash pins and tells the ROM the flash size.
func (c *Client) Attach(ctx context.Context, flashSize int) error {
	if _, err := c.command(ctx, Request{Op: OpSPIAttach, Data: words(0, 0)}, 0, c.o.Timeout); err != nil {
		return fmt.Errorf("SPI_ATTACH: %w", err)
	}
	if _, err := c.command(ctx, Request{Op: OpSPISetParams, Data: words(0, uint32(flashSize), 0x10000, 0x1000, 0x100, 0xFFFF)}, 0, c.o.Timeout); err != nil {
		return fmt.Errorf("SPI_SET_PARAMS: %w", err)
	}
	return nil
}

// ChangeBaud switches the ROM and then the link to baud.
func (c *Client) ChangeBaud(ctx context.Context, baud link.Baud) error {
	bs, ok := c.l.(link.BaudSetter)
	if !ok {
		return fmt.Errorf("CHANGE_BAUDRATE: the link cannot change its rate")
	}
	if _, err := c.command(ctx, Request{Op: OpChangeBaud, Data: words(uint32(baud), 0)}, 0, c.o.Timeout); err != nil {
		return fmt.Errorf("CHANGE_BAUDRATE %d: %w", baud, err)
	}
	if err := bs.SetBaud(baud); err != nil {
		return err
	}
	c.baud = baud
	// esptool waits 50 ms for the ROM to switch; the drain waits as long
	// for the line to be quiet, honouring ctx
	c.drain(ctx, 50*time.Millisecond)
	return nil
}

// MD5 asks the ROM for the MD5 of a flash range.
func (c *Client) MD5(ctx context.Context, addr uint32, n int) ([16]byte, error) {
	var sum [16]byte
	t := max(c.o.Timeout, time.Duration(int64(8*time.Second)*int64(n)/(1<<20)))
	r, err := c.command(ctx, Request{Op: OpSPIFlashMD5, Data: words(addr, uint32(n), 0, 0)}, 16, t)
	if err != nil {
		return sum, fmt.Errorf("SPI_FLASH_MD5 0x%x+%d: %w", addr, n, err)
	}
	if len(r.Data) >= 34 { // ROM: 32 hex characters
		if _, err := hex.Decode(sum[:], r.Data[:32]); err == nil {
			if failed, code, _ := r.Status(32); failed {
				return sum, &StatusError{Op: OpSPIFlashMD5, Code: code}
			}
			return sum, nil
		}
	}
	copy(sum[:], r.Data[:16]) // stub: raw bytes
	return sum, nil
}

func (c *Client) beginWords(size, blocks, bs int, offset uint32) []byte {
	if c.chip != nil && c.chip.EncryptedWord {
		return words(uint32(size), uint32(blocks), uint32(bs), offset, 0)
	}
	return words(uint32(size), uint32(blocks), uint32(bs), offset)
}

func (c *Client) eraseTimeout(n int) time.Duration {
	return max(c.o.Timeout, time.Duration(int64(c.o.EraseTimeoutPerMB)*int64(n)/(1<<20)))
}

// block sends one data block, resending it on transient errors.
func (c *Client) block(ctx context.Context, op byte, seq int, data []byte) error {
	pkt := append(words(uint32(len(data)), uint32(seq), 0, 0), data...)
	req := Request{Op: op, Checksum: Checksum(data), Data: pkt}
	var err error
	for try := 0; try < c.o.BlockRetries; try++ {
		if try > 0 {
			c.retries++
			if c.retries > c.o.MaxRetries {
				return fmt.Errorf("%w: %v", ErrRetries, err)
			}
			c.drain(ctx, 20*time.Millisecond)
		}
		if _, err = c.command(ctx, req, 0, c.eraseTimeout(len(data))); err == nil || !Transient(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("block %d: %w", seq, err)
	}
	return nil
}

// write writes data at offset, compressed or not.
func (c *Client) write(ctx context.Context, offset uint32, data []byte, compress bool, done func(int)) error {
	bs := c.o.BlockSize
	if !compress {
		blocks := (len(data) + bs - 1) / bs
		if _, err := c.command(ctx, Request{Op: OpFlashBegin, Data: c.beginWords(len(data), blocks, bs, offset)}, 0, c.eraseTimeout(len(data))); err != nil {
			return fmt.Errorf("FLASH_BEGIN 0x%x: %w", offset, err)
		}
		for seq := 0; seq < blocks; seq++ {
			p := data[seq*bs : min(len(data), (seq+1)*bs)]
			if len(p) < bs {
				p = append(append([]byte(nil), p...), bytes.Repeat([]byte{0xFF}, bs-len(p))...)
			}
			if err := c.block(ctx, OpFlashData, seq, p); err != nil {
				return fmt.Errorf("FLASH_DATA 0x%x: %w", offset, err)
			}
			done(min(len(data), (seq+1)*bs))
		}
		return nil
	}
	z := Deflate(data)
	blocks := (len(z) + bs - 1) / bs
	size := (len(data) + bs - 1) / bs * bs // the ROM wants the erase size rounded up
	if _, err := c.command(ctx, Request{Op: OpFlashDeflBegin, Data: c.beginWords(size, blocks, bs, offset)}, 0, c.eraseTimeout(size)); err != nil {
		return fmt.Errorf("FLASH_DEFL_BEGIN 0x%x: %w", offset, err)
	}
	for seq := 0; seq < blocks; seq++ {
		p := z[seq*bs : min(len(z), (seq+1)*bs)]
		if err := c.block(ctx, OpFlashDeflData, seq, p); err != nil {
			return fmt.Errorf("FLASH_DEFL_DATA 0x%x: %w", offset, err)
		}
		done(min(len(data), len(data)*(seq+1)/blocks))
	}
	return nil
}

// Sector is the flash erase unit the repair works in.
const Sector = 0x1000

// WriteRegion writes data at offset (a multiple of 4 KiB), checks it with
// SPI_FLASH_MD5, and rewrites the 4 KiB sectors whose MD5 differs, up to
// BlockRetries rounds. A region whose MD5 already matches is not written.
func (c *Client) WriteRegion(ctx context.Context, offset uint32, data []byte, progress func(phase string, done, total int)) error {
	want := md5.Sum(data)
	if got, err := c.MD5(ctx, offset, len(data)); err != nil {
		return err
	} else if got == want {
		progress("verify", len(data), len(data))
		return nil
	}
	if err := c.write(ctx, offset, data, c.o.Compress, func(n int) { progress("write", n, len(data)) }); err != nil {
		return err
	}
	for round := 0; ; round++ {
		progress("verify", 0, len(data))
		got, err := c.MD5(ctx, offset, len(data))
		if err != nil {
			return err
		}
		if got == want {
			progress("verify", len(data), len(data))
			return nil
		}
		if round >= c.o.BlockRetries {
			return fmt.Errorf("region 0x%x+%d: %w", offset, len(data), ErrVerify)
		}
		c.retries++
		for s := 0; s < len(data); s += Sector {
			p := data[s:min(len(data), s+Sector)]
			got, err := c.MD5(ctx, offset+uint32(s), len(p))
			if err != nil {
				return err
			}
			if got == md5.Sum(p) {
				continue
			}
			progress("repair", s, len(data))
			if err := c.write(ctx, offset+uint32(s), p, false, func(int) {}); err != nil {
				return fmt.Errorf("repair sector 0x%x: %w", offset+uint32(s), err)
			}
		}
	}
}

// Finish sends FLASH_END with "reboot": the ROM leaves the loader and the
// application starts. The ROM may reset before it answers; no answer is
// not an error.
func (c *Client) Finish(ctx context.Context) error {
	_, err := c.command(ctx, Request{Op: OpFlashEnd, Data: words(0)}, 0, 300*time.Millisecond)
	if err != nil && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("FLASH_END: %w", err)
	}
	return nil
}
