package rootfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/rootfs/bundle"
)

// chunkBuf is one chunk travelling through the pipeline. A fixed set of
// them, each owning its buffers, circulates from the reader through the
// workers to the writer and back: no allocation per chunk.
type chunkBuf struct {
	i        int
	stored   []byte // a zstd frame, from the stored pool (nil for raw chunks)
	plainBuf []byte // aligned buffer (allocated on first use): raw, decompressed or reused bytes
	plain    []byte // the verified plain bytes (a view of plainBuf)
	reused   bool   // copied from the booted slot, already verified
	crc      uint32 // CRC-32C of plain, for the read-back
	err      error
	done     chan struct{} // a worker is done with it
}

// alignedBuf returns size bytes starting on a 4 KiB boundary, as O_DIRECT needs.
func alignedBuf(size int64) []byte {
	b := make([]byte, size+directAlign)
	skip := int(directAlign-uintptr(unsafe.Pointer(&b[0]))%directAlign) % directAlign
	return b[skip : skip+int(size) : skip+int(size)]
}

const directAlign = 4096

func aligned(b []byte) bool {
	return len(b) > 0 && len(b)%directAlign == 0 && uintptr(unsafe.Pointer(&b[0]))%directAlign == 0
}

// castagnoli is CRC-32C: hardware accelerated (SSE4.2, ARMv8 CRC), an order
// of magnitude faster than sha256. The read-back only has to show that the
// device returns the bytes that were verified on their way in.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// workers is how many goroutines decompress and hash chunks: the two
// heavy stages, spread over the cores (with the reader, the writer and the
// read-back mostly waiting on the kernel).
func workers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// testAfterSync, when set by a test, runs after each sync of the slot and
// before the synced range is read back.
var testAfterSync func(f *os.File, end int64)

