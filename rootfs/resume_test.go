package rootfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
)

// dropServer serves path with Range support, but cuts every response after
// limit bytes of body.
func dropServer(t *testing.T, path string, limit int64) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var reqs atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(&cutWriter{ResponseWriter: w, left: limit}, r, "b.otab", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, &reqs
}

type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		p = p[:c.left]
		c.ResponseWriter.Write(p)
		c.left = 0
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

func TestHTTPDropsResume(t *testing.T) {
	k := newKey(t)
	img := makeImage(7, imgSize)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	srv, reqs := dropServer(t, bpath, 300<<10)
	a, b := fileSlot(t, imgSize), loopSlotOrFile(t, imgSize)
	res, err := install(t, slotOptions(a, b), Request{Source: srv.URL + "/b.otab", Keyring: sign.NewKeyring(k.pub),
		Policy: Policy{Compatible: testCompat}, Booted: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if n := reqs.Load(); n < 3 {
		t.Fatalf("%d requests: the server did not drop connections", n)
	}
	if !bytes.Equal(readSlot(t, b, imgSize), img) || res.Source != srv.URL+"/b.otab" {
		t.Fatal("slot does not hold the image")
	}
}

func TestHTTPGivesUp(t *testing.T) {
	k := newKey(t)
	img := makeImage(8, imgSize)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		data, _ := os.ReadFile(bpath)
		(&cutWriter{ResponseWriter: w, left: 200 << 10}).Write(data)
	}))
	defer srv.Close()
	a, b := fileSlot(t, imgSize), fileSlot(t, imgSize)
	_, err := install(t, slotOptions(a, b), Request{Source: srv.URL, Keyring: sign.NewKeyring(k.pub),
		Policy: Policy{Compatible: testCompat}, Booted: "A"})
	if err == nil || !strings.Contains(err.Error(), "after retries") {
		t.Fatalf("error %v, want the retries to run out", err)
	}
	checkSlot(t, readSlot(t, b, imgSize), img, 3) // 200 KiB: at most 3 chunks arrived
}

func loopSlotOrFile(t *testing.T, size int) string {
	if os.Geteuid() == 0 {
		return loopSlot(t, size)
	}
	return fileSlot(t, size)
}

func TestCancelThenResume(t *testing.T) {
	k := newKey(t)
	img := makeImage(9, 64*testChunk+777) // 4 MiB: checkpoints every 1 MiB
	for _, via := range []string{"file", "http"} {
		t.Run(via, func(t *testing.T) {
			bpath, h := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
			src := bpath
			if via == "http" {
				srv, _ := dropServer(t, bpath, 1<<20+3)
				src = srv.URL
			}
			a, b := fileSlot(t, len(img)), loopSlotOrFile(t, len(img))
			o := slotOptions(a, b)
			kr := sign.NewKeyring(k.pub)
			pol := Policy{Compatible: testCompat}
			ctx, cancel := context.WithCancel(context.Background())
			var last *Checkpoint
			inst, _ := NewInstaller(o, nil)
			_, err := inst.Install(ctx, Request{Source: src, Keyring: kr, Policy: pol, Booted: "A",
				OnProgress: func(p Progress) {
					if p.Chunk == 40 {
						cancel()
					}
				},
				OnCheckpoint: func(c Checkpoint) error { last = &c; return nil },
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want canceled", err)
			}
			if last == nil || last.Next != 32 || last.Bundle != h.ID() {
				t.Fatalf("last checkpoint %+v, want next chunk 32", last)
			}
			checkSlot(t, readSlot(t, b, len(img)), img, 41)

			// The chunks before the checkpoint are not re-sent: poison them
			// on the slot and the read-back must catch it.
			var resumed []int
			res, err := inst.Install(context.Background(), Request{Source: src, Keyring: kr, Policy: pol, Booted: "A", Resume: last,
				OnProgress: func(p Progress) { resumed = append(resumed, p.Chunk) }})
			if err != nil {
				t.Fatal(err)
			}
			if resumed[0] != 32 || res.Slots[0].Resumed != 32 {
				t.Fatalf("resumed at chunk %d (%d)", resumed[0], res.Slots[0].Resumed)
			}
			if !bytes.Equal(readSlot(t, b, len(img)), img) {
				t.Fatal("slot does not hold the image after resume")
			}
			f, err := os.OpenFile(b, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte{0}, 5*testChunk)
			f.Close()
			_, err = inst.Install(context.Background(), Request{Source: src, Keyring: kr, Policy: pol, Booted: "A", Resume: last})
			var ce *ChunkError
			if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &ce) || ce.Index != 5 {
				t.Fatalf("resume over a damaged prefix: %v, want a read-back hash mismatch at chunk 5", err)
			}

			other, _ := makeBundle(t, makeImage(10, len(img)), bundleSpec{signers: []testKey{k}})
			_, err = inst.Install(context.Background(), Request{Source: other, Keyring: kr, Policy: pol, Booted: "A", Resume: last})
			if !errors.Is(err, ErrResume) {
				t.Fatalf("resume with another bundle: %v, want ErrResume", err)
			}
		})
	}
}

