package torture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
)

// The NBD protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md),
// fixed newstyle negotiation and simple replies: what QEMU's NBD client
// needs to use a Disk as a drive.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic     = 0x3e889045565a9
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698

	nbdFlagFixedNewstyle = 1 << 0
	nbdFlagNoZeroes      = 1 << 1

	nbdOptExportName = 1
	nbdOptAbort      = 2
	nbdOptInfo       = 6
	nbdOptGo         = 7

	nbdRepAck      = 1
	nbdRepInfo     = 3
	nbdRepErrUnsup = 1<<31 | 1

	nbdFlagHasFlags  = 1 << 0
	nbdFlagSendFlush = 1 << 2
	nbdFlagSendFUA   = 1 << 3

	nbdCmdRead  = 0
	nbdCmdWrite = 1
	nbdCmdDisc  = 2
	nbdCmdFlush = 3

	nbdCmdFlagFUA = 1 << 0

	errIO    = 5
	errInval = 22

	// SectorSize is the unit a torn write keeps or loses.
	SectorSize = 512
)

// write is one write the guest issued that has not been flushed.
type write struct {
	off  int64
	data []byte
	fua  bool // forced unit access: durable when acknowledged
}

// Disk is a virtual disk with a volatile write cache. Durable holds what
// survives a power cut; writes land in a cache first and reach Durable
// on a flush (NBD_CMD_FLUSH), when they carry FUA, or when the cache
// holds more than CacheBytes and the oldest write is evicted. At Cut,
// every write still in the cache is kept, dropped or torn (a random
// subset of its sectors kept).
type Disk struct {
	Name       string
	CacheBytes int // 0 means 4 MiB
	// TearUnit is what a torn write keeps or loses as a whole; 0 means
	// SectorSize (a disk that writes sectors atomically). Raw flash may
	// leave part of a page programmed: a smaller unit models it.
	TearUnit int

	mu       sync.Mutex
	durable  []byte
	pending  []write
	pendSize int
	dead     bool
	conns    []net.Conn
	ln       net.Listener
	// OnWrite is called (without the lock) after each write request was
	// taken into the cache and before it is acknowledged.
	OnWrite func(d *Disk)

	Writes, Flushes int // counters since the last Reset
}

// NewDisk is a disk of size bytes, zero-filled.
func NewDisk(name string, size int64) *Disk {
	return &Disk{Name: name, durable: make([]byte, size)}
}

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 { return int64(len(d.durable)) }

// Durable returns a copy of what survives a power cut now.
func (d *Disk) Durable() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.durable...)
}

// Load replaces the disk's durable content (the cache must be empty).
func (d *Disk) Load(data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.pending) > 0 {
		return fmt.Errorf("disk %s: load with %d cached writes", d.Name, len(d.pending))
	}
	if len(data) != len(d.durable) {
		return fmt.Errorf("disk %s: load of %d bytes into a disk of %d", d.Name, len(data), len(d.durable))
	}
	copy(d.durable, data)
	return nil
}

// LoadFile loads the durable content from a file.
func (d *Disk) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return d.Load(b)
}

// SaveFile writes the durable content to a file.
func (d *Disk) SaveFile(path string) error {
	return os.WriteFile(path, d.Durable(), 0o644)
}

// Pending is the number of writes in the cache and their bytes.
func (d *Disk) Pending() (n, bytes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending), d.pendSize
}

// CutStats says what a Cut did to the cache.
type CutStats struct {
	Kept, Dropped, Torn, FUA int
}

