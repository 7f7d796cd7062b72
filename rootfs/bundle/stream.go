package bundle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The manifest is decoded as it streams: a json.Decoder walks its tokens
// and decodes each field, payload and (format 1) chunk-table entry on its
// own, so the decoder's buffer holds one small value at a time and the
// chunk table is built in place; format 2's binary table is read entry by
// entry into Payload.Chunks, sized from chunk_count once the counts have
// been checked against the payloads' sizes and the table's length.
// Neither the manifest's text nor a tree of it is held, whatever the image
// size.
//
// Rules, as json.Unmarshal into Manifest with DisallowUnknownFields had
// them, but stricter where that was loose: keys match exactly (not
// case-insensitively); every format-1 chunk-table entry names its sha256,
// offset and size (MarshalManifest always writes them); format 1 has
// "chunks" and no "chunk_count", format 2 the reverse. The decoded table
// is bounded by the manifest's length before the signatures are checked:
// a format-1 entry takes at least 90 bytes of text and a format-2 entry 40
// bytes, for 64 bytes of Chunk.

// chunkEntry is a chunk-table entry as decoded: the pointers tell which
// required keys were present.
type chunkEntry struct {
	SHA256 *Digest `json:"sha256"`
	Offset *int64  `json:"offset"`
	Size   *int64  `json:"size"`
	Zstd   bool    `json:"zstd"`
	Plain  int64   `json:"plain"`
}

// minEntryText is the shortest JSON text of a chunk-table entry with its
// three required keys: {"sha256":"<64 hex>","offset":0,"size":0}.
const minEntryText = len(`{"sha256":"","offset":0,"size":0}`) + 64

// manifestDecoder decodes one manifest's JSON object.
type manifestDecoder struct {
	d      *json.Decoder
	size   int     // bytes of text, to bound a format-1 chunk table's initial capacity
	counts []int64 // per payload: its chunk_count, -1 when absent
	tables []bool  // per payload: it has a "chunks" key
}

func newManifestDecoder(r io.Reader, size int) *manifestDecoder {
	md := &manifestDecoder{d: json.NewDecoder(r), size: size}
	md.d.DisallowUnknownFields()
	return md
}

// decodeManifest reads one manifest of the format and lengths hdr gives
// from r (format 1: the JSON object and nothing but white space after it;
// format 2: the JSON object, ending exactly at hdr.JSONLen, then the binary
// chunk table), and no more than hdr.ManifestLen bytes. It does not
// validate.
func decodeManifest(r io.Reader, hdr Header) (*Manifest, error) {
	if hdr.Version == FormatV1 {
		md := newManifestDecoder(r, int(hdr.ManifestLen))
		m, err := md.manifest(FormatV1)
		if err != nil {
			return nil, err
		}
		return m, md.end()
	}
	md := newManifestDecoder(io.LimitReader(r, int64(hdr.JSONLen)), int(hdr.JSONLen))
	m, err := md.manifest(FormatV2)
	if err != nil {
		return nil, err
	}
	if end := md.d.InputOffset(); end != int64(hdr.JSONLen) {
		return nil, fmt.Errorf("JSON object ends at byte %d, the header's JSON length is %d", end, hdr.JSONLen)
	}
	return m, decodeTable(bufio.NewReaderSize(r, 16<<10), m, md.counts, int64(hdr.ManifestLen-hdr.JSONLen))
}

// manifest decodes the JSON object and checks its format: want, or, when
// want is 0, either known format.
func (md *manifestDecoder) manifest(want int) (*Manifest, error) {
	var m Manifest
	if err := md.object("manifest", func(key string) error {
		switch key {
		case "format":
			return md.value(key, &m.Format)
		case "compatible":
			return md.value(key, &m.Compatible)
		case "version":
			return md.value(key, &m.Version)
		case "min_version":
			return md.value(key, &m.MinVersion)
		case "security_counter":
			return md.value(key, &m.SecurityCounter)
		case "allow_downgrade":
			return md.value(key, &m.AllowDowngrade)
		case "created":
			return md.value(key, &m.Created)
		case "expires":
			return md.value(key, &m.Expires)
		case "payloads":
			return md.payloads(&m)
		}
		return fmt.Errorf("unknown field %q", key)
	}); err != nil {
		return nil, err
	}
	switch {
	case want != 0 && m.Format != want:
		return nil, fmt.Errorf("format %d, the header says %d", m.Format, want)
	case m.Format != FormatV1 && m.Format != FormatV2:
		return nil, fmt.Errorf("format %d, this reader knows %d and %d", m.Format, FormatV1, FormatV2)
	}
	for i := range m.Payloads {
		switch {
		case m.Format == FormatV1 && md.counts[i] >= 0:
			return nil, fmt.Errorf("payload %q: chunk_count in format %d (its table is \"chunks\")", m.Payloads[i].Name, FormatV1)
		case m.Format == FormatV2 && md.tables[i]:
			return nil, fmt.Errorf("payload %q: chunks in format %d (its table follows the JSON object)", m.Payloads[i].Name, FormatV2)
		}
	}
	return &m, nil
}

