package bundle

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/otagw/otagw/internal/sign"
	"github.com/restic/chunker"
)

// Compression choices for Create.
const (
	CompressAuto = "auto" // zstd per chunk when it saves at least 1/32 of the chunk, else raw
	CompressZstd = "zstd" // every chunk a zstd frame
	CompressNone = "none" // every chunk raw
)

// PayloadSpec names one input of Create.
type PayloadSpec struct {
	Name   string
	Target string
	Path   string
}

// CreateOptions describe a bundle to build.
type CreateOptions struct {
	Compatible      string
	Version         string
	MinVersion      string
	SecurityCounter uint64
	AllowDowngrade  bool
	Created         time.Time  // zero: now
	Expires         *time.Time // nil: never
	ChunkSize       int64      // 0: DefaultChunk; with Chunking "cdc", the largest chunk
	Chunking        string     // "": fixed-size chunks; ChunkingCDC: cut by content
	Compress        string     // "": CompressAuto
	Signers         []sign.Signer
	Payloads        []PayloadSpec
	Workers         int // compression goroutines; 0: GOMAXPROCS
	// Format is the bundle format to write: 0 is FormatVersion (2, the
	// binary chunk table); FormatV1 writes a bundle that readers older
	// than format 2 can read.
	Format int
}

// Create builds a bundle at out (written to a temporary file beside it, then
// renamed). Payload data is compressed chunk by chunk in parallel into a
// temporary data file, since the manifest that precedes it needs the table.
func Create(ctx context.Context, out string, o CreateOptions) (*Head, error) {
	if len(o.Signers) == 0 {
		return nil, errors.New("create bundle: no signing key")
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunk
	}
	switch o.Compress {
	case "":
		o.Compress = CompressAuto
	case CompressAuto, CompressZstd, CompressNone:
	default:
		return nil, fmt.Errorf("create bundle: compress %q: want auto, zstd or none", o.Compress)
	}
	switch o.Chunking {
	case "":
	case ChunkingCDC:
		if o.ChunkSize < 2*CDCMinSize {
			return nil, fmt.Errorf("create bundle: chunking %s needs a chunk size of at least %d", o.Chunking, 2*CDCMinSize)
		}
	default:
		return nil, fmt.Errorf("create bundle: chunking %q: want none or %s", o.Chunking, ChunkingCDC)
	}
	switch o.Format {
	case 0:
		o.Format = FormatVersion
	case FormatV1, FormatV2:
	default:
		return nil, fmt.Errorf("create bundle: format %d: want %d or %d", o.Format, FormatV1, FormatV2)
	}
	if o.Created.IsZero() {
		o.Created = time.Now().UTC().Truncate(time.Second)
	}
	m := &Manifest{
		Format: o.Format, Compatible: o.Compatible, Version: o.Version, MinVersion: o.MinVersion,
		SecurityCounter: o.SecurityCounter, AllowDowngrade: o.AllowDowngrade, Created: o.Created, Expires: o.Expires,
	}
	// Check what can be checked before compressing anything.
	probe := *m
	for _, ps := range o.Payloads {
		probe.Payloads = append(probe.Payloads, Payload{Name: ps.Name, Target: ps.Target, ChunkSize: o.ChunkSize, Size: 1,
			StoredSize: 1, Offset: int64(len(probe.Payloads)), Chunks: []Chunk{{Size: 1}}})
	}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	dir := filepath.Dir(out)
	data, err := os.CreateTemp(dir, ".bundle-data-*")
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	defer os.Remove(data.Name())
	defer data.Close()
	bw := bufio.NewWriterSize(data, 1<<20)
	var off int64
	for _, ps := range o.Payloads {
		p, err := addPayload(ctx, bw, ps, o, off)
		if err != nil {
			return nil, err
		}
		m.Payloads = append(m.Payloads, *p)
		off += p.StoredSize
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("create bundle: %s: %w", data.Name(), err)
	}
	raw, jsonLen, err := marshalManifest(m)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	h := &Head{Manifest: m, Raw: raw, Digest: sha256.Sum256(raw)}
	for _, s := range o.Signers {
		sig, err := sign.SignDigest(s, sign.ContextBundle, h.Digest)
		if err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
		h.Signatures = append(h.Signatures, sig)
	}
	sb, err := json.Marshal(SigBlock{Signatures: h.Signatures})
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxManifestSize || len(sb) > MaxSigBlockSize || len(h.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("create bundle: manifest %d bytes (max %d), %d signatures (max %d): use a larger chunk size or fewer keys",
			len(raw), MaxManifestSize, len(h.Signatures), MaxSignatures)
	}
	h.Header = Header{Version: uint16(m.Format), ManifestLen: uint32(len(raw)), SigLen: uint32(len(sb))}
	if m.Format == FormatV2 {
		h.Header.JSONLen = uint32(jsonLen)
	}
	hb, _ := h.Header.MarshalBinary()

	f, err := os.CreateTemp(dir, ".bundle-*")
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	for _, b := range [][]byte{hb, raw, sb} {
		if _, err := f.Write(b); err != nil {
			return nil, fmt.Errorf("create bundle: write %s: %w", out, err)
		}
	}
	if _, err := data.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, data); err != nil { // copy_file_range where the kernel has it
		return nil, fmt.Errorf("create bundle: write %s: %w", out, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("create bundle: sync %s: %w", out, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	return h, nil
}

type job struct {
	idx    int
	plain  []byte
	stored []byte
	zstd   bool
	sum    Digest
	done   chan struct{}
}

// addPayload chunks, hashes and compresses one input file, writing the
// stored chunks to w in order.
func addPayload(ctx context.Context, w io.Writer, ps PayloadSpec, o CreateOptions, off int64) (*Payload, error) {
	in, err := os.Open(ps.Path)
	if err != nil {
		return nil, fmt.Errorf("create bundle: payload %q: %w", ps.Name, err)
	}
	defer in.Close()
	p := &Payload{Name: ps.Name, Target: ps.Target, ChunkSize: o.ChunkSize, Offset: off, Chunking: o.Chunking}
	var cdc *CDC
	if o.Chunking == ChunkingCDC {
		cdc = NewCDC(in, o.ChunkSize)
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan *job, workers)
	order := make(chan *job, workers*2)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		go func() {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
				zstd.WithWindowSize(zstdWindow(o.ChunkSize)), zstd.WithEncoderCRC(false))
			defer enc.Close()
			for j := range jobs {
				j.sum = sha256.Sum256(j.plain)
				j.stored = j.plain
				if o.Compress != CompressNone {
					z := enc.EncodeAll(j.plain, make([]byte, 0, len(j.plain)/2))
					if o.Compress == CompressZstd || int64(len(z)) <= int64(len(j.plain))-int64(len(j.plain))/32 {
						j.stored, j.zstd = z, true
					}
				}
				close(j.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		for idx := 0; ; idx++ {
			buf := make([]byte, o.ChunkSize)
			var n int
			var err error
			if cdc != nil {
				var c chunker.Chunk
				c, err = cdc.Next(buf)
				buf, n = c.Data, int(c.Length)
			} else {
				n, err = io.ReadFull(in, buf)
			}
			if n > 0 {
				j := &job{idx: idx, plain: buf[:n], done: make(chan struct{})}
				select {
				case order <- j:
				case <-ctx.Done():
					readErr <- ctx.Err()
					return
				}
				jobs <- j
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				readErr <- nil
				return
			}
			if err != nil {
				readErr <- fmt.Errorf("create bundle: read %s: %w", ps.Path, err)
				return
			}
		}
	}()
	whole := sha256.New()
	var coff int64
	var werr error
	for j := range order {
		<-j.done
		if werr != nil {
			continue
		}
		whole.Write(j.plain)
		if _, err := w.Write(j.stored); err != nil {
			werr = fmt.Errorf("create bundle: write data: %w", err)
			cancel()
			continue
		}
		c := Chunk{SHA256: j.sum, Offset: coff, Size: int64(len(j.stored)), Zstd: j.zstd}
		if cdc != nil {
			c.Plain = int64(len(j.plain))
		}
		p.Chunks = append(p.Chunks, c)
		coff += int64(len(j.stored))
		p.Size += int64(len(j.plain))
	}
	if err := <-readErr; err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, werr
	}
	if p.Size == 0 {
		return nil, fmt.Errorf("create bundle: payload %q: %s is empty", ps.Name, ps.Path)
	}
	p.StoredSize = coff
	p.SHA256 = Digest(sumOf(whole))
	return p, nil
}

func sumOf(h hash.Hash) (d [32]byte) {
	copy(d[:], h.Sum(nil))
	return d
}

func zstdWindow(chunk int64) int {
	w := zstd.MinWindowSize
	for int64(w) < chunk && w < zstd.MaxWindowSize {
		w *= 2
	}
	return w
}
