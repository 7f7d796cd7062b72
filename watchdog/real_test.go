package watchdog_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/watchdogtest"
)

// The TestReal* tests drive real kernel watchdog drivers. They run only in
// the QEMU guest that tests/qemu boots (OTAGW_QEMU_GUEST=1): on any other
// machine they could arm, or even reset, the host.

type realDev struct {
	dev      string // /dev/watchdogN
	sys      string // /sys/class/watchdog/watchdogN
	identity string
}

func inGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("OTAGW_QEMU_GUEST") != "1" {
		t.Skip("real watchdog drivers are only driven inside the QEMU guest (OTAGW_QEMU_GUEST=1); tests/qemu runs this test there")
	}
}

func realDevices(t *testing.T) []realDev {
	t.Helper()
	sys, _ := filepath.Glob("/sys/class/watchdog/watchdog*")
	var out []realDev
	for _, s := range sys {
		id, err := os.ReadFile(filepath.Join(s, "identity"))
		if err != nil {
			t.Fatalf("read %s/identity: %v", s, err)
		}
		out = append(out, realDev{dev: "/dev/" + filepath.Base(s), sys: s, identity: strings.TrimSpace(string(id))})
	}
	if len(out) == 0 {
		t.Fatal("in the guest but no watchdog in /sys/class/watchdog: were the modules loaded?")
	}
	return out
}

func sysState(t *testing.T, d realDev) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.sys, "state"))
	if err != nil {
		t.Fatalf("read %s/state: %v", d.sys, err)
	}
	return strings.TrimSpace(string(b))
}

func subName(d realDev) string {
	return strings.NewReplacer(" ", "_", "/", "_").Replace(filepath.Base(d.dev) + "_" + d.identity)
}

// TestRealDriver: set the timeout and read it back, keepalive, time left,
// boot status and magic close against each watchdog driver in the guest.
func TestRealDriver(t *testing.T) {
	inGuest(t)
	for _, d := range realDevices(t) {
		t.Run(subName(d), func(t *testing.T) {
			o := watchdog.DefaultOptions()
			o.Device = d.dev
			o.Timeout = 7 * time.Second
			hw, err := watchdog.Open(o)
			if err != nil {
				t.Fatalf("Open(%s): %v", d.dev, err)
			}
			defer hw.Close()
			t.Logf("%s: identity %q options %v boot status %v", d.dev, hw.Info().Identity, hw.Info().Options, hw.BootStatus().Flags)
			if got := hw.Timeout(); got != 7*time.Second {
				t.Errorf("timeout read back with WDIOC_GETTIMEOUT = %v; want 7s", got)
			}
			if b, err := os.ReadFile(filepath.Join(d.sys, "timeout")); err != nil || strings.TrimSpace(string(b)) != "7" {
				t.Errorf("%s/timeout = %q, %v; want 7", d.sys, b, err)
			}
			if s := sysState(t, d); s != "active" {
				t.Errorf("state after open = %q; want active", s)
			}
			if err := hw.BootStatusErr(); err != nil {
				t.Errorf("boot status: %v", err)
			}
			if err := hw.KeepAlive(); err != nil {
				t.Errorf("KeepAlive: %v", err)
			}
			left, err := hw.TimeLeft()
			switch {
			case errors.Is(err, watchdog.ErrNotSupported):
				t.Logf("WDIOC_GETTIMELEFT: %s does not implement it: %v", d.identity, err)
			case err != nil:
				t.Errorf("TimeLeft: %v", err)
			case left <= 0 || left > 7*time.Second:
				t.Errorf("TimeLeft = %v; want in (0, 7s]", left)
			default:
				t.Logf("time left %v", left)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("Close (magic): %v", err)
			}
			if s := sysState(t, d); s != "inactive" {
				t.Errorf("state after magic close = %q; want inactive", s)
			}
		})
	}
}

// TestRealNoWayOut: closing without the magic character leaves the
// watchdog armed; reopening and magic-closing disarms it again.
func TestRealNoWayOut(t *testing.T) {
	inGuest(t)
	for _, d := range realDevices(t) {
		t.Run(subName(d), func(t *testing.T) {
			o := watchdog.DefaultOptions()
			o.Device = d.dev
			o.Timeout = 60 * time.Second
			o.NoWayOut = true
			hw, err := watchdog.Open(o)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if s := sysState(t, d); s != "active" {
				t.Errorf("state after close with nowayout = %q; want active (left armed)", s)
			}
			o.NoWayOut = false
			hw, err = watchdog.Open(o)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("magic close: %v", err)
			}
			if s := sysState(t, d); s != "inactive" {
				t.Errorf("state after magic close = %q; want inactive", s)
			}
		})
	}
}

// TestRealTimeLeft: a driver with WDIOC_GETTIMELEFT counts down between
// keepalives and starts over after one.
func TestRealTimeLeft(t *testing.T) {
	inGuest(t)
	var tested bool
	for _, d := range realDevices(t) {
		o := watchdog.DefaultOptions()
		o.Device = d.dev
		o.Timeout = 30 * time.Second
		hw, err := watchdog.Open(o)
		if err != nil {
			t.Fatalf("Open(%s): %v", d.dev, err)
		}
		if _, err := hw.TimeLeft(); errors.Is(err, watchdog.ErrNotSupported) {
			hw.Close()
			continue
		}
		tested = true
		t.Run(subName(d), func(t *testing.T) {
			defer hw.Close()
			first, err := hw.TimeLeft()
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(2100 * time.Millisecond)
			later, err := hw.TimeLeft()
			if err != nil {
				t.Fatal(err)
			}
			if later >= first {
				t.Errorf("time left did not go down: %v then %v", first, later)
			}
			if err := hw.KeepAlive(); err != nil {
				t.Fatal(err)
			}
			after, err := hw.TimeLeft()
			if err != nil {
				t.Fatal(err)
			}
			if after <= later {
				t.Errorf("time left after keepalive %v; want more than %v", after, later)
			}
			t.Logf("time left %v, 2s later %v, after keepalive %v", first, later, after)
		})
	}
	if !tested {
		t.Fatal("no watchdog in the guest implements WDIOC_GETTIMELEFT; load one that does")
	}
}