// end checks that nothing but white space follows the JSON object.
func (md *manifestDecoder) end() error {
	if _, err := md.d.Token(); err != io.EOF {
		if err == nil || isSyntax(err) {
			return errors.New("data after the JSON object")
		}
		return err
	}
	return nil
}

func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// value decodes the next value into v.
func (md *manifestDecoder) value(key string, v any) error {
	if err := md.d.Decode(v); err != nil {
		return fmt.Errorf("field %q: %v", key, err)
	}
	return nil
}

// delim reads the next token: want, or null when nullOK (then it returns false).
func (md *manifestDecoder) delim(what string, want json.Delim, nullOK bool) (bool, error) {
	t, err := md.d.Token()
	if err != nil {
		return false, fmt.Errorf("%s: %v", what, err)
	}
	if t == nil && nullOK {
		return false, nil
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return false, fmt.Errorf("%s: %v where %q was expected", what, t, want)
	}
	return true, nil
}

// object walks a JSON object, calling field for each key with the decoder
// before its value; field must consume the value.
func (md *manifestDecoder) object(what string, field func(key string) error) error {
	if _, err := md.delim(what, '{', false); err != nil {
		return err
	}
	for md.d.More() {
		t, err := md.d.Token()
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		key, ok := t.(string)
		if !ok {
			return fmt.Errorf("%s: key %v", what, t)
		}
		if err := field(key); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	_, err := md.delim(what, '}', false)
	return err
}

func (md *manifestDecoder) payloads(m *Manifest) error {
	m.Payloads = nil
	if ok, err := md.delim("payloads", '[', true); !ok {
		return err
	}
	for md.d.More() {
		if len(m.Payloads) == MaxPayloads {
			return fmt.Errorf("more than %d payloads", MaxPayloads)
		}
		m.Payloads = append(m.Payloads, Payload{})
		md.counts = append(md.counts, -1)
		md.tables = append(md.tables, false)
		pi := len(m.Payloads) - 1
		p := &m.Payloads[pi]
		if err := md.object(fmt.Sprintf("payload %d", len(m.Payloads)-1), func(key string) error {
			switch key {
			case "name":
				return md.value(key, &p.Name)
			case "target":
				return md.value(key, &p.Target)
			case "size":
				return md.value(key, &p.Size)
			case "sha256":
				return md.value(key, &p.SHA256)
			case "chunk_size":
				return md.value(key, &p.ChunkSize)
			case "chunking":
				return md.value(key, &p.Chunking)
			case "offset":
				return md.value(key, &p.Offset)
			case "stored_size":
				return md.value(key, &p.StoredSize)
			case "chunks":
				md.tables[pi] = true
				return md.chunks(p)
			case "chunk_count":
				if err := md.value(key, &md.counts[pi]); err != nil {
					return err
				}
				if md.counts[pi] < 0 {
					return fmt.Errorf("field %q: %d", key, md.counts[pi])
				}
				return nil
			}
			return fmt.Errorf("unknown field %q", key)
		}); err != nil {
			return err
		}
	}
	_, err := md.delim("payloads", ']', false)
	return err
}

// chunks decodes a chunk table entry by entry into p.Chunks, sized up
// front when the payload's size and chunk size came before it (as
// MarshalManifest writes them), within what the text can hold.
func (md *manifestDecoder) chunks(p *Payload) error {
	p.Chunks = nil
	if ok, err := md.delim("chunks", '[', true); !ok {
		return err
	}
	if p.Size > 0 && p.ChunkSize >= MinChunkSize {
		n := min((p.Size+p.ChunkSize-1)/p.ChunkSize, int64(md.size/minEntryText)+1)
		p.Chunks = make([]Chunk, 0, n)
	}
	for md.d.More() {
		var e chunkEntry
		if err := md.d.Decode(&e); err != nil {
			return fmt.Errorf("chunk %d: %v", len(p.Chunks), err)
		}
		if e.SHA256 == nil || e.Offset == nil || e.Size == nil {
			return fmt.Errorf("chunk %d: sha256, offset or size missing", len(p.Chunks))
		}
		p.Chunks = append(p.Chunks, Chunk{SHA256: *e.SHA256, Offset: *e.Offset, Size: *e.Size, Zstd: e.Zstd, Plain: e.Plain})
	}
	_, err := md.delim("chunks", ']', false)
	return err
}

// ParseManifest decodes and validates manifest bytes (the signed bytes,
// of either format: format 2's JSON object ends where its table starts).
// Unknown fields and anything after the JSON object (format 1) or the
// table (format 2) are errors.
func ParseManifest(b []byte) (*Manifest, error) {
	m, err := parseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func parseManifest(b []byte) (*Manifest, error) {
	md := newManifestDecoder(bytes.NewReader(b), len(b))
	m, err := md.manifest(0)
	if err != nil {
		return nil, err
	}
	if m.Format == FormatV1 {
		return m, md.end()
	}
	j := md.d.InputOffset()
	return m, decodeTable(bytes.NewReader(b[j:]), m, md.counts, int64(len(b))-j)
}
