package rootfs

import (
	"context"
	"errors"
	"fmt"

	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

// Failure kinds. Each is errors.Is-able on what Install returns.
var (
	ErrSignature    = bundle.ErrSignature  // a trusted key's signature does not verify
	ErrUnknownKey   = bundle.ErrUnknownKey // no signature by a key in the keyring
	ErrThreshold    = bundle.ErrThreshold  // fewer valid signatures than required
	ErrFormat       = bundle.ErrFormat     // malformed bundle
	ErrHashMismatch = bundle.ErrHashMismatch
	ErrTruncated    = bundle.ErrTruncated
	ErrTrailingData = bundle.ErrTrailingData

	ErrIncompatible = errors.New("bundle is not for this hardware")
	ErrDowngrade    = errors.New("downgrade refused")
	ErrExpired      = errors.New("bundle expired")
	ErrSlotTooSmall = errors.New("payload does not fit the slot")
	ErrSlotBusy     = errors.New("slot busy (booted or mounted)")
	ErrNoSlot       = errNoSlot
	// ErrResume: the checkpoint does not belong to this bundle/source.
	ErrResume = errors.New("checkpoint does not match the bundle")
	// ErrStalled: an HTTP source stalled (idle, too slow, or no headers
	// within its timeout) until its retries ran out.
	ErrStalled = source.ErrStalled
)

// ChunkError is the typed form of a hash mismatch: it names the payload and
// chunk (Index -1: the whole-payload read-back).
type ChunkError = bundle.ChunkError

// IOError is an I/O failure on a slot device.
type IOError struct {
	Slot   string
	Device string
	Op     string // open, write, sync, read, size
	Err    error
}

func (e *IOError) Error() string {
	return fmt.Sprintf("slot %s (%s): %s: %v", e.Slot, e.Device, e.Op, e.Err)
}

func (e *IOError) Unwrap() error { return e.Err }

// Kind names the failure class of an install error for status, logs, the
// API and scripts: "signature-invalid", "unknown-key", "below-threshold",
// "format", "hash-mismatch", "source-truncated", "trailing-data",
// "incompatible", "downgrade-refused", "expired", "slot-too-small",
// "slot-busy", "no-slot", "resume-mismatch", "source-stalled", "canceled",
// "io-error" or "error".
func Kind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{ErrSignature, "signature-invalid"}, {ErrUnknownKey, "unknown-key"}, {ErrThreshold, "below-threshold"},
		{ErrFormat, "format"}, {ErrHashMismatch, "hash-mismatch"}, {ErrTruncated, "source-truncated"},
		{ErrTrailingData, "trailing-data"}, {ErrIncompatible, "incompatible"}, {ErrDowngrade, "downgrade-refused"},
		{ErrExpired, "expired"}, {ErrSlotTooSmall, "slot-too-small"}, {ErrSlotBusy, "slot-busy"}, {ErrNoSlot, "no-slot"},
		{ErrResume, "resume-mismatch"}, {ErrStalled, "source-stalled"}, {context.Canceled, "canceled"}, {context.DeadlineExceeded, "canceled"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	var ioe *IOError
	if errors.As(err, &ioe) {
		return "io-error"
	}
	return "error"
}
