package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/otagw/otagw/internal/sign"
)

// Head is what precedes the payload data: header, manifest, signatures.
type Head struct {
	Header     Header
	Manifest   *Manifest
	Raw        []byte   // the manifest bytes as signed
	Digest     [32]byte // sha256 of Raw: what the signatures sign; names the bundle
	Signatures []sign.Signature
}

// DataOffset is where the payload data starts in the bundle.
func (h *Head) DataOffset() int64 { return h.Header.DataOffset() }

// Size is the bundle's total size as the manifest declares it.
func (h *Head) Size() int64 { return h.DataOffset() + h.Manifest.DataEnd() }

// ID is the bundle digest in hex.
func (h *Head) ID() string { return Digest(h.Digest).String() }

// SigBlock is the signature block's JSON form.
type SigBlock struct {
	Signatures []sign.Signature `json:"signatures"`
}

func readFull(r io.Reader, b []byte, what string) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: %w", what, ErrTruncated)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ReadHead reads the header, manifest and signature block from r and leaves
// r at the start of the payload data. With a keyring it verifies the
// signatures (at least threshold distinct trusted keys) over the raw manifest
// bytes; with a nil keyring nothing is verified. It keeps the manifest's
// bytes in Head.Raw; ReadHeadStream does not.
func ReadHead(r io.Reader, kr *sign.Keyring, threshold int) (*Head, error) {
	var raw bytes.Buffer
	h, err := ReadHeadStream(r, kr, threshold, &raw)
	if err != nil {
		return nil, err
	}
	h.Raw = raw.Bytes()
	return h, nil
}

// ReadHeadStream is ReadHead in memory bounded by the manifest's decoded
// size, not its text: the manifest is hashed and decoded as it streams
// by (see decodeManifest) and its bytes are copied to raw when raw is not
// nil (a caller that keeps the signed manifest, on disk for instance);
// Head.Raw stays nil. A manifest is decoded before its signatures, which
// follow it, are checked, but nothing decoded is returned unless they
// verify, and a signature failure is reported before a format failure.
func ReadHeadStream(r io.Reader, kr *sign.Keyring, threshold int, raw io.Writer) (*Head, error) {
	hb := make([]byte, HeaderSize)
	if err := readFull(r, hb, "header"); err != nil {
		return nil, err
	}
	hdr, err := ParseHeader(hb)
	if err != nil {
		return nil, err
	}
	h := &Head{Header: hdr}
	mr := &manifestReader{r: r, left: int64(hdr.ManifestLen), sum: sha256.New(), raw: raw}
	m, perr := decodeManifest(mr, hdr)
	io.Copy(io.Discard, mr) // the rest, hashed (after a format error, or white space)
	switch {
	case mr.err != nil:
		if errors.Is(mr.err, io.EOF) || errors.Is(mr.err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("manifest: %w", ErrTruncated)
		}
		return nil, fmt.Errorf("manifest: %w", mr.err)
	case mr.rawErr != nil:
		return nil, fmt.Errorf("manifest: keeping its bytes: %w", mr.rawErr)
	}
	mr.sum.Sum(h.Digest[:0])
	sb := make([]byte, hdr.SigLen)
	if err := readFull(r, sb, "signature block"); err != nil {
		return nil, err
	}
	h.Signatures, err = ParseSigBlock(sb)
	if err != nil {
		return nil, err
	}
	if kr != nil {
		if err := kr.Verify(sign.ContextBundle, h.Digest, h.Signatures, threshold); err != nil {
			return nil, fmt.Errorf("manifest signatures: %w", err)
		}
	}
	if perr != nil {
		return nil, fmt.Errorf("manifest: %v: %w", perr, ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	h.Manifest = m
	return h, nil
}

// manifestReader reads the manifest's left bytes from r, hashing them and
// copying them to raw (when not nil) on the way. err is the first read
// error (io.ErrUnexpectedEOF when r ends early), rawErr raw's.
type manifestReader struct {
	r      io.Reader
	left   int64
	sum    hash.Hash
	raw    io.Writer
	err    error
	rawErr error
}

func (mr *manifestReader) Read(p []byte) (int, error) {
	if mr.err != nil {
		return 0, mr.err
	}
	if mr.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > mr.left {
		p = p[:mr.left]
	}
	n, err := mr.r.Read(p)
	mr.left -= int64(n)
	mr.sum.Write(p[:n])
	if mr.raw != nil && mr.rawErr == nil {
		_, mr.rawErr = mr.raw.Write(p[:n])
	}
	if err == io.EOF && mr.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		mr.err = err
	}
	return n, err
}

// ParseSigBlock decodes a signature block.
func ParseSigBlock(b []byte) ([]sign.Signature, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var sb SigBlock
	if err := d.Decode(&sb); err != nil {
		return nil, fmt.Errorf("signature block: %v: %w", err, ErrFormat)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("signature block: data after the JSON object: %w", ErrFormat)
	}
	if len(sb.Signatures) == 0 || len(sb.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("signature block: %d signatures, want 1..%d: %w", len(sb.Signatures), MaxSignatures, ErrFormat)
	}
	return sb.Signatures, nil
}

// ReadStored reads chunk c's stored bytes from r (positioned at its start)
// into buf, growing it if needed.
func ReadStored(r io.Reader, p *Payload, i int, buf []byte) ([]byte, error) {
	n := int(p.Chunks[i].Size)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = ErrTruncated
		}
		return buf, fmt.Errorf("payload %q chunk %d: %w", p.Name, i, err)
	}
	return buf, nil
}