// writeSlot streams payload t.p into the slot from chunk t.start:
//
//	reader:  source (or booted slot, delta) -> stored bytes, in order
//	workers: zstd -> sha256 -> compare with the signed table; CRC-32C
//	writer:  in order, aligned O_DIRECT pwrite -> every CheckpointBytes
//	         fdatasync + checkpoint
//	read-back: behind the writer, the synced range read from the device
//	         (O_DIRECT, or after dropping it from the page cache) and each
//	         chunk compared with the CRC-32C of the bytes verified on the
//	         way in; chunks written by an earlier run (resume) with their
//	         signed sha256
//
// Each byte is hashed with sha256 once, on its way in. The stages are
// goroutines joined by channels; a fixed set of chunk buffers circulates
// between them, so memory stays bounded whatever the image size.
func (in *Installer) writeSlot(ctx context.Context, st *stream, h *bundle.Head, t *target, f *os.File, req *Request, res *Result, pr *progress) (*SlotResult, error) {
	p, s := t.p, t.slot
	n := len(p.Chunks)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	nw := workers()
	// Enough buffers that every stage can work at once, and no more: the
	// reader fills one, each worker holds one, the writer one, InFlight wait.
	// Raw chunks are read straight into their aligned plain buffer; zstd
	// frames into a stored buffer that goes back to its pool once decoded.
	nbuf := nw + 1 + in.opts.InFlight
	free := make(chan *chunkBuf, nbuf)
	for range nbuf {
		free <- &chunkBuf{done: make(chan struct{}, 1)}
	}
	storedFree := make(chan []byte, nw+1)
	for range nw + 1 {
		storedFree <- nil // allocated on first use
	}
	chunkSize := p.ChunkSize
	var maxStored int64
	for _, c := range p.Chunks {
		if c.Zstd {
			maxStored = max(maxStored, c.Size)
		}
	}
	workCh := make(chan *chunkBuf, nbuf)
	orderCh := make(chan *chunkBuf, nbuf)
	sr := &SlotResult{Payload: p.Name, Class: p.Target, Slot: s.Name, Bootname: s.Bootname, Device: s.Path,
		Size: p.Size, SHA256: p.SHA256.String(), Resumed: t.start}

	var active *os.File
	if t.active != nil && t.start < n {
		var err error
		if active, err = os.Open(t.active.Path); err != nil {
			in.log.Warn("delta: cannot open the booted slot; downloading every chunk")
			active = nil
		} else {
			defer active.Close()
		}
	}
	reusedCh := make(chan int, 1)

	// Reader: fills buffers in chunk order.
	go func() {
		defer close(workCh)
		defer close(orderCh)
		reused := 0
		defer func() { reusedCh <- reused }()
		var reuse []bool // delta: chunk i is on the booted slot
		var from []int64 // at this offset
		if active != nil {
			var ok bool
			if reuse, from, ok = in.scanActive(ctx, active, t, free); !ok {
				return
			}
		}
		runEnd := int64(-1) // the end of the bundle range being fetched (delta)
		runLast := -1       // its last chunk
		for i := t.start; i < n; i++ {
			var c *chunkBuf
			select {
			case c = <-free:
			case <-ctx.Done():
				return
			}
			c.i, c.reused, c.err, c.plain, c.stored = i, false, nil, nil, nil
			if c.plainBuf == nil {
				c.plainBuf = alignedBuf(chunkSize)
			}
			plen := p.PlainSize(i)
			if reuse != nil && reuse[i] {
				b := c.plainBuf[:plen]
				if _, err := active.ReadAt(b, from[i]); err == nil && sha256.Sum256(b) == p.Chunks[i].SHA256 {
					reused++
					c.plain, c.reused = b, true
				}
			}
			if !c.reused {
				at := h.DataOffset() + p.Offset + p.Chunks[i].Offset
				var err error
				if reuse == nil {
					err = st.seek(at)
				} else {
					if i > runLast {
						runLast = fetchRun(p, reuse, i)
						runEnd = h.DataOffset() + p.Offset + p.Chunks[runLast].Offset + p.Chunks[runLast].Size
					}
					err = st.seekRange(at, runEnd)
				}
				if err != nil {
					free <- c
					cancel(fmt.Errorf("bundle %s: payload %q chunk %d: %w", st.src, p.Name, i, err))
					return
				}
				buf := c.plainBuf
				if p.Chunks[i].Zstd {
					select {
					case buf = <-storedFree:
					case <-ctx.Done():
						free <- c
						return
					}
					if int64(cap(buf)) < maxStored {
						buf = make([]byte, maxStored)
					}
				}
				b, err := bundle.ReadStored(st, p, i, buf)
				if p.Chunks[i].Zstd {
					c.stored = b
				}
				if err != nil {
					if c.stored != nil {
						storedFree <- c.stored
					}
					free <- c
					cancel(fmt.Errorf("bundle %s: %w", st.src, err))
					return
				}
				if !p.Chunks[i].Zstd {
					c.plain = b
				}
			}
			orderCh <- c // never blocks: both channels hold every buffer
			workCh <- c
		}
	}()

	// Workers: decompress, verify, CRC. Every buffer taken is marked done,
	// even after a cancel, so the writer can drain the order queue.
	for range nw {
		go func() {
			dec := bundle.NewDecoder()
			defer dec.Close()
			for c := range workCh {
				if err := context.Cause(ctx); err != nil {
					c.err = err
				} else if !c.reused {
					stored := c.plain // raw: the stored bytes are the plain bytes
					if c.stored != nil {
						stored = c.stored
					}
					c.plain, c.err = dec.Chunk(p, c.i, stored, c.plainBuf)
					if c.err != nil {
						c.err = fmt.Errorf("bundle %s: %w", st.src, c.err)
					}
				}
				if c.stored != nil {
					storedFree <- c.stored
					c.stored = nil
				}
				if c.err == nil {
					c.crc = crc32.Checksum(c.plain, castagnoli)
				}
				c.done <- struct{}{}
			}
		}()
	}

	// Read-back: follows the synced watermark from byte 0.
	crcs := make([]uint32, n) // 4 bytes per chunk: 16 KiB per GiB at 256 KiB chunks
	// One watermark per sync: the first, one per CheckpointBytes written
	// (a chunk may overshoot it), the last. Enough that the writer never
	// blocks, and no more (not one per chunk).
	syncs := int64(n-t.start) + 2
	if cp := in.opts.CheckpointBytes; cp > 0 {
		syncs = min(syncs, (p.Size-p.PlainOffset(t.start))/cp+3)
	}
	synced := make(chan int64, syncs)
	rbDone := make(chan error, 1)
	var directRead *os.File // the read-back bypasses the cache too, where it can
	if d, err := os.OpenFile(s.Path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		directRead = d
		defer directRead.Close()
	}
	go func() {
		rbDone <- in.readBack(ctx, f, directRead, s, p, synced, crcs, t.start)
	}()

	// Writes go with O_DIRECT where the kernel allows it (whole aligned
	// blocks; the tail goes through f, and so does everything where the
	// file system refuses O_DIRECT, tmpfs for one): no second copy in the
	// page cache, and a sync has little left to flush.
	var direct *os.File
	if d, err := os.OpenFile(s.Path, os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		direct = d
		defer direct.Close()
	}

	// Writer (this goroutine), in chunk order.
	synced <- p.PlainOffset(t.start)
	var sinceSync int64
	var werr error
	for c := range orderCh {
		<-c.done
		if werr == nil {
			if err := context.Cause(ctx); err != nil {
				werr = err // canceled: write nothing more
			} else if c.err != nil {
				werr = c.err
				cancel(werr)
			}
		}
		if werr != nil {
			free <- c
			continue
		}
		off := p.PlainOffset(c.i)
		w := f
		if direct != nil && off%directAlign == 0 && aligned(c.plain) {
			w = direct
		}
		_, err := w.WriteAt(c.plain, off)
		if err != nil && w == direct && errors.Is(err, unix.EINVAL) {
			direct.Close() // refused after all: buffered from now on
			direct = nil
			_, err = f.WriteAt(c.plain, off)
		}
		i := c.i
		crcs[i] = c.crc
		plen := int64(len(c.plain))
		free <- c // c belongs to the reader again
		if err != nil {
			werr = &IOError{Slot: s.Name, Device: s.Path, Op: fmt.Sprintf("write chunk %d", i), Err: err}
			cancel(werr)
			continue
		}
		end := off + plen
		sinceSync += plen
		pr.add(p.Name, s.Name, i, n, plen)
		if sinceSync >= in.opts.CheckpointBytes || i == n-1 {
			sinceSync = 0
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				werr = &IOError{Slot: s.Name, Device: s.Path, Op: "sync", Err: err}
				cancel(werr)
				continue
			}
			if testAfterSync != nil {
				testAfterSync(f, end)
			}
			synced <- end
			if req.OnCheckpoint != nil && i < n-1 {
				cp := Checkpoint{Bundle: res.Bundle, Source: res.Source, Payload: p.Name, Slot: s.Name, Device: s.Path, Next: i + 1, Bytes: end}
				if err := req.OnCheckpoint(cp); err != nil {
					werr = fmt.Errorf("checkpoint at chunk %d: %w", i+1, err)
					cancel(werr)
				}
			}
		}
	}
	close(synced)
	rbErr := <-rbDone
	sr.Reused = <-reusedCh
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, werr
	}
	if rbErr != nil {
		return nil, rbErr
	}
	if t.start < n {
		in.log.Info("payload written and read back", zapPayload(sr)...)
	}
	return sr, nil
}

