package rootfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

const imgSize = 20*testChunk + 12345 // a partial last chunk

func install(t testing.TB, o Options, req Request) (*Result, error) {
	t.Helper()
	inst, err := NewInstaller(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return inst.Install(context.Background(), req)
}

func TestInstallGood(t *testing.T) {
	k := newKey(t)
	img := makeImage(1, imgSize)
	for _, kind := range []string{"file", "loop"} {
		for _, comp := range []string{"auto", "zstd", "none"} {
			t.Run(kind+"/"+comp, func(t *testing.T) {
				bpath, h := makeBundle(t, img, bundleSpec{compress: comp, signers: []testKey{k}})
				slotSize := imgSize + 3*testChunk
				var a, b string
				if kind == "file" {
					a, b = fileSlot(t, slotSize), fileSlot(t, slotSize)
				} else {
					a, b = loopSlot(t, slotSize), loopSlot(t, slotSize)
				}
				var cps []Checkpoint
				var last Progress
				res, err := install(t, slotOptions(a, b), Request{
					Source: bpath, Keyring: sign.NewKeyring(k.pub), Booted: "A",
					Policy:       Policy{Compatible: testCompat, Threshold: 1, MinVersion: "0.9.0"},
					OnCheckpoint: func(c Checkpoint) error { cps = append(cps, c); return nil },
					OnProgress:   func(p Progress) { last = p },
				})
				if err != nil {
					t.Fatal(err)
				}
				if res.Bootname("rootfs") != "B" || res.Slots[0].Slot != "rootfs.1" || res.Bundle != h.ID() {
					t.Fatalf("result %+v", res)
				}
				got := readSlot(t, b, slotSize)
				if !bytes.Equal(got[:imgSize], img) {
					t.Fatal("slot B does not hold the image")
				}
				checkSlot(t, got, img, len(h.Manifest.Payloads[0].Chunks))
				if !bytes.Equal(readSlot(t, a, slotSize), bytes.Repeat([]byte{patternByte}, slotSize)) {
					t.Fatal("the booted slot A was written")
				}
				if last.Done != imgSize || last.Total != imgSize || last.Chunk != last.Chunks-1 {
					t.Fatalf("last progress %+v", last)
				}
				if len(cps) == 0 || cps[0].Bundle != h.ID() || cps[0].Payload != "rootfs" || cps[0].Slot != "rootfs.1" {
					t.Fatalf("checkpoints %+v", cps)
				}
			})
		}
	}
}

func flip(b []byte, off int64) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0x10
	return c
}