// Decoder turns stored chunks into verified plain chunks. It is not safe for
// concurrent use; make one per goroutine.
type Decoder struct {
	zd *zstd.Decoder
}

// NewDecoder makes a Decoder with bounded memory.
func NewDecoder() *Decoder {
	zd, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecoderMaxWindow(MaxChunkSize))
	if err != nil {
		panic(err) // only on bad options
	}
	return &Decoder{zd: zd}
}

// Close releases the decoder.
func (d *Decoder) Close() { d.zd.Close() }

// Chunk decodes stored chunk i of p into dst (when compressed; otherwise
// stored itself is returned), checks its size and sha256 against the table
// and returns the plain bytes. A failure is a *ChunkError.
func (d *Decoder) Chunk(p *Payload, i int, stored, dst []byte) ([]byte, error) {
	c := p.Chunks[i]
	want := int(p.PlainSize(i))
	plain := stored
	if c.Zstd {
		if cap(dst) < want {
			dst = make([]byte, 0, want)
		}
		var err error
		plain, err = d.zd.DecodeAll(stored, dst[:0:want])
		if err != nil {
			return nil, &ChunkError{Payload: p.Name, Index: i, Err: fmt.Errorf("zstd frame: %v: %w", err, ErrHashMismatch)}
		}
	}
	if len(plain) != want {
		return nil, &ChunkError{Payload: p.Name, Index: i, Err: fmt.Errorf("%d plain bytes, want %d: %w", len(plain), want, ErrHashMismatch)}
	}
	if sha256.Sum256(plain) != c.SHA256 {
		return nil, &ChunkError{Payload: p.Name, Index: i, Err: ErrHashMismatch}
	}
	return plain, nil
}

// Progress reports a verify or install position.
type Progress struct {
	Payload string
	Chunk   int   // chunks of this payload done
	Chunks  int   // chunks in this payload
	Done    int64 // plain bytes done, all payloads
	Total   int64 // plain bytes, all payloads
}

// Verify reads a whole bundle from r: signatures (when kr != nil), every
// chunk of every payload, every payload's sha256, and that nothing follows
// the last payload. It holds one chunk in memory at a time.
func Verify(ctx context.Context, r io.Reader, kr *sign.Keyring, threshold int, progress func(Progress)) (*Head, error) {
	h, err := ReadHead(r, kr, threshold)
	if err != nil {
		return nil, err
	}
	dec := NewDecoder()
	defer dec.Close()
	var total, done int64
	for _, p := range h.Manifest.Payloads {
		total += p.Size
	}
	var stored, plainBuf []byte
	for pi := range h.Manifest.Payloads {
		p := &h.Manifest.Payloads[pi]
		whole := sha256.New()
		for i := range p.Chunks {
			if err := ctx.Err(); err != nil {
				return h, err
			}
			stored, err = ReadStored(r, p, i, stored)
			if err != nil {
				return h, err
			}
			plain, err := dec.Chunk(p, i, stored, plainBuf)
			if err != nil {
				return h, err
			}
			if p.Chunks[i].Zstd {
				plainBuf = plain
			}
			whole.Write(plain)
			done += int64(len(plain))
			if progress != nil {
				progress(Progress{Payload: p.Name, Chunk: i + 1, Chunks: len(p.Chunks), Done: done, Total: total})
			}
		}
		if Digest(whole.Sum(nil)) != p.SHA256 {
			return h, &ChunkError{Payload: p.Name, Index: -1, Err: ErrHashMismatch}
		}
	}
	return h, CheckEOF(r)
}

// CheckEOF returns ErrTrailingData unless r is at its end.
func CheckEOF(r io.Reader) error {
	var b [1]byte
	n, err := io.ReadFull(r, b[:])
	if n > 0 {
		return ErrTrailingData
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the last payload: %w", err)
	}
	return nil
}
