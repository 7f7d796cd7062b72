package torture

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// client is a minimal NBD client (fixed newstyle, NBD_OPT_GO) for tests.
type client struct {
	t *testing.T
	c net.Conn
	h uint64
}

func dial(t *testing.T, d *Disk) *client {
	t.Helper()
	a, b := net.Pipe()
	go func() { defer b.Close(); d.serveConn(b) }()
	be := binary.BigEndian
	hello := make([]byte, 18)
	if _, err := io.ReadFull(a, hello); err != nil {
		t.Fatal(err)
	}
	if be.Uint64(hello) != nbdMagic || be.Uint64(hello[8:]) != nbdOptMagic {
		t.Fatalf("bad greeting %x", hello)
	}
	a.Write([]byte{0, 0, 0, nbdFlagFixedNewstyle | nbdFlagNoZeroes})
	// An option the server does not know, then GO.
	for _, opt := range []uint32{8, nbdOptGo} {
		data := []byte{0, 0, 0, 0, 0, 0}
		req := make([]byte, 16)
		be.PutUint64(req, nbdOptMagic)
		be.PutUint32(req[8:], opt)
		be.PutUint32(req[12:], uint32(len(data)))
		a.Write(append(req, data...))
		for {
			rep := make([]byte, 20)
			if _, err := io.ReadFull(a, rep); err != nil {
				t.Fatal(err)
			}
			typ, n := be.Uint32(rep[12:]), be.Uint32(rep[16:])
			body := make([]byte, n)
			io.ReadFull(a, body)
			if typ == nbdRepInfo && int64(be.Uint64(body[2:])) != d.Size() {
				t.Fatalf("export size %d, want %d", be.Uint64(body[2:]), d.Size())
			}
			if typ == nbdRepAck || typ == nbdRepErrUnsup {
				break
			}
		}
	}
	return &client{t: t, c: a}
}

func (c *client) do(typ, flags uint16, off int64, n int, data []byte) (uint32, []byte) {
	c.t.Helper()
	be := binary.BigEndian
	c.h++
	req := make([]byte, 28)
	be.PutUint32(req, nbdRequestMagic)
	be.PutUint16(req[4:], flags)
	be.PutUint16(req[6:], typ)
	be.PutUint64(req[8:], c.h)
	be.PutUint64(req[16:], uint64(off))
	be.PutUint32(req[24:], uint32(n))
	if _, err := c.c.Write(append(req, data...)); err != nil {
		c.t.Fatal(err)
	}
	rep := make([]byte, 16)
	if _, err := io.ReadFull(c.c, rep); err != nil {
		c.t.Fatal(err)
	}
	if be.Uint32(rep) != nbdReplyMagic || be.Uint64(rep[8:]) != c.h {
		c.t.Fatalf("bad reply %x", rep)
	}
	errno := be.Uint32(rep[4:])
	var out []byte
	if typ == nbdCmdRead && errno == 0 {
		out = make([]byte, n)
		io.ReadFull(c.c, out)
	}
	return errno, out
}

func (c *client) write(off int64, data []byte, fua bool) {
	c.t.Helper()
	var f uint16
	if fua {
		f = nbdCmdFlagFUA
	}
	if e, _ := c.do(nbdCmdWrite, f, off, len(data), data); e != 0 {
		c.t.Fatalf("write at %d: errno %d", off, e)
	}
}