func TestTampered(t *testing.T) {
	k := newKey(t)
	img := makeImage(2, imgSize)
	bpath, h := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	good, err := os.ReadFile(bpath)
	if err != nil {
		t.Fatal(err)
	}
	p := h.Manifest.Payloads[0]
	data := h.DataOffset() + p.Offset
	chunkAt := func(i int, within int64) int64 { return data + p.Chunks[i].Offset + within }
	n := len(p.Chunks)
	// Chunks 0..9 are random (raw), 10.. compressible (zstd).
	if p.Chunks[1].Zstd || !p.Chunks[n-2].Zstd {
		t.Fatalf("test image did not produce raw and zstd chunks: %+v", p.Chunks)
	}
	swapped := bytes.Clone(good)
	c1, c2 := chunkAt(1, 0), chunkAt(2, 0)
	copy(swapped[c1:], good[c2:c2+testChunk])
	copy(swapped[c2:], good[c1:c1+testChunk])

	cases := []struct {
		name     string
		data     []byte
		firstBad int   // chunks from here on must stay untouched
		want     error // nil: any error
	}{
		{"manifest bit", flip(good, bundle.HeaderSize+40), 0, ErrSignature},
		{"manifest last byte", flip(good, bundle.HeaderSize+int64(h.Header.ManifestLen)-2), 0, nil},
		{"signature bit", flip(good, bundle.HeaderSize+int64(h.Header.ManifestLen)+int64(h.Header.SigLen)-10), 0, nil},
		{"header magic", flip(good, 0), 0, ErrFormat},
		{"header manifest length", flip(good, 14), 0, nil},
		{"first chunk first byte", flip(good, chunkAt(0, 0)), 0, ErrHashMismatch},
		{"raw chunk middle", flip(good, chunkAt(5, testChunk/2)), 5, ErrHashMismatch},
		{"zstd chunk frame header", flip(good, chunkAt(12, 5)), 12, ErrHashMismatch},
		{"zstd chunk middle", flip(good, chunkAt(15, p.Chunks[15].Size/2)), 15, ErrHashMismatch},
		{"last chunk last byte", flip(good, int64(len(good))-1), n - 1, ErrHashMismatch},
		{"reordered chunks", swapped, 1, ErrHashMismatch},
		{"truncated in the data", good[:chunkAt(7, 100)], 7, ErrTruncated},
		{"truncated by one byte", good[:len(good)-1], n - 1, ErrTruncated},
		{"truncated in the manifest", good[:bundle.HeaderSize+100], 0, ErrTruncated},
		{"trailing byte", append(bytes.Clone(good), 0), n, ErrTrailingData},
	}
	for _, kind := range []string{"file", "loop"} {
		for _, sized := range []bool{true, false} {
			for _, c := range cases {
				name := kind + "/sized/" + c.name
				if !sized {
					name = kind + "/streamed/" + c.name
				}
				if kind == "loop" && !sized && c.firstBad == 0 {
					continue // the file slot covers it; keeps the loop device count down
				}
				t.Run(name, func(t *testing.T) {
					slotSize := imgSize + testChunk
					var a, b string
					if kind == "file" {
						a, b = fileSlot(t, slotSize), fileSlot(t, slotSize)
					} else {
						a, b = fileSlot(t, slotSize), loopSlot(t, slotSize)
					}
					path := writeFile(t, t.TempDir(), "bad.otab", c.data)
					req := Request{Keyring: sign.NewKeyring(k.pub), Booted: "A", Policy: Policy{Compatible: testCompat}}
					if sized {
						req.Source = path
					} else {
						req.Src = &sizelessFile{File: source.File{Path: path}}
					}
					_, err := install(t, slotOptions(a, b), req)
					if err == nil {
						t.Fatal("tampered bundle installed")
					}
					if c.want != nil && !errors.Is(err, c.want) {
						t.Fatalf("error %v, want %v", err, c.want)
					}
					firstBad := c.firstBad
					if sized {
						switch {
						case errors.Is(err, ErrTruncated), errors.Is(err, ErrTrailingData):
							firstBad = 0 // the size is checked before writing
						}
					}
					checkSlot(t, readSlot(t, b, slotSize), img, firstBad)
					var ce *ChunkError
					if errors.Is(err, ErrHashMismatch) && (!errors.As(err, &ce) || ce.Index != c.firstBad) {
						t.Fatalf("error %v: want a ChunkError at chunk %d", err, c.firstBad)
					}
				})
			}
		}
	}
}

