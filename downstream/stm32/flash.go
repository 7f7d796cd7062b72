package stm32

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/otagw/otagw/downstream/stm32/chips"
)

// Segment is a run of bytes to place at Addr.
type Segment struct {
	Addr uint32
	Data []byte
}

// Progress reports the flashing phases.
type Progress struct {
	Phase string `json:"phase"` // "erase", "write", "verify"
	Done  int    `json:"done"`  // bytes
	Total int    `json:"total"` // bytes
}

type blockState int

const (
	pending  blockState = iota // to be written
	written                    // ACKed, not yet verified
	verified                   // read back (or CRC) equal to the image
)

type block struct {
	addr  uint32
	data  []byte // 4-byte multiple, padded with 0xFF
	state blockState
	at    int // Flasher.ops when the block verified
}

// Flasher programs an image into one chip and keeps, between calls to Run,
// which pages are erased and which 256-byte blocks are written and
// verified, so that a Run after an error resumes where the last one stopped.
type Flasher struct {
	c       Bootloader
	chip    *chips.Chip
	o       Options
	blocks  []*block
	pages   []int        // pages the image needs, ascending
	erased  map[int]bool // pages erased during this flashing
	repairs map[int]int  // re-erases of each page for content that read back wrong twice
	retries int
	ops     int // write and erase commands sent so far
	budget  int // line errors the current Run may still absorb
	total   int
}

const (
	// maxRepairs bounds the re-erases of one page: a page whose content
	// still reads back wrong (the same way twice) after that many erases
	// and rewrites is reported, not erased again.
	maxRepairs = 3
	// maxReadBacks bounds the read-backs of one block that disagree with
	// each other before the verification gives up for this round (a line
	// error; Run retries it within its budget).
	maxReadBacks = 4
)

// Normalize sorts segments, merges overlapping or near ones (gaps under 4
// bytes filled with 0xFF), aligns starts down to 4 bytes and pads ends to a
// multiple of 4 with 0xFF.
func Normalize(segs []Segment) []Segment {
	var s []Segment
	for _, x := range segs {
		if len(x.Data) > 0 {
			s = append(s, Segment{x.Addr, append([]byte(nil), x.Data...)})
		}
	}
	sort.SliceStable(s, func(i, j int) bool { return s[i].Addr < s[j].Addr })
	var out []Segment
	for _, x := range s {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if x.Addr <= last.Addr+uint32(len(last.Data))+3 {
				for last.Addr+uint32(len(last.Data)) < x.Addr {
					last.Data = append(last.Data, 0xFF)
				}
				off := int(x.Addr - last.Addr)
				if off+len(x.Data) > len(last.Data) {
					last.Data = append(last.Data, bytes.Repeat([]byte{0xFF}, off+len(x.Data)-len(last.Data))...)
				}
				copy(last.Data[off:], x.Data)
				continue
			}
		}
		out = append(out, x)
	}
	for i, x := range out {
		if pad := x.Addr % 4; pad != 0 {
			out[i] = Segment{x.Addr - pad, append(bytes.Repeat([]byte{0xFF}, int(pad)), x.Data...)}
		}
	}
	for i := range out {
		for len(out[i].Data)%4 != 0 {
			out[i].Data = append(out[i].Data, 0xFF)
		}
	}
	return out
}

// NewFlasher plans the flashing of segs into chip: every byte must lie in
// the chip's flash (chips.ErrOutOfFlash otherwise).
func NewFlasher(c Bootloader, chip *chips.Chip, segs []Segment, o Options) (*Flasher, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	f := &Flasher{c: c, chip: chip, o: o, erased: map[int]bool{}, repairs: map[int]int{}}
	need := map[int]bool{}
	for _, s := range Normalize(segs) {
		first, n, err := chip.PageRange(s.Addr, len(s.Data))
		if err != nil {
			return nil, err
		}
		for p := first; p < first+n; p++ {
			need[p] = true
		}
		for off := 0; off < len(s.Data); {
			a := s.Addr + uint32(off)
			n := min(256-int(a%256), len(s.Data)-off)
			f.blocks = append(f.blocks, &block{addr: a, data: s.Data[off : off+n]})
			off += n
			f.total += n
		}
	}
	for p := range need {
		f.pages = append(f.pages, p)
	}
	sort.Ints(f.pages)
	if len(f.blocks) == 0 {
		return nil, errors.New("stm32: empty image")
	}
	return f, nil
}

