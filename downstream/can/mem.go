package can

import (
	"math/rand"
	"os"
	"runtime"
	"sync"
	"time"
)

// BusOptions configure an in-memory bus.
type BusOptions struct {
	// Bitrate paces the bus: each frame occupies FrameBits/Bitrate seconds
	// of a single shared medium and is delivered when its last bit is on
	// the wire; frames queue behind each other as on a real bus. 0: no pacing.
	Bitrate int
	// Faults are applied to every frame.
	Faults BusFaults
	// Seed seeds the fault dice.
	Seed int64
}

// BusFaults are the faults an in-memory bus injects. Drop and Corrupt are
// probabilities per frame.
type BusFaults struct {
	// Drop: the frame reaches no receiver (a node went bus-off, an adapter
	// overran its queue).
	Drop float64
	// Corrupt: one data bit of the frame is flipped and delivered as such.
	// On a real bus the CRC-15 rejects this; it models links without an
	// integrity check (slcan's ASCII over a serial line, a buggy adapter).
	Corrupt float64
	// Delay is added before every delivery.
	Delay time.Duration
	// Hook, when set, sees every frame first and may change it; returning
	// false drops it. It runs with the bus locked: it must not call the bus.
	Hook func(from int, f *Frame) bool
}

// BusStats count the traffic.
type BusStats struct {
	Frames    int64            `json:"frames"`
	Bits      int64            `json:"bits"` // FrameBits summed: bus time in bit times
	DataBytes int64            `json:"data_bytes"`
	ByID      map[uint32]int64 `json:"by_id"`
	Dropped   int64            `json:"dropped"`
	Corrupted int64            `json:"corrupted"`
}

// Bus is an in-memory CAN bus: every frame one Conn sends reaches every
// other attached Conn, in the order sent.
type Bus struct {
	o     BusOptions
	mu    sync.Mutex
	conns []*memConn
	rng   *rand.Rand
	busy  time.Time // pacing: when the medium is free again
	stats BusStats
	sleep func(time.Duration)
}

// NewBus returns an empty bus.
func NewBus(o BusOptions) *Bus {
	return &Bus{o: o, rng: rand.New(rand.NewSource(o.Seed)), stats: BusStats{ByID: map[uint32]int64{}}, sleep: time.Sleep}
}

// Attach connects a new node. Its index (0, 1, ...) is what Hook sees.
func (b *Bus) Attach() Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &memConn{bus: b, idx: len(b.conns), wake: make(chan struct{})}
	b.conns = append(b.conns, c)
	return c
}

// Stats returns a copy of the counters.
func (b *Bus) Stats() BusStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.ByID = map[uint32]int64{}
	for k, v := range b.stats.ByID {
		s.ByID[k] = v
	}
	return s
}

// SetFaults replaces the faults (e.g. to stop injecting before a check).
func (b *Bus) SetFaults(f BusFaults) {
	b.mu.Lock()
	b.o.Faults = f
	b.mu.Unlock()
}

// Unplug disconnects node i: its frames reach nobody and it receives
// nothing, until Plug. Frames queued for it are lost.
func (b *Bus) Unplug(i int) { b.setPlugged(i, false) }

// Plug reconnects node i.
func (b *Bus) Plug(i int) { b.setPlugged(i, true) }

func (b *Bus) setPlugged(i int, on bool) {
	b.mu.Lock()
	c := b.conns[i]
	b.mu.Unlock()
	c.mu.Lock()
	c.unplugged = !on
	if !on {
		c.q = nil
	}
	c.mu.Unlock()
}

func (b *Bus) send(from *memConn, f Frame) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if from.isUnplugged() {
		return nil // a disconnected node's frames go nowhere (and it cannot tell)
	}
	b.mu.Lock()
	fa := b.o.Faults
	if fa.Hook != nil && !fa.Hook(from.idx, &f) {
		b.stats.Dropped++
		b.mu.Unlock()
		return nil
	}
	var at time.Time
	if b.o.Bitrate > 0 {
		now := time.Now()
		start := b.busy
		if start.Before(now) {
			start = now
		}
		at = start.Add(BitTime(f, b.o.Bitrate))
		b.busy = at
	}
	b.stats.Frames++
	b.stats.Bits += int64(FrameBits(f))
	b.stats.DataBytes += int64(len(f.Payload()))
	b.stats.ByID[f.ID]++
	drop := fa.Drop > 0 && b.rng.Float64() < fa.Drop
	if !drop && fa.Corrupt > 0 && f.Len > 0 && !f.RTR && b.rng.Float64() < fa.Corrupt {
		bit := b.rng.Intn(int(f.Len) * 8)
		f.Data[bit/8] ^= 1 << (bit % 8)
		b.stats.Corrupted++
	}
	if drop {
		b.stats.Dropped++
	}
	conns := append([]*memConn(nil), b.conns...)
	b.mu.Unlock()
	// The sender's controller reports the frame sent once it is on the wire.
	if b.o.Bitrate > 0 {
		waitUntil(at, b.sleep)
	}
	if fa.Delay > 0 {
		b.sleep(fa.Delay)
	}
	if drop {
		return nil
	}
	for _, c := range conns {
		if c != from {
			c.deliver(f)
		}
	}
	return nil
}

// waitUntil returns at t: a timer sleep is late by up to a millisecond or
// more on a loaded machine, longer than a frame at 1 Mbit/s, so it sleeps
// until a millisecond before and yields the processor in a loop for the rest.
func waitUntil(t time.Time, sleep func(time.Duration)) {
	if d := time.Until(t); d > 2*time.Millisecond {
		sleep(d - time.Millisecond)
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// memConn is one node on a Bus.
type memConn struct {
	bus       *Bus
	idx       int
	mu        sync.Mutex
	q         []Frame
	wake      chan struct{}
	closed    bool
	unplugged bool
	dl        time.Time
}

func (c *memConn) isUnplugged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unplugged
}

func (c *memConn) deliver(f Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.unplugged {
		return
	}
	c.q = append(c.q, f)
	close(c.wake)
	c.wake = make(chan struct{})
}

func (c *memConn) Send(f Frame) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return c.bus.send(c, f)
}

func (c *memConn) Recv() (Frame, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return Frame{}, ErrClosed
		}
		if len(c.q) > 0 {
			f := c.q[0]
			c.q = c.q[1:]
			c.mu.Unlock()
			return f, nil
		}
		wake, dl := c.wake, c.dl
		c.mu.Unlock()
		if dl.IsZero() {
			<-wake
			continue
		}
		d := time.Until(dl)
		if d <= 0 {
			return Frame{}, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		select {
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// SetReadDeadline wakes a waiting Recv so that it sees the new deadline.
func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dl = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

func (c *memConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.wake)
	}
	return nil
}
