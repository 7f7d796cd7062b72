package qemu_test

import (
	"context"
	"strings"
	"testing"

	"github.com/otagw/otagw/tests/qemu/torture"
)

// TestTortureCatchesSingleCopyEnv shows the harness can fail: the same
// cuts, aimed at environment writes and tearing every cached write (the
// env in 16-byte units, as raw flash left partly programmed; in 512-byte
// sectors the few bytes a save changes mostly share the CRC's sector and
// tear as a whole), pass with the shipped redundant environment and
// brick a gateway whose fw_env.config has one copy only (selected with
// the harness's OTAGW_TORTURE_BROKEN, which nothing outside this test
// reads).
func TestTortureCatchesSingleCopyEnv(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU for every cut; skipped with -short")
	}
	cfg := func() torture.Config {
		return torture.Config{Cuts: 2, Seed: 14, Dir: t.TempDir(), Modes: []string{"env"}, TearAll: true, EnvTearUnit: 16,
			StopOnFailure: true, Logf: t.Logf}
	}
	t.Setenv(torture.BrokenEnv, "")
	good, err := torture.Run(context.Background(), cfg())
	if err != nil {
		t.Fatal(err)
	}
	torture.Report(t.Logf, good)
	if good.Bricks+good.Failures != 0 {
		t.Fatalf("the redundant environment failed under env-write cuts: %v", good.Errors)
	}

	t.Setenv(torture.BrokenEnv, "single-env")
	c := cfg()
	c.Cuts = 4
	bad, err := torture.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	torture.Report(t.Logf, bad)
	if bad.Bricks == 0 {
		t.Fatalf("the harness did not catch a single-copy environment torn by %d cuts at env writes", bad.Cuts)
	}
	if !strings.Contains(strings.Join(bad.Errors, "\n"), "env") {
		t.Errorf("the brick is not reported as an environment failure: %v", bad.Errors)
	}
}