// Pages lists the erase units the image touches.
func (f *Flasher) Pages() []int { return append([]int(nil), f.pages...) }

// Retries is the number of line errors absorbed so far, read-backs of one
// block that disagree with each other included.
func (f *Flasher) Retries() int { return f.retries }

// Verified returns the number of image bytes verified so far.
func (f *Flasher) Verified() int {
	n := 0
	for _, b := range f.blocks {
		if b.state == verified {
			n += len(b.data)
		}
	}
	return n
}

// Done reports whether every block is verified.
func (f *Flasher) Done() bool { return f.Verified() == f.total }

// Run erases what is not yet erased, writes what is not yet written and
// verifies what is not yet verified. Line errors are absorbed (Recover and
// retry, up to Options.MaxRetries per Run). A block is verified when a
// read-back (or the CRC) equals the image. A read-back that differs is
// read again: two read-backs that disagree are a line error (one of them
// was garbled on the way), and only two that agree with each other and
// differ from the image show a corrupted block, repaired by erasing its
// pages again and rewriting them, at most maxRepairs times per page (ErrVerify
// then, naming the page). Run returns nil only when every block verified
// and, where the bootloader offers Get Checksum, the CRC of the whole image
// (each contiguous run) matches.
func (f *Flasher) Run(ctx context.Context, progress func(Progress)) error {
	if progress == nil {
		progress = func(Progress) {}
	}
	f.budget = f.o.MaxRetries
	absorb := func(err error) error {
		if !Transient(err) {
			return err
		}
		if err := f.lineError(err); err != nil {
			return err
		}
		if errors.Is(err, ErrNACK) {
			f.c.Drain(ctx) // after a NACK the bootloader waits for a command
			return nil
		}
		if rerr := f.c.Recover(ctx); rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("recover after %v: %w", err, rerr)
		}
		return nil
	}
	for rounds := 0; ; rounds++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rounds > 8+f.o.MaxRetries {
			return fmt.Errorf("%w: image still differs after %d repair rounds", ErrVerify, rounds)
		}
		if err := f.eraseNeeded(ctx, progress); err != nil {
			if err = absorb(err); err != nil {
				return err
			}
			continue
		}
		if err := f.writePending(ctx, progress); err != nil {
			if err = absorb(err); err != nil {
				return err
			}
			continue
		}
		if err := f.verifyWritten(ctx, progress); err != nil {
			if err = absorb(err); err != nil {
				return err
			}
			continue
		}
		if f.Done() {
			if err := f.finalCheck(ctx); err != nil {
				if err = absorb(err); err != nil {
					return err
				}
				continue
			}
			if f.Done() {
				return nil
			}
		}
	}
}

// useCRC reports whether blocks are verified by Get Checksum (0xA1).
func (f *Flasher) useCRC() bool {
	return f.o.Verify == "crc" || (f.o.Verify == "auto" && f.c.Info().Has(CmdChecksum))
}

