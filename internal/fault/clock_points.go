//go:build faultpoints

package fault

import (
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Clock, in a binary built with the faultpoints tag and $OTAGW_CLOCK_FILE
// set, is a clockwork.Clock whose time is read from that file (RFC 3339)
// at every call and runs on from there in real time since the file was
// written (its modification time), so an end-to-end test moves the
// daemon's one clock (maintenance windows and their scheduler, the reboot
// wait, the channel agent's polls) by rewriting the file instead of
// sleeping, while waits of seconds still pass. A file that is missing or
// does not parse means the real time. Its timers fire once the clock
// reaches their deadline (checked every PollEvery of real time), also
// when the file jumps past it. Without the variable it is nil: the
// daemon's real clock.
func Clock() clockwork.Clock {
	path := os.Getenv("OTAGW_CLOCK_FILE")
	if path == "" {
		return nil
	}
	return &FileClock{Path: path}
}

// PollEvery is how often, in real time, a FileClock's timers read the file.
const PollEvery = 20 * time.Millisecond

// FileClock is a clockwork.Clock read from a file (see Clock).
type FileClock struct{ Path string }

// Now is the file's time plus the real time since the file was written;
// the real time when the file is missing or does not parse.
func (c *FileClock) Now() time.Time {
	b, err := os.ReadFile(c.Path)
	if err != nil {
		return time.Now()
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Now()
	}
	if fi, err := os.Stat(c.Path); err == nil {
		if since := time.Since(fi.ModTime()); since > 0 {
			t = t.Add(since)
		}
	}
	return t
}

func (c *FileClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *FileClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

func (c *FileClock) After(d time.Duration) <-chan time.Time { return c.NewTimer(d).Chan() }

func (c *FileClock) Sleep(d time.Duration) { <-c.After(d) }

func (c *FileClock) NewTimer(d time.Duration) clockwork.Timer {
	return c.newTimer(d, nil, false)
}

func (c *FileClock) AfterFunc(d time.Duration, f func()) clockwork.Timer {
	return c.newTimer(d, f, false)
}

func (c *FileClock) NewTicker(d time.Duration) clockwork.Ticker {
	if d <= 0 {
		panic("fault: non-positive interval for NewTicker")
	}
	return fileTicker{c.newTimer(d, nil, true)}
}

// fileTicker is a repeating fileTimer as a clockwork.Ticker.
type fileTicker struct{ t *fileTimer }

func (k fileTicker) Chan() <-chan time.Time { return k.t.Chan() }
func (k fileTicker) Reset(d time.Duration)  { k.t.Reset(d) }
func (k fileTicker) Stop()                  { k.t.Stop() }

// fileTimer is a timer or ticker of a FileClock: a goroutine that reads
// the file every PollEvery until the deadline has passed.
type fileTimer struct {
	c      *FileClock
	f      func()
	repeat bool
	ch     chan time.Time

	mu       sync.Mutex
	period   time.Duration
	deadline time.Time
	stop     chan struct{} // nil: not running
}

func (c *FileClock) newTimer(d time.Duration, f func(), repeat bool) *fileTimer {
	t := &fileTimer{c: c, f: f, repeat: repeat, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

func (t *fileTimer) Chan() <-chan time.Time { return t.ch }

// Reset restarts the timer to fire d from the file's now; it reports
// whether the timer was running.
func (t *fileTimer) Reset(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.stopLocked()
	t.period, t.deadline = d, t.c.Now().Add(d)
	stop := make(chan struct{})
	t.stop = stop
	go t.run(stop)
	return was
}

// Stop stops the timer; it reports whether it was running.
func (t *fileTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopLocked()
}

func (t *fileTimer) stopLocked() bool {
	if t.stop == nil {
		return false
	}
	close(t.stop)
	t.stop = nil
	return true
}

func (t *fileTimer) run(stop chan struct{}) {
	tick := time.NewTicker(PollEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := t.c.Now()
		t.mu.Lock()
		if t.stop != stop { // stopped or reset meanwhile
			t.mu.Unlock()
			return
		}
		if now.Before(t.deadline) {
			t.mu.Unlock()
			continue
		}
		if t.repeat {
			t.deadline = now.Add(t.period)
		} else {
			t.stop = nil
		}
		t.mu.Unlock()
		if t.f != nil {
			go t.f()
		} else {
			select {
			case t.ch <- now:
			default: // like time.Ticker: a slow reader misses ticks
			}
		}
		if !t.repeat {
			return
		}
	}
}
