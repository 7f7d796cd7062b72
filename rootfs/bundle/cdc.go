package bundle

import (
	"encoding/binary"
	"io"

	"github.com/restic/chunker"
)

// CDC cuts a stream into the chunks of ChunkingCDC: the cuts of
// restic/chunker (see ChunkingCDC), then each run of consecutive chunks
// that hold only zero bytes merged into chunks of up to max bytes (greedy:
// a zero chunk that would not fit starts the next merged one). The Rabin
// chunker cuts zero-filled space, free blocks of a file system for
// instance, at its 16 KiB minimum: merging keeps those runs from filling
// the chunk table (in bench-delta.sh's ext4 image, about half the chunks
// were zeros). The rule depends on the content alone, so the writer and a
// device cutting its booted slot cut the same bytes the same way.
type CDC struct {
	c       *chunker.Chunker
	max     int
	ahead   []byte        // the chunk read after a zero run, until it is returned; allocated at the first zero chunk
	held    chunker.Chunk // that chunk (Data in ahead), when hasHeld
	hasHeld bool
	err     error // the chunker's error that ended a zero run, returned by the next call
}

// NewCDC returns the content-defined chunker of ChunkingCDC over r, for
// chunks of at most max bytes; Next(buf) needs a buffer of max bytes.
func NewCDC(r io.Reader, max int64) *CDC {
	c := chunker.NewWithBoundaries(r, chunker.Pol(CDCPolynomial), CDCMinSize, uint(max))
	c.SetAverageBits(CDCAverageBits)
	return &CDC{c: c, max: int(max)}
}

// Next returns the next chunk, its bytes in buf when buf has room for max
// bytes (otherwise in a new slice), and io.EOF after the last one.
func (z *CDC) Next(buf []byte) (chunker.Chunk, error) {
	var c chunker.Chunk
	switch {
	case z.hasHeld:
		c, z.hasHeld = z.held, false
		c.Data = append(buf[:0], c.Data...)
	case z.err != nil:
		return chunker.Chunk{}, z.err
	default:
		var err error
		if c, err = z.c.Next(buf); err != nil {
			return c, err
		}
	}
	if !allZero(c.Data) {
		return c, nil
	}
	if z.ahead == nil {
		z.ahead = make([]byte, z.max)
	}
	for len(c.Data) < z.max {
		n, err := z.c.Next(z.ahead)
		if err != nil {
			z.err = err // io.EOF, or a read error: for the next call
			break
		}
		if !allZero(n.Data) || len(c.Data)+len(n.Data) > z.max {
			z.held, z.hasHeld = n, true
			break
		}
		c.Data = append(c.Data, n.Data...)
		c.Length += n.Length
		c.Cut = n.Cut
	}
	return c, nil
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
