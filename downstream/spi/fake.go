package spi

import (
	"fmt"
	"math/rand"
	"sync"
	"time"
)

// Slave is the device end of a bus: it is clocked one byte at a time and
// returns the byte it shifts out on MISO during that byte.
type Slave interface {
	Clock(mosi byte) (miso byte)
}

// Resetter is a Slave that can lose power (a disconnect resets it).
type Resetter interface {
	Reset()
}

// Idle is what MISO reads when no slave drives it (pulled up).
const Idle = 0xFF

// Faults are the line faults a Fake injects between master and slave.
type Faults struct {
	// CorruptPerKiB: expected corrupted bytes per KiB, in either direction
	// (the byte XORed with a random non-zero value).
	CorruptPerKiB float64
	// DropPerKiB: expected bytes per KiB the slave misses (it is not
	// clocked; the master reads Idle).
	DropPerKiB float64
	// StuckAfter: after this many bytes the slave sticks busy for StuckFor
	// bytes (it ignores MOSI and MISO reads Busy); StuckFor < 0 means for
	// good. 0 = never.
	StuckAfter int64
	StuckFor   int64
	// Busy is the byte a stuck slave returns; 0 means 0xA5, the STM32
	// bootloader's filler.
	Busy byte
	// DisconnectAfter: after this many bytes the bus fails: Transfer returns
	// ErrDisconnected DisconnectFor times (< 0: for good), and a Resetter
	// slave is reset (it lost power). 0 = never.
	DisconnectAfter int64
	DisconnectFor   int
}

// FakeStats counts what crossed a Fake.
type FakeStats struct {
	Transfers   int64         `json:"transfers"`
	Bytes       int64         `json:"bytes"`
	Corrupted   int           `json:"corrupted"`
	Dropped     int           `json:"dropped"`
	StuckBytes  int64         `json:"stuck_bytes"`
	Disconnects int           `json:"disconnects"`
	BusTime     time.Duration `json:"bus_time"` // clock time of the bytes at the configured speed
}

// Fake is an in-memory SPI bus to one Slave, for tests and benchmarks.
type Fake struct {
	mu      sync.Mutex
	slave   Slave
	cfg     Config
	f       Faults
	rng     *rand.Rand
	pace    bool
	due     time.Time
	over    time.Duration // how late the last pacing sleep woke
	st      FakeStats
	discOn  bool
	discN   int
	closed  bool
	stuckTo int64
}

// FakeOptions configure a Fake.
type FakeOptions struct {
	Config Config
	Faults Faults
	Seed   int64
	// Pace makes every transfer take the time its bits take at
	// Config.SpeedHz (the bus's physical limit), so that throughput can be
	// measured against the clock rate. Without it transfers are instant.
	Pace bool
}

// NewFake connects a master to slave.
func NewFake(slave Slave, o FakeOptions) *Fake {
	cfg := o.Config.WithDefaults()
	if cfg.Device == "" {
		cfg.Device = "fake"
	}
	if o.Faults.Busy == 0 {
		o.Faults.Busy = 0xA5
	}
	return &Fake{slave: slave, cfg: cfg, f: o.Faults, rng: rand.New(rand.NewSource(o.Seed)), pace: o.Pace}
}

// Transfer clocks tx through the slave.
func (b *Fake) Transfer(tx, rx []byte) error {
	if err := checkLen(tx, rx); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("spi %s: closed", b.cfg.Device)
	}
	if b.discOn {
		if b.discN == 0 {
			b.discOn = false
		} else {
			if b.discN > 0 {
				b.discN--
			}
			b.mu.Unlock()
			return fmt.Errorf("spi %s: %w", b.cfg.Device, ErrDisconnected)
		}
	}
	b.st.Transfers++
	f := &b.f
	for i, m := range tx {
		b.st.Bytes++
		if f.DisconnectAfter > 0 && b.st.Bytes == f.DisconnectAfter {
			b.st.Disconnects++
			b.discOn, b.discN = true, f.DisconnectFor
			if r, ok := b.slave.(Resetter); ok {
				r.Reset()
			}
			b.mu.Unlock()
			return fmt.Errorf("spi %s: %w after %d bytes", b.cfg.Device, ErrDisconnected, i)
		}
		if f.StuckAfter > 0 && b.st.Bytes == f.StuckAfter {
			b.stuckTo = -1
			if f.StuckFor >= 0 {
				b.stuckTo = b.st.Bytes + f.StuckFor
			}
		}
		if b.stuckTo != 0 && (b.stuckTo < 0 || b.st.Bytes < b.stuckTo) {
			b.st.StuckBytes++
			rx[i] = f.Busy
			continue
		}
		if f.DropPerKiB > 0 && b.rng.Float64() < f.DropPerKiB/1024 {
			b.st.Dropped++
			rx[i] = Idle
			continue
		}
		if f.CorruptPerKiB > 0 && b.rng.Float64() < f.CorruptPerKiB/2048 {
			m ^= byte(1 + b.rng.Intn(255))
			b.st.Corrupted++
		}
		s := b.slave.Clock(m)
		if f.CorruptPerKiB > 0 && b.rng.Float64() < f.CorruptPerKiB/2048 {
			s ^= byte(1 + b.rng.Intn(255))
			b.st.Corrupted++
		}
		rx[i] = s
	}
	d := ByteTime(b.cfg, len(tx))
	b.st.BusTime += d
	var wait time.Duration
	var due time.Time
	if b.pace {
		// The clock runs from due; a bus left idle by the master restarts
		// now, but the time the last pacing sleep overslept (scheduler
		// latency, an artifact of the fake) is not counted as idle.
		now := time.Now()
		if start := now.Add(-b.over); b.due.Before(start) {
			b.due = start
		}
		b.over = 0
		b.due = b.due.Add(d)
		due = b.due
		wait = b.due.Sub(now)
	}
	b.mu.Unlock()
	if wait > 200*time.Microsecond { // sleep in batches: the debt is kept in due
		time.Sleep(wait)
		if late := time.Since(due); late > 0 {
			b.mu.Lock()
			b.over = late
			b.mu.Unlock()
		}
	}
	return nil
}

// ByteTime is the time n words take at c's clock.
func ByteTime(c Config, n int) time.Duration {
	c = c.WithDefaults()
	return time.Duration(int64(n) * int64(c.BitsPerWord) * int64(time.Second) / int64(c.SpeedHz))
}

// Stats returns the counters.
func (b *Fake) Stats() FakeStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

// Config returns the bus settings.
func (b *Fake) Config() Config { return b.cfg }

// Close makes further transfers fail.
func (b *Fake) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
