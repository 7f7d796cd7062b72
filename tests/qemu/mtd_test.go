package qemu_test

import (
	"testing"

	"github.com/otagw/otagw/tests/qemu/qemutest"
)

// TestMTDInGuest runs abboot/ubootenv's TestRealMTD* tests against real
// kernel MTD devices: nandsim (a NAND chip with bad-block handling and
// erase-before-write) and mtdram, which this machine's kernel lacks.
// nandsim is loaded with eraseblock 0 bad, and OTAGW_MTD_BAD_BLOCK0=1 makes
// TestRealMTDNAND assert that copy 0 moved to block 1; no guest test may skip.
func TestMTDInGuest(t *testing.T) {
	t.Parallel()
	qemutest.Run(t, qemutest.Config{
		TestPkg: "./abboot/ubootenv",
		TestRun: "^TestRealMTD",
		Modules: []string{"nandsim", "mtdram"},
		ModuleParams: map[string]string{
			"nandsim": "badblocks=0",
			"mtdram":  "total_size=256 erase_size=16",
		},
		Env: []string{"OTAGW_MTD_BAD_BLOCK0=1"},
	})
}
