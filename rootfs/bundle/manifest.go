package bundle

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Digest is a sha256, hex in JSON.
type Digest [32]byte

// String is the lower-case hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; exactly 64 lower-case hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("sha256 %q: want 64 hex digits", b)
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("sha256 %q: want lower-case hex", b)
		}
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// Manifest is the signed description of a bundle.
type Manifest struct {
	Format     int    `json:"format"`
	Compatible string `json:"compatible"`
	Version    string `json:"version"`
	// MinVersion, when set, is the minimum version the device stores once
	// this release is committed: later bundles below it are downgrades.
	MinVersion string `json:"min_version,omitempty"`
	// SecurityCounter, when set, is stored the same way; a bundle with a
	// lower counter than the stored one is refused even with AllowDowngrade.
	SecurityCounter uint64     `json:"security_counter,omitempty"`
	AllowDowngrade  bool       `json:"allow_downgrade,omitempty"`
	Created         time.Time  `json:"created"`
	Expires         *time.Time `json:"expires,omitempty"`
	Payloads        []Payload  `json:"payloads"`
}

// Payload is one image in the bundle.
type Payload struct {
	Name   string `json:"name"`
	Target string `json:"target"` // a slot class ("rootfs") or "mcu"
	Size   int64  `json:"size"`   // plain bytes
	SHA256 Digest `json:"sha256"` // of the plain bytes
	// ChunkSize is the plain size of every chunk but the last; with
	// Chunking "cdc", the largest a chunk may be.
	ChunkSize int64 `json:"chunk_size"`
	// Chunking is "" (fixed-size chunks) or ChunkingCDC (cut by content;
	// each chunk's plain size in its Plain field).
	Chunking string `json:"chunking,omitempty"`
	// Offset of the first stored byte, counted from the start of the data area.
	Offset     int64   `json:"offset"`
	StoredSize int64   `json:"stored_size"`
	Chunks     []Chunk `json:"chunks"`

	plainEnd []int64 // CDC: end of each chunk's plain bytes (set by Validate)
}

// ChunkingCDC cuts chunks by content: the Rabin fingerprint chunker of
// github.com/restic/chunker with the polynomial CDCPolynomial, at least
// CDCMinSize bytes, at most the payload's ChunkSize, and a cut where the
// fingerprint's low CDCAverageBits bits are zero (64 KiB on average);
// then runs of all-zero chunks merged up to ChunkSize (see CDC). An
// insertion or deletion then changes only the chunks around it, and the same
// content cuts the same way wherever it sits: what a delta install needs.
const (
	ChunkingCDC    = "cdc"
	CDCPolynomial  = 0x3DA3358B4DC173 // irreducible, degree 53 (restic/chunker's documented example)
	CDCMinSize     = 16 << 10
	CDCAverageBits = 16
)

// Chunk is one entry of a payload's chunk table.
type Chunk struct {
	SHA256 Digest `json:"sha256"` // of the plain bytes
	Offset int64  `json:"offset"` // of the stored bytes, from the payload's Offset
	Size   int64  `json:"size"`   // stored bytes (the zstd frame, or the plain bytes)
	Zstd   bool   `json:"zstd,omitempty"`
	Plain  int64  `json:"plain,omitempty"` // plain bytes (Chunking "cdc" only)
}

// PlainSize is the plain size of chunk i.
func (p *Payload) PlainSize(i int) int64 {
	if p.Chunking == ChunkingCDC {
		return p.Chunks[i].Plain
	}
	if i == len(p.Chunks)-1 {
		return p.Size - int64(i)*p.ChunkSize
	}
	return p.ChunkSize
}

// PlainOffset is where chunk i's plain bytes start in the payload (i may
// be len(Chunks): the payload's size). A CDC payload must have passed
// Validate (ParseManifest and Create do it).
func (p *Payload) PlainOffset(i int) int64 {
	switch {
	case i >= len(p.Chunks):
		return p.Size
	case p.Chunking != ChunkingCDC:
		return int64(i) * p.ChunkSize
	case i == 0:
		return 0
	}
	return p.plainEnd[i-1]
}

