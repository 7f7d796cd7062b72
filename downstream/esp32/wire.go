package esp32

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SLIP framing bytes.
const (
	slipEnd    = 0xC0
	slipEsc    = 0xDB
	slipEscEnd = 0xDC
	slipEscEsc = 0xDD
)

// MaxFrame bounds a decoded frame (a 16 KiB data block plus headers).
const MaxFrame = 0x4000 + 64

// Opcodes of the ROM serial protocol (and the stub's extras).
const (
	OpFlashBegin      = 0x02
	OpFlashData       = 0x03
	OpFlashEnd        = 0x04
	OpMemBegin        = 0x05
	OpMemEnd          = 0x06
	OpMemData         = 0x07
	OpSync            = 0x08
	OpWriteReg        = 0x09
	OpReadReg         = 0x0A
	OpSPISetParams    = 0x0B
	OpSPIAttach       = 0x0D
	OpChangeBaud      = 0x0F
	OpFlashDeflBegin  = 0x10
	OpFlashDeflData   = 0x11
	OpFlashDeflEnd    = 0x12
	OpSPIFlashMD5     = 0x13
	OpGetSecurityInfo = 0x14
	OpEraseFlash      = 0xD0
	OpEraseRegion     = 0xD1
	OpReadFlash       = 0xD2
	OpRunUserCode     = 0xD3
)

// ROM error codes carried in the status bytes.
const (
	ErrCodeInvalid  = 0x05
	ErrCodeResult   = 0x06
	ErrCodeChecksum = 0x07
	ErrCodeWrite    = 0x08
	ErrCodeRead     = 0x09
	ErrCodeLength   = 0x0A
	ErrCodeInflate  = 0x0B
	ErrCodeAdler    = 0x0C
)

// ChecksumSeed starts the XOR checksum of data blocks.
const ChecksumSeed = 0xEF

// SyncPayload is SYNC's 36 bytes (also the autobaud pattern).
var SyncPayload = func() []byte {
	p := []byte{0x07, 0x07, 0x12, 0x20}
	for i := 0; i < 32; i++ {
		p = append(p, 0x55)
	}
	return p
}()

// ErrFrame: a malformed SLIP frame or packet.
var ErrFrame = errors.New("malformed ESP32 ROM packet")

// SLIPEncode frames p.
func SLIPEncode(p []byte) []byte {
	out := make([]byte, 0, len(p)+len(p)/32+2)
	out = append(out, slipEnd)
	for _, b := range p {
		switch b {
		case slipEnd:
			out = append(out, slipEsc, slipEscEnd)
		case slipEsc:
			out = append(out, slipEsc, slipEscEsc)
		default:
			out = append(out, b)
		}
	}
	return append(out, slipEnd)
}

// Decoder turns a byte stream into SLIP frames. Bytes outside frames (boot
// messages) are ignored; a frame with a bad escape or longer than MaxFrame
// is dropped and counted.
type Decoder struct {
	in, esc, bad bool
	cur          []byte
	frames       [][]byte
	Dropped      int
}

// Write feeds bytes; it never fails.
func (d *Decoder) Write(p []byte) (int, error) {
	for _, b := range p {
		d.feed(b)
	}
	return len(p), nil
}

func (d *Decoder) feed(b byte) {
	if !d.in {
		if b == slipEnd {
			d.in, d.esc, d.bad, d.cur = true, false, false, d.cur[:0]
		}
		return
	}
	if b == slipEnd {
		switch {
		case len(d.cur) == 0 && !d.bad: // C0 C0: the second one opens the frame
			return
		case d.bad || d.esc:
			d.Dropped++
		default:
			d.frames = append(d.frames, append([]byte(nil), d.cur...))
		}
		d.in = false
		return
	}
	if d.bad {
		return
	}
	if d.esc {
		d.esc = false
		switch b {
		case slipEscEnd:
			b = slipEnd
		case slipEscEsc:
			b = slipEsc
		default:
			d.bad = true
			return
		}
	} else if b == slipEsc {
		d.esc = true
		return
	}
	if len(d.cur) >= MaxFrame {
		d.bad = true
		return
	}
	d.cur = append(d.cur, b)
}

// Next returns the oldest complete frame.
func (d *Decoder) Next() ([]byte, bool) {
	if len(d.frames) == 0 {
		return nil, false
	}
	f := d.frames[0]
	d.frames = d.frames[1:]
	return f, true
}

// Reset forgets a partial frame and queued frames.
func (d *Decoder) Reset() { *d = Decoder{Dropped: d.Dropped} }

// Checksum is the ROM's XOR checksum of a data block's payload.
func Checksum(data []byte) uint32 {
	c := byte(ChecksumSeed)
	for _, b := range data {
		c ^= b
	}
	return uint32(c)
}

// Request is a host-to-device packet.
type Request struct {
	Op       byte
	Checksum uint32
	Data     []byte
}

// Encode returns the unframed packet bytes.
func (r Request) Encode() []byte {
	p := make([]byte, 8, 8+len(r.Data))
	p[0], p[1] = 0x00, r.Op
	binary.LittleEndian.PutUint16(p[2:], uint16(len(r.Data)))
	binary.LittleEndian.PutUint32(p[4:], r.Checksum)
	return append(p, r.Data...)
}

// ParseRequest is the device side's parser.
func ParseRequest(f []byte) (Request, error) {
	if len(f) < 8 || f[0] != 0x00 {
		return Request{}, fmt.Errorf("%w: request header", ErrFrame)
	}
	n := int(binary.LittleEndian.Uint16(f[2:]))
	if n != len(f)-8 {
		return Request{}, fmt.Errorf("%w: request says %d data bytes, has %d", ErrFrame, n, len(f)-8)
	}
	return Request{Op: f[1], Checksum: binary.LittleEndian.Uint32(f[4:]), Data: f[8:]}, nil
}

// Response is a device-to-host packet. Data ends with the status bytes:
// 2 from the stub, 4 from the ROM.
type Response struct {
	Op    byte
	Value uint32
	Data  []byte
}

// Encode returns the unframed packet bytes.
func (r Response) Encode() []byte {
	p := make([]byte, 8, 8+len(r.Data))
	p[0], p[1] = 0x01, r.Op
	binary.LittleEndian.PutUint16(p[2:], uint16(len(r.Data)))
	binary.LittleEndian.PutUint32(p[4:], r.Value)
	return append(p, r.Data...)
}

// ParseResponse parses one frame from the device.
func ParseResponse(f []byte) (Response, error) {
	if len(f) < 8 || f[0] != 0x01 {
		return Response{}, fmt.Errorf("%w: response header", ErrFrame)
	}
	n := int(binary.LittleEndian.Uint16(f[2:]))
	if n != len(f)-8 {
		return Response{}, fmt.Errorf("%w: response says %d data bytes, has %d", ErrFrame, n, len(f)-8)
	}
	return Response{Op: f[1], Value: binary.LittleEndian.Uint32(f[4:]), Data: f[8:]}, nil
}

// Status reads the two status bytes right after a payload of n bytes, as
// esptool does (the ROM appends two reserved bytes, the stub does not).
func (r Response) Status(n int) (failed bool, code byte, err error) {
	if n < 0 || len(r.Data) < n+2 {
		return false, 0, fmt.Errorf("%w: op 0x%02x: %d data bytes, want %d plus status", ErrFrame, r.Op, len(r.Data), n)
	}
	return r.Data[n] != 0, r.Data[n+1], nil
}

// words packs little-endian 32-bit words.
func words(w ...uint32) []byte {
	p := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(p[4*i:], v)
	}
	return p
}
