package qemu_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/otagw/otagw/tests/qemu/torture"
)

// TestTorturePowerCuts cuts the power of the QEMU gateway a few times
// (OTAGW_TORTURE_CUTS, default 3; `make torture N=...` runs many,
// OTAGW_TORTURE_WORKERS gateways side by side, and OTAGW_TORTURE_UNTIL
// ends a long run early at a given time) and
// fails on any brick or broken promise; see package torture.
func TestTorturePowerCuts(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("the torture boots QEMU once per cut; skipped with -short outside CI")
	}
	cuts, seed := 3, uint64(time.Now().UnixNano()%1_000_000)
	if s := os.Getenv("OTAGW_TORTURE_CUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("OTAGW_TORTURE_CUTS=%q: want a positive number", s)
		}
		cuts = n
	}
	if s := os.Getenv("OTAGW_TORTURE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("OTAGW_TORTURE_SEED=%q: %v", s, err)
		}
		seed = n
	}
	cfg := torture.Config{Cuts: cuts, Seed: seed, Dir: t.TempDir(), Logf: t.Logf}
	if s := os.Getenv("OTAGW_TORTURE_WORKERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("OTAGW_TORTURE_WORKERS=%q: want a positive number", s)
		}
		cfg.Workers = n
	}
	if s := os.Getenv("OTAGW_TORTURE_UNTIL"); s != "" {
		u, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatalf("OTAGW_TORTURE_UNTIL=%q: want an RFC 3339 time: %v", s, err)
		}
		cfg.Until = u
	}
	st, err := torture.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	torture.Report(t.Logf, st)
	if st.Bricks > 0 || st.Failures > 0 {
		t.Errorf("%d bricks, %d other failures in %d cuts; failing seeds %v", st.Bricks, st.Failures, st.Cuts, st.FailureSeeds)
	}
}