// coalesceGap: reused chunks between two runs of fetched ones are fetched
// too when their stored bytes are fewer than this, which costs less than
// another request (its headers and a round trip).
const coalesceGap = 16 << 10

// fetchRun returns the last chunk of the bundle range to fetch from chunk i
// (not reusable): the run of chunks to fetch that starts at i, joined with
// the next run across gaps of reusable chunks smaller than coalesceGap.
func fetchRun(p *bundle.Payload, reuse []bool, i int) int {
	last := i
	for j := i + 1; j < len(p.Chunks); {
		if !reuse[j] {
			last, j = j, j+1
			continue
		}
		var gap int64
		k := j
		for k < len(p.Chunks) && reuse[k] && gap < coalesceGap {
			gap += p.Chunks[k].Size
			k++
		}
		if k == len(p.Chunks) || reuse[k] || gap >= coalesceGap {
			break
		}
		j = k
	}
	return last
}

// scanActive finds the chunks the booted slot already holds, so the bundle
// ranges to fetch are known before the first request: for fixed-size
// chunks it hashes the booted slot at each chunk's offset; for chunks cut
// by content it cuts the booted slot with the same chunker and looks each
// chunk up by its sha256, wherever it sits. It borrows a pipeline buffer.
// The reader checks each reused chunk again when it copies it.
func (in *Installer) scanActive(ctx context.Context, active *os.File, t *target, free chan *chunkBuf) ([]bool, []int64, bool) {
	p := t.p
	var c *chunkBuf
	select {
	case c = <-free:
	case <-ctx.Done():
		return nil, nil, false
	}
	defer func() { free <- c }()
	if c.plainBuf == nil {
		c.plainBuf = alignedBuf(p.ChunkSize)
	}
	reuse := make([]bool, len(p.Chunks))
	from := make([]int64, len(p.Chunks))
	var have map[bundle.Digest]int64
	if p.Chunking == bundle.ChunkingCDC {
		have = map[bundle.Digest]int64{}
		cdc := bundle.NewCDC(io.NewSectionReader(active, 0, t.active.Size), p.ChunkSize)
		var off int64
		for ctx.Err() == nil {
			ch, err := cdc.Next(c.plainBuf[:0])
			if err != nil {
				break // io.EOF, or a read error: what was read so far is all there is to reuse
			}
			have[sha256.Sum256(ch.Data)] = off
			off += int64(ch.Length)
		}
	}
	var fetch, total int64
	for i := t.start; i < len(p.Chunks); i++ {
		if ctx.Err() != nil {
			return nil, nil, false
		}
		off, plen := p.PlainOffset(i), p.PlainSize(i)
		total += p.Chunks[i].Size
		if have != nil {
			if at, ok := have[p.Chunks[i].SHA256]; ok {
				reuse[i], from[i] = true, at
				continue
			}
		} else if off+plen <= t.active.Size {
			b := c.plainBuf[:plen]
			if _, err := active.ReadAt(b, off); err == nil && sha256.Sum256(b) == p.Chunks[i].SHA256 {
				reuse[i], from[i] = true, off
				continue
			}
		}
		fetch += p.Chunks[i].Size
	}
	if fetch == total {
		in.log.Info("delta: no chunk found on the booted slot; reading the whole bundle", zap.String("payload", p.Name))
		return nil, nil, true
	}
	in.log.Info("delta: chunks found on the booted slot", zap.String("payload", p.Name), zap.String("booted_slot", t.active.Name),
		zap.Int64("fetch_bytes", fetch), zap.Int64("stored_bytes", total))
	return reuse, from, true
}

