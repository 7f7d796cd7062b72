package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMaintenanceWindows: outside its window an install is refused (and
// changes nothing) unless the operator says --now; with reboot: window the
// daemon reboots into the new release by itself once a window is open.
func TestMaintenanceWindows(t *testing.T) {
	t.Parallel()
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		g := newGateway(t, 16<<20, `maintenance:
  windows:
    - {name: new-year, start: "0 0 1 1 *", duration: 1m}
  install: window
  flash: window
`)
		os.WriteFile(g.Env, []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
		b := g.bundle(t, "2.0.0", testImage(2<<20))
		d := g.start(t)
		envBefore, _ := os.ReadFile(g.Env)
		_, e, code := otagw(t, nil, "install", "--socket", g.Socket, b)
		if code == 0 || !strings.Contains(e, "maintenance window") || !strings.Contains(e, "new-year") {
			t.Fatalf("install outside the window: exit %d: %s", code, e)
		}
		if envAfter, _ := os.ReadFile(g.Env); string(envAfter) != string(envBefore) {
			t.Errorf("a refused install changed the boot environment")
		}
		st := statusOf(t, g.Socket)
		if m := st.Maintenance; m == nil || m.Open || m.Window != "new-year" || m.NextStart.Month() != time.January {
			t.Errorf("status maintenance: %+v", st.Maintenance)
		}
		if out, e, code := otagw(t, nil, "install", "--now", "--socket", g.Socket, b); code != 0 {
			t.Fatalf("install --now: %s %s", out, e)
		}
		d.stop(t)
	})
	t.Run("reboot in window", func(t *testing.T) {
		t.Parallel()
		dir := testDir(t)
		marker := filepath.Join(dir, "rebooted")
		g := newGatewayIn(t, dir, 16<<20, `maintenance:
  windows:
    - {name: always, start: "* * * * *", duration: 5m}
  reboot: window
`, fmt.Sprintf("  reboot_command: [/bin/sh, -c, 'echo \"$OTAGW_REBOOT_REASON\" > %s']\n", marker))
		b := g.bundle(t, "2.0.0", testImage(2<<20))
		d := g.start(t)
		if out, e, code := otagw(t, nil, "install", "--socket", g.Socket, b); code != 0 {
			t.Fatalf("install: %s %s", out, e)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if why, err := os.ReadFile(marker); err == nil {
				if !strings.Contains(string(why), "maintenance window \"always\"") || !strings.Contains(string(why), "2.0.0") {
					t.Errorf("reboot reason: %q", why)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no reboot in the open window\n%s", d.out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		d.stop(t)
	})
}
