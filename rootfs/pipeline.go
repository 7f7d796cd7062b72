package rootfs

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/rootfs/bundle"
)

// item is one chunk travelling through the pipeline.
type item struct {
	i        int
	stored   []byte // pool buffer holding the stored bytes (nil once released)
	plainBuf []byte // pool buffer holding decompressed or reused bytes
	plain    []byte // the verified plain bytes (a view of one of the above)
	reused   bool   // copied from the booted slot, already verified
}

type pool chan []byte

func newPool(n int) pool {
	p := make(pool, n)
	for range n {
		p <- nil // allocated on first use
	}
	return p
}

// alignedBuf returns size bytes starting on a 4 KiB boundary, as O_DIRECT needs.
func alignedBuf(size int64) []byte {
	b := make([]byte, size+directAlign)
	skip := int(directAlign-uintptr(unsafe.Pointer(&b[0]))%directAlign) % directAlign
	return b[skip : skip+int(size) : skip+int(size)]
}

const directAlign = 4096

func (p pool) get(ctx context.Context, size int64) ([]byte, error) {
	select {
	case b := <-p:
		if int64(cap(b)) < size {
			b = alignedBuf(size)
		}
		return b[:cap(b)], nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (p pool) put(b []byte) {
	if b != nil {
		p <- b
	}
}

// writeSlot streams payload t.p into the slot from chunk t.start:
//
//	reader:  source (or booted slot, delta) -> stored bytes
//	decoder: zstd -> sha256 -> compare with the signed table
//	writer:  pwrite -> every CheckpointBytes fdatasync + checkpoint
//	reader-back: the synced range, dropped from the page cache, read and hashed
//
// Each stage is a goroutine joined by channels holding InFlight chunks, with
// buffers from fixed pools, so memory stays bounded whatever the image size.
func (in *Installer) writeSlot(ctx context.Context, st *stream, h *bundle.Head, t *target, f *os.File, req *Request, res *Result, pr *progress) (*SlotResult, error) {
	p, s := t.p, t.slot
	n := len(p.Chunks)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	k := in.opts.InFlight
	// Enough buffers that every stage can work at once, and no more: the
	// reader holds one stored chunk (and, with delta, one plain chunk), each
	// channel k, the decoder one of each, the writer one.
	storedPool, plainPool := newPool(k+2), newPool(k+1)
	if t.active != nil {
		plainPool = newPool(k + 2)
	}
	maxStored, chunkSize := p.MaxStored(), p.ChunkSize
	decCh := make(chan item, k)
	wrCh := make(chan item, k)
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

	// Reader.
	go func() {
		defer close(decCh)
		reused := 0
		defer func() { reusedCh <- reused }()
		send := func(it item) bool {
			select {
			case decCh <- it:
				return true
			case <-ctx.Done():
				storedPool.put(it.stored)
				plainPool.put(it.plainBuf)
				return false
			}
		}
		for i := t.start; i < n; i++ {
			off, plen := int64(i)*chunkSize, p.PlainSize(i)
			if active != nil && off+plen <= t.active.Size {
				b, err := plainPool.get(ctx, chunkSize)
				if err != nil {
					return
				}
				if _, err := active.ReadAt(b[:plen], off); err == nil && sha256.Sum256(b[:plen]) == p.Chunks[i].SHA256 {
					reused++
					if !send(item{i: i, plainBuf: b, plain: b[:plen], reused: true}) {
						return
					}
					continue
				}
				plainPool.put(b)
			}
			if err := st.seek(h.DataOffset() + p.Offset + p.Chunks[i].Offset); err != nil {
				cancel(fmt.Errorf("bundle %s: payload %q chunk %d: %w", st.src, p.Name, i, err))
				return
			}
			b, err := storedPool.get(ctx, maxStored)
			if err != nil {
				return
			}
			b, err = bundle.ReadStored(st, p, i, b)
			if err != nil {
				storedPool.put(b)
				cancel(fmt.Errorf("bundle %s: %w", st.src, err))
				return
			}
			if !send(item{i: i, stored: b}) {
				return
			}
		}
	}()

	// Decoder and verifier.
	go func() {
		defer close(wrCh)
		dec := bundle.NewDecoder()
		defer dec.Close()
		for it := range decCh {
			if !it.reused {
				var err error
				if p.Chunks[it.i].Zstd {
					if it.plainBuf, err = plainPool.get(ctx, chunkSize); err != nil {
						storedPool.put(it.stored)
						return
					}
				}
				it.plain, err = dec.Chunk(p, it.i, it.stored, it.plainBuf)
				if err != nil {
					storedPool.put(it.stored)
					plainPool.put(it.plainBuf)
					cancel(fmt.Errorf("bundle %s: %w", st.src, err))
					return
				}
				if p.Chunks[it.i].Zstd {
					storedPool.put(it.stored)
					it.stored = nil
				}
			}
			select {
			case wrCh <- it:
			case <-ctx.Done():
				storedPool.put(it.stored)
				plainPool.put(it.plainBuf)
				return
			}
		}
	}()

	// Read-back: follows the synced watermark from byte 0.
	synced := make(chan int64, n+2)
	rbDone := make(chan error, 1)
	var directRead *os.File // the read-back bypasses the cache too, where it can
	if s.Block {
		if d, err := os.OpenFile(s.Path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
			directRead = d
			defer directRead.Close()
		}
	}
	go func() {
		rbDone <- in.readBack(ctx, f, directRead, s, p, synced)
	}()

	// Block devices are written with O_DIRECT where the kernel allows it
	// (whole aligned blocks; the tail goes through f): no second copy in
	// the page cache, and a sync has little left to flush.
	var direct *os.File
	if s.Block {
		if d, err := os.OpenFile(s.Path, os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
			direct = d
			defer direct.Close()
		}
	}

	// Writer (this goroutine).
	synced <- min(int64(t.start)*chunkSize, p.Size)
	var sinceSync int64
	var werr error
	for it := range wrCh {
		if werr != nil {
			storedPool.put(it.stored)
			plainPool.put(it.plainBuf)
			continue
		}
		if err := context.Cause(ctx); err != nil {
			werr = err // canceled: write nothing more
			storedPool.put(it.stored)
			plainPool.put(it.plainBuf)
			continue
		}
		off := int64(it.i) * chunkSize
		w := f
		if direct != nil && len(it.plain)%directAlign == 0 && off%directAlign == 0 && uintptr(unsafe.Pointer(&it.plain[0]))%directAlign == 0 {
			w = direct
		}
		if _, err := w.WriteAt(it.plain, off); err != nil {
			werr = &IOError{Slot: s.Name, Device: s.Path, Op: fmt.Sprintf("write chunk %d", it.i), Err: err}
			cancel(werr)
		}
		storedPool.put(it.stored)
		plainPool.put(it.plainBuf)
		if werr != nil {
			continue
		}
		end := off + int64(len(it.plain))
		sinceSync += int64(len(it.plain))
		pr.add(p.Name, s.Name, it.i, n, int64(len(it.plain)))
		if sinceSync >= in.opts.CheckpointBytes || it.i == n-1 {
			sinceSync = 0
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				werr = &IOError{Slot: s.Name, Device: s.Path, Op: "sync", Err: err}
				cancel(werr)
				continue
			}
			synced <- end
			if req.OnCheckpoint != nil && it.i < n-1 {
				cp := Checkpoint{Bundle: res.Bundle, Source: res.Source, Payload: p.Name, Slot: s.Name, Device: s.Path, Next: it.i + 1, Bytes: end}
				if err := req.OnCheckpoint(cp); err != nil {
					werr = fmt.Errorf("checkpoint at chunk %d: %w", it.i+1, err)
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
	if rbErr != nil {
		return nil, rbErr
	}
	if t.start < n {
		in.log.Info("payload written and read back", zapPayload(sr)...)
	}
	return sr, nil
}

// readBack hashes the slot from byte 0 up to each synced watermark, with
// O_DIRECT reads where it can and after dropping those pages from the cache
// otherwise, so the bytes come from the device, and compares the whole
// payload's sha256 once the last one arrives.
func (in *Installer) readBack(ctx context.Context, f, direct *os.File, s *Slot, p *bundle.Payload, synced <-chan int64) error {
	hsh := sha256.New()
	buf := alignedBuf(128 << 10)
	var done int64
	var failed error
	for wm := range synced {
		if failed != nil || ctx.Err() != nil {
			continue
		}
		if wm > done {
			_ = unix.Fadvise(int(f.Fd()), done, wm-done, unix.FADV_DONTNEED)
		}
		for done < wm {
			b := buf[:min(int64(len(buf)), wm-done)]
			r := f
			if direct != nil && done%directAlign == 0 && len(b)%directAlign == 0 {
				r = direct
			}
			if _, err := r.ReadAt(b, done); err != nil {
				failed = &IOError{Slot: s.Name, Device: s.Path, Op: fmt.Sprintf("read back at %d", done), Err: err}
				break
			}
			hsh.Write(b)
			done += int64(len(b))
		}
	}
	if failed != nil {
		return failed
	}
	if done != p.Size {
		return nil // interrupted; the caller reports why
	}
	if bundle.Digest(hsh.Sum(nil)) != p.SHA256 {
		return &bundle.ChunkError{Payload: p.Name, Index: -1,
			Err: fmt.Errorf("slot %s (%s) read back: %w", s.Name, s.Path, ErrHashMismatch)}
	}
	return nil
}