func TestPolicyRefusals(t *testing.T) {
	k1, k2, stranger := newKey(t), newKey(t), newKey(t)
	img := makeImage(3, 3*testChunk)
	past := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	future := now.Add(time.Hour)
	kr := sign.NewKeyring(k1.pub, k2.pub)
	cases := []struct {
		name   string
		spec   bundleSpec
		policy Policy
		want   error
	}{
		{"ok", bundleSpec{version: "2.0.0", expires: &future}, Policy{MinVersion: "1.0.0"}, nil},
		{"equal to minimum", bundleSpec{version: "1.0.0"}, Policy{MinVersion: "1.0.0"}, nil},
		{"downgrade", bundleSpec{version: "1.0.0"}, Policy{MinVersion: "1.2.0"}, ErrDowngrade},
		{"pre-release below release", bundleSpec{version: "1.2.0-rc.1"}, Policy{MinVersion: "1.2.0"}, ErrDowngrade},
		{"downgrade signed but not permitted", bundleSpec{version: "1.0.0", allowDown: true}, Policy{MinVersion: "1.2.0"}, ErrDowngrade},
		{"downgrade permitted but not signed", bundleSpec{version: "1.0.0"}, Policy{MinVersion: "1.2.0", AllowDowngrade: true}, ErrDowngrade},
		{"downgrade signed and permitted", bundleSpec{version: "1.0.0", allowDown: true}, Policy{MinVersion: "1.2.0", AllowDowngrade: true}, nil},
		{"security counter", bundleSpec{version: "3.0.0", counter: 4, allowDown: true}, Policy{MinSecurityCounter: 5, AllowDowngrade: true}, ErrDowngrade},
		{"wrong compatible", bundleSpec{compatible: "acme-gw1"}, Policy{}, ErrIncompatible},
		{"expired", bundleSpec{expires: &past}, Policy{}, ErrExpired},
		{"unknown key", bundleSpec{signers: []testKey{stranger}}, Policy{}, ErrUnknownKey},
		{"below threshold", bundleSpec{signers: []testKey{k1, stranger}}, Policy{Threshold: 2}, ErrThreshold},
		{"threshold met", bundleSpec{signers: []testKey{k2, stranger, k1}}, Policy{Threshold: 2}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.spec.signers == nil {
				c.spec.signers = []testKey{k1}
			}
			bpath, _ := makeBundle(t, img, c.spec)
			c.policy.Compatible = testCompat
			a, b := fileSlot(t, len(img)), fileSlot(t, len(img))
			inst, err := NewInstaller(slotOptions(a, b), nil)
			if err != nil {
				t.Fatal(err)
			}
			inst.SetClock(func() time.Time { return now })
			_, err = inst.Install(context.Background(), Request{Source: bpath, Keyring: kr, Policy: c.policy, Booted: "A"})
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			got := readSlot(t, b, len(img))
			if c.want != nil {
				checkSlot(t, got, img, 0)
			} else if !bytes.Equal(got, img) {
				t.Fatal("slot does not hold the image")
			}
		})
	}
}

func TestSlotChecks(t *testing.T) {
	k := newKey(t)
	img := makeImage(4, 4*testChunk)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	kr := sign.NewKeyring(k.pub)
	pol := Policy{Compatible: testCompat}
	t.Run("too small", func(t *testing.T) {
		a, b := fileSlot(t, len(img)), fileSlot(t, len(img)-1)
		_, err := install(t, slotOptions(a, b), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		if !errors.Is(err, ErrSlotTooSmall) {
			t.Fatalf("error %v, want ErrSlotTooSmall", err)
		}
	})
	t.Run("booted target", func(t *testing.T) {
		a, b := fileSlot(t, len(img)), fileSlot(t, len(img))
		_, err := install(t, slotOptions(a, b), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "B", Target: "rootfs.1"})
		if !errors.Is(err, ErrSlotBusy) {
			t.Fatalf("error %v, want ErrSlotBusy", err)
		}
		checkSlot(t, readSlot(t, b, len(img)), img, 0)
	})
	t.Run("same device as booted", func(t *testing.T) {
		a := fileSlot(t, len(img))
		link := filepath.Join(t.TempDir(), "alias")
		if err := os.Symlink(a, link); err != nil {
			t.Fatal(err)
		}
		_, err := install(t, slotOptions(a, link), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		if !errors.Is(err, ErrSlotBusy) {
			t.Fatalf("error %v, want ErrSlotBusy", err)
		}
	})
	t.Run("booted unknown with two candidates", func(t *testing.T) {
		a, b := fileSlot(t, len(img)), fileSlot(t, len(img))
		_, err := install(t, slotOptions(a, b), Request{Source: bpath, Keyring: kr, Policy: pol})
		if err == nil {
			t.Fatal("installed without knowing the booted slot")
		}
	})
	t.Run("missing device names it", func(t *testing.T) {
		a := fileSlot(t, len(img))
		missing := filepath.Join(t.TempDir(), "nope")
		_, err := install(t, slotOptions(a, missing), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		var ioe *IOError
		if !errors.As(err, &ioe) || ioe.Slot != "rootfs.1" {
			t.Fatalf("error %v, want an IOError naming rootfs.1", err)
		}
	})
}

func TestMCUPayload(t *testing.T) {
	k := newKey(t)
	img := makeImage(5, 3*testChunk)
	fw := makeImage(6, 100000)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}, mcu: fw})
	a, b := fileSlot(t, len(img)), fileSlot(t, len(img))
	dir := t.TempDir()
	res, err := install(t, slotOptions(a, b), Request{Source: bpath, Keyring: sign.NewKeyring(k.pub),
		Policy: Policy{Compatible: testCompat}, Booted: "A", MCUDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.MCU) != 1 || res.MCU[0].Payload != "stm32-app" {
		t.Fatalf("mcu results %+v", res.MCU)
	}
	got, err := os.ReadFile(res.MCU[0].Path)
	if err != nil || !bytes.Equal(got, fw) {
		t.Fatalf("mcu payload at %s: %v, equal %v", res.MCU[0].Path, err, bytes.Equal(got, fw))
	}
	if !bytes.Equal(readSlot(t, b, len(img)), img) {
		t.Fatal("slot does not hold the image")
	}
}

