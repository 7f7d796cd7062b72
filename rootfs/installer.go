// Package rootfs installs signed update bundles into A/B slots: it checks
// the manifest (signatures, compatible, expiry, version policy), streams each
// payload chunk by chunk (read, decompress, hash, compare, then write; never
// a byte of an unverified chunk), reads the slot back against the payload's
// sha256, and checkpoints its progress so an interrupted install resumes at
// the last verified chunk. Choosing what boots next is not its job.
//
//	policy := rootfs.Policy{Compatible: "acme-gw2", Threshold: 1, MinVersion: "1.1.0"}
//	src, _ := source.New("https://updates.example/gw-1.2.0.otab", opts.Source)
//	h, err := rootfs.CheckHead(ctx, src, kr, policy, time.Now()) // refuse before touching slots or boot variables
//	inst, _ := rootfs.NewInstaller(opts, log)
//	res, err := inst.Install(ctx, rootfs.Request{
//		Src: src, Keyring: kr, Policy: policy,
//		Booted: "A", Resume: lastCheckpoint, // nil for a fresh install
//		OnCheckpoint: store.Save, OnProgress: show,
//	})
//	// on success: res.Bootname("rootfs") is the slot to boot next (abboot's job)
package rootfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

// TargetMCU is the payload target of MCU firmware packages: they are
// verified and handed to the caller, never written to a slot.
const TargetMCU = "mcu"

// Policy is what this device accepts.
type Policy struct {
	Compatible string // must equal the manifest's
	Threshold  int    // valid signatures by distinct trusted keys; < 1 means 1
	// MinVersion is the stored minimum version: lower releases are
	// downgrades, refused unless the manifest is signed with
	// allow_downgrade and AllowDowngrade permits it.
	MinVersion string
	// MinSecurityCounter: a lower manifest counter is always refused.
	MinSecurityCounter uint64
	AllowDowngrade     bool
}

// Check applies the policy to a verified manifest at time now.
func (p Policy) Check(m *bundle.Manifest, now time.Time) error {
	if p.Compatible == "" {
		return errors.New("policy: compatible not configured")
	}
	if m.Compatible != p.Compatible {
		return fmt.Errorf("bundle compatible %q, this device %q: %w", m.Compatible, p.Compatible, ErrIncompatible)
	}
	if m.Expires != nil && !now.Before(*m.Expires) {
		return fmt.Errorf("bundle expired at %s: %w", m.Expires.UTC().Format(time.RFC3339), ErrExpired)
	}
	if m.SecurityCounter < p.MinSecurityCounter {
		return fmt.Errorf("bundle security counter %d below the stored %d: %w", m.SecurityCounter, p.MinSecurityCounter, ErrDowngrade)
	}
	if p.MinVersion != "" {
		c, err := bundle.CompareVersions(m.Version, p.MinVersion)
		if err != nil {
			return fmt.Errorf("policy min version: %w", err)
		}
		if c < 0 && !(m.AllowDowngrade && p.AllowDowngrade) {
			why := "the bundle does not allow it"
			if m.AllowDowngrade {
				why = "the configuration does not allow it"
			}
			return fmt.Errorf("bundle version %s below the stored minimum %s (%s): %w", m.Version, p.MinVersion, why, ErrDowngrade)
		}
	}
	return nil
}

// Checkpoint is the persisted position of an install: every chunk of
// Payload before Next is on the slot and synced.
type Checkpoint struct {
	Bundle  string `json:"bundle"` // hex sha256 of the signed manifest
	Source  string `json:"source"`
	Payload string `json:"payload"`
	Slot    string `json:"slot"`
	Device  string `json:"device"`
	Next    int    `json:"next"`  // next chunk to write
	Bytes   int64  `json:"bytes"` // plain bytes of Payload on the slot
}

