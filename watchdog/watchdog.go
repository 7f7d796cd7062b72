// Package watchdog drives the hardware watchdog (/dev/watchdog) and the
// systemd service watchdog from one health loop: both are petted only while
// the loop runs and its probes pass, so a stalled daemon stops the petting
// and the hardware (or systemd) resets it.
//
// The call sequence, as the daemon uses it:
//
//	hw, err := watchdog.Open(opts)            // opens, reads boot status, sets the timeout and reads it back
//	if hw.BootStatus().WatchdogReset() { ... } // the last boot ended in a watchdog reset
//	loop := watchdog.NewLoop(watchdog.LoopConfig{
//		Hardware: hw, HardwareInterval: hw.PetInterval(),
//		Notify: notify, NotifyInterval: watchdogUSEC / 2,
//	})
//	beat := loop.Heartbeat("state machine", time.Minute) // beat.Beat() from that goroutine
//	go loop.Run(ctx)                           // pets while every probe and heartbeat is fine
//	...
//	hw.Close()                                 // magic close, or leave armed with nowayout
//
// The device's ioctls sit behind the File seam: OpenFile gives the real Linux
// device (opened through u-root's pkg/watchdog), watchdogtest.Device a fake
// that behaves like the kernel's watchdog core and records what it was sent.
//
// u-root v0.16.0's Watchdog.SetTimeout passes the ioctl a pointer to the
// nanosecond time.Duration instead of an int of seconds, so this package
// issues WDIOC_SETTIMEOUT itself and always reads the value back with
// WDIOC_GETTIMEOUT.
package watchdog

import (
	"errors"
	"fmt"
	"strings"
	"time"

	uwatchdog "github.com/u-root/u-root/pkg/watchdog"
)

// Sentinel errors; every error this package returns wraps one of them or an
// errno, together with the device path and the operation.
var (
	// ErrNotSupported: no such device, or the driver lacks the operation.
	ErrNotSupported = errors.New("not supported")
	// ErrBusy: another process holds the device open (for example systemd
	// with RuntimeWatchdogSec= set).
	ErrBusy = errors.New("watchdog device busy")
	// ErrTimeout: the driver refused the timeout or reported an unusable one.
	ErrTimeout = errors.New("watchdog timeout rejected")
	// ErrClosed: the device was already closed.
	ErrClosed = errors.New("watchdog closed")
	// ErrInvalidOptions: Options.Validate failed.
	ErrInvalidOptions = errors.New("invalid watchdog options")
)

// DefaultDevice is the first watchdog of the system.
const DefaultDevice = uwatchdog.Dev

// Options configure the hardware watchdog (YAML key `watchdog:`).
type Options struct {
	// Enabled opens and pets the hardware watchdog. When false only the
	// systemd service watchdog (WATCHDOG=1) is driven by the health loop.
	Enabled bool `yaml:"enabled"`
	// Device is the watchdog character device.
	Device string `yaml:"device"`
	// Timeout is set on the device when it opens; whole seconds.
	Timeout time.Duration `yaml:"timeout"`
	// PetInterval is how often the loop pets; 0 means half of the timeout
	// that the driver reports back.
	PetInterval time.Duration `yaml:"pet_interval"`
	// NoWayOut leaves the watchdog armed when otagw stops cleanly (no magic
	// close), so that the hardware resets the system unless otagw comes back
	// and pets it in time.
	NoWayOut bool `yaml:"nowayout"`
}

// DefaultOptions: /dev/watchdog, 30 s, pet every 15 s, magic close on stop.
func DefaultOptions() Options {
	return Options{
		Enabled: true,
		Device:  DefaultDevice,
		Timeout: 30 * time.Second,
	}
}

// Validate checks the options without touching the device.
func (o Options) Validate() error {
	if !o.Enabled {
		return nil
	}
	if o.Device == "" {
		return fmt.Errorf("%w: watchdog.device is empty", ErrInvalidOptions)
	}
	if o.Timeout < time.Second || o.Timeout%time.Second != 0 {
		return fmt.Errorf("%w: watchdog.timeout %v must be whole seconds, at least 1s", ErrInvalidOptions, o.Timeout)
	}
	if o.Timeout > 65535*time.Second {
		return fmt.Errorf("%w: watchdog.timeout %v is longer than any driver allows (65535s)", ErrInvalidOptions, o.Timeout)
	}
	if o.PetInterval < 0 || o.PetInterval >= o.Timeout {
		return fmt.Errorf("%w: watchdog.pet_interval %v must be 0 (half the timeout) or shorter than watchdog.timeout %v",
			ErrInvalidOptions, o.PetInterval, o.Timeout)
	}
	return nil
}

// Flags are the WDIOF_* bits of a driver's options and of its (boot) status.
type Flags uint32

// The flags, with u-root's names for the kernel's WDIOF_* bits.
const (
	Overheat      = Flags(uwatchdog.StatusOverheat)
	FanFault      = Flags(uwatchdog.StatusFanFault)
	Extern1       = Flags(uwatchdog.StatusExtern1)
	Extern2       = Flags(uwatchdog.StatusExtern2)
	PowerUnder    = Flags(uwatchdog.StatusPowerUnder)
	CardReset     = Flags(uwatchdog.StatusCardReset)
	PowerOver     = Flags(uwatchdog.StatusPowerOver)
	SetTimeout    = Flags(uwatchdog.StatusSetTimeout)
	MagicClose    = Flags(uwatchdog.StatusMagicClose)
	PreTimeout    = Flags(uwatchdog.StatusPreTimeout)
	AlarmOnly     = Flags(uwatchdog.StatusAlarmOnly)
	KeepAlivePing = Flags(uwatchdog.StatusKeepAlivePing)
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{Overheat, "OVERHEAT"}, {FanFault, "FANFAULT"}, {Extern1, "EXTERN1"}, {Extern2, "EXTERN2"},
	{PowerUnder, "POWERUNDER"}, {CardReset, "CARDRESET"}, {PowerOver, "POWEROVER"},
	{SetTimeout, "SETTIMEOUT"}, {MagicClose, "MAGICCLOSE"}, {PreTimeout, "PRETIMEOUT"},
	{AlarmOnly, "ALARMONLY"}, {KeepAlivePing, "KEEPALIVEPING"},
}

// Names lists the set bits by their WDIOF_ names; unknown bits as hex.
func (f Flags) Names() []string {
	var out []string
	rest := f
	for _, n := range flagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
			rest &^= n.f
		}
	}
	if rest != 0 {
		out = append(out, fmt.Sprintf("0x%x", uint32(rest)))
	}
	return out
}

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	return strings.Join(f.Names(), "|")
}

// Info is what WDIOC_GETSUPPORT reports about the driver.
type Info struct {
	Identity string `json:"identity"`
	Firmware uint32 `json:"firmware_version"`
	Options  Flags  `json:"options"`
}

// BootStatus is WDIOC_GETBOOTSTATUS: why the previous boot ended, as far as
// the watchdog hardware knows.
type BootStatus struct {
	Flags Flags `json:"flags"`
}

// WatchdogReset reports whether the watchdog reset the system last time
// (WDIOF_CARDRESET).
func (b BootStatus) WatchdogReset() bool { return b.Flags&CardReset != 0 }

// Reasons names every cause the driver reported, empty for a normal boot.
func (b BootStatus) Reasons() []string { return b.Flags.Names() }