// script drives a watchdog.File the way the kernel's watchdog core is
// specified to answer and returns a transcript; the fake in watchdogtest
// and every real driver must give the same one (TestRealFakeConformance).
func script(f watchdog.File, armed func() bool) []string {
	var out []string
	ioctl := func(name string, req uint, v int32) {
		err := f.Ioctl(req, &v)
		out = append(out, fmt.Sprintf("%s -> %d, %v", name, v, errnoName(err)))
	}
	var wi unix.WatchdogInfo
	err := f.Support(&wi)
	out = append(out, fmt.Sprintf("GETSUPPORT -> settimeout=%v magicclose=%v, %v",
		wi.Options&unix.WDIOF_SETTIMEOUT != 0, wi.Options&unix.WDIOF_MAGICCLOSE != 0, errnoName(err)))
	ioctl("SETTIMEOUT(5)", unix.WDIOC_SETTIMEOUT, 5)
	ioctl("GETTIMEOUT", unix.WDIOC_GETTIMEOUT, 0)
	ioctl("SETTIMEOUT(0)", unix.WDIOC_SETTIMEOUT, 0)
	ioctl("SETTIMEOUT(-1)", unix.WDIOC_SETTIMEOUT, -1)
	ioctl("GETTIMEOUT", unix.WDIOC_GETTIMEOUT, 0)
	ioctl("KEEPALIVE", unix.WDIOC_KEEPALIVE, 0)
	ioctl("unknown", 0x80045799, 0)
	out = append(out, fmt.Sprintf("armed after open: %v", armed()))
	// A 'V' followed by another write does not allow the close.
	f.Write([]byte("V"))
	f.Write([]byte("1"))
	f.Close()
	out = append(out, fmt.Sprintf("armed after V, 1, close: %v", armed()))
	return out
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

var wantScript = []string{
	"GETSUPPORT -> settimeout=true magicclose=true, ok",
	"SETTIMEOUT(5) -> 5, ok",
	"GETTIMEOUT -> 5, ok",
	"SETTIMEOUT(0) -> 0, EINVAL",
	"SETTIMEOUT(-1) -> -1, EINVAL",
	"GETTIMEOUT -> 5, ok",
	"KEEPALIVE -> 0, ok",
	"unknown -> 0, ENOTTY",
	"armed after open: true",
	"armed after V, 1, close: true",
}

func TestFakeScript(t *testing.T) {
	t.Parallel()
	dev := watchdogtest.New(watchdogtest.Config{})
	if diff := cmp.Diff(wantScript, script(dev, dev.Armed)); diff != "" {
		t.Errorf("fake device transcript (-want +got):\n%s", diff)
	}
}

// TestRealFakeConformance runs the same script on every real driver in the
// guest: the fake must describe the kernel, not the other way round.
func TestRealFakeConformance(t *testing.T) {
	inGuest(t)
	for _, d := range realDevices(t) {
		t.Run(subName(d), func(t *testing.T) {
			f, err := watchdog.OpenFile(d.dev)
			if err != nil {
				t.Fatal(err)
			}
			got := script(f, func() bool { return sysState(t, d) == "active" })
			if diff := cmp.Diff(wantScript, got); diff != "" {
				t.Errorf("%s transcript differs from the fake's (-fake +real):\n%s", d.identity, diff)
			}
			// Disarm what the script left armed.
			f, err = watchdog.OpenFile(d.dev)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("V"))
			f.Close()
			if s := sysState(t, d); s != "inactive" {
				t.Errorf("state after cleanup = %q", s)
			}
		})
	}
}

// TestRealResetAndBootStatus (last in this file: it resets the guest) stops petting an armed i6300esb and expects
// the emulated hardware to reset the machine; on the boot after that the
// driver must report WDIOF_CARDRESET. The host harness allows two boots.
func TestRealResetAndBootStatus(t *testing.T) {
	inGuest(t)
	if os.Getenv("OTAGW_QEMU_RESET_TEST") != "1" {
		t.Skip("the reset test runs only when the harness allows a second boot (OTAGW_QEMU_RESET_TEST=1)")
	}
	var dev realDev
	for _, d := range realDevices(t) {
		if strings.Contains(d.identity, "6300ESB") {
			dev = d
		}
	}
	if dev.dev == "" {
		t.Fatal("no i6300esb watchdog in the guest")
	}
	o := watchdog.DefaultOptions()
	o.Device = dev.dev
	o.Timeout = 2 * time.Second
	hw, err := watchdog.Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if hw.BootStatus().WatchdogReset() {
		t.Logf("boot status %v: the previous boot ended in a watchdog reset", hw.BootStatus().Flags)
		if err := hw.Close(); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Logf("boot status %v: first boot; arming %v and no longer petting", hw.BootStatus().Flags, hw.Timeout())
	os.Stdout.Sync()
	// Leave it armed and wait: the hardware must reset the machine.
	time.Sleep(30 * time.Second)
	t.Fatalf("the watchdog did not reset the machine within 30s of a %v timeout", hw.Timeout())
}