// Cut is the power going: the server stops answering, and each cached
// write is kept (probability keep), dropped, or torn (the rest: each
// TearUnit of it kept or not), chosen with rng. Writes with FUA were durable already and stay.
func (d *Disk) Cut(rng *rand.Rand, keep, drop float64) CutStats {
	d.mu.Lock()
	d.dead = true
	conns := d.conns
	d.conns = nil
	var st CutStats
	for _, w := range d.pending {
		if w.fua {
			st.FUA++
			copy(d.durable[w.off:], w.data)
			continue
		}
		r := rng.Float64()
		switch {
		case r < keep:
			st.Kept++
			copy(d.durable[w.off:], w.data)
		case r < keep+drop:
			st.Dropped++
		default:
			st.Torn++
			unit := d.TearUnit
			if unit <= 0 {
				unit = SectorSize
			}
			for s := 0; s < len(w.data); s += unit {
				if rng.IntN(2) == 0 {
					e := min(s+unit, len(w.data))
					copy(d.durable[w.off+int64(s):], w.data[s:e])
				}
			}
		}
	}
	d.pending, d.pendSize = nil, 0
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return st
}

// freeze stops the disk taking writes (the power is going).
func (d *Disk) freeze() {
	d.mu.Lock()
	d.dead = true
	d.mu.Unlock()
}

// powerOff is a clean power-off: the guest flushed before it, and what
// the cache may still hold is written back.
func (d *Disk) powerOff() {
	d.mu.Lock()
	for _, w := range d.pending {
		copy(d.durable[w.off:], w.data)
	}
	d.pending, d.pendSize = nil, 0
	d.mu.Unlock()
}

// Reset makes a cut disk serve again (the next power-on).
func (d *Disk) Reset() {
	d.mu.Lock()
	d.dead = false
	d.Writes, d.Flushes = 0, 0
	d.mu.Unlock()
}

// Serve listens on a Unix socket and serves the disk to every client
// until Close.
func (d *Disk) Serve(socket string) error {
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("disk %s: %w", d.Name, err)
	}
	d.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
			go func() {
				defer c.Close()
				_ = d.serveConn(c)
			}()
		}
	}()
	return nil
}