// Progress is reported after each chunk.
type Progress struct {
	Payload string  `json:"payload"`
	Slot    string  `json:"slot,omitempty"`
	Chunk   int     `json:"chunk"` // index of the chunk just written
	Chunks  int     `json:"chunks"`
	Done    int64   `json:"done"`  // plain bytes of all payloads
	Total   int64   `json:"total"` // plain bytes of all payloads
	Rate    float64 `json:"rate"`  // bytes per second since the start
}

// Request is one install.
type Request struct {
	Source  string        // file path or http(s):// URL
	Src     source.Source // overrides Source when set
	Keyring *sign.Keyring
	Policy  Policy
	// Booted is the bootname of the running slot: never written.
	Booted string
	// Target names the slot to write; empty picks the slot of the
	// payload's class that is not booted.
	Target string
	// Head, when set, is what CheckHead returned for this source: the
	// install then reads the head again and checks that its manifest bytes
	// hash to the same digest (so the signatures CheckHead verified still
	// cover them) instead of parsing a second copy of the manifest, and
	// applies Policy again. Keyring is not used for it.
	Head *bundle.Head
	// Resume continues an interrupted install of the same bundle.
	Resume *Checkpoint
	// MCUDir receives MCU payloads as MCUDir/NAME; empty skips them.
	MCUDir       string
	OnProgress   func(Progress)
	OnCheckpoint func(Checkpoint) error
}

