// Package esp32sim simulates the Espressif ROM serial loader of an ESP32,
// ESP32-S3 or ESP32-C3: SLIP, SYNC (eight answers), READ_REG with the
// chip's magic register, GET_SECURITY_INFO on the chips that have it,
// SPI_ATTACH/SET_PARAMS, FLASH_BEGIN/DATA/END, FLASH_DEFL_* (zlib),
// SPI_FLASH_MD5 (the ROM's 32 hex characters), CHANGE_BAUDRATE, and the
// MEM_* upload of a stub loader, after which it answers like the stub
// (2 status bytes, raw MD5, READ_FLASH). It has a NOR flash model (erase to
// 0xFF, programming only clears bits), fault injection and wire counters.
//
//	sim := esp32sim.New(chip, esp32sim.Options{Faults: f, Seed: 1})
//	go sim.Serve(ctx, devEnd)              // an in-memory link end or a pty master
//	... flash through the host end ...
//	got := sim.Flash(); st := sim.Stats()
package esp32sim

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/otagw/otagw/downstream/esp32"
)

// Faults are injected by the simulator.
type Faults struct {
	// CorruptBlock silently flips one bit of the Nth data block written
	// (1-based, FLASH_DATA or inflated FLASH_DEFL_DATA), once: only MD5
	// verification can notice.
	CorruptBlock int `json:"corrupt_block,omitempty"`
	// ChecksumBlock answers the Nth data block with a checksum error
	// (the block is not written), once.
	ChecksumBlock int `json:"checksum_block,omitempty"`
	// DropReply is the probability that a reply is not sent.
	DropReply float64 `json:"drop_reply,omitempty"`
	// DisconnectAfter: after this many host bytes the device drops off the
	// line once: input is discarded for DisconnectFor and the ROM restarts
	// (it waits for SYNC at the initial baud rate again). 0 = never.
	DisconnectAfter int64         `json:"disconnect_after,omitempty"`
	DisconnectFor   time.Duration `json:"disconnect_for,omitempty"`
	// Delay is added before every reply.
	Delay time.Duration `json:"delay,omitempty"`
}

// ParseFaults parses "corrupt-block=3,checksum-block=2,drop-reply=0.01,disconnect-after=20000,delay=1ms".
func ParseFaults(s string) (Faults, error) {
	var f Faults
	f.DisconnectFor = 300 * time.Millisecond
	if strings.TrimSpace(s) == "" {
		return f, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return f, fmt.Errorf("fault %q: want key=value", kv)
		}
		var err error
		switch k {
		case "corrupt-block":
			f.CorruptBlock, err = strconv.Atoi(v)
		case "checksum-block":
			f.ChecksumBlock, err = strconv.Atoi(v)
		case "drop-reply":
			f.DropReply, err = strconv.ParseFloat(v, 64)
			if err == nil && (f.DropReply < 0 || f.DropReply > 1) {
				err = errors.New("not a probability")
			}
		case "disconnect-after":
			f.DisconnectAfter, err = strconv.ParseInt(v, 0, 64)
		case "disconnect-for":
			f.DisconnectFor, err = time.ParseDuration(v)
		case "delay":
			f.Delay, err = time.ParseDuration(v)
		default:
			return f, fmt.Errorf("fault %q: unknown key (corrupt-block, checksum-block, drop-reply, disconnect-after, disconnect-for, delay)", k)
		}
		if err != nil {
			return f, fmt.Errorf("fault %s: %w", k, err)
		}
	}
	return f, nil
}

// Options configure a simulator.
type Options struct {
	Faults    Faults
	Seed      int64
	FlashSize int // bytes; default 4 MiB
	// UnsupportedOp is the opcode the ROM answers unknown commands with (default 0).
	UnsupportedOp byte
}

// Stats are the wire counters.
type Stats struct {
	HostBytes   int64          `json:"host_bytes"`   // bytes received from the host
	DeviceBytes int64          `json:"device_bytes"` // bytes sent
	RoundTrips  int64          `json:"round_trips"`  // requests answered
	Commands    map[string]int `json:"commands"`     // requests by opcode ("0x03")
	DataBlocks  int            `json:"data_blocks"`  // FLASH_DATA and FLASH_DEFL_DATA accepted
	Baud        int            `json:"baud"`         // the rate after the last CHANGE_BAUDRATE (0: initial)
	BaudChanges int            `json:"baud_changes"`
	Starts      int            `json:"starts"` // times the application was started
	Stub        bool           `json:"stub"`   // a stub loader was uploaded and runs
	Injected    Injected       `json:"injected"`
	Deviations  []string       `json:"deviations,omitempty"` // accepted but not what esptool.py sends to this ROM
}

