package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `make demo`'s script non-interactively, as a new user
// would, and fails if any step misbehaves: the script stops at the first
// failed step (set -e), at a downgrade that is not refused, or at a release
// that is not committed. The demo's own output is printed on failure.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes about a minute; -short skips it")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "scripts/demo.sh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEMO_STAY=0")
	cmd.Stdin = nil // no terminal: the demo stops by itself
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("make demo failed: %v\n%s", err, text)
	}
	for _, want := range []string{
		"demo done; stopping",
		"must be refused",
		"not-needed", // the second MCU pass finds the devices current
		"state installed (from installing) release 3.0.0", // otagw watch: the channel's release
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q\n%s", want, text)
		}
	}
	for _, bad := range []string{"panic:", "WARNING: DATA RACE", "should have been refused", "was not committed"} {
		if strings.Contains(text, bad) {
			t.Errorf("demo output has %q\n%s", bad, text)
		}
	}
}
