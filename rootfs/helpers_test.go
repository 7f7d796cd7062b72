package rootfs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/sign/signtest"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

const (
	testChunk   = 64 << 10
	testCompat  = "acme-gw2"
	patternByte = 0xA5
)

type testKey struct {
	signer sign.Signer
	pub    ed25519.PublicKey
}

func newKey(t testing.TB) testKey {
	t.Helper()
	s, pub := signtest.Key(t)
	return testKey{signer: s, pub: pub}
}

// makeImage returns size bytes: random first half, compressible second half.
func makeImage(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	half := size / 2
	for i := 0; i < half; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < half; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	line := []byte(fmt.Sprintf("otagw test image %d: lorem ipsum dolor sit amet\n", seed))
	for i := half; i < size; i++ {
		b[i] = line[(i-half)%len(line)]
	}
	return b
}

type bundleSpec struct {
	version    string
	compatible string
	allowDown  bool
	counter    uint64
	expires    *time.Time
	compress   string
	chunking   string // "" or bundle.ChunkingCDC (256 KiB largest chunk)
	signers    []testKey
	mcu        []byte
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func makeBundle(t testing.TB, img []byte, s bundleSpec) (string, *bundle.Head) {
	t.Helper()
	dir := t.TempDir()
	o := bundle.CreateOptions{
		Compatible: testCompat, Version: "1.0.0", ChunkSize: testChunk, Compress: s.compress,
		AllowDowngrade: s.allowDown, SecurityCounter: s.counter, Expires: s.expires,
		Created:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Payloads: []bundle.PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: writeFile(t, dir, "img", img)}},
	}
	if s.chunking != "" {
		o.Chunking, o.ChunkSize = s.chunking, 256<<10
	}
	if s.version != "" {
		o.Version = s.version
	}
	if s.compatible != "" {
		o.Compatible = s.compatible
	}
	if s.mcu != nil {
		o.Payloads = append(o.Payloads, bundle.PayloadSpec{Name: "stm32-app", Target: TargetMCU, Path: writeFile(t, dir, "mcu", s.mcu)})
	}
	for _, k := range s.signers {
		o.Signers = append(o.Signers, k.signer)
	}
	out := filepath.Join(dir, "b.otab")
	h, err := bundle.Create(context.Background(), out, o)
	if err != nil {
		t.Fatal(err)
	}
	return out, h
}

// fileSlot makes a file of size bytes filled with the pattern.
func fileSlot(t testing.TB, size int) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "slot.img", bytes.Repeat([]byte{patternByte}, size))
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
}

// loopSlot attaches a pattern-filled file as a loop device, detached at cleanup.
func loopSlot(t testing.TB, size int) string {
	t.Helper()
	needRoot(t)
	f := fileSlot(t, (size+4095)/4096*4096) // whole sectors
	out, err := exec.Command("losetup", "-f", "--show", f).Output()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v", f, err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func readSlot(t testing.TB, dev string, n int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("read %s: %v", dev, err)
	}
	return b
}

// checkSlot checks that chunks before firstBad are pattern or image, and
// every byte from firstBad's chunk on (and past the image) is the pattern.
func checkSlot(t testing.TB, got, img []byte, firstBad int) {
	t.Helper()
	pattern := func(b []byte) bool { return bytes.Count(b, []byte{patternByte}) == len(b) }
	if len(got) > len(img) && !pattern(got[len(img):]) {
		t.Fatalf("slot bytes past the image (from %d) were written", len(img))
	}
	for c := 0; c*testChunk < min(len(got), len(img)); c++ {
		lo := c * testChunk
		seg := got[lo:min(lo+testChunk, len(img), len(got))]
		if c >= firstBad {
			if !pattern(seg) {
				t.Fatalf("slot chunk %d (from byte %d) was written; only chunks before %d were verified", c, lo, firstBad)
			}
			continue
		}
		if !pattern(seg) && !bytes.Equal(seg, img[lo:lo+len(seg)]) {
			t.Fatalf("slot chunk %d holds neither the pattern nor the image", c)
		}
	}
}

func slotOptions(devA, devB string) Options {
	o := DefaultOptions()
	o.Slots = []SlotConfig{
		{Name: "rootfs.0", Class: "rootfs", Device: devA, Bootname: "A"},
		{Name: "rootfs.1", Class: "rootfs", Device: devB, Bootname: "B"},
	}
	o.CheckpointBytes = 1 << 20
	o.Source = source.Options{Retries: 3}
	return o
}

// sizelessFile is a file source that does not tell its size, so the
// installer finds truncation and trailing data only while streaming.
type sizelessFile struct{ source.File }

func (s *sizelessFile) Size() int64 { return -1 }
