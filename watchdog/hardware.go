package watchdog

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// File is an open watchdog device as the kernel's watchdog core sees it:
// ioctls and writes on one descriptor. OpenFile returns the real one,
// watchdogtest.Device a fake.
type File interface {
	// Ioctl issues one of the WDIOC_* requests that take an int; for the
	// "set" requests the driver writes the value it settled on back into v.
	Ioctl(req uint, v *int32) error
	// Support issues WDIOC_GETSUPPORT.
	Support(info *unix.WatchdogInfo) error
	// Write writes to the device: any write pets it, a 'V' in the last
	// write before Close allows the close to stop it (magic close).
	Write(p []byte) (int, error)
	// Close closes the descriptor.
	Close() error
}

// Hardware is an armed hardware watchdog.
type Hardware struct {
	dev       string
	opts      Options
	info      Info
	boot      BootStatus
	bootErr   error
	timeout   time.Duration // read back from the driver
	requested time.Duration

	mu     sync.Mutex
	f      File
	closed bool
}

// Open opens opts.Device (arming the watchdog) and sets it up as New does.
// A missing device gives an error wrapping ErrNotSupported, a device held by
// another process one wrapping ErrBusy.
func Open(opts Options) (*Hardware, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if !opts.Enabled {
		return nil, fmt.Errorf("watchdog %s: %w: disabled in the options", opts.Device, ErrNotSupported)
	}
	f, err := OpenFile(opts.Device)
	if err != nil {
		return nil, err
	}
	h, err := New(f, opts)
	if err != nil {
		// Leave the device as the driver had it: a failed setup must not
		// turn into a reset.
		_, _ = f.Write([]byte("V"))
		f.Close()
		return nil, err
	}
	return h, nil
}

// New sets up an already opened (and so armed) device: it reads the driver's
// identity and boot status, sets opts.Timeout when the driver supports it,
// reads the timeout back with WDIOC_GETTIMEOUT and pets once.
func New(f File, opts Options) (*Hardware, error) {
	h := &Hardware{dev: opts.Device, opts: opts, f: f, requested: opts.Timeout}
	var wi unix.WatchdogInfo
	if err := f.Support(&wi); err != nil {
		return nil, h.errorf("WDIOC_GETSUPPORT", err)
	}
	h.info = Info{Identity: cString(wi.Identity[:]), Firmware: wi.Version, Options: Flags(wi.Options)}

	var bs int32
	if err := f.Ioctl(unix.WDIOC_GETBOOTSTATUS, &bs); err != nil {
		h.bootErr = h.errorf("WDIOC_GETBOOTSTATUS", err)
	} else {
		h.boot = BootStatus{Flags: Flags(uint32(bs))}
	}

	if h.info.Options&SetTimeout != 0 && opts.Timeout > 0 {
		secs := int32(opts.Timeout / time.Second)
		v := secs
		if err := f.Ioctl(unix.WDIOC_SETTIMEOUT, &v); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("watchdog %s: WDIOC_SETTIMEOUT %ds: %w: %w", h.dev, secs, ErrTimeout, err)
			}
			return nil, h.errorf(fmt.Sprintf("WDIOC_SETTIMEOUT %ds", secs), err)
		}
	}
	var got int32
	if err := f.Ioctl(unix.WDIOC_GETTIMEOUT, &got); err != nil {
		return nil, h.errorf("WDIOC_GETTIMEOUT", err)
	}
	if got <= 0 {
		return nil, fmt.Errorf("watchdog %s: WDIOC_GETTIMEOUT reports %ds: %w", h.dev, got, ErrTimeout)
	}
	h.timeout = time.Duration(got) * time.Second
	if opts.PetInterval >= h.timeout {
		return nil, fmt.Errorf("watchdog %s: pet interval %v is not shorter than the driver's timeout %v: %w",
			h.dev, opts.PetInterval, h.timeout, ErrTimeout)
	}
	if err := h.KeepAlive(); err != nil {
		return nil, err
	}
	return h, nil
}

// Device is the device path.
func (h *Hardware) Device() string { return h.dev }

// Info is the driver's WDIOC_GETSUPPORT answer.
func (h *Hardware) Info() Info { return h.info }

// BootStatus is the driver's WDIOC_GETBOOTSTATUS answer, read at open.
func (h *Hardware) BootStatus() BootStatus { return h.boot }

// BootStatusErr is the error of reading the boot status, nil when it was read.
func (h *Hardware) BootStatusErr() error { return h.bootErr }

// Timeout is the timeout the driver reported back after it was set.
func (h *Hardware) Timeout() time.Duration { return h.timeout }

// RequestedTimeout is the timeout the options asked for; a driver may round.
func (h *Hardware) RequestedTimeout() time.Duration { return h.requested }

// PetInterval is Options.PetInterval, or half the timeout read back.
func (h *Hardware) PetInterval() time.Duration {
	if h.opts.PetInterval > 0 {
		return h.opts.PetInterval
	}
	return h.timeout / 2
}

// KeepAlive pets the watchdog (a write, which every driver supports).
func (h *Hardware) KeepAlive() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("watchdog %s: keepalive: %w", h.dev, ErrClosed)
	}
	if _, err := h.f.Write([]byte{'1'}); err != nil {
		return h.errorf("keepalive write", err)
	}
	return nil
}

// TimeLeft asks the driver how long until it resets the system
// (WDIOC_GETTIMELEFT); drivers without it give an error wrapping
// ErrNotSupported.
func (h *Hardware) TimeLeft() (time.Duration, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, fmt.Errorf("watchdog %s: WDIOC_GETTIMELEFT: %w", h.dev, ErrClosed)
	}
	var left int32
	if err := h.f.Ioctl(unix.WDIOC_GETTIMELEFT, &left); err != nil {
		return 0, h.errorf("WDIOC_GETTIMELEFT", err)
	}
	return time.Duration(left) * time.Second, nil
}

// Close stops using the device. Without NoWayOut it writes the magic 'V'
// first, so the driver disarms; with NoWayOut it closes without it and the
// watchdog stays armed (drivers without WDIOF_MAGICCLOSE stop on any close,
// and a kernel built with CONFIG_WATCHDOG_NOWAYOUT never stops).
func (h *Hardware) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	var werr error
	if !h.opts.NoWayOut {
		if _, err := h.f.Write([]byte{'V'}); err != nil {
			werr = h.errorf("magic close write", err)
		}
	}
	if err := h.f.Close(); err != nil && werr == nil {
		werr = h.errorf("close", err)
	}
	return werr
}

// errorf wraps an ioctl or write error with the device and operation, and
// sorts "this driver cannot" into ErrNotSupported.
func (h *Hardware) errorf(op string, err error) error {
	switch {
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("watchdog %s: %s: %w: %w", h.dev, op, ErrNotSupported, err)
	}
	return fmt.Errorf("watchdog %s: %s: %w", h.dev, op, err)
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
