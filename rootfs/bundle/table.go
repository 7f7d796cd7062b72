package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Format 2's binary chunk table follows the manifest's JSON object inside
// the signed manifest bytes: for every payload in order, its chunk_count
// entries of TableEntrySize bytes:
//
//	0   32  sha256 of the chunk's plain bytes
//	32   4  stored size, uint32 big-endian
//	36   4  uint32 big-endian: bit 31 set = the stored bytes are one zstd
//	        frame; bits 0..30 = the plain size
//
// Offsets are not stored: a chunk's stored bytes start at the sum of the
// stored sizes before it in its payload (the rule format 1 checks).
const (
	TableEntrySize = 40
	tableZstd      = 1 << 31
	// MaxTableEntries bounds a format-2 table: decoded, an entry takes 64
	// bytes, so a table read before its signature is checked holds at most
	// 16 MiB, about what format 1's largest manifest decodes to (the
	// manifest's own 16 MiB limit would allow 419,430 entries, 27 MB).
	// That is 64 GiB of 256 KiB chunks, 16 GiB of cdc chunks at their
	// 64 KiB average.
	MaxTableEntries = 1 << 18
)

// appendTable appends p's chunk-table entries to b.
func appendTable(b []byte, p *Payload) []byte {
	for i, c := range p.Chunks {
		b = append(b, c.SHA256[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(c.Size))
		w := uint32(p.PlainSize(i))
		if c.Zstd {
			w |= tableZstd
		}
		b = binary.BigEndian.AppendUint32(b, w)
	}
	return b
}

// tableEntries checks each payload's chunk_count (counts[i], -1 when the
// key was absent) against what its size and chunk size allow, and their
// sum against the table's length, before anything is allocated for the
// table: a hostile count cannot make a reader allocate more than the table
// itself, which the manifest's length bounds, nor more than
// MaxTableEntries entries.
func tableEntries(m *Manifest, counts []int64, tableLen int64) error {
	var total int64
	for i := range m.Payloads {
		p := &m.Payloads[i]
		n := counts[i]
		if n < 0 {
			return fmt.Errorf("payload %q: chunk_count missing", p.Name)
		}
		if p.ChunkSize < MinChunkSize || p.ChunkSize > MaxChunkSize || p.Size <= 0 || p.Size > maxPayloadSize {
			return fmt.Errorf("payload %q: size %d, chunk_size %d out of range", p.Name, p.Size, p.ChunkSize)
		}
		least := (p.Size + p.ChunkSize - 1) / p.ChunkSize
		switch {
		case p.Chunking == ChunkingCDC && (n < least || n > p.Size):
			return fmt.Errorf("payload %q: chunk_count %d, size %d needs %d..%d chunks of at most %d bytes", p.Name, n, p.Size, least, p.Size, p.ChunkSize)
		case p.Chunking != ChunkingCDC && n != least:
			return fmt.Errorf("payload %q: chunk_count %d, size %d needs %d chunks of %d bytes", p.Name, n, p.Size, least, p.ChunkSize)
		}
		total += n // at most MaxPayloads << 50: no overflow
	}
	if total > MaxTableEntries {
		return fmt.Errorf("chunk table: the payloads' chunk_count add up to %d entries, at most %d are read", total, MaxTableEntries)
	}
	if total > tableLen/TableEntrySize || total*TableEntrySize != tableLen {
		return fmt.Errorf("chunk table: %d bytes, the payloads' chunk_count add up to %d entries of %d bytes", tableLen, total, TableEntrySize)
	}
	return nil
}

// decodeTable reads the binary chunk table (tableLen bytes) from r into the
// payloads' Chunks, after tableEntries has checked the counts: offsets are
// filled in, and a fixed-chunking payload's plain sizes are checked
// against its chunk_size (and not kept: Chunk.Plain is for cdc only).
// Manifest.Validate checks the rest.
func decodeTable(r io.Reader, m *Manifest, counts []int64, tableLen int64) error {
	if err := tableEntries(m, counts, tableLen); err != nil {
		return err
	}
	var e [TableEntrySize]byte
	for pi := range m.Payloads {
		p := &m.Payloads[pi]
		n := int(counts[pi])
		p.Chunks = make([]Chunk, n)
		var off int64
		for ci := range p.Chunks {
			if _, err := io.ReadFull(r, e[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("chunk table: payload %q chunk %d: %w", p.Name, ci, err)
			}
			w := binary.BigEndian.Uint32(e[36:])
			c := &p.Chunks[ci]
			copy(c.SHA256[:], e[:32])
			c.Offset = off
			c.Size = int64(binary.BigEndian.Uint32(e[32:]))
			c.Zstd = w&tableZstd != 0
			plain := int64(w &^ tableZstd)
			if p.Chunking == ChunkingCDC {
				c.Plain = plain
			} else {
				want := p.ChunkSize
				if ci == n-1 {
					want = p.Size - int64(ci)*p.ChunkSize
				}
				if plain != want {
					return fmt.Errorf("chunk table: payload %q chunk %d: plain size %d, chunk_size %d and size %d make it %d", p.Name, ci, plain, p.ChunkSize, p.Size, want)
				}
			}
			off += c.Size
		}
	}
	return nil
}
