package precond

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// supply writes a fake power_supply entry.
func supply(t *testing.T, root, name string, attrs map[string]string) {
	t.Helper()
	d := filepath.Join(root, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range attrs {
		if err := os.WriteFile(filepath.Join(d, k), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBatteryPostponesThenProceeds: a gateway on battery below the
// threshold is not fit; once mains is back (or the battery is charged
// above it) it is.
func TestBatteryPostponesThenProceeds(t *testing.T) {
	root := t.TempDir()
	supply(t, root, "AC", map[string]string{"type": "Mains", "online": "0"})
	supply(t, root, "BAT0", map[string]string{"type": "Battery", "status": "Discharging", "capacity": "12"})
	c, err := New(Options{MinBattery: 30, PowerSupplyDir: root})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(context.Background())
	if !errors.Is(err, ErrNotMet) || !strings.Contains(err.Error(), "battery BAT0 at 12% (below 30%)") {
		t.Fatalf("on battery at 12%%: %v", err)
	}
	supply(t, root, "AC", map[string]string{"online": "1"})
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("mains back: %v", err)
	}
	supply(t, root, "AC", map[string]string{"online": "0"})
	supply(t, root, "BAT0", map[string]string{"capacity": "45"})
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("battery at 45%%: %v", err)
	}
	supply(t, root, "BAT0", map[string]string{"capacity": "20", "status": "Charging"})
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("charging: %v", err)
	}
}

func TestUPSBelowThreshold(t *testing.T) {
	root := t.TempDir()
	supply(t, root, "ups0", map[string]string{"type": "UPS", "status": "Discharging", "capacity": "5"})
	if r := Power(root, 10); r != "on ups ups0 at 5% (below 10%)" {
		t.Errorf("Power = %q", r)
	}
	if r := Power(filepath.Join(root, "missing"), 10); r != "" {
		t.Errorf("no power_supply class: %q, want fit", r)
	}
}

func TestLoadFreeSpaceAndHooks(t *testing.T) {
	dir := t.TempDir()
	la := filepath.Join(dir, "loadavg")
	os.WriteFile(la, []byte("3.50 1.00 0.50 2/300 1234\n"), 0o644)
	flag := filepath.Join(dir, "ok")
	c, err := New(Options{MaxLoad: 2, LoadAvgFile: la, MinFree: 1 << 62, FreePath: dir,
		Hooks: []string{"test -e " + flag + " || { echo not yet; exit 3; }"}, HookTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(context.Background())
	var nm *NotMet
	if !errors.As(err, &nm) || len(nm.Reasons) != 3 {
		t.Fatalf("Check = %v, want three reasons", err)
	}
	for i, want := range []string{"free on " + dir, "load average 3.50 (above 2.00)", "not yet"} {
		if !strings.Contains(nm.Reasons[i], want) {
			t.Errorf("reason %d = %q, want %q in it", i, nm.Reasons[i], want)
		}
	}
	os.WriteFile(la, []byte("0.10 1.00 0.50 2/300 1234\n"), 0o644)
	os.WriteFile(flag, nil, 0o644)
	c.o.MinFree = 1
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("all clear: %v", err)
	}
}

func TestHookTimeout(t *testing.T) {
	err := Hook(context.Background(), "sleep 30", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 200ms") {
		t.Fatalf("Hook = %v", err)
	}
}

func TestValidateNamesKeys(t *testing.T) {
	err := Options{MinBattery: 120, MaxLoad: -1, Hooks: []string{" "}}.Validate()
	for _, k := range []string{"min_battery", "max_load", "hooks[0]", "hook_timeout"} {
		var fe interface{ Field() string }
		found := false
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if errors.As(e, &fe) && fe.Field() == k {
				found = true
			}
		}
		if !found {
			t.Errorf("Validate = %v, want %s named", err, k)
		}
	}
}