// Close stops serving.
func (d *Disk) Close() {
	if d.ln != nil {
		d.ln.Close()
	}
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (d *Disk) serveConn(c net.Conn) error {
	be := binary.BigEndian
	hello := make([]byte, 18)
	be.PutUint64(hello[0:], nbdMagic)
	be.PutUint64(hello[8:], nbdOptMagic)
	be.PutUint16(hello[16:], nbdFlagFixedNewstyle|nbdFlagNoZeroes)
	if _, err := c.Write(hello); err != nil {
		return err
	}
	var cflags [4]byte
	if _, err := io.ReadFull(c, cflags[:]); err != nil {
		return err
	}
	noZeroes := be.Uint32(cflags[:])&nbdFlagNoZeroes != 0
	tflags := uint16(nbdFlagHasFlags | nbdFlagSendFlush | nbdFlagSendFUA)
	reply := func(opt, typ uint32, data []byte) error {
		h := make([]byte, 20+len(data))
		be.PutUint64(h[0:], nbdRepMagic)
		be.PutUint32(h[8:], opt)
		be.PutUint32(h[12:], typ)
		be.PutUint32(h[16:], uint32(len(data)))
		copy(h[20:], data)
		_, err := c.Write(h)
		return err
	}
	for {
		var oh [16]byte
		if _, err := io.ReadFull(c, oh[:]); err != nil {
			return err
		}
		if be.Uint64(oh[0:]) != nbdOptMagic {
			return fmt.Errorf("disk %s: bad option magic %#x", d.Name, be.Uint64(oh[0:]))
		}
		opt, n := be.Uint32(oh[8:]), be.Uint32(oh[12:])
		if n > 1<<16 {
			return fmt.Errorf("disk %s: option %d of %d bytes", d.Name, opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return err
		}
		switch opt {
		case nbdOptExportName:
			r := make([]byte, 10, 10+124)
			be.PutUint64(r[0:], uint64(d.Size()))
			be.PutUint16(r[8:], tflags)
			if !noZeroes {
				r = append(r, make([]byte, 124)...)
			}
			if _, err := c.Write(r); err != nil {
				return err
			}
			return d.transmit(c)
		case nbdOptGo, nbdOptInfo:
			info := make([]byte, 12)
			be.PutUint16(info[0:], 0) // NBD_INFO_EXPORT
			be.PutUint64(info[2:], uint64(d.Size()))
			be.PutUint16(info[10:], tflags)
			if err := reply(opt, nbdRepInfo, info); err != nil {
				return err
			}
			if err := reply(opt, nbdRepAck, nil); err != nil {
				return err
			}
			if opt == nbdOptGo {
				return d.transmit(c)
			}
		case nbdOptAbort:
			_ = reply(opt, nbdRepAck, nil)
			return nil
		default:
			if err := reply(opt, nbdRepErrUnsup, nil); err != nil {
				return err
			}
		}
	}
}

var errCut = errors.New("power cut")

func (d *Disk) transmit(c net.Conn) error {
	be := binary.BigEndian
	var h [28]byte
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return err
		}
		if be.Uint32(h[0:]) != nbdRequestMagic {
			return fmt.Errorf("disk %s: bad request magic %#x", d.Name, be.Uint32(h[0:]))
		}
		flags, typ := be.Uint16(h[4:]), be.Uint16(h[6:])
		handle, off, n := be.Uint64(h[8:]), int64(be.Uint64(h[16:])), int64(be.Uint32(h[24:]))
		var data []byte
		if typ == nbdCmdWrite {
			if n > 64<<20 {
				return fmt.Errorf("disk %s: write of %d bytes", d.Name, n)
			}
			data = make([]byte, n)
			if _, err := io.ReadFull(c, data); err != nil {
				return err
			}
		}
		var rdata []byte
		errno := uint32(0)
		inRange := off >= 0 && n >= 0 && off+n <= d.Size()
		switch typ {
		case nbdCmdRead:
			if !inRange || n > 64<<20 {
				errno = errInval
				break
			}
			var err error
			if rdata, err = d.read(off, n); err != nil {
				return err
			}
		case nbdCmdWrite:
			if !inRange {
				errno = errInval
				break
			}
			if err := d.write(off, data, flags&nbdCmdFlagFUA != 0); err != nil {
				return err
			}
			if d.OnWrite != nil {
				d.OnWrite(d)
			}
			if d.isDead() {
				return errCut
			}
		case nbdCmdFlush:
			if err := d.flush(); err != nil {
				return err
			}
		case nbdCmdDisc:
			return nil
		default:
			errno = errInval
		}
		r := make([]byte, 16, 16+len(rdata))
		be.PutUint32(r[0:], nbdReplyMagic)
		be.PutUint32(r[4:], errno)
		be.PutUint64(r[8:], handle)
		if errno == 0 {
			r = append(r, rdata...)
		}
		if _, err := c.Write(r); err != nil {
			return err
		}
	}
}

func (d *Disk) isDead() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead
}

func (d *Disk) read(off, n int64) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return nil, errCut
	}
	b := append([]byte(nil), d.durable[off:off+n]...)
	for _, w := range d.pending {
		lo, hi := max(off, w.off), min(off+n, w.off+int64(len(w.data)))
		if lo < hi {
			copy(b[lo-off:hi-off], w.data[lo-w.off:hi-w.off])
		}
	}
	return b, nil
}

func (d *Disk) write(off int64, data []byte, fua bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return errCut
	}
	d.Writes++
	if fua {
		copy(d.durable[off:], data)
	}
	d.pending = append(d.pending, write{off: off, data: data, fua: fua})
	d.pendSize += len(data)
	limit := d.CacheBytes
	if limit <= 0 {
		limit = 4 << 20
	}
	// A full cache writes its oldest data back on its own.
	for d.pendSize > limit && len(d.pending) > 1 {
		w := d.pending[0]
		copy(d.durable[w.off:], w.data)
		d.pendSize -= len(w.data)
		d.pending = d.pending[1:]
		// A later write with FUA is already durable and newer.
		for _, l := range d.pending {
			if l.fua && l.off < w.off+int64(len(w.data)) && w.off < l.off+int64(len(l.data)) {
				copy(d.durable[l.off:], l.data)
			}
		}
	}
	return nil
}

func (d *Disk) flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return errCut
	}
	d.Flushes++
	for _, w := range d.pending {
		copy(d.durable[w.off:], w.data)
	}
	d.pending, d.pendSize = nil, 0
	return nil
}
