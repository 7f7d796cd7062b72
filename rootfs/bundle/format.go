// Package bundle reads and writes otagw update bundles: a fixed header, a
// signed manifest with a per-chunk hash table (format 2: a JSON object
// followed by a binary table of 40 bytes a chunk; format 1, still read: the
// table inside the JSON), its signature block, then the payloads as
// independent chunks (raw or one zstd frame each). The byte layout is in
// docs/bundle-format.md.
//
// Reading never needs the whole bundle on disk or in memory:
//
//	h, err := bundle.ReadHead(r, keyring, threshold) // header, manifest, signatures; verified when keyring != nil
//	dec := bundle.NewDecoder()
//	p := &h.Manifest.Payloads[0]
//	for i := range p.Chunks {
//		stored, err := bundle.ReadStored(r, p, i, buf) // the chunk's bytes as stored
//		plain, err := dec.Chunk(p, i, stored, dst)    // decompressed and checked against the signed hash
//	}
//	h, err = bundle.Verify(ctx, r, keyring, threshold, nil) // or all of it at once, trailing bytes included
//
// Writing (the `otagw bundle create` verb):
//
//	h, err := bundle.Create(ctx, "out.otab", bundle.CreateOptions{...})
package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/otagw/otagw/internal/sign"
)

// Magic opens every bundle.
const Magic = "OTAGWBDL"

// Format versions. Readers take both; Create writes FormatVersion unless
// told otherwise (CreateOptions.Format).
const (
	// FormatV1: the chunk table is a JSON array inside the manifest, about
	// 125 bytes a chunk.
	FormatV1 = 1
	// FormatV2: the manifest is a JSON object (its length in the header)
	// followed by a binary chunk table of TableEntrySize bytes a chunk.
	FormatV2 = 2
	// FormatVersion is the format Create writes by default.
	FormatVersion = FormatV2
)

// Layout limits.
const (
	HeaderSize      = 24
	MaxManifestSize = 16 << 20
	MaxSigBlockSize = 64 << 10
	MaxSignatures   = 16
	MinChunkSize    = 4 << 10
	MaxChunkSize    = 64 << 20
	DefaultChunk    = 256 << 10 // an installer holds about 6 chunks in memory
	MaxPayloads     = 64
	maxPayloadSize  = 1 << 50
)

var (
	// ErrFormat: the bundle is malformed (bad magic, version, lengths, JSON, table).
	ErrFormat = errors.New("malformed bundle")
	// ErrTruncated: the bundle ends before the last byte its manifest declares.
	ErrTruncated = errors.New("bundle truncated")
	// ErrTrailingData: bytes follow the last payload.
	ErrTrailingData = errors.New("trailing data after the last payload")
	// ErrHashMismatch: a chunk or a whole payload does not match its signed sha256.
	ErrHashMismatch = errors.New("hash mismatch")

	// The signature errors are internal/sign's, so errors.Is works with either.
	ErrSignature  = sign.ErrSignature
	ErrUnknownKey = sign.ErrUnknownKey
	ErrThreshold  = sign.ErrThreshold
)

// ChunkError names the chunk whose content failed: errors.Is(err,
// ErrHashMismatch) is true for it, whatever the cause (bad hash, a zstd frame
// that does not decode, a wrong decoded size).
type ChunkError struct {
	Payload string
	Index   int // chunk index; -1 for the whole payload
	Err     error
}

func (e *ChunkError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("payload %q: %v", e.Payload, e.Err)
	}
	return fmt.Sprintf("payload %q chunk %d: %v", e.Payload, e.Index, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// Is makes every ChunkError an ErrHashMismatch.
func (e *ChunkError) Is(target error) bool { return target == ErrHashMismatch }

// Header is the fixed-size start of a bundle.
type Header struct {
	Version     uint16
	ManifestLen uint32 // M: the signed manifest's bytes (JSON and, in format 2, the chunk table)
	SigLen      uint32
	// JSONLen is, in format 2, the length of the manifest's JSON object
	// (1 <= JSONLen < ManifestLen); the binary chunk table follows it. 0 in
	// format 1 (the header's reserved field at offset 20).
	JSONLen uint32
}

// DataOffset is where the payload data starts.
func (h Header) DataOffset() int64 {
	return HeaderSize + int64(h.ManifestLen) + int64(h.SigLen)
}

// MarshalBinary encodes the header.
func (h Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[8:], h.Version)
	binary.BigEndian.PutUint32(b[12:], h.ManifestLen)
	binary.BigEndian.PutUint32(b[16:], h.SigLen)
	binary.BigEndian.PutUint32(b[20:], h.JSONLen)
	return b, nil
}

// ParseHeader decodes and checks a header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("header: %d bytes: %w", len(b), ErrTruncated)
	}
	if string(b[:8]) != Magic {
		return Header{}, fmt.Errorf("header: bad magic %q: %w", b[:8], ErrFormat)
	}
	h := Header{
		Version:     binary.BigEndian.Uint16(b[8:]),
		ManifestLen: binary.BigEndian.Uint32(b[12:]),
		SigLen:      binary.BigEndian.Uint32(b[16:]),
		JSONLen:     binary.BigEndian.Uint32(b[20:]),
	}
	if h.Version != FormatV1 && h.Version != FormatV2 {
		return h, fmt.Errorf("header: format version %d, this reader knows %d and %d: %w", h.Version, FormatV1, FormatV2, ErrFormat)
	}
	if binary.BigEndian.Uint16(b[10:]) != 0 {
		return h, fmt.Errorf("header: reserved bytes at offset 10 not zero: %w", ErrFormat)
	}
	if h.ManifestLen == 0 || h.ManifestLen > MaxManifestSize {
		return h, fmt.Errorf("header: manifest length %d (max %d): %w", h.ManifestLen, MaxManifestSize, ErrFormat)
	}
	switch {
	case h.Version == FormatV1 && h.JSONLen != 0:
		return h, fmt.Errorf("header: reserved bytes at offset 20 not zero in format 1: %w", ErrFormat)
	case h.Version == FormatV2 && (h.JSONLen == 0 || h.JSONLen >= h.ManifestLen):
		return h, fmt.Errorf("header: manifest JSON length %d, want 1..%d (below the manifest length): %w", h.JSONLen, h.ManifestLen-1, ErrFormat)
	}
	if h.SigLen == 0 || h.SigLen > MaxSigBlockSize {
		return h, fmt.Errorf("header: signature block length %d (max %d): %w", h.SigLen, MaxSigBlockSize, ErrFormat)
	}
	return h, nil
}
