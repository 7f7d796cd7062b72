package watchdog_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/watchdogtest"
)

func newHW(t *testing.T, clk clockwork.Clock, timeout time.Duration) (*watchdog.Hardware, *watchdogtest.Device) {
	t.Helper()
	dev := watchdogtest.New(watchdogtest.Config{Clock: clk})
	hw, err := watchdog.New(dev, opts(timeout))
	if err != nil {
		t.Fatalf("watchdog.New: %v", err)
	}
	return hw, dev
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runLoop starts loop.Run and returns a func that stops it and returns its error.
func runLoop(t *testing.T, ctx context.Context, loop *watchdog.Loop) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestLoopCadenceFollowsTimeout(t *testing.T) {
	t.Parallel()
	for _, timeout := range []time.Duration{2 * time.Second, 10 * time.Second, 60 * time.Second} {
		t.Run(timeout.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			clk := clockwork.NewFakeClock()
			hw, dev := newHW(t, clk, timeout)
			loop := watchdog.NewLoop(watchdog.LoopConfig{Hardware: hw, HardwareInterval: hw.PetInterval(), Clock: clk})
			if loop.Interval() != timeout/2 {
				t.Fatalf("Interval() = %v; want %v", loop.Interval(), timeout/2)
			}
			start := len(dev.KeepAlives()) // SETTIMEOUT and the first write in New
			runLoop(t, ctx, loop)
			if err := dev.WaitKeepAlives(ctx, start+1); err != nil { // the immediate tick
				t.Fatal(err)
			}
			if err := clk.BlockUntilContext(ctx, 1); err != nil { // the ticker
				t.Fatal(err)
			}
			const rounds = 6
			for i := 1; i <= rounds; i++ {
				// Just before the tick is due nothing more is sent.
				clk.Advance(loop.Interval() - time.Millisecond)
				if n := len(dev.KeepAlives()); n != start+i {
					t.Fatalf("round %d: %d keepalives before the tick is due; want %d", i, n, start+i)
				}
				clk.Advance(time.Millisecond)
				if err := dev.WaitKeepAlives(ctx, start+i+1); err != nil {
					t.Fatal(err)
				}
				if dev.Expired() {
					t.Fatalf("round %d: device expired while the loop was healthy", i)
				}
			}
			kas := dev.KeepAlives()[start:]
			for i := 1; i < len(kas); i++ {
				if d := kas[i].Sub(kas[i-1]); d != timeout/2 {
					t.Errorf("keepalive %d came %v after the previous; want %v (half the timeout)", i, d, timeout/2)
				}
			}
		})
	}
}

func TestLoopStallStopsPetting(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	clk := clockwork.NewFakeClock()
	hw, dev := newHW(t, clk, 10*time.Second)
	var notified []string
	var mu sync.Mutex
	loop := watchdog.NewLoop(watchdog.LoopConfig{
		Hardware: hw, HardwareInterval: hw.PetInterval(),
		Notify:         func(s string) error { mu.Lock(); notified = append(notified, s); mu.Unlock(); return nil },
		NotifyInterval: 5 * time.Second,
		Clock:          clk,
	})
	stall := make(chan struct{})
	entered := make(chan struct{}, 1)
	var stalled bool
	var smu sync.Mutex
	loop.AddProbe("state machine", func(context.Context) error {
		smu.Lock()
		s := stalled
		smu.Unlock()
		if s {
			entered <- struct{}{}
			<-stall // ignores its context: the loop goroutine is stuck
		}
		return nil
	})
	start := len(dev.KeepAlives())
	runLoop(t, ctx, loop)
	if err := dev.WaitKeepAlives(ctx, start+1); err != nil {
		t.Fatal(err)
	}
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	smu.Lock()
	stalled = true
	smu.Unlock()
	clk.Advance(5 * time.Second)
	<-entered
	petsAtStall := len(dev.KeepAlives())
	mu.Lock()
	notesAtStall := len(notified)
	mu.Unlock()
	for i := 0; i < 4; i++ {
		clk.Advance(5 * time.Second)
	}
	if got := len(dev.KeepAlives()); got != petsAtStall {
		t.Errorf("keepalives went on while the loop was stalled: %d -> %d", petsAtStall, got)
	}
	mu.Lock()
	if len(notified) != notesAtStall {
		t.Errorf("WATCHDOG=1 went on while the loop was stalled: %d -> %d", notesAtStall, len(notified))
	}
	mu.Unlock()
	if !dev.Expired() {
		t.Errorf("the hardware watchdog did not expire 20s after the loop stalled (timeout 10s)")
	}
	close(stall)
}

