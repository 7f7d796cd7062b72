package qemu_test

import (
	"testing"

	"github.com/otagw/otagw/tests/qemu/qemutest"
)

// TestMTDInGuest runs abboot/ubootenv's TestRealMTD* tests against real
// kernel MTD devices: nandsim (a NAND chip with bad-block handling and
// erase-before-write) and mtdram, which this machine's kernel lacks.
func TestMTDInGuest(t *testing.T) {
	qemutest.Run(t, qemutest.Config{
		TestPkg: "./abboot/ubootenv",
		TestRun: "^TestRealMTD",
		Modules: []string{"nandsim", "mtdram"},
		ModuleParams: map[string]string{
			"nandsim": "badblocks=0",
			"mtdram":  "total_size=256 erase_size=16",
		},
	})
}
