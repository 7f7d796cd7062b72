// Package image makes the torture harness's release images: each version
// has one deterministic content, so the guest can tell a complete,
// verified release in a slot from a half-written one without a record.
package image

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Size is the size of every release image.
const Size = 2 << 20

const headerLen = 64

// Version is the release with patch number n: "1.0.n".
func Version(n int) string { return "1.0." + strconv.Itoa(n) }

// Patch is n of "1.0.n", or -1.
func Patch(v string) int {
	s, ok := strings.CutPrefix(v, "1.0.")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Bad says whether release n is built to fail its health check (so the
// daemon rolls it back): every fifth one from 1.0.3 on.
func Bad(n int) bool { return n%5 == 3 }

// Build returns the image of version v: a text header naming it, then
// bytes from a ChaCha8 stream seeded with the version's SHA-256.
func Build(v string) []byte {
	b := make([]byte, Size)
	h := fmt.Sprintf("OTAGW-TORTURE-IMAGE %s\n", v)
	copy(b, h)
	seed := sha256.Sum256([]byte(v))
	r := rand.NewChaCha8(seed)
	_, _ = r.Read(b[headerLen:])
	return b
}

// Check reads Size bytes of a slot and says which release it holds; an
// error names what is wrong (no header, or content differing from the
// release its header names: a half-written slot).
func Check(r io.Reader) (string, error) {
	b := make([]byte, Size)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("read %d bytes: %w", Size, err)
	}
	line, _, ok := bytes.Cut(b[:headerLen], []byte("\n"))
	v, found := strings.CutPrefix(string(line), "OTAGW-TORTURE-IMAGE ")
	if !ok || !found || Patch(v) < 0 {
		return "", fmt.Errorf("no release header (first bytes %q)", b[:24])
	}
	want := Build(v)
	if !bytes.Equal(b, want) {
		i := 0
		for i < len(b) && b[i] == want[i] {
			i++
		}
		return v, fmt.Errorf("release %s differs from its image at byte %d: half-written", v, i)
	}
	return v, nil
}
