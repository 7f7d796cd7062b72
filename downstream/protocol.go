package downstream

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
)

// Refusals and outcomes every protocol reports in the same words, so that
// the fan-out engine can sort them without knowing the protocol.
var (
	// ErrWrongTarget: the package is for another kind of device.
	ErrWrongTarget = errors.New("package is for another target")
	// ErrWrongProduct: the part answers with another chip or product ID than the package's.
	ErrWrongProduct = errors.New("device reports another product ID")
	// ErrUnknownChip: the configured chip is not in the protocol's chip table.
	ErrUnknownChip = errors.New("product ID not in the chip database")
	// ErrUnknownProtocol: no protocol is registered under the name.
	ErrUnknownProtocol = errors.New("unknown protocol")
)

// Identity is what a protocol learnt from a device in its bootloader.
type Identity struct {
	Chip      string // "0x410 STM32F10xxx medium-density", "ESP32-S3"
	FlashSize int    // bytes, 0 when unknown
	// Version is the running application's version when the device told
	// it (FromDevice), "" when it has none or the protocol cannot read one.
	Version    string
	FromDevice bool
	Source     string // where Version came from, for the log
}

// Progress of a flash: Phase is erase, write or verify.
type Progress struct {
	Phase       string
	Done, Total int
}

// Session is one device driven through its ROM bootloader. The fan-out
// engine makes one per device and calls Identify, then Flash (again after
// a transient error: Flash resumes from the last verified block), then
// Start.
type Session interface {
	// Identify enters the bootloader and learns the chip and, if the
	// device can tell, the running version.
	Identify(ctx context.Context) (Identity, error)
	// Flash writes the package's segments and verifies them.
	Flash(ctx context.Context, progress func(Progress)) error
	// Start leaves the bootloader and runs the application.
	Start(ctx context.Context) error
	// Retries counts the line errors absorbed inside Flash; Verified is
	// the number of image bytes known good in flash.
	Retries() int
	Verified() int
}

// Protocol is one bootloader protocol, registered under the name devices
// use in their "protocol:" setting.
type Protocol interface {
	// ValidateDevice checks the protocol's own device settings.
	ValidateDevice(d Device) error
	// Targets reports whether a package is meant for devices like d.
	Targets(d Device, m *mcupkg.Manifest) bool
	// Check refuses, without touching the device, a package that cannot
	// go to d (another chip, regions outside its flash).
	Check(d Device, p *mcupkg.Package) error
	// Parity is the serial line parity the ROM wants ("even", "none").
	Parity() string
	// Open starts a session over l; rs enters the bootloader and starts
	// the application.
	Open(l link.Link, rs reset.Strategy, b Bus, d Device, p *mcupkg.Package, o Options) Session
}

// FatalError marks an error that another attempt cannot fix.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Fatal wraps err as not worth another attempt (nil stays nil).
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &FatalError{err}
}

// IsFatal reports whether err was marked Fatal.
func IsFatal(err error) bool {
	var f *FatalError
	return errors.As(err, &f)
}

var (
	regMu    sync.RWMutex
	registry = map[string]Protocol{}
)

// Register makes a protocol available under name; protocol packages call
// it from init (as image formats and database/sql drivers do), and
// downstream/protocols imports every built-in one.
func Register(name string, p Protocol) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("downstream: protocol " + name + " registered twice")
	}
	registry[name] = p
}

// Lookup finds a registered protocol.
func Lookup(name string) (Protocol, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	p, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("%w %q: registered: %v", ErrUnknownProtocol, name, protocolNamesLocked())
	}
	return p, nil
}

// Protocols lists the registered names.
func Protocols() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	return protocolNamesLocked()
}

func protocolNamesLocked() []string {
	var n []string
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