// TestReadBackCatchesDamage: a byte that changes on the device after it was
// written and synced (a lost or misdirected write, a bad flash block) is
// caught by the read-back, at the chunk where it sits, on a loop device
// (O_DIRECT reads) and on a file (reads after FADV_DONTNEED).
func TestReadBackCatchesDamage(t *testing.T) {
	k := newKey(t)
	img := makeImage(3, imgSize)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	for _, kind := range []string{"file", "loop"} {
		t.Run(kind, func(t *testing.T) {
			var a, b string
			if kind == "file" {
				a, b = fileSlot(t, imgSize), fileSlot(t, imgSize)
			} else {
				a, b = loopSlot(t, imgSize), loopSlot(t, imgSize)
			}
			damaged := false
			testAfterSync = func(f *os.File, end int64) {
				if end >= 8*testChunk && !damaged { // synced, not yet read back
					damaged = true
					if _, err := f.WriteAt([]byte{^img[7*testChunk+100]}, 7*testChunk+100); err != nil {
						t.Error(err)
					}
				}
			}
			defer func() { testAfterSync = nil }()
			_, err := install(t, slotOptions(a, b), Request{Source: bpath, Keyring: sign.NewKeyring(k.pub), Booted: "A",
				Policy: Policy{Compatible: testCompat}})
			var ce *ChunkError
			if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &ce) || ce.Index != 7 {
				t.Fatalf("install over a device that changed chunk 7: %v, want a read-back mismatch at chunk 7", err)
			}
		})
	}
}

// BenchmarkInstall installs a 64 MiB bundle (half random, half
// compressible; fixed 256 KiB chunks) into a file slot, for profiling the
// pipeline: go test -run - -bench Install -cpuprofile cpu.out ./rootfs/
// (figures for docs come from scripts/bench-rootfs.sh, not from here).
func BenchmarkInstall(b *testing.B) {
	k := newKey(b)
	const size = 64 << 20
	img := makeImage(5, size)
	dir := b.TempDir()
	o := bundle.CreateOptions{Compatible: testCompat, Version: "1.0.0", Signers: []sign.Signer{k.signer},
		Payloads: []bundle.PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: writeFile(b, dir, "img", img)}}}
	bpath := filepath.Join(dir, "b.otab")
	if _, err := bundle.Create(context.Background(), bpath, o); err != nil {
		b.Fatal(err)
	}
	a, s := fileSlot(b, size), fileSlot(b, size)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if _, err := install(b, slotOptions(a, s), Request{Source: bpath, Keyring: sign.NewKeyring(k.pub), Booted: "A",
			Policy: Policy{Compatible: testCompat}}); err != nil {
			b.Fatal(err)
		}
	}
}