// MaxStored is the largest stored chunk of the payload.
func (p *Payload) MaxStored() int64 {
	var m int64
	for _, c := range p.Chunks {
		m = max(m, c.Size)
	}
	return m
}

// DataEnd is the end of the last payload, from the start of the data area.
func (m *Manifest) DataEnd() int64 {
	p := m.Payloads[len(m.Payloads)-1]
	return p.Offset + p.StoredSize
}

// Payload returns the payload named name, or nil.
func (m *Manifest) Payload(name string) *Payload {
	for i := range m.Payloads {
		if m.Payloads[i].Name == name {
			return &m.Payloads[i]
		}
	}
	return nil
}

// MarshalManifest encodes m the one way this package writes it, in
// m.Format: format 1 is the JSON object alone; format 2 is the JSON object
// (each payload's table replaced by its chunk_count) followed by the binary
// chunk table.
func MarshalManifest(m *Manifest) ([]byte, error) {
	b, _, err := marshalManifest(m)
	return b, err
}

// marshalManifest is MarshalManifest that also returns the length of the
// JSON object (the header's JSONLen in format 2).
func marshalManifest(m *Manifest) ([]byte, int, error) {
	if err := m.Validate(); err != nil {
		return nil, 0, err
	}
	if m.Format == FormatV1 {
		b, err := json.Marshal(m)
		return b, len(b), err
	}
	j := manifestV2{Format: m.Format, Compatible: m.Compatible, Version: m.Version, MinVersion: m.MinVersion,
		SecurityCounter: m.SecurityCounter, AllowDowngrade: m.AllowDowngrade, Created: m.Created, Expires: m.Expires}
	var entries int
	for i := range m.Payloads {
		p := &m.Payloads[i]
		j.Payloads = append(j.Payloads, payloadV2{Name: p.Name, Target: p.Target, Size: p.Size, SHA256: p.SHA256,
			ChunkSize: p.ChunkSize, Chunking: p.Chunking, Offset: p.Offset, StoredSize: p.StoredSize, ChunkCount: len(p.Chunks)})
		entries += len(p.Chunks)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, 0, err
	}
	n := len(b)
	b = slices.Grow(b, entries*TableEntrySize)
	for i := range m.Payloads {
		b = appendTable(b, &m.Payloads[i])
	}
	return b, n, nil
}

// manifestV2 and payloadV2 are Manifest and Payload as format 2's JSON
// object has them: a chunk count in place of the chunk table.
type manifestV2 struct {
	Format          int         `json:"format"`
	Compatible      string      `json:"compatible"`
	Version         string      `json:"version"`
	MinVersion      string      `json:"min_version,omitempty"`
	SecurityCounter uint64      `json:"security_counter,omitempty"`
	AllowDowngrade  bool        `json:"allow_downgrade,omitempty"`
	Created         time.Time   `json:"created"`
	Expires         *time.Time  `json:"expires,omitempty"`
	Payloads        []payloadV2 `json:"payloads"`
}

type payloadV2 struct {
	Name       string `json:"name"`
	Target     string `json:"target"`
	Size       int64  `json:"size"`
	SHA256     Digest `json:"sha256"`
	ChunkSize  int64  `json:"chunk_size"`
	Chunking   string `json:"chunking,omitempty"`
	Offset     int64  `json:"offset"`
	StoredSize int64  `json:"stored_size"`
	ChunkCount int    `json:"chunk_count"`
}