// finalCheck, once every block verified, checks the whole image again by
// one CRC per contiguous run of blocks where the bootloader offers Get
// Checksum: a block changed after its own verification, by a later write
// or erase that went astray, fails it. A run with no write or erase sent
// since its blocks verified is not checked again (in a flash without
// repairs the verification's CRC was already over the whole image). A run
// whose CRC differs goes back to "written", to be verified block by block.
// Without CRC it does nothing: a second read-back of the image would double
// the wire time.
func (f *Flasher) finalCheck(ctx context.Context) error {
	if !f.useCRC() {
		return nil
	}
	for i := 0; i < len(f.blocks); {
		j := i + 1
		img := append([]byte(nil), f.blocks[i].data...)
		stale := f.blocks[i].at != f.ops
		for j < len(f.blocks) && f.blocks[j].addr == f.blocks[j-1].addr+uint32(len(f.blocks[j-1].data)) {
			img = append(img, f.blocks[j].data...)
			stale = stale || f.blocks[j].at != f.ops
			j++
		}
		if !stale {
			i = j
			continue
		}
		crc, err := f.c.Checksum(ctx, f.blocks[i].addr, uint32(len(img)))
		if err != nil {
			return fmt.Errorf("final check 0x%08x (%d bytes): %w", f.blocks[i].addr, len(img), err)
		}
		if crc != CRC(img) {
			for k := i; k < j; k++ {
				f.blocks[k].state = written
			}
		}
		i = j
	}
	return nil
}

