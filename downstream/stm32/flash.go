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
	retries int
	total   int
}

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
	f := &Flasher{c: c, chip: chip, o: o, erased: map[int]bool{}}
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

// Retries is the number of line errors absorbed so far.
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
// retry, up to Options.MaxRetries per Run); a corrupted block is repaired
// by erasing its pages again and rewriting them. Run returns nil only when
// the whole image verified.
func (f *Flasher) Run(ctx context.Context, progress func(Progress)) error {
	if progress == nil {
		progress = func(Progress) {}
	}
	budget := f.o.MaxRetries
	var last error
	absorb := func(err error) error {
		if !Transient(err) {
			return err
		}
		last = err
		if budget <= 0 {
			return fmt.Errorf("%w (%d retries): last: %w", ErrRetries, f.retries, last)
		}
		budget--
		f.retries++
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
			return nil
		}
	}
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

// settle reads a block back after an uncertain write and classifies it:
// equal (verified), blank (pending) or other (its pages need erasing).
func (f *Flasher) settle(ctx context.Context, b *block) error {
	got, err := f.c.ReadMemory(ctx, b.addr, len(b.data))
	if err != nil {
		return err
	}
	switch {
	case bytes.Equal(got, b.data):
		b.state = verified
	case isBlank(got):
		b.state = pending
	default:
		again, err := f.c.ReadMemory(ctx, b.addr, len(b.data))
		if err != nil {
			return err
		}
		if bytes.Equal(again, b.data) {
			b.state = verified
		} else if isBlank(again) {
			b.state = pending
		} else {
			f.dirty(b)
		}
	}
	return nil
}

func isBlank(p []byte) bool {
	for _, x := range p {
		if x != 0xFF {
			return false
		}
	}
	return true
}

// dirty schedules the pages under b for erasing again and every block on
// them for rewriting.
func (f *Flasher) dirty(b *block) {
	first, n, _ := f.chip.PageRange(b.addr, len(b.data))
	for p := first; p < first+n; p++ {
		delete(f.erased, p)
	}
	ps := f.chip.Pages()
	lo, hi := ps[first].Addr, ps[first+n-1].Addr+ps[first+n-1].Size
	for _, x := range f.blocks {
		if x.addr < hi && x.addr+uint32(len(x.data)) > lo {
			x.state = pending
		}
	}
}

func (f *Flasher) verifyWritten(ctx context.Context, progress func(Progress)) error {
	useCRC := f.o.Verify == "crc" || (f.o.Verify == "auto" && f.c.Info().Has(CmdChecksum))
	if f.o.Verify == "crc" && !f.c.Info().Has(CmdChecksum) {
		return fmt.Errorf("verify by CRC: %w", ErrNoCommand)
	}
	if useCRC {
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
					f.blocks[k].state = verified
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
