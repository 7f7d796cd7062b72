package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The manifest is decoded as it streams: a json.Decoder walks its tokens
// and decodes each field, payload and chunk-table entry on its own, so the
// decoder's buffer holds one small value at a time and the chunk table is
// built in place. Neither the manifest's text nor a tree of it is held,
// whatever the image size (a 4 GiB image has a 1.9 MB manifest).
//
// Rules, as json.Unmarshal into Manifest with DisallowUnknownFields had
// them, but stricter where that was loose: keys match exactly (not
// case-insensitively); every chunk-table entry names its sha256, offset
// and size (MarshalManifest always writes them). The last rule also bounds
// memory before the signatures are checked: an entry takes at least 90
// bytes of text and 64 of table, so the table is smaller than the text.

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

// manifestDecoder decodes one manifest from its JSON text.
type manifestDecoder struct {
	d    *json.Decoder
	size int // bytes of text, to bound the chunk table's initial capacity
}

// decodeManifest reads one manifest (size bytes of text) from r, and
// nothing but white space after it. It does not validate.
func decodeManifest(r io.Reader, size int) (*Manifest, error) {
	md := &manifestDecoder{d: json.NewDecoder(r), size: size}
	md.d.DisallowUnknownFields()
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
	if _, err := md.d.Token(); err != io.EOF {
		if err == nil || isSyntax(err) {
			return nil, errors.New("data after the JSON object")
		}
		return nil, err
	}
	return &m, nil
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
		p := &m.Payloads[len(m.Payloads)-1]
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
				return md.chunks(p)
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

// ParseManifest decodes and validates manifest bytes. Unknown fields and
// anything after the JSON object are errors.
func ParseManifest(b []byte) (*Manifest, error) {
	m, err := decodeManifest(bytes.NewReader(b), len(b))
	if err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}