func TestDelta(t *testing.T) {
	k := newKey(t)
	v1 := makeImage(11, imgSize)
	v2 := bytes.Clone(v1)
	for _, c := range []int{0, 7, 15, 20} { // 4 changed chunks, the partial last one too
		v2[c*testChunk+100] ^= 0xff
	}
	bpath, h := makeBundle(t, v2, bundleSpec{signers: []testKey{k}})
	for _, via := range []string{"file", "http"} {
		t.Run(via, func(t *testing.T) {
			src := bpath
			var reqs *atomic.Int32
			if via == "http" {
				var srv *httptest.Server
				srv, reqs = dropServer(t, bpath, 1<<30)
				src = srv.URL
			}
			a := writeFile(t, t.TempDir(), "a.img", v1)
			b := fileSlot(t, imgSize)
			o := slotOptions(a, b)
			o.Delta = true
			res, err := install(t, o, Request{Source: src, Keyring: sign.NewKeyring(k.pub), Policy: Policy{Compatible: testCompat}, Booted: "A"})
			if err != nil {
				t.Fatal(err)
			}
			if want := len(h.Manifest.Payloads[0].Chunks) - 4; res.Slots[0].Reused != want {
				t.Fatalf("reused %d chunks, want %d", res.Slots[0].Reused, want)
			}
			if !bytes.Equal(readSlot(t, b, imgSize), v2) {
				t.Fatal("slot does not hold v2")
			}
			// Chunks 1..6 (raw, 384 KiB) are skipped with a Range request;
			// the short runs of small zstd frames later are read through.
			if reqs != nil && reqs.Load() < 2 {
				t.Fatalf("%d HTTP requests: the unchanged chunks were downloaded, not skipped", reqs.Load())
			}
		})
	}
}

