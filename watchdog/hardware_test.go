package watchdog_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/watchdogtest"
)

func opts(timeout time.Duration) watchdog.Options {
	o := watchdog.DefaultOptions()
	o.Device = "/dev/watchdog-fake"
	o.Timeout = timeout
	return o
}

func opStrings(ops []watchdogtest.Op) []string {
	var s []string
	for _, o := range ops {
		s = append(s, o.String())
	}
	return s
}

func TestNewSetsTimeoutInSecondsAndReadsItBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cfg       watchdogtest.Config
		timeout   time.Duration
		wantOps   []string
		wantTO    time.Duration
		wantPet   time.Duration
		wantReset bool
	}{
		{
			name: "settable", cfg: watchdogtest.Config{Timeout: 30}, timeout: 10 * time.Second,
			wantOps: []string{
				"ioctl WDIOC_GETSUPPORT(0) err=<nil>",
				"ioctl WDIOC_GETBOOTSTATUS(0) err=<nil>",
				"ioctl WDIOC_SETTIMEOUT(10) err=<nil>", // an int of seconds, not a Duration
				"ioctl WDIOC_GETTIMEOUT(0) err=<nil>",
				`write "1"`,
			},
			wantTO: 10 * time.Second, wantPet: 5 * time.Second,
		},
		{
			name: "fixed timeout driver", cfg: watchdogtest.Config{Timeout: 60, Options: unix.WDIOF_MAGICCLOSE},
			timeout: 10 * time.Second,
			wantOps: []string{
				"ioctl WDIOC_GETSUPPORT(0) err=<nil>",
				"ioctl WDIOC_GETBOOTSTATUS(0) err=<nil>",
				"ioctl WDIOC_GETTIMEOUT(0) err=<nil>",
				`write "1"`,
			},
			wantTO: 60 * time.Second, wantPet: 30 * time.Second,
		},
		{
			name: "last boot was a watchdog reset", cfg: watchdogtest.Config{BootStatus: unix.WDIOF_CARDRESET}, timeout: 4 * time.Second,
			wantOps: []string{
				"ioctl WDIOC_GETSUPPORT(0) err=<nil>",
				"ioctl WDIOC_GETBOOTSTATUS(0) err=<nil>",
				"ioctl WDIOC_SETTIMEOUT(4) err=<nil>",
				"ioctl WDIOC_GETTIMEOUT(0) err=<nil>",
				`write "1"`,
			},
			wantTO: 4 * time.Second, wantPet: 2 * time.Second, wantReset: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dev := watchdogtest.New(tc.cfg)
			hw, err := watchdog.New(dev, opts(tc.timeout))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if diff := cmp.Diff(tc.wantOps, opStrings(dev.Ops())); diff != "" {
				t.Errorf("ops (-want +got):\n%s", diff)
			}
			if got := hw.Timeout(); got != tc.wantTO {
				t.Errorf("Timeout() = %v; want %v", got, tc.wantTO)
			}
			if got := time.Duration(dev.Timeout()) * time.Second; got != tc.wantTO {
				t.Errorf("device timeout = %v; want %v", got, tc.wantTO)
			}
			if got := hw.PetInterval(); got != tc.wantPet {
				t.Errorf("PetInterval() = %v; want %v", got, tc.wantPet)
			}
			if got := hw.BootStatus().WatchdogReset(); got != tc.wantReset {
				t.Errorf("BootStatus().WatchdogReset() = %v; want %v", got, tc.wantReset)
			}
			if tc.wantReset && !slices.Equal(hw.BootStatus().Reasons(), []string{"CARDRESET"}) {
				t.Errorf("Reasons() = %v; want [CARDRESET]", hw.BootStatus().Reasons())
			}
			if hw.Info().Identity != "watchdogtest" {
				t.Errorf("Info().Identity = %q", hw.Info().Identity)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     watchdogtest.Config
		fail    string
		failErr error
		timeout time.Duration
		want    error
	}{
		{name: "timeout above driver max", cfg: watchdogtest.Config{MaxTimeout: 20}, timeout: 30 * time.Second, want: watchdog.ErrTimeout},
		{name: "not a watchdog", fail: "WDIOC_GETSUPPORT", failErr: unix.ENOTTY, timeout: 30 * time.Second, want: watchdog.ErrNotSupported},
		{name: "settimeout io error", fail: "WDIOC_SETTIMEOUT", failErr: unix.EIO, timeout: 30 * time.Second, want: unix.EIO},
		{name: "gettimeout unsupported", fail: "WDIOC_GETTIMEOUT", failErr: unix.EOPNOTSUPP, timeout: 30 * time.Second, want: watchdog.ErrNotSupported},
		{name: "first keepalive fails", fail: "write", failErr: unix.EIO, timeout: 30 * time.Second, want: unix.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dev := watchdogtest.New(tc.cfg)
			if tc.fail != "" {
				dev.Fail(tc.fail, tc.failErr)
			}
			_, err := watchdog.New(dev, opts(tc.timeout))
			if !errors.Is(err, tc.want) {
				t.Fatalf("New = %v; want an error wrapping %v", err, tc.want)
			}
		})
	}
}

