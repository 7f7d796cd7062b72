// Package watchdogtest has a fake watchdog device that behaves like the
// Linux watchdog core (drivers/watchdog/watchdog_dev.c) in front of a driver
// and records every ioctl and write it receives, with the fake clock's time.
//
//	clk := clockwork.NewFakeClock()
//	dev := watchdogtest.New(watchdogtest.Config{Clock: clk, Timeout: 60})
//	hw, err := watchdog.New(dev, opts)     // dev is a watchdog.File
//	clk.Advance(40 * time.Second)
//	dev.Expired()                          // true once no keepalive came within the timeout
//	dev.Ops()                              // what the kernel would have seen
package watchdogtest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/sys/unix"
)

// Config describes the simulated driver.
type Config struct {
	Identity string
	// Options are the WDIOF_* bits the driver advertises; 0 means
	// SETTIMEOUT|MAGICCLOSE|KEEPALIVEPING, like i6300esb.
	Options uint32
	// Timeout is the driver's initial timeout in seconds (default 30).
	Timeout int32
	// MinTimeout and MaxTimeout bound SETTIMEOUT (default 1 and 2046).
	MinTimeout, MaxTimeout int32
	// BootStatus is what WDIOC_GETBOOTSTATUS returns (WDIOF_CARDRESET...).
	BootStatus uint32
	// TimeLeft makes the driver support WDIOC_GETTIMELEFT.
	TimeLeft bool
	// NoWayOut is the kernel's nowayout: closing never stops the watchdog.
	NoWayOut bool
	Clock    clockwork.Clock
}

// Op is one thing the device received.
type Op struct {
	At   time.Time
	Kind string // "ioctl", "write", "close"
	Name string // WDIOC_* name for ioctls
	Arg  int32  // the int passed in (ioctl)
	Data string // written bytes (write)
	Err  error
}

func (o Op) String() string {
	switch o.Kind {
	case "ioctl":
		return fmt.Sprintf("ioctl %s(%d) err=%v", o.Name, o.Arg, o.Err)
	case "write":
		return fmt.Sprintf("write %q", o.Data)
	}
	return o.Kind
}

// Device is the fake; it implements watchdog.File. It starts open and armed,
// as the real device is right after open(2).
type Device struct {
	cfg   Config
	clock clockwork.Clock

	mu          sync.Mutex
	cond        *sync.Cond
	ops         []Op
	timeout     int32
	lastPing    time.Time
	armed       bool
	expectClose bool
	closed      bool
	keepalives  []time.Time
	fail        map[string]error
}

// New makes an open, armed device.
func New(cfg Config) *Device {
	if cfg.Options == 0 {
		cfg.Options = unix.WDIOF_SETTIMEOUT | unix.WDIOF_MAGICCLOSE | unix.WDIOF_KEEPALIVEPING
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30
	}
	if cfg.MinTimeout == 0 {
		cfg.MinTimeout = 1
	}
	if cfg.MaxTimeout == 0 {
		cfg.MaxTimeout = 2046
	}
	if cfg.Identity == "" {
		cfg.Identity = "watchdogtest"
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	d := &Device{cfg: cfg, clock: cfg.Clock, timeout: cfg.Timeout, armed: true, fail: map[string]error{}}
	d.cond = sync.NewCond(&d.mu)
	d.lastPing = d.clock.Now()
	return d
}

var names = map[uint]string{
	unix.WDIOC_GETSUPPORT:    "WDIOC_GETSUPPORT",
	unix.WDIOC_GETSTATUS:     "WDIOC_GETSTATUS",
	unix.WDIOC_GETBOOTSTATUS: "WDIOC_GETBOOTSTATUS",
	unix.WDIOC_GETTEMP:       "WDIOC_GETTEMP",
	unix.WDIOC_SETOPTIONS:    "WDIOC_SETOPTIONS",
	unix.WDIOC_KEEPALIVE:     "WDIOC_KEEPALIVE",
	unix.WDIOC_SETTIMEOUT:    "WDIOC_SETTIMEOUT",
	unix.WDIOC_GETTIMEOUT:    "WDIOC_GETTIMEOUT",
	unix.WDIOC_SETPRETIMEOUT: "WDIOC_SETPRETIMEOUT",
	unix.WDIOC_GETPRETIMEOUT: "WDIOC_GETPRETIMEOUT",
	unix.WDIOC_GETTIMELEFT:   "WDIOC_GETTIMELEFT",
}

// Fail makes every later operation named op ("write", "close" or a WDIOC_*
// name) fail with err; nil clears it.
func (d *Device) Fail(op string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, op)
		return
	}
	d.fail[op] = err
}

func (d *Device) pingLocked() {
	d.lastPing = d.clock.Now()
	d.keepalives = append(d.keepalives, d.lastPing)
	d.cond.Broadcast()
}

func (d *Device) recordLocked(op Op) {
	op.At = d.clock.Now()
	d.ops = append(d.ops, op)
}

// Ioctl implements watchdog.File.
func (d *Device) Ioctl(req uint, v *int32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	name, ok := names[req]
	if !ok {
		name = fmt.Sprintf("ioctl(0x%x)", req)
	}
	op := Op{Kind: "ioctl", Name: name, Arg: *v}
	err := d.ioctlLocked(req, v, name)
	op.Err = err
	d.recordLocked(op)
	return err
}