func TestMountedSlotBusy(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	k := newKey(t)
	img := makeImage(12, 4*testChunk)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	kr := sign.NewKeyring(k.pub)
	pol := Policy{Compatible: testCompat}

	mount := func(t *testing.T, dev string) {
		mnt := t.TempDir()
		if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount %s: %v: %s", dev, err, out)
		}
		t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	}
	mkfs := func(t *testing.T, dev, label string) {
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", label, dev).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
		}
	}
	t.Run("loop device mounted", func(t *testing.T) {
		dev := loopSlot(t, 4<<20)
		mkfs(t, dev, "otagwbusy")
		mount(t, dev)
		_, err := install(t, slotOptions(fileSlot(t, 4<<20), dev), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		if !errors.Is(err, ErrSlotBusy) {
			t.Fatalf("error %v, want ErrSlotBusy", err)
		}
	})
	t.Run("file behind a mounted loop device", func(t *testing.T) {
		f := fileSlot(t, 4<<20)
		mkfs(t, f, "otagwfile")
		out, err := exec.Command("losetup", "-f", "--show", f).Output()
		if err != nil {
			t.Fatal(err)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
		mount(t, dev)
		_, err = install(t, slotOptions(fileSlot(t, 4<<20), f), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		if !errors.Is(err, ErrSlotBusy) {
			t.Fatalf("error %v, want ErrSlotBusy", err)
		}
	})
	t.Run("by LABEL", func(t *testing.T) {
		dev := loopSlot(t, 4<<20)
		label := fmt.Sprintf("otagw%06d", rand.IntN(1000000))
		mkfs(t, dev, label)
		got, err := ResolveDevice("LABEL=" + label)
		if err != nil || got != dev {
			t.Fatalf("ResolveDevice(LABEL=%s) = %q, %v; want %s", label, got, err, dev)
		}
		res, err := install(t, slotOptions(fileSlot(t, 4<<20), "LABEL="+label), Request{Source: bpath, Keyring: kr, Policy: pol, Booted: "A"})
		if err != nil || res.Slots[0].Device != dev {
			t.Fatalf("install to LABEL=%s: %v", label, err)
		}
		if !bytes.Equal(readSlot(t, dev, len(img)), img) {
			t.Fatal("slot does not hold the image")
		}
	})
}

// rangeServer serves path and records each request's Range header and the
// body bytes it sent.
type rangeServer struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
	sent   atomic.Int64
}

func newRangeServer(t *testing.T, data []byte) *rangeServer {
	t.Helper()
	rs := &rangeServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.ranges = append(rs.ranges, r.Header.Get("Range"))
		rs.mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(&countWriter{ResponseWriter: w, n: &rs.sent}, r, "b.otab", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(rs.Close)
	return rs
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestDeltaRanges: a delta install over HTTP asks only for the bundle
// ranges it uses, each Range naming its end (so the server sends nothing
// past it), neighbouring chunks in one request; the result is byte-exact;
// a tampered chunk among the fetched ones is refused before it is written;
// and with nothing to reuse it falls back to reading the whole bundle.
func TestDeltaRanges(t *testing.T) {
	k := newKey(t)
	const chunks = 64
	v1 := makeImage(21, chunks*testChunk)
	v2 := bytes.Clone(v1)
	changed := []int{3, 4, 20, 40, 63}
	for _, c := range changed {
		v2[c*testChunk+1000] ^= 0xff
	}
	bpath, h := makeBundle(t, v2, bundleSpec{signers: []testKey{k}})
	data, err := os.ReadFile(bpath)
	if err != nil {
		t.Fatal(err)
	}
	p := &h.Manifest.Payloads[0]
	var need int64
	for _, c := range changed {
		need += p.Chunks[c].Size
	}
	run := func(t *testing.T, data, booted []byte) (*rangeServer, *Result, string, error) {
		rs := newRangeServer(t, data)
		a := writeFile(t, t.TempDir(), "a.img", booted)
		b := fileSlot(t, len(v2))
		o := slotOptions(a, b)
		o.Delta = true
		res, err := install(t, o, Request{Source: rs.URL, Keyring: sign.NewKeyring(k.pub), Policy: Policy{Compatible: testCompat}, Booted: "A"})
		return rs, res, b, err
	}

	t.Run("ranges", func(t *testing.T) {
		rs, res, b, err := run(t, data, v1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readSlot(t, b, len(v2)), v2) {
			t.Fatal("slot does not hold v2")
		}
		if res.Slots[0].Reused != chunks-len(changed) {
			t.Fatalf("reused %d chunks, want %d", res.Slots[0].Reused, chunks-len(changed))
		}
		for _, r := range rs.ranges {
			a, e, ok := strings.Cut(strings.TrimPrefix(r, "bytes="), "-")
			if !strings.HasPrefix(r, "bytes=") || !ok || a == "" || e == "" || strings.Contains(r, ",") {
				t.Errorf("request with Range %q: want bytes=START-END", r)
			}
		}
		// The header, the head, then chunks 3+4 in one request, 20, and
		// 40 to 63 (small zstd frames between them: cheaper to read
		// through than to ask for twice).
		head := bundle.HeaderSize + h.DataOffset()
		if sent := rs.sent.Load(); sent < head+need || sent > head+need+coalesceGap {
			t.Errorf("server sent %d bytes for a head of %d and changed chunks of %d (requests: %q)", sent, head, need, rs.ranges)
		}
		if n := len(rs.ranges); n != 5 {
			t.Errorf("%d requests %q, want 5: neighbouring chunks not fetched together", n, rs.ranges)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		bad := bytes.Clone(data)
		bad[h.DataOffset()+p.Offset+p.Chunks[20].Offset+5] ^= 1
		_, _, b, err := run(t, bad, v1)
		var ce *ChunkError
		if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &ce) || ce.Index != 20 {
			t.Fatalf("tampered chunk 20: %v, want a hash mismatch at chunk 20", err)
		}
		got := readSlot(t, b, len(v2))
		if bytes.Equal(got[20*testChunk:21*testChunk], v2[20*testChunk:21*testChunk]) ||
			bytes.Equal(got[20*testChunk:21*testChunk], bad[h.DataOffset()+p.Offset+p.Chunks[20].Offset:][:testChunk]) {
			t.Fatal("chunk 20 was written although it did not verify")
		}
	})

	t.Run("fallback", func(t *testing.T) {
		rs, res, b, err := run(t, data, makeImage(99, len(v2)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Slots[0].Reused != 0 || !bytes.Equal(readSlot(t, b, len(v2)), v2) {
			t.Fatalf("reused %d, or the slot does not hold v2", res.Slots[0].Reused)
		}
		// The header is asked for alone first: 24 bytes twice.
		if sent := rs.sent.Load(); sent != int64(len(data))+bundle.HeaderSize {
			t.Errorf("server sent %d bytes, the bundle has %d (requests %q)", sent, len(data), rs.ranges)
		}
	})
}

// TestDeltaCDC: with chunks cut by content, an update that inserts and
// deletes bytes (everything after them moves) still reuses most chunks
// from the booted slot, wherever they now sit; only the chunks around the
// edits are fetched, with bounded ranges; the result is byte-exact; a
// tampered fetched chunk is refused before it is written.
func TestDeltaCDC(t *testing.T) {
	k := newKey(t)
	v1 := makeImage(31, 8<<20)
	rnd := rand.New(rand.NewPCG(7, 7))
	for i := range len(v1) / 2 { // all random: every cut comes from content
		v1[len(v1)/2+i] = byte(rnd.Uint32())
	}
	ins := bytes.Repeat([]byte("inserted by v2 "), 300)
	v2 := append(append(append([]byte{}, v1[:3<<20]...), ins...), v1[3<<20:]...)
	v2 = append(v2[:6<<20], v2[6<<20+5000:]...) // 5000 bytes deleted
	v2[7<<20] ^= 0xff
	bpath, h := makeBundle(t, v2, bundleSpec{signers: []testKey{k}, chunking: bundle.ChunkingCDC})
	p := &h.Manifest.Payloads[0]
	if p.Chunking != bundle.ChunkingCDC || len(p.Chunks) < 64 {
		t.Fatalf("chunking %q, %d chunks", p.Chunking, len(p.Chunks))
	}
	data, err := os.ReadFile(bpath)
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, data []byte) (*rangeServer, *Result, string, error) {
		rs := newRangeServer(t, data)
		a := writeFile(t, t.TempDir(), "a.img", v1)
		b := fileSlot(t, len(v2))
		o := slotOptions(a, b)
		o.Delta = true
		res, err := install(t, o, Request{Source: rs.URL, Keyring: sign.NewKeyring(k.pub), Policy: Policy{Compatible: testCompat}, Booted: "A"})
		return rs, res, b, err
	}
	rs, res, b, err := run(t, data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readSlot(t, b, len(v2)), v2) {
		t.Fatal("slot does not hold v2")
	}
	// Three edits: a few chunks each, out of more than a hundred.
	if r := res.Slots[0].Reused; r < len(p.Chunks)-12 {
		t.Errorf("reused %d of %d chunks", r, len(p.Chunks))
	}
	if sent := rs.sent.Load(); sent > int64(len(data))/8 {
		t.Errorf("server sent %d of %d bytes", sent, len(data))
	}
	for _, r := range rs.ranges {
		if !strings.HasPrefix(r, "bytes=") || strings.HasSuffix(r, "-") {
			t.Errorf("request with Range %q: want bytes=START-END", r)
		}
	}

	// A chunk that must be fetched (it holds the inserted bytes), tampered.
	bad := bytes.Clone(data)
	var ci int
	for ci = range p.Chunks {
		if p.PlainOffset(ci+1) > 3<<20 {
			break
		}
	}
	bad[h.DataOffset()+p.Offset+p.Chunks[ci].Offset+3] ^= 1
	_, _, b, err = run(t, bad)
	var ce *ChunkError
	if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &ce) || ce.Index != ci {
		t.Fatalf("tampered chunk %d: %v, want a hash mismatch there", ci, err)
	}
	got := readSlot(t, b, len(v2))
	if bytes.Equal(got[p.PlainOffset(ci):p.PlainOffset(ci+1)], v2[p.PlainOffset(ci):p.PlainOffset(ci+1)]) {
		t.Fatal("the tampered chunk was written")
	}
}