// readBackBuf is the read-back's read size: large enough that reads cost
// little per byte, small beside the pipeline's chunk buffers.
const readBackBuf = 64 << 10

// readBack reads the slot from byte 0 up to each synced watermark (always
// a chunk end), with O_DIRECT reads where it can and after dropping those
// pages from the cache otherwise, so the bytes come from the device. Each
// chunk written in this run must match the CRC-32C of the bytes verified on
// their way in (crcs); each chunk before start, written by an earlier run,
// its signed sha256.
func (in *Installer) readBack(ctx context.Context, f, direct *os.File, s *Slot, p *bundle.Payload, synced <-chan int64, crcs []uint32, start int) error {
	buf := alignedBuf(min(p.ChunkSize, readBackBuf))
	hsh := sha256.New()
	var sum [sha256.Size]byte
	var done int64
	i := 0 // the chunk that starts at done
	var failed error
	for wm := range synced {
		if failed != nil || ctx.Err() != nil {
			continue
		}
		if wm > done {
			_ = unix.Fadvise(int(f.Fd()), done, wm-done, unix.FADV_DONTNEED)
		}
		for done < wm && failed == nil {
			cend := done + p.PlainSize(i)
			var crc uint32
			hsh.Reset()
			for done < cend {
				b := buf[:min(int64(len(buf)), cend-done)]
				r := f
				if direct != nil && done%directAlign == 0 && len(b)%directAlign == 0 {
					r = direct
				}
				_, err := r.ReadAt(b, done)
				if err != nil && r == direct && errors.Is(err, unix.EINVAL) {
					direct = nil
					_, err = f.ReadAt(b, done)
				}
				if err != nil {
					failed = &IOError{Slot: s.Name, Device: s.Path, Op: fmt.Sprintf("read back at %d", done), Err: err}
					break
				}
				if i < start {
					hsh.Write(b)
				} else {
					crc = crc32.Update(crc, castagnoli, b)
				}
				done += int64(len(b))
			}
			if failed != nil {
				break
			}
			ok := crc == crcs[i]
			if i < start {
				ok = bundle.Digest(hsh.Sum(sum[:0])) == p.Chunks[i].SHA256
			}
			if !ok {
				failed = &bundle.ChunkError{Payload: p.Name, Index: i,
					Err: fmt.Errorf("slot %s (%s) read back: %w", s.Name, s.Path, ErrHashMismatch)}
			}
			i++
		}
	}
	return failed
}
