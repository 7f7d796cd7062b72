package qemu_test

import (
	"testing"
	"time"

	"github.com/otagw/otagw/tests/qemu/qemutest"
)

// TestWatchdogInGuest runs the watchdog package's TestReal* tests against
// three real drivers: the emulated i6300esb (PCI), the q35 chipset's iTCO
// watchdog (the one with WDIOC_GETTIMELEFT) and softdog (loaded with
// soft_noboot=1, so it never resets the guest). Then it lets the i6300esb
// reset the machine and checks WDIOF_CARDRESET on the second boot: the
// guest must boot exactly twice, and no guest test may skip.
func TestWatchdogInGuest(t *testing.T) {
	t.Parallel()
	qemutest.Run(t, qemutest.Config{
		TestPkg:      "./watchdog",
		TestRun:      "^TestReal",
		Modules:      []string{"i6300esb", "softdog", "lpc_ich", "iTCO_wdt"},
		Machine:      "q35",
		ModuleParams: map[string]string{"softdog": "soft_noboot=1"},
		QEMUArgs:     []string{"-device", "i6300esb", "-watchdog-action", "reset"},
		Env:          []string{"OTAGW_QEMU_RESET_TEST=1"},
		Boots:        2, // exactly: the i6300esb must reset the guest once
		// Two boots in TCG took 3 minutes next to the package's other
		// guests on a loaded 2-core machine; the default 3 is too tight.
		Timeout: 6 * time.Minute,
	})
}