func TestBootStatusErrorIsKeptNotFatal(t *testing.T) {
	t.Parallel()
	dev := watchdogtest.New(watchdogtest.Config{})
	dev.Fail("WDIOC_GETBOOTSTATUS", unix.EIO)
	hw, err := watchdog.New(dev, opts(10*time.Second))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !errors.Is(hw.BootStatusErr(), unix.EIO) {
		t.Errorf("BootStatusErr() = %v; want EIO", hw.BootStatusErr())
	}
}

func TestCloseMagicOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		nowayout  bool
		options   uint32
		wantLast  []string
		wantArmed bool
	}{
		{name: "magic close", wantLast: []string{`write "V"`, "close"}, wantArmed: false},
		{name: "nowayout leaves it armed", nowayout: true, wantLast: []string{`write "1"`, "close"}, wantArmed: true},
		// A driver without WDIOF_MAGICCLOSE stops on any close: documented.
		{name: "nowayout on a driver without magic close", nowayout: true, options: unix.WDIOF_SETTIMEOUT,
			wantLast: []string{`write "1"`, "close"}, wantArmed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dev := watchdogtest.New(watchdogtest.Config{Options: tc.options})
			o := opts(10 * time.Second)
			o.NoWayOut = tc.nowayout
			hw, err := watchdog.New(dev, o)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			ops := opStrings(dev.Ops())
			if diff := cmp.Diff(tc.wantLast, ops[len(ops)-2:]); diff != "" {
				t.Errorf("last ops (-want +got):\n%s", diff)
			}
			if dev.Armed() != tc.wantArmed {
				t.Errorf("armed after Close = %v; want %v", dev.Armed(), tc.wantArmed)
			}
			if err := hw.KeepAlive(); !errors.Is(err, watchdog.ErrClosed) {
				t.Errorf("KeepAlive after Close = %v; want ErrClosed", err)
			}
			if err := hw.Close(); err != nil {
				t.Errorf("second Close = %v; want nil", err)
			}
		})
	}
}

func TestTimeLeft(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClock()
	dev := watchdogtest.New(watchdogtest.Config{Clock: clk, TimeLeft: true})
	hw, err := watchdog.New(dev, opts(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Second)
	if left, err := hw.TimeLeft(); err != nil || left != 7*time.Second {
		t.Errorf("TimeLeft() = %v, %v; want 7s", left, err)
	}
	if err := hw.KeepAlive(); err != nil {
		t.Fatal(err)
	}
	if left, err := hw.TimeLeft(); err != nil || left != 10*time.Second {
		t.Errorf("TimeLeft() after keepalive = %v, %v; want 10s", left, err)
	}

	dev2 := watchdogtest.New(watchdogtest.Config{})
	hw2, err := watchdog.New(dev2, opts(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hw2.TimeLeft(); !errors.Is(err, watchdog.ErrNotSupported) {
		t.Errorf("TimeLeft() without driver support = %v; want ErrNotSupported", err)
	}
}

// The real Linux path on this host: no device, and a file that is not one.
func TestOpenRealPathErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := watchdog.DefaultOptions()
	o.Device = filepath.Join(dir, "watchdog")
	if _, err := watchdog.Open(o); !errors.Is(err, watchdog.ErrNotSupported) {
		t.Errorf("Open(missing) = %v; want ErrNotSupported", err)
	}
	if err := os.WriteFile(o.Device, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := watchdog.Open(o)
	if !errors.Is(err, watchdog.ErrNotSupported) || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("Open(regular file) = %v; want ErrNotSupported wrapping ENOTTY", err)
	}
	o.Enabled = false
	if _, err := watchdog.Open(o); !errors.Is(err, watchdog.ErrNotSupported) {
		t.Errorf("Open(disabled) = %v; want ErrNotSupported", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(*watchdog.Options)
		ok   bool
	}{
		{"default", func(*watchdog.Options) {}, true},
		{"disabled ignores the rest", func(o *watchdog.Options) { o.Enabled = false; o.Timeout = 0 }, true},
		{"no device", func(o *watchdog.Options) { o.Device = "" }, false},
		{"sub-second", func(o *watchdog.Options) { o.Timeout = 1500 * time.Millisecond }, false},
		{"zero", func(o *watchdog.Options) { o.Timeout = 0 }, false},
		{"too long", func(o *watchdog.Options) { o.Timeout = 70000 * time.Second }, false},
		{"pet interval", func(o *watchdog.Options) { o.PetInterval = 10 * time.Second }, true},
		{"pet interval not shorter", func(o *watchdog.Options) { o.PetInterval = o.Timeout }, false},
		{"negative pet interval", func(o *watchdog.Options) { o.PetInterval = -time.Second }, false},
	} {
		o := watchdog.DefaultOptions()
		tc.mod(&o)
		err := o.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v; want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, watchdog.ErrInvalidOptions) {
			t.Errorf("%s: Validate() = %v; want ErrInvalidOptions", tc.name, err)
		}
	}
}

func TestFlagsNames(t *testing.T) {
	t.Parallel()
	f := watchdog.CardReset | watchdog.Overheat | watchdog.Flags(0x10000)
	if got, want := f.String(), "OVERHEAT|CARDRESET|0x10000"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
	if got := watchdog.Flags(0).String(); got != "0" {
		t.Errorf("Flags(0).String() = %q", got)
	}
}
