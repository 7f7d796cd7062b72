// Package qemu holds the tests that run inside a QEMU guest booting
// Debian's generic kernel: TestWatchdogInGuest runs the watchdog package's
// TestReal* tests against the emulated i6300esb and iTCO watchdogs and the
// softdog module; TestWatchdogDaemonInGuest runs the boot chain and
// otagw daemon with its hardware watchdog enabled on the uboot backend and
// lets the i6300esb reset the guest (SIGSTOP, nowayout); TestMTDInGuest
// runs the U-Boot env store on nandsim with a bad block. The harness they
// use is tests/qemu/qemutest; the guest's /init is tests/qemu/guestinit. A
// skip inside the guest fails the host test unless it is listed as
// expected (qemutest.Config.ExpectSkips).
//
//	go test -v -run TestWatchdogInGuest ./tests/qemu/
//	go test -v -run TestWatchdogDaemonInGuest ./tests/qemu/
//
// TestTorturePowerCuts cuts the power of a QEMU gateway (slots, redundant
// U-Boot env and ext4 state on NBD disks with a volatile write cache; the
// boot chain and the daemon on the uboot backend) and checks every
// recovery; TestTortureCatchesSingleCopyEnv shows it catches a gateway
// whose env has no redundant copy. The harness is tests/qemu/torture;
// `make torture N=...` runs a long series (docs/reliability.md).
package qemu