func TestLoopPetsOnlyWhileHealthy(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	clk := clockwork.NewFakeClock()
	hw, dev := newHW(t, clk, 10*time.Second)
	var changes []bool
	loop := watchdog.NewLoop(watchdog.LoopConfig{
		Hardware: hw, HardwareInterval: hw.PetInterval(), Clock: clk,
		OnChange: func(s watchdog.Status) { changes = append(changes, s.Healthy) },
	})
	var probeErr error
	loop.AddProbe("api", func(context.Context) error { return probeErr })
	beat := loop.Heartbeat("fanout", 8*time.Second)

	type step struct {
		advance  time.Duration
		probeErr error
		beat     bool
		wantPet  bool
	}
	for i, s := range []step{
		{advance: 0, wantPet: true},
		{advance: 5 * time.Second, probeErr: errors.New("socket gone"), wantPet: false},
		{advance: 5 * time.Second, beat: true, wantPet: true},
		{advance: 5 * time.Second, wantPet: true},  // beat 5s old, limit 8s
		{advance: 5 * time.Second, wantPet: false}, // 10s old: stale
		{advance: 0, beat: true, wantPet: true},
	} {
		clk.Advance(s.advance)
		probeErr = s.probeErr
		if s.beat {
			beat.Beat()
		}
		before := len(dev.KeepAlives())
		st := loop.Tick(ctx)
		petted := len(dev.KeepAlives()) > before
		if petted != s.wantPet || st.Healthy != s.wantPet {
			t.Errorf("step %d: petted=%v healthy=%v problems=%v; want %v", i, petted, st.Healthy, st.Problems, s.wantPet)
		}
		if st.Healthy != (st.Err() == nil) || (!st.Healthy && !errors.Is(st.Err(), watchdog.ErrUnhealthy)) {
			t.Errorf("step %d: Err() = %v for healthy=%v", i, st.Err(), st.Healthy)
		}
	}
	if want := []bool{false, true, false, true}; len(changes) != len(want) {
		t.Errorf("OnChange saw %v; want %v", changes, want)
	}
	beat.Stop()
	clk.Advance(time.Hour)
	if st := loop.Tick(ctx); !st.Healthy {
		t.Errorf("a stopped heartbeat still counts: %v", st.Problems)
	}
}

func TestLoopNeedsSomethingToPet(t *testing.T) {
	t.Parallel()
	var disabled *watchdog.Hardware
	for _, cfg := range []watchdog.LoopConfig{
		{},
		{Hardware: disabled, HardwareInterval: time.Second},
		{Notify: func(string) error { return nil }}, // systemd did not ask (no WATCHDOG_USEC)
	} {
		if err := watchdog.NewLoop(cfg).Run(testCtx(t)); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run(%+v) = %v; want the nothing-to-pet error", cfg, err)
		}
	}
}

// TestLoopNotifySocket drives go-systemd's real sd_notify over a unixgram
// NOTIFY_SOCKET: WATCHDOG=1 arrives only while the loop is healthy.
func TestLoopNotifySocket(t *testing.T) {
	ctx := testCtx(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "4000000")
	usec, err := daemon.SdWatchdogEnabled(false)
	if err != nil || usec != 4*time.Second {
		t.Fatalf("SdWatchdogEnabled = %v, %v", usec, err)
	}

	clk := clockwork.NewFakeClock()
	loop := watchdog.NewLoop(watchdog.LoopConfig{
		Notify: func(s string) error {
			sent, err := daemon.SdNotify(false, s)
			if err == nil && !sent {
				err = errors.New("NOTIFY_SOCKET not set")
			}
			return err
		},
		NotifyInterval: usec / 2,
		Clock:          clk,
	})
	healthy := true
	loop.AddProbe("health", func(context.Context) error {
		if healthy {
			return nil
		}
		return errors.New("required check failed")
	})

	pending := func() []string {
		// Non-blocking reads: sd_notify's sendmsg has queued its datagram
		// before SdNotify returns, so an empty queue means none was sent.
		var got []string
		rc, err := conn.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		for {
			var n int
			var rerr error
			if err := rc.Read(func(fd uintptr) bool {
				n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if rerr != nil {
				return got
			}
			got = append(got, string(buf[:n]))
		}
	}
	for i, s := range []struct {
		healthy bool
		want    int
	}{{true, 1}, {true, 1}, {false, 0}, {false, 0}, {true, 1}} {
		healthy = s.healthy
		clk.Advance(loop.Interval())
		st := loop.Tick(ctx)
		got := pending()
		if len(got) != s.want {
			t.Errorf("tick %d (healthy=%v): datagrams %q; want %d", i, s.healthy, got, s.want)
		}
		for _, g := range got {
			if g != "WATCHDOG=1" {
				t.Errorf("tick %d: datagram %q; want WATCHDOG=1", i, g)
			}
		}
		if st.PetErr != "" {
			t.Errorf("tick %d: PetErr %s", i, st.PetErr)
		}
	}
}
