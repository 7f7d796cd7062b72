package bundle

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/restic/chunker"
)

// TestCDCZeroRuns: CDC's chunks are restic/chunker's with each run of
// all-zero chunks merged greedily up to the maximum size, they tile the
// input, and a caller's buffer of any size works.
func TestCDCZeroRuns(t *testing.T) {
	const max = 64 << 10
	r := rand.New(rand.NewPCG(3, 4))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	var in []byte
	for _, part := range [][]byte{rnd(300 << 10), make([]byte, 1<<20+5000), rnd(50 << 10), make([]byte, 20<<10),
		rnd(200 << 10), make([]byte, 3<<10), rnd(70 << 10), make([]byte, 100<<10)} {
		in = append(in, part...)
	}

	// The reference: the raw chunker's cuts, zero runs merged greedily.
	raw := chunker.NewWithBoundaries(bytes.NewReader(in), chunker.Pol(CDCPolynomial), CDCMinSize, max)
	raw.SetAverageBits(CDCAverageBits)
	var want []int
	zeroRun := false
	rawZeros := 0
	for {
		c, err := raw.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		z := allZero(c.Data)
		if z {
			rawZeros++
		}
		if z && zeroRun && want[len(want)-1]+len(c.Data) <= max {
			want[len(want)-1] += len(c.Data)
			continue
		}
		want = append(want, len(c.Data))
		zeroRun = z
	}

	for _, bufSize := range []int{max, 0, 1000} {
		cdc := NewCDC(bytes.NewReader(in), max)
		var got []int
		var joined []byte
		zeros := 0
		for {
			c, err := cdc.Next(make([]byte, 0, bufSize))
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if int(c.Length) != len(c.Data) || len(c.Data) > max || len(c.Data) == 0 {
				t.Fatalf("buffer %d: chunk of length %d with %d bytes (max %d)", bufSize, c.Length, len(c.Data), max)
			}
			if allZero(c.Data) {
				zeros++
			}
			got = append(got, len(c.Data))
			joined = append(joined, c.Data...)
		}
		if !bytes.Equal(joined, in) {
			t.Fatalf("buffer %d: chunks do not tile the input", bufSize)
		}
		if len(got) != len(want) {
			t.Fatalf("buffer %d: %d chunks, want %d: %v vs %v", bufSize, len(got), len(want), got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("buffer %d: chunk %d has %d bytes, want %d", bufSize, i, got[i], want[i])
			}
		}
		t.Logf("buffer %d: %d chunks, %d of them zeros (the chunker cut %d)", bufSize, len(got), zeros, rawZeros)
		// 1 MiB of zeros at 16 KiB cuts was dozens of chunks; merged, about 17.
		if rawZeros < 2*zeros || zeros < 17 {
			t.Fatalf("buffer %d: %d zero chunks from %d", bufSize, zeros, rawZeros)
		}
	}
}