func (d *Device) ioctlLocked(req uint, v *int32, name string) error {
	if d.closed {
		return unix.EBADF
	}
	if err := d.fail[name]; err != nil {
		return err
	}
	switch req {
	case unix.WDIOC_GETSTATUS:
		*v = 0
	case unix.WDIOC_GETBOOTSTATUS:
		*v = int32(d.cfg.BootStatus)
	case unix.WDIOC_KEEPALIVE:
		if d.cfg.Options&unix.WDIOF_KEEPALIVEPING == 0 {
			return unix.EOPNOTSUPP
		}
		d.pingLocked()
	case unix.WDIOC_SETTIMEOUT:
		if d.cfg.Options&unix.WDIOF_SETTIMEOUT == 0 {
			return unix.EOPNOTSUPP
		}
		if *v < d.cfg.MinTimeout || *v > d.cfg.MaxTimeout {
			return unix.EINVAL
		}
		d.timeout = *v
		d.pingLocked() // the core pings after a new timeout
		*v = d.timeout // and falls through to GETTIMEOUT
	case unix.WDIOC_GETTIMEOUT:
		*v = d.timeout
	case unix.WDIOC_GETTIMELEFT:
		if !d.cfg.TimeLeft {
			return unix.EOPNOTSUPP
		}
		left := time.Duration(d.timeout)*time.Second - d.clock.Since(d.lastPing)
		if left < 0 {
			left = 0
		}
		*v = int32(left / time.Second)
	case unix.WDIOC_SETOPTIONS:
		switch {
		case *v&unix.WDIOS_DISABLECARD != 0:
			if d.cfg.NoWayOut {
				return unix.EBUSY
			}
			d.armed = false
		case *v&unix.WDIOS_ENABLECARD != 0:
			d.armed = true
			d.pingLocked()
		default:
			return unix.EINVAL
		}
	default:
		return unix.ENOTTY
	}
	return nil
}

// Support implements watchdog.File.
func (d *Device) Support(info *unix.WatchdogInfo) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	op := Op{Kind: "ioctl", Name: "WDIOC_GETSUPPORT"}
	defer func() { d.recordLocked(op) }()
	if d.closed {
		op.Err = unix.EBADF
		return op.Err
	}
	if err := d.fail["WDIOC_GETSUPPORT"]; err != nil {
		op.Err = err
		return err
	}
	*info = unix.WatchdogInfo{Options: d.cfg.Options}
	copy(info.Identity[:len(info.Identity)-1], d.cfg.Identity)
	return nil
}

// Write implements watchdog.File: any write pets; a 'V' in it allows the
// next close to stop the watchdog, any later write without one forbids it
// again.
func (d *Device) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	op := Op{Kind: "write", Data: string(p)}
	defer func() { d.recordLocked(op) }()
	if d.closed {
		op.Err = unix.EBADF
		return 0, op.Err
	}
	if err := d.fail["write"]; err != nil {
		op.Err = err
		return 0, err
	}
	d.expectClose = d.cfg.Options&unix.WDIOF_MAGICCLOSE != 0 && bytes.IndexByte(p, 'V') >= 0
	d.pingLocked()
	return len(p), nil
}

// Close implements watchdog.File: the watchdog stops only after a magic
// 'V' (or on drivers without WDIOF_MAGICCLOSE) and never with nowayout.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	op := Op{Kind: "close"}
	defer func() { d.recordLocked(op) }()
	if d.closed {
		op.Err = unix.EBADF
		return op.Err
	}
	d.closed = true
	if !d.cfg.NoWayOut && (d.expectClose || d.cfg.Options&unix.WDIOF_MAGICCLOSE == 0) {
		d.armed = false
	}
	d.cond.Broadcast()
	if err := d.fail["close"]; err != nil {
		op.Err = err
		return err
	}
	return nil
}

// Ops returns a copy of everything the device received.
func (d *Device) Ops() []Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Op(nil), d.ops...)
}

// Armed reports whether the watchdog is running (it stays so after a close
// without magic).
func (d *Device) Armed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.armed
}

// Closed reports whether the descriptor was closed.
func (d *Device) Closed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Timeout is the driver's current timeout in seconds.
func (d *Device) Timeout() int32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timeout
}

// Expired reports whether the hardware would have reset the system by now:
// armed and no keepalive within the timeout.
func (d *Device) Expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.armed && d.clock.Since(d.lastPing) >= time.Duration(d.timeout)*time.Second
}

// KeepAlives returns the times of every ping (writes, KEEPALIVE, SETTIMEOUT).
func (d *Device) KeepAlives() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.keepalives...)
}

// WaitKeepAlives blocks until the device has seen at least n pings in all,
// or ctx ends.
func (d *Device) WaitKeepAlives(ctx context.Context, n int) error {
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.keepalives) < n {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("watchdogtest: %d of %d keepalives: %w", len(d.keepalives), n, err)
		}
		d.cond.Wait()
	}
	return nil
}