// SlotResult is one payload written to a slot.
type SlotResult struct {
	Payload  string `json:"payload"`
	Class    string `json:"class"`
	Slot     string `json:"slot"`
	Bootname string `json:"bootname"`
	Device   string `json:"device"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Reused   int    `json:"reused_chunks"` // copied from the booted slot (delta)
	Resumed  int    `json:"resumed_at"`    // first chunk written in this run
}

// MCUResult is one verified MCU payload.
type MCUResult struct {
	Payload string `json:"payload"`
	Path    string `json:"path,omitempty"` // empty when MCUDir was empty
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
}

// Result is a completed install.
type Result struct {
	Bundle string `json:"bundle"` // bundle digest (hex sha256 of the signed manifest)
	Source string `json:"source"`
	// From the verified manifest: what the daemon stores on commit.
	Version         string `json:"version"`
	MinVersion      string `json:"min_version,omitempty"`
	SecurityCounter uint64 `json:"security_counter,omitempty"`
	Compatible      string `json:"compatible"`
	// Manifest is the whole verified manifest (chunk tables included, so
	// it is left out of JSON).
	Manifest *bundle.Manifest `json:"-"`
	Slots    []SlotResult     `json:"slots"`
	MCU      []MCUResult      `json:"mcu,omitempty"`
}

// Bootname is the bootname of the slot written for class, or "".
func (r *Result) Bootname(class string) string {
	for _, s := range r.Slots {
		if s.Class == class {
			return s.Bootname
		}
	}
	return ""
}

// Installer writes bundles into slots.
type Installer struct {
	opts Options
	log  *zap.Logger
	now  func() time.Time
}

// NewInstaller checks opts and returns an installer.
func NewInstaller(opts Options, log *zap.Logger) (*Installer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Installer{opts: opts, log: log, now: time.Now}, nil
}

// SetClock replaces the clock used for expiry and rates.
func (in *Installer) SetClock(now func() time.Time) { in.now = now }

type target struct {
	p      *bundle.Payload
	slot   *Slot
	active *Slot // booted slot of the class, for delta
	start  int
}

// Install runs one install (or resumes one, with req.Resume) and returns
// once every payload is written and read back, or on the first failure.
func (in *Installer) Install(ctx context.Context, req Request) (*Result, error) {
	if req.Keyring == nil && req.Head == nil {
		return nil, errors.New("install: no keyring")
	}
	src := req.Src
	if src == nil {
		var err error
		if src, err = source.New(req.Source, in.opts.Source); err != nil {
			return nil, err
		}
	}
	st := &stream{ctx: ctx, src: src}
	if r, ok := src.(source.Ranger); ok && in.opts.Delta {
		// Most of the bundle may not be read: ask for the head alone, so
		// the server does not send what is not used. (On any failure the
		// head is read the usual way, which reports it.)
		if hdr, err := peekHeader(ctx, r); err == nil {
			st.want = hdr.DataOffset()
		}
	}
	defer st.close()
	// The checks of CheckHead, on the stream the install goes on reading.
	var h *bundle.Head
	var err error
	if req.Head != nil {
		h, err = recheckHead(st, src, req.Head, req.Policy, in.now())
	} else {
		h, err = checkHead(st, src, req.Keyring, req.Policy, in.now(), nil)
	}
	if err != nil {
		return nil, err
	}
	m := h.Manifest
	res := &Result{Bundle: h.ID(), Source: src.String(), Manifest: m, Version: m.Version, MinVersion: m.MinVersion,
		SecurityCounter: m.SecurityCounter, Compatible: m.Compatible}
	if r := req.Resume; r != nil && (r.Bundle != res.Bundle || m.Payload(r.Payload) == nil || r.Next < 0 || r.Next > len(m.Payload(r.Payload).Chunks)) {
		return nil, fmt.Errorf("resume bundle %s payload %q chunk %d with %s: %w", r.Bundle, r.Payload, r.Next, res.Bundle, ErrResume)
	}

	// Plan and check every slot before writing anything.
	var targets []*target
	var total int64
	used := map[string]bool{}
	resumeSeen := false
	for i := range m.Payloads {
		p := &m.Payloads[i]
		if p.Target == TargetMCU {
			if req.MCUDir != "" {
				total += p.Size
			}
			continue
		}
		t, err := in.plan(p, &req)
		if err != nil {
			return nil, err
		}
		if used[t.slot.Name] {
			return nil, fmt.Errorf("bundle %s: two payloads for slot %s", src, t.slot.Name)
		}
		used[t.slot.Name] = true
		if r := req.Resume; r != nil {
			switch {
			case r.Payload == p.Name:
				if r.Slot != t.slot.Name {
					return nil, fmt.Errorf("resume: checkpoint wrote slot %s, this install targets %s: %w", r.Slot, t.slot.Name, ErrResume)
				}
				t.start, resumeSeen = r.Next, true
			case !resumeSeen:
				t.start = len(p.Chunks) // written before the checkpoint's payload; read back only
			}
		}
		targets = append(targets, t)
		total += p.Size
	}
	if req.Resume != nil && !resumeSeen {
		return nil, fmt.Errorf("resume: payload %q is not written to a slot: %w", req.Resume.Payload, ErrResume)
	}

	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, t := range targets {
		f, err := openSlot(t.slot)
		if err != nil {
			return nil, err
		}
		files[t.slot.Name] = f
	}

	// The head's decoding left garbage (small, but in proportion to the
	// chunk count): collect it now so the pipeline's buffers reuse that memory.
	runtime.GC()
	pr := &progress{req: &req, total: total, start: in.now(), now: in.now}
	for i := range m.Payloads {
		p := &m.Payloads[i]
		if p.Target == TargetMCU {
			if req.MCUDir == "" {
				res.MCU = append(res.MCU, MCUResult{Payload: p.Name, Size: p.Size, SHA256: p.SHA256.String()})
				continue
			}
			r, err := in.extractMCU(ctx, st, h, p, req.MCUDir, pr)
			if err != nil {
				return nil, err
			}
			res.MCU = append(res.MCU, *r)
			continue
		}
		var t *target
		for _, x := range targets {
			if x.p == p {
				t = x
			}
		}
		in.log.Info("writing payload", zap.String("payload", p.Name), zap.String("slot", t.slot.Name),
			zap.String("device", t.slot.Path), zap.Int("from_chunk", t.start), zap.Int("chunks", len(p.Chunks)))
		sr, err := in.writeSlot(ctx, st, h, t, files[t.slot.Name], &req, res, pr)
		if err != nil {
			return nil, err
		}
		res.Slots = append(res.Slots, *sr)
	}
	if err := st.checkEnd(h.Size()); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", src, err)
	}
	return res, nil
}

// plan picks, resolves and checks the slot for payload p.
func (in *Installer) plan(p *bundle.Payload, req *Request) (*target, error) {
	c, err := in.opts.pick(p.Target, req.Booted, req.Target)
	if err != nil {
		return nil, fmt.Errorf("payload %q: %w", p.Name, err)
	}
	if req.Booted != "" && c.Bootname == req.Booted {
		return nil, fmt.Errorf("payload %q: slot %s is the booted slot %q: %w", p.Name, c.Name, req.Booted, ErrSlotBusy)
	}
	s, err := resolve(c)
	if err != nil {
		return nil, err
	}
	t := &target{p: p, slot: s}
	if bc, ok := in.opts.booted(p.Target, req.Booted); ok {
		if b, err := resolve(bc); err == nil {
			if b.Path == s.Path || (b.Block && s.Block && b.Rdev == s.Rdev) {
				return nil, fmt.Errorf("slot %s (%s) is the same device as the booted slot %s: %w", s.Name, s.Path, b.Name, ErrSlotBusy)
			}
			if in.opts.Delta {
				t.active = b
			}
		}
	}
	if err := checkNotMounted(s); err != nil {
		return nil, err
	}
	if p.Size > s.Size {
		return nil, fmt.Errorf("payload %q: %d bytes, slot %s (%s) has %d: %w", p.Name, p.Size, s.Name, s.Path, s.Size, ErrSlotTooSmall)
	}
	return t, nil
}

func openSlot(s *Slot) (*os.File, error) {
	flags := os.O_RDWR
	if s.Block {
		flags |= unix.O_EXCL // the kernel refuses while mounted or claimed
	}
	f, err := os.OpenFile(s.Path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("slot %s (%s): %v: %w", s.Name, s.Path, err, ErrSlotBusy)
		}
		return nil, &IOError{Slot: s.Name, Device: s.Path, Op: "open", Err: err}
	}
	return f, nil
}

// peekHeader reads the bundle's fixed header alone, for its lengths.
func peekHeader(ctx context.Context, r source.Ranger) (bundle.Header, error) {
	rc, err := r.OpenRange(ctx, 0, bundle.HeaderSize)
	if err != nil {
		return bundle.Header{}, err
	}
	defer rc.Close()
	b := make([]byte, bundle.HeaderSize)
	if _, err := io.ReadFull(rc, b); err != nil {
		return bundle.Header{}, err
	}
	return bundle.ParseHeader(b)
}

// stream is a forward reader over a source that reopens it to skip ahead.
type stream struct {
	ctx context.Context
	src source.Source
	rc  io.ReadCloser
	pos int64
	// end is the exclusive end of the open connection's range (-1: to the
	// end of the source); want is the end the next connection asks for.
	end, want int64
	ranged    bool // a bounded range was read
}

func (s *stream) Read(p []byte) (int, error) {
	if s.rc == nil {
		var rc io.ReadCloser
		var err error
		s.end = -1
		if r, ok := s.src.(source.Ranger); ok && s.want > s.pos {
			rc, err = r.OpenRange(s.ctx, s.pos, s.want)
			s.end, s.ranged = s.want, true
		} else {
			rc, err = s.src.Open(s.ctx, s.pos)
		}
		if err != nil {
			return 0, fmt.Errorf("open %s at %d: %w", s.src, s.pos, err)
		}
		s.rc = rc
	}
	n, err := s.rc.Read(p)
	s.pos += int64(n)
	return n, err
}

// seek moves forward (or anywhere, by reopening); a new connection reads
// to the end of the source.
func (s *stream) seek(off int64) error { return s.seekRange(off, -1) }

// seekRange is seek for a reader that needs the bytes up to end only
// (exclusive; -1: to the end): a new connection asks for just that range
// when the source can (source.Ranger), and a connection that ends sooner
// is replaced.
func (s *stream) seekRange(off, end int64) error {
	if s.rc != nil && s.end >= 0 && (end < 0 || end > s.end) {
		s.close() // the open range stops short of what is needed
	}
	s.want = end
	if off == s.pos {
		return nil
	}
	if s.rc != nil && off > s.pos && off-s.pos <= 256<<10 {
		if _, err := io.CopyN(io.Discard, s, off-s.pos); err != nil {
			if errors.Is(err, io.EOF) {
				return ErrTruncated
			}
			return err
		}
		return nil
	}
	s.close()
	s.pos = off
	return nil
}

// checkEnd checks that the bundle is exactly end bytes long.
func (s *stream) checkEnd(end int64) error {
	if s.ranged && s.src.Size() == end {
		// Ranged reads asked for nothing past end; the source's size,
		// checked against the manifest with the head and kept by every
		// later response, says nothing follows it.
		return nil
	}
	s.want = -1
	if s.pos != end {
		if err := s.seek(end - 1); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err != nil {
			return fmt.Errorf("last byte: %w", ErrTruncated)
		}
	}
	return bundle.CheckEOF(s)
}

func (s *stream) close() {
	if s.rc != nil {
		s.rc.Close()
		s.rc = nil
	}
}

type progress struct {
	req   *Request
	done  int64
	total int64
	start time.Time
	now   func() time.Time
}

func (p *progress) add(payload, slot string, chunk, chunks int, n int64) {
	p.done += n
	if p.req.OnProgress == nil {
		return
	}
	var rate float64
	if el := p.now().Sub(p.start).Seconds(); el > 0 {
		rate = float64(p.done) / el
	}
	p.req.OnProgress(Progress{Payload: payload, Slot: slot, Chunk: chunk, Chunks: chunks, Done: p.done, Total: p.total, Rate: rate})
}

// extractMCU verifies an MCU payload into dir/NAME (atomically).
func (in *Installer) extractMCU(ctx context.Context, st *stream, h *bundle.Head, p *bundle.Payload, dir string, pr *progress) (*MCUResult, error) {
	if err := st.seek(h.DataOffset() + p.Offset); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+p.Name+"-*")
	if err != nil {
		return nil, fmt.Errorf("mcu payload %q: %w", p.Name, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	dec := bundle.NewDecoder()
	defer dec.Close()
	whole := sha256.New()
	var stored, pbuf []byte
	for i := range p.Chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if stored, err = bundle.ReadStored(st, p, i, stored); err != nil {
			return nil, err
		}
		plain, err := dec.Chunk(p, i, stored, pbuf)
		if err != nil {
			return nil, err
		}
		if p.Chunks[i].Zstd {
			pbuf = plain
		}
		whole.Write(plain)
		if _, err := f.Write(plain); err != nil {
			return nil, fmt.Errorf("mcu payload %q: %w", p.Name, err)
		}
		pr.add(p.Name, "", i, len(p.Chunks), int64(len(plain)))
	}
	if bundle.Digest(whole.Sum(nil)) != p.SHA256 {
		return nil, &bundle.ChunkError{Payload: p.Name, Index: -1, Err: ErrHashMismatch}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, p.Name)
	if err := os.Rename(f.Name(), path); err != nil {
		return nil, fmt.Errorf("mcu payload %q: %w", p.Name, err)
	}
	return &MCUResult{Payload: p.Name, Path: path, Size: p.Size, SHA256: p.SHA256.String()}, nil
}

func zapPayload(sr *SlotResult) []zap.Field {
	return []zap.Field{zap.String("payload", sr.Payload), zap.String("slot", sr.Slot), zap.String("device", sr.Device),
		zap.Int64("size", sr.Size), zap.Int("reused_chunks", sr.Reused)}
}
