//go:build faultpoints

package fault

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeClock(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(at.Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFileClock: the time comes from the file and runs on from it; a
// timer fires when the file jumps past its deadline and not before; a
// stopped timer never fires; no file means the real time.
func TestFileClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock")
	t.Setenv("OTAGW_CLOCK_FILE", path)
	c := Clock()
	if c == nil {
		t.Fatal("Clock() is nil with OTAGW_CLOCK_FILE set")
	}
	if now := c.Now(); now.Year() < 2025 {
		t.Fatalf("no file: %v, want the real time", now)
	}
	noon := time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)
	writeClock(t, path, noon)
	if now := c.Now(); now.Before(noon) || !now.Before(noon.Add(time.Hour)) {
		t.Fatalf("Now %v, want %v running on", now, noon)
	}
	timer := c.NewTimer(time.Hour)
	fired := make(chan struct{})
	c.AfterFunc(time.Hour, func() { close(fired) })
	stopped := c.NewTimer(time.Hour)
	if !stopped.Stop() {
		t.Fatal("Stop of a running timer reported it stopped already")
	}
	// Before the deadline nothing fires: read the file many times over.
	for i := 0; i < 5; i++ {
		time.Sleep(2 * PollEvery)
		select {
		case <-timer.Chan():
			t.Fatal("the timer fired before the clock reached its deadline")
		case <-fired:
			t.Fatal("AfterFunc ran before the clock reached its deadline")
		default:
		}
	}
	writeClock(t, path, noon.Add(2*time.Hour))
	select {
	case at := <-timer.Chan():
		if at.Before(noon.Add(2 * time.Hour)) {
			t.Errorf("fired at %v, before the file's time", at)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the timer did not fire after the file jumped past its deadline")
	}
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFunc did not run after the file jumped past its deadline")
	}
	select {
	case <-stopped.Chan():
		t.Fatal("a stopped timer fired")
	case <-time.After(5 * PollEvery):
	}
	if timer.Stop() {
		t.Error("Stop of a timer that fired reported it running")
	}
}

// TestFileClockUnset: without OTAGW_CLOCK_FILE the daemon keeps its real clock.
func TestFileClockUnset(t *testing.T) {
	t.Setenv("OTAGW_CLOCK_FILE", "")
	if c := Clock(); c != nil {
		t.Fatalf("Clock() = %T without OTAGW_CLOCK_FILE, want nil", c)
	}
}