func nameOK(s string) bool {
	if s == "" || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// maxFrame bounds a zstd frame's size for plain bytes (zstd's compress bound plus slack).
func maxFrame(plain int64) int64 { return plain + plain/128 + 1024 }

// Validate checks every field and that the chunk tables tile the data area
// in order with no gap or overlap.
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("manifest: "+format+": %w", append(a, ErrFormat)...)
	}
	if m.Format != FormatV1 && m.Format != FormatV2 {
		return bad("format %d, want %d or %d", m.Format, FormatV1, FormatV2)
	}
	if m.Compatible == "" || len(m.Compatible) > 256 {
		return bad("compatible %q: want 1..256 bytes", m.Compatible)
	}
	if _, err := ParseSemver(m.Version); err != nil {
		return bad("version: %v", err)
	}
	if m.MinVersion != "" {
		if _, err := ParseSemver(m.MinVersion); err != nil {
			return bad("min_version: %v", err)
		}
	}
	if m.Created.IsZero() {
		return bad("created missing")
	}
	if len(m.Payloads) == 0 || len(m.Payloads) > MaxPayloads {
		return bad("%d payloads, want 1..%d", len(m.Payloads), MaxPayloads)
	}
	seen := map[string]bool{}
	var off int64
	for pi := range m.Payloads {
		p := &m.Payloads[pi]
		if !nameOK(p.Name) || seen[p.Name] {
			return bad("payload %d: name %q empty, duplicate or not [A-Za-z0-9._-]{1,64}", pi, p.Name)
		}
		seen[p.Name] = true
		if !nameOK(p.Target) {
			return bad("payload %q: target %q", p.Name, p.Target)
		}
		if p.ChunkSize < MinChunkSize || p.ChunkSize > MaxChunkSize || p.ChunkSize%MinChunkSize != 0 {
			return bad("payload %q: chunk_size %d: want a multiple of %d up to %d", p.Name, p.ChunkSize, MinChunkSize, MaxChunkSize)
		}
		if p.Size <= 0 || p.Size > maxPayloadSize {
			return bad("payload %q: size %d", p.Name, p.Size)
		}
		n := (p.Size + p.ChunkSize - 1) / p.ChunkSize
		switch p.Chunking {
		case "":
			if int64(len(p.Chunks)) != n {
				return bad("payload %q: %d chunks, size %d needs %d", p.Name, len(p.Chunks), p.Size, n)
			}
		case ChunkingCDC:
			if int64(len(p.Chunks)) < n || int64(len(p.Chunks)) > p.Size {
				return bad("payload %q: %d chunks of at most %d bytes for size %d", p.Name, len(p.Chunks), p.ChunkSize, p.Size)
			}
			p.plainEnd = make([]int64, len(p.Chunks))
			var end int64
			for ci, c := range p.Chunks {
				if c.Plain < 1 || c.Plain > p.ChunkSize {
					return bad("payload %q chunk %d: plain size %d, want 1..%d", p.Name, ci, c.Plain, p.ChunkSize)
				}
				end += c.Plain
				p.plainEnd[ci] = end
			}
			if end != p.Size {
				return bad("payload %q: chunks hold %d plain bytes, size %d", p.Name, end, p.Size)
			}
		default:
			return bad("payload %q: chunking %q, want none or %q", p.Name, p.Chunking, ChunkingCDC)
		}
		if p.Offset != off {
			return bad("payload %q: offset %d, want %d", p.Name, p.Offset, off)
		}
		var coff int64
		for ci, c := range p.Chunks {
			plain := p.PlainSize(ci)
			if p.Chunking == "" && c.Plain != 0 {
				return bad("payload %q chunk %d: plain size given for fixed-size chunks", p.Name, ci)
			}
			if c.Offset != coff {
				return bad("payload %q chunk %d: offset %d, want %d", p.Name, ci, c.Offset, coff)
			}
			switch {
			case !c.Zstd && c.Size != plain:
				return bad("payload %q chunk %d: stored size %d, plain %d", p.Name, ci, c.Size, plain)
			case c.Zstd && (c.Size < 9 || c.Size > maxFrame(plain)):
				return bad("payload %q chunk %d: zstd frame size %d for %d plain bytes", p.Name, ci, c.Size, plain)
			}
			coff += c.Size
		}
		if p.StoredSize != coff {
			return bad("payload %q: stored_size %d, chunks sum to %d", p.Name, p.StoredSize, coff)
		}
		off += coff
	}
	return nil
}