func (c *client) read(off int64, n int) []byte {
	c.t.Helper()
	e, b := c.do(nbdCmdRead, 0, off, n, nil)
	if e != 0 {
		c.t.Fatalf("read at %d: errno %d", off, e)
	}
	return b
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// The guest reads its own unflushed writes; only a flush (or FUA) makes
// them durable; a cut that drops everything leaves the durable image.
func TestDiskCacheFlushAndCut(t *testing.T) {
	d := NewDisk("t", 8192)
	c := dial(t, d)
	c.write(0, fill(1, 1024), false)
	c.write(512, fill(2, 512), false)
	if got := c.read(0, 1024); !bytes.Equal(got, append(fill(1, 512), fill(2, 512)...)) {
		t.Fatalf("read after write does not see the cache: %x", got[:8])
	}
	if dur := d.Durable(); dur[0] != 0 {
		t.Fatalf("an unflushed write is durable")
	}
	if e, _ := c.do(nbdCmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("flush: errno %d", e)
	}
	if dur := d.Durable(); dur[0] != 1 || dur[512] != 2 {
		t.Fatalf("flushed writes not durable: %d %d", dur[0], dur[512])
	}
	c.write(2048, fill(3, 512), false)
	c.write(4096, fill(4, 512), true)
	st := d.Cut(rand.New(rand.NewPCG(1, 1)), 0, 1) // drop everything not FUA
	if st.Dropped != 1 || st.FUA != 1 {
		t.Fatalf("cut: %+v, want 1 dropped, 1 FUA", st)
	}
	dur := d.Durable()
	if dur[2048] != 0 || dur[4096] != 4 {
		t.Fatalf("after the cut: dropped write %d (want 0), FUA write %d (want 4)", dur[2048], dur[4096])
	}
	if n, _ := d.Pending(); n != 0 {
		t.Fatalf("%d writes still cached after the cut", n)
	}
	// Out of range is refused, not a crash.
	if e, _ := c.do(nbdCmdRead, 0, 8000, 512, nil); e != errInval {
		t.Errorf("read past the end: errno %d, want EINVAL", e)
	}
}

// A torn write keeps some units of itself and loses the others.
func TestDiskTornWrite(t *testing.T) {
	d := NewDisk("t", 64<<10)
	d.TearUnit = 16
	c := dial(t, d)
	c.write(0, fill(7, 32<<10), false)
	d.Cut(rand.New(rand.NewPCG(2, 2)), 0, 0)
	dur := d.Durable()
	kept := 0
	for u := 0; u < 32<<10; u += 16 {
		switch {
		case bytes.Equal(dur[u:u+16], fill(7, 16)):
			kept++
		case !bytes.Equal(dur[u:u+16], fill(0, 16)):
			t.Fatalf("unit at %d is neither old nor new", u)
		}
	}
	if kept == 0 || kept == 2048 {
		t.Fatalf("a torn write kept %d of 2048 units", kept)
	}
}

// Evicting an old write from a full cache must not undo a newer FUA
// write over the same bytes.
func TestDiskEvictionKeepsFUA(t *testing.T) {
	d := NewDisk("t", 1<<20)
	d.CacheBytes = 4096
	c := dial(t, d)
	c.write(0, fill(1, 4096), false)
	c.write(0, fill(2, 512), true)
	c.write(8192, fill(3, 4096), false) // evicts the first write
	if dur := d.Durable(); dur[0] != 2 || dur[600] != 1 {
		t.Fatalf("after eviction: %d %d, want 2 (FUA) and 1 (evicted)", dur[0], dur[600])
	}
	if got := c.read(0, 1); got[0] != 2 {
		t.Fatalf("read %d, want the FUA write", got[0])
	}
}

// FuzzNBDServer feeds arbitrary client bytes to the server: it must
// answer or hang up, never crash or write outside the disk.
func FuzzNBDServer(f *testing.F) {
	be := binary.BigEndian
	seed := []byte{0, 0, 0, 3}
	opt := make([]byte, 16)
	be.PutUint64(opt, nbdOptMagic)
	be.PutUint32(opt[8:], nbdOptExportName)
	seed = append(seed, opt...)
	req := make([]byte, 28)
	be.PutUint32(req, nbdRequestMagic)
	be.PutUint16(req[6:], nbdCmdWrite)
	be.PutUint64(req[16:], 4090)
	be.PutUint32(req[24:], 8)
	f.Add(append(append(seed, req...), fill(9, 8)...))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDisk("f", 4096)
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); defer b.Close(); d.serveConn(b) }()
		go io.Copy(io.Discard, a)
		a.Write(in)
		a.Close()
		<-done
		if len(d.Durable()) != 4096 {
			t.Fatal("disk size changed")
		}
	})
}
