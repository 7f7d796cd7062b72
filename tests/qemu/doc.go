// Package qemu holds the tests that run inside a QEMU guest booting
// Debian's generic kernel: TestWatchdogInGuest runs the watchdog package's
// TestReal* tests against the emulated i6300esb and iTCO watchdogs and the
// softdog module. The harness they use is tests/qemu/qemutest; the guest's
// /init is tests/qemu/guestinit.
//
//	go test -v -run TestWatchdogInGuest ./tests/qemu/
package qemu