func (f *Flasher) eraseNeeded(ctx context.Context, progress func(Progress)) error {
	var todo []int
	for _, p := range f.pages {
		if !f.erased[p] {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	progress(Progress{Phase: "erase", Done: 0, Total: f.total})
	f.ops++
	if f.o.MassErase && len(f.erased) == 0 {
		if err := f.c.MassErase(ctx); err != nil {
			return err
		}
	} else if err := f.c.ErasePages(ctx, todo); err != nil {
		return err
	}
	for _, p := range todo {
		f.erased[p] = true
	}
	return nil
}

func (f *Flasher) writePending(ctx context.Context, progress func(Progress)) error {
	done := 0
	for _, b := range f.blocks {
		if b.state != pending {
			done += len(b.data)
			continue
		}
		f.ops++
		if err := f.c.WriteMemory(ctx, b.addr, b.data); err != nil {
			if !Transient(err) {
				return err
			}
			// The data may or may not have been programmed: find out.
			if errors.Is(err, ErrNACK) {
				f.c.Drain(ctx)
			} else if rerr := f.c.Recover(ctx); rerr != nil {
				return err
			}
			if serr := f.settle(ctx, b); serr != nil {
				if !Transient(serr) {
					return serr // a page past its repairs, or the budget spent
				}
				return err
			}
			return err // counted by Run's budget; state is already settled
		}
		b.state = written
		done += len(b.data)
		progress(Progress{Phase: "write", Done: done, Total: f.total})
	}
	return nil
}

// lineError counts one line error against the Run's budget; past the
// budget it returns the ErrRetries error that ends the Run.
func (f *Flasher) lineError(err error) error {
	if f.budget <= 0 {
		return fmt.Errorf("%w (%d retries): last: %w", ErrRetries, f.retries, err)
	}
	f.budget--
	f.retries++
	return nil
}

// settle reads a block back (after an uncertain write, or to verify it)
// and classifies it: equal to the image (verified), blank (pending) or,
// when two read-backs agree on other content, corrupted (its pages need
// erasing).
func (f *Flasher) settle(ctx context.Context, b *block) error {
	got, err := f.readBack(ctx, b)
	if err != nil {
		return err
	}
	switch {
	case bytes.Equal(got, b.data):
		b.state, b.at = verified, f.ops
	case isBlank(got):
		b.state = pending
	default:
		return f.dirty(b, got)
	}
	return nil
}

// readBack reads b until the answer can be trusted: one read-back equal
// to the image or blank (a garbled line turns neither other content into
// the image nor every byte into 0xFF), or two equal read-backs of other
// content. A read-back that disagrees with every earlier one shows a line
// error and is counted as one; after maxReadBacks read-backs readBack returns
// ErrGarbled, naming the block, for Run to absorb.
func (f *Flasher) readBack(ctx context.Context, b *block) ([]byte, error) {
	var seen [][]byte
	for {
		got, err := f.c.ReadMemory(ctx, b.addr, len(b.data))
		if err != nil {
			return nil, err
		}
		if bytes.Equal(got, b.data) || isBlank(got) {
			return got, nil
		}
		for _, s := range seen {
			if bytes.Equal(s, got) {
				return got, nil
			}
		}
		seen = append(seen, got)
		if len(seen) == 1 {
			continue // not a line error yet: the flash may really hold this
		}
		err = fmt.Errorf("read-back of block 0x%08x (%d bytes): %d read-backs, no two agree: %w", b.addr, len(b.data), len(seen), ErrGarbled)
		if len(seen) >= maxReadBacks {
			return nil, err // Run absorbs (and counts) this one
		}
		if lerr := f.lineError(err); lerr != nil {
			return nil, lerr
		}
	}
}

func isBlank(p []byte) bool {
	for _, x := range p {
		if x != 0xFF {
			return false
		}
	}
	return true
}

// dirty schedules the pages under b, whose content read back as got twice,
// for erasing again and every block on them for rewriting; a page already
// repaired maxRepairs times is not erased again: ErrVerify names it.
func (f *Flasher) dirty(b *block, got []byte) error {
	first, n, _ := f.chip.PageRange(b.addr, len(b.data))
	ps := f.chip.Pages()
	for p := first; p < first+n; p++ {
		if f.repairs[p] >= maxRepairs {
			diff := 0
			for i := range got {
				if got[i] != b.data[i] {
					diff++
				}
			}
			return fmt.Errorf("%w: block 0x%08x reads back with %d of %d bytes differing from the image (the same twice) after page %d (0x%08x, %d bytes) was erased again %d times",
				ErrVerify, b.addr, diff, len(b.data), p, ps[p].Addr, ps[p].Size, f.repairs[p])
		}
	}
	for p := first; p < first+n; p++ {
		f.repairs[p]++
		delete(f.erased, p)
	}
	lo, hi := ps[first].Addr, ps[first+n-1].Addr+ps[first+n-1].Size
	for _, x := range f.blocks {
		if x.addr < hi && x.addr+uint32(len(x.data)) > lo {
			x.state = pending
		}
	}
	return nil
}

func (f *Flasher) verifyWritten(ctx context.Context, progress func(Progress)) error {
	if f.o.Verify == "crc" && !f.c.Info().Has(CmdChecksum) {
		return fmt.Errorf("verify by CRC: %w", ErrNoCommand)
	}
	if f.useCRC() {
		// one CRC over each run of contiguous written blocks
		for i := 0; i < len(f.blocks); {
			if f.blocks[i].state != written {
				i++
				continue
			}
			j := i
			var img []byte
			for j < len(f.blocks) && f.blocks[j].state == written && (j == i || f.blocks[j].addr == f.blocks[j-1].addr+uint32(len(f.blocks[j-1].data))) {
				img = append(img, f.blocks[j].data...)
				j++
			}
			crc, err := f.c.Checksum(ctx, f.blocks[i].addr, uint32(len(img)))
			if err != nil {
				return err
			}
			if crc == CRC(img) {
				for k := i; k < j; k++ {
					f.blocks[k].state, f.blocks[k].at = verified, f.ops
				}
			}
			i = j
		}
	}
	done := f.Verified()
	for _, b := range f.blocks {
		if b.state != written {
			continue
		}
		if err := f.settle(ctx, b); err != nil {
			return err
		}
		if b.state == verified {
			done += len(b.data)
			progress(Progress{Phase: "verify", Done: done, Total: f.total})
		}
	}
	return nil
}

// CRC is the STM32 CRC unit's CRC-32 over little-endian words (see
// Client.Checksum); len(p) must be a multiple of 4.
func CRC(p []byte) uint32 {
	crc := uint32(0xFFFFFFFF)
	for i := 0; i+4 <= len(p); i += 4 {
		crc ^= uint32(p[i]) | uint32(p[i+1])<<8 | uint32(p[i+2])<<16 | uint32(p[i+3])<<24
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