// Injected counts the faults injected.
type Injected struct {
	Corrupted, Checksum, Dropped, Disconnects int
}

type writeState struct {
	active     bool
	compressed bool
	offset     uint32
	size       int
	blockSize  int
	blocks     int
	next       int
	lastData   []byte
	z          []byte // compressed bytes so far
	out        int    // inflated bytes written
}

// Sim is one simulated chip.
type Sim struct {
	chip *esp32.Chip
	o    Options

	mu       sync.Mutex
	flash    []byte
	synced   bool
	attached bool
	stub     bool
	running  bool
	w        writeState
	mem      struct{ active bool }
	blockN   int
	rng      *rand.Rand
	stats    Stats
	discDone bool
	deaf     time.Time
}

// New returns a simulator with erased flash.
func New(chip *esp32.Chip, o Options) *Sim {
	if o.FlashSize == 0 {
		o.FlashSize = 4 << 20
	}
	s := &Sim{chip: chip, o: o, flash: bytes.Repeat([]byte{0xFF}, o.FlashSize), rng: rand.New(rand.NewSource(o.Seed))}
	s.stats.Commands = map[string]int{}
	return s
}

// Chip is the simulated chip.
func (s *Sim) Chip() *esp32.Chip { return s.chip }

// Flash returns a copy of the flash.
func (s *Sim) Flash() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.flash...)
}

// Program stores data at addr (test setup).
func (s *Sim) Program(addr uint32, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.flash[addr:], data)
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Commands = map[string]int{}
	for k, v := range s.stats.Commands {
		st.Commands[k] = v
	}
	st.Deviations = append([]string(nil), s.stats.Deviations...)
	return st
}

// Running reports whether the application was started.
func (s *Sim) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Reset restarts the chip into its ROM loader (a DTR/RTS or GPIO reset).
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Sim) resetLocked() {
	s.synced, s.attached, s.stub, s.running = false, false, false, false
	s.w = writeState{}
	s.stats.Stub = false
}

func (s *Sim) deviation(msg string) {
	for _, d := range s.stats.Deviations {
		if d == msg {
			return
		}
	}
	s.stats.Deviations = append(s.stats.Deviations, msg)
}

