// Command chunkstat prints, for each payload of a bundle, how its chunk
// table is made up, for the delta benchmark (scripts/bench-delta.sh): the
// manifest's size, the chunks, and how many of them hold only zero bytes
// (a chunk's sha256 against that of as many zeros as its plain size), in
// how many runs of consecutive chunks, and how many chunks those runs would
// be if each were merged into chunks of up to the payload's chunk size.
//
//	chunkstat BUNDLE
package main

import (
	"crypto/sha256"
	"fmt"
	"os"

	"github.com/otagw/otagw/rootfs/bundle"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chunkstat BUNDLE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chunkstat:", err)
		os.Exit(1)
	}
	defer f.Close()
	h, err := bundle.ReadHeadStream(f, nil, 0, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chunkstat: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	zeroSum := map[int64]bundle.Digest{}
	fmt.Printf("%s: format %d, manifest %d bytes\n", os.Args[1], h.Header.Version, h.Header.ManifestLen)
	for pi := range h.Manifest.Payloads {
		p := &h.Manifest.Payloads[pi]
		var zeros, runs, merged int
		var zeroBytes, run int64 // plain bytes of zero chunks; of the current run's open merged chunk
		inRun := false
		for i, c := range p.Chunks {
			n := p.PlainSize(i)
			z, ok := zeroSum[n]
			if !ok {
				z = sha256.Sum256(make([]byte, n))
				zeroSum[n] = z
			}
			if c.SHA256 != z {
				inRun = false
				continue
			}
			zeros++
			zeroBytes += n
			if !inRun || run+n > p.ChunkSize {
				if !inRun {
					runs++
				}
				merged++
				run = 0
			}
			inRun = true
			run += n
		}
		fmt.Printf("  payload %s: %d chunks (chunking %q, at most %d bytes); all-zero: %d chunks, %d bytes, in %d runs; merged up to %d bytes: %d chunks, table %d chunks\n",
			p.Name, len(p.Chunks), p.Chunking, p.ChunkSize, zeros, zeroBytes, runs, p.ChunkSize, merged, len(p.Chunks)-zeros+merged)
	}
}