// Serve answers requests on rw until ctx ends or rw fails.
func (s *Sim) Serve(ctx context.Context, rw io.ReadWriter) error {
	var dec esp32.Decoder
	buf := make([]byte, 4096)
	for ctx.Err() == nil {
		n, err := rw.Read(buf)
		if n > 0 {
			s.mu.Lock()
			s.stats.HostBytes += int64(n)
			f := s.o.Faults
			deaf := time.Now().Before(s.deaf)
			if f.DisconnectAfter > 0 && !s.discDone && s.stats.HostBytes >= f.DisconnectAfter {
				s.discDone = true
				s.stats.Injected.Disconnects++
				s.deaf = time.Now().Add(f.DisconnectFor)
				s.resetLocked()
				deaf = true
			}
			s.mu.Unlock()
			if deaf {
				dec.Reset()
			} else {
				dec.Write(buf[:n])
			}
			for {
				fr, ok := dec.Next()
				if !ok {
					break
				}
				for _, out := range s.handle(fr) {
					if _, err := rw.Write(out); err != nil {
						return err
					}
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

func (s *Sim) status(ok bool, code byte) []byte {
	st := byte(0)
	if !ok {
		st = 1
	}
	if s.stub {
		return []byte{st, code}
	}
	return []byte{st, code, 0, 0}
}

func (s *Sim) reply(op byte, value uint32, payload []byte, ok bool, code byte) [][]byte {
	r := esp32.Response{Op: op, Value: value, Data: append(append([]byte(nil), payload...), s.status(ok, code)...)}
	return [][]byte{esp32.SLIPEncode(r.Encode())}
}

// handle answers one frame; it returns the encoded frames to send.
func (s *Sim) handle(fr []byte) [][]byte {
	req, err := esp32.ParseRequest(fr)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	out := s.handleLocked(req)
	f := s.o.Faults
	if len(out) > 0 && f.DropReply > 0 && s.rng.Float64() < f.DropReply {
		s.stats.Injected.Dropped++
		out = nil
	}
	if len(out) > 0 {
		s.stats.RoundTrips++
		for _, o := range out {
			s.stats.DeviceBytes += int64(len(o))
		}
	}
	s.mu.Unlock()
	if f.Delay > 0 && len(out) > 0 {
		time.Sleep(f.Delay)
	}
	return out
}

func le(p []byte, i int) uint32 {
	if len(p) < 4*(i+1) {
		return 0
	}
	return binary.LittleEndian.Uint32(p[4*i:])
}

func (s *Sim) handleLocked(r esp32.Request) [][]byte {
	s.stats.Commands[fmt.Sprintf("0x%02x", r.Op)]++
	if r.Op == esp32.OpSync {
		if !bytes.Equal(r.Data, esp32.SyncPayload) {
			return nil
		}
		if s.running {
			return nil // the application does not speak the protocol
		}
		s.synced = true
		if s.stub {
			return s.reply(r.Op, 0, nil, true, 0)
		}
		var out [][]byte
		for i := 0; i < 8; i++ {
			out = append(out, s.reply(r.Op, 0x20120707, nil, true, 0)...)
		}
		return out
	}
	if !s.synced {
		return nil // still autobauding
	}
	ok := func(v uint32, payload []byte) [][]byte { return s.reply(r.Op, v, payload, true, 0) }
	fail := func(code byte) [][]byte { return s.reply(r.Op, 0, nil, false, code) }
	switch r.Op {
	case esp32.OpReadReg:
		if len(r.Data) != 4 {
			return fail(esp32.ErrCodeInvalid)
		}
		return ok(s.readReg(le(r.Data, 0)), nil)
	case esp32.OpWriteReg:
		return ok(0, nil)
	case esp32.OpGetSecurityInfo:
		if !s.chip.SecurityInfo {
			return s.reply(s.o.UnsupportedOp, 0, nil, false, esp32.ErrCodeInvalid)
		}
		p := make([]byte, 20)
		binary.LittleEndian.PutUint32(p[12:], uint32(s.chip.ID))
		return ok(0, p)
	case esp32.OpSPIAttach:
		switch {
		case len(r.Data) == 8 && !s.stub, len(r.Data) == 4 && s.stub:
		case len(r.Data) == 4:
			s.deviation("SPI_ATTACH with 4 bytes to the ROM (esptool.py sends 8)")
		default:
			return fail(esp32.ErrCodeInvalid)
		}
		s.attached = true
		return ok(0, nil)
	case esp32.OpSPISetParams:
		if len(r.Data) != 24 {
			return fail(esp32.ErrCodeInvalid)
		}
		return ok(0, nil)
	case esp32.OpChangeBaud:
		if len(r.Data) != 8 {
			return fail(esp32.ErrCodeInvalid)
		}
		out := ok(0, nil)
		s.stats.Baud = int(le(r.Data, 0))
		s.stats.BaudChanges++
		return out
	case esp32.OpFlashBegin, esp32.OpFlashDeflBegin:
		return s.begin(r)
	case esp32.OpFlashData, esp32.OpFlashDeflData:
		return s.data(r)
	case esp32.OpFlashEnd, esp32.OpFlashDeflEnd:
		if !s.stub && !s.w.active {
			return fail(esp32.ErrCodeInvalid)
		}
		s.w.active = false
		out := ok(0, nil)
		if le(r.Data, 0) == 0 { // reboot into the application
			s.running, s.synced = true, false
			s.stats.Starts++
		}
		return out
	case esp32.OpSPIFlashMD5:
		addr, n := le(r.Data, 0), int(le(r.Data, 1))
		if !s.attached && !s.stub {
			return fail(esp32.ErrCodeInvalid)
		}
		if uint64(addr)+uint64(n) > uint64(len(s.flash)) {
			return fail(esp32.ErrCodeRead)
		}
		sum := md5.Sum(s.flash[addr : int(addr)+n])
		if s.stub {
			return ok(0, sum[:])
		}
		return ok(0, []byte(hex.EncodeToString(sum[:])))
	}
	if p := s.stubOp(r); p != nil {
		return p
	}
	return s.reply(s.o.UnsupportedOp, 0, nil, false, esp32.ErrCodeInvalid)
}

func (s *Sim) readReg(a uint32) uint32 {
	switch {
	case a == esp32.MagicRegister:
		return s.chip.Magic[0]
	}
	return 0
}

func (s *Sim) begin(r esp32.Request) [][]byte {
	fail := func(code byte) [][]byte { return s.reply(r.Op, 0, nil, false, code) }
	if !s.attached && !s.stub {
		return fail(esp32.ErrCodeInvalid) // the ROM needs SPI_ATTACH first
	}
	switch {
	case len(r.Data) == 16:
		if s.chip.EncryptedWord && !s.stub {
			return fail(esp32.ErrCodeInvalid)
		}
	case len(r.Data) == 20:
		if !s.chip.EncryptedWord && !s.stub {
			s.deviation("5th (encrypted) word in FLASH_BEGIN to the ESP32 ROM (esptool.py sends 4)")
		}
	default:
		return fail(esp32.ErrCodeInvalid)
	}
	size, blocks, bs, off := int(le(r.Data, 0)), int(le(r.Data, 1)), int(le(r.Data, 2)), le(r.Data, 3)
	if bs == 0 || bs > 0x10000 || uint64(off)+uint64(size) > uint64(len(s.flash)) {
		return fail(esp32.ErrCodeInvalid)
	}
	if !s.stub && bs > 0x400 {
		s.deviation("data blocks larger than 1 KiB to the ROM (esptool.py uses 0x400)")
	}
	// the ROM erases the whole region up front, in 4 KiB sectors
	start := off &^ 0xFFF
	end := (uint64(off) + uint64(size) + 0xFFF) &^ 0xFFF
	end = min(end, uint64(len(s.flash)))
	for i := uint64(start); i < end; i++ {
		s.flash[i] = 0xFF
	}
	s.w = writeState{active: true, compressed: r.Op == esp32.OpFlashDeflBegin, offset: off, size: size, blockSize: bs, blocks: blocks}
	return s.reply(r.Op, 0, nil, true, 0)
}

func (s *Sim) program(addr uint32, p []byte) bool {
	if uint64(addr)+uint64(len(p)) > uint64(len(s.flash)) {
		return false
	}
	s.blockN++
	if s.o.Faults.CorruptBlock > 0 && s.blockN == s.o.Faults.CorruptBlock && len(p) > 0 {
		p = append([]byte(nil), p...)
		p[len(p)/2] ^= 0x10
		s.stats.Injected.Corrupted++
	}
	for i, b := range p {
		s.flash[int(addr)+i] &= b // NOR: programming only clears bits
	}
	return true
}

func (s *Sim) data(r esp32.Request) [][]byte {
	fail := func(code byte) [][]byte { return s.reply(r.Op, 0, nil, false, code) }
	w := &s.w
	if !w.active || w.compressed != (r.Op == esp32.OpFlashDeflData) || len(r.Data) < 16 {
		return fail(esp32.ErrCodeInvalid)
	}
	n, seq := int(le(r.Data, 0)), int(le(r.Data, 1))
	p := r.Data[16:]
	if n != len(p) {
		return fail(esp32.ErrCodeInvalid)
	}
	if esp32.Checksum(p) != r.Checksum&0xFF {
		return fail(esp32.ErrCodeChecksum)
	}
	if seq == w.next-1 && bytes.Equal(p, w.lastData) { // a resend after a lost reply
		return s.reply(r.Op, 0, nil, true, 0)
	}
	if seq != w.next {
		return fail(esp32.ErrCodeInvalid)
	}
	if f := s.o.Faults.ChecksumBlock; f > 0 && s.stats.Injected.Checksum == 0 && s.stats.DataBlocks+1 == f {
		s.stats.Injected.Checksum++
		return fail(esp32.ErrCodeChecksum)
	}
	if !w.compressed {
		if !s.stub && n != w.blockSize {
			return fail(esp32.ErrCodeInvalid)
		}
		if !s.program(w.offset+uint32(seq*w.blockSize), p) {
			return fail(esp32.ErrCodeWrite)
		}
	} else {
		w.z = append(w.z, p...)
		out, err := inflatePrefix(w.z)
		if err != nil {
			return fail(esp32.ErrCodeInflate)
		}
		if len(out) > w.out {
			if len(out) > w.size && !s.stub {
				return fail(esp32.ErrCodeInflate)
			}
			if !s.program(w.offset+uint32(w.out), out[w.out:]) {
				return fail(esp32.ErrCodeWrite)
			}
			w.out = len(out)
		}
	}
	w.next++
	w.lastData = append(w.lastData[:0], p...)
	s.stats.DataBlocks++
	return s.reply(r.Op, 0, nil, true, 0)
}

// inflatePrefix inflates as much of a possibly incomplete zlib stream as it can.
func inflatePrefix(z []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, zr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return out.Bytes(), nil
}
