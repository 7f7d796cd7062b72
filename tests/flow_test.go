package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// flowGateway is a gateway whose daemon "reboots" by writing a marker
// file, and whose boot loader is `otagw sim boot` (boot.cmd on the Go
// model of U-Boot). Health: one required file check.
func flowGateway(t *testing.T, backend, assessment string) *gateway {
	t.Helper()
	dir := testDir(t)
	reboot := filepath.Join(dir, "reboot.sh")
	os.WriteFile(reboot, []byte("#!/bin/sh\necho \"$OTAGW_REBOOT_REASON\" > "+filepath.Join(dir, "rebooted")+"\n"), 0o755)
	g := newGatewayBackend(t, dir, 32<<20, fmt.Sprintf(`health:
  checks:
    - {name: app-data, file: %s}
assessment:
%s  committed_unit: ""
`, filepath.Join(dir, "healthy"), assessment),
		fmt.Sprintf("  uptime_file: %s\n  reboot_command: [/bin/sh, %s]\n", filepath.Join(dir, "uptime"), reboot), backend)
	return g
}

// installedGateway is a flow gateway booted from A with release 2.0.0
// installed into B and the daemon stopped: the next boot tries B.
func installedGateway(t *testing.T, backend, assessment string) *gateway {
	t.Helper()
	g := flowGateway(t, backend, assessment)
	g.boot(t)
	b := g.bundle(t, "2.0.0", testImage(4<<20))
	d := g.start(t)
	if out, code := g.install(t, b); code != 0 {
		t.Fatalf("install: %s", out)
	}
	d.stop(t)
	return g
}

// boot runs the simulated boot loader and returns the slot it booted.
func (g *gateway) boot(t *testing.T) string {
	t.Helper()
	out, e, code := otagw(t, nil, "sim", "boot", "--config", g.Config)
	if code != 0 {
		t.Fatalf("sim boot: %s %s", out, e)
	}
	b, _ := os.ReadFile(g.Cmdline)
	for _, w := range strings.Fields(string(b)) {
		if s, ok := strings.CutPrefix(w, "rauc.slot="); ok {
			return s
		}
	}
	t.Fatalf("no rauc.slot in %q", b)
	return ""
}

func (g *gateway) start(t *testing.T) *daemonProc {
	t.Helper()
	return startReady(t, g.Config)
}

// waitState polls status until pred holds.
func (g *gateway) waitState(t *testing.T, what string, pred func(api.Status) bool) api.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var st api.Status
	for time.Now().Before(deadline) {
		st = statusOf(t, g.Socket)
		if pred(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: last status %+v", what, st)
	return st
}

func (g *gateway) install(t *testing.T, bundle string) (string, int) {
	t.Helper()
	out, e, code := otagw(t, nil, "install", "--socket", g.Socket, bundle)
	return out + e, code
}

// forBackends runs a flow test on both boot backends, in parallel: the
// file backend and the uboot backend (a redundant U-Boot environment
// through fw_env.config, read back with fw_printenv).
func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	t.Parallel()
	for _, b := range []string{"file", "uboot"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func slot(st api.Status, name string) api.SlotStatus {
	for _, s := range st.Slots {
		if s.Bootname == name {
			return s
		}
	}
	return api.SlotStatus{}
}

// TestFlowGoodReleaseCommits: install -> reboot -> checks pass -> commit;
// the minimum version rises so the old release is now refused.
func TestFlowGoodReleaseCommits(t *testing.T) { forBackends(t, testFlowGoodReleaseCommits) }

func testFlowGoodReleaseCommits(t *testing.T, backend string) {
	g := flowGateway(t, backend, "  deadline: 60s\n  retry_interval: 1s\n")
	os.WriteFile(filepath.Join(g.Dir, "healthy"), nil, 0o644)
	if s := g.boot(t); s != "A" {
		t.Fatalf("first boot: slot %s", s)
	}
	old := g.bundle(t, "1.0.0", testImage(4<<20))
	img := testImage(6 << 20)
	newer := g.bundle(t, "2.0.0", img)

	d := g.start(t)
	if out, code := g.install(t, newer); code != 0 {
		t.Fatalf("install: %s", out)
	}
	st := statusOf(t, g.Socket)
	if st.State != "installed" || !slot(st, "B").Primary || st.Release == nil || st.Release.Pending != "2.0.0" {
		t.Fatalf("after install: %+v", st)
	}
	d.stop(t)

	if s := g.boot(t); s != "B" {
		t.Fatalf("reboot after install booted %s, want B", s)
	}
	d = g.start(t)
	st = g.waitState(t, "commit", func(s api.Status) bool { return s.Assessment != nil && s.State != "assessing" })
	if st.Assessment.Outcome != "committed" || st.Release == nil || st.Release.Committed != "2.0.0" || st.Release.MinVersion != "2.0.0" {
		t.Fatalf("after assessment: %+v %+v", st.Assessment, st.Release)
	}
	if b := slot(st, "B"); !b.Booted || !b.Primary || b.State != "good" || b.TriesLeft != 3 {
		t.Errorf("slot B after commit: %+v (want booted, primary, good, 3 tries)", b)
	}
	// The old release is now a downgrade.
	out, code := g.install(t, old)
	if code == 0 || !strings.Contains(out, "downgrade-refused") {
		t.Errorf("installing 1.0.0 after committing 2.0.0: exit %d: %s", code, out)
	}
	d.stop(t)
	// A restart keeps it all (nothing pending, B stays good).
	if s := g.boot(t); s != "B" {
		t.Fatalf("next boot: %s", s)
	}
	d = g.start(t)
	st = g.waitState(t, "not pending", func(s api.Status) bool { return s.Assessment != nil })
	if st.Assessment.Outcome != "not-pending" || slot(st, "B").TriesLeft != 3 {
		t.Errorf("second boot of the committed release: %+v, B %+v", st.Assessment, slot(st, "B"))
	}

	// The operator verbs: rollback makes the other good slot primary (and
	// reboots with --reboot); mark-bad takes a slot out of the order.
	if out, e, code := otagw(t, nil, "rollback", "--socket", g.Socket); code != 0 || !strings.Contains(out, "slot A boots next") {
		t.Fatalf("rollback: exit %d: %s %s", code, out, e)
	}
	if st := statusOf(t, g.Socket); !slot(st, "A").Primary || slot(st, "B").Primary {
		t.Errorf("after rollback: A %+v, B %+v", slot(st, "A"), slot(st, "B"))
	}
	if out, e, code := otagw(t, nil, "mark-bad", "A", "--socket", g.Socket); code != 0 {
		t.Fatalf("mark-bad A: %s %s", out, e)
	}
	if st := statusOf(t, g.Socket); slot(st, "A").State != "bad" || !slot(st, "B").Primary {
		t.Errorf("after mark-bad A: A %+v, B %+v", slot(st, "A"), slot(st, "B"))
	}
	if _, e, code := otagw(t, nil, "rollback", "--reboot", "--socket", g.Socket); code == 0 || !strings.Contains(e, "no other slot is good") {
		t.Errorf("rollback with no good other slot: exit %d: %s", code, e)
	}
	if _, err := os.Stat(filepath.Join(g.Dir, "rebooted")); err == nil {
		t.Errorf("a refused rollback rebooted")
	}
	if out, e, code := otagw(t, nil, "mark-good", "--socket", g.Socket); code != 0 || !strings.Contains(out, "slot B marked good") {
		t.Errorf("mark-good: exit %d: %s %s", code, out, e)
	}
	d.stop(t)
}

// TestFlowBadReleaseRollsBack: install -> reboot -> failing health check
// -> mark bad -> reboot -> old slot, with the tries as expected.
func TestFlowBadReleaseRollsBack(t *testing.T) { forBackends(t, testFlowBadReleaseRollsBack) }

func testFlowBadReleaseRollsBack(t *testing.T, backend string) {
	g := installedGateway(t, backend, "  deadline: 3s\n  retry_interval: 1s\n")
	if s := g.boot(t); s != "B" {
		t.Fatalf("booted %s, want B", s)
	}
	if e := g.env(t); e["BOOT_B_LEFT"] != "2" {
		t.Errorf("U-Boot did not count the try: BOOT_B_LEFT=%s", e["BOOT_B_LEFT"])
	}
	d := g.start(t) // no "healthy" file: the required check fails
	rebooted := filepath.Join(g.Dir, "rebooted")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(rebooted); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reboot after a failing assessment\n%s", d.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The log line may trail the reboot marker through the output pipe.
	for logDeadline := time.Now().Add(10 * time.Second); !strings.Contains(d.out.String(), "app-data"); {
		if time.Now().After(logDeadline) {
			t.Errorf("the log does not name the failed check:\n%s", d.out.String())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e := g.env(t); strings.Fields(e["BOOT_ORDER"])[0] == "B" || e["BOOT_B_LEFT"] != "0" {
		t.Errorf("slot B not marked bad before the reboot: %v", e)
	}
	d.cmd.Process.Signal(syscall.SIGKILL) // the reboot
	<-d.done

	if s := g.boot(t); s != "A" {
		t.Fatalf("after rollback booted %s, want A", s)
	}
	d = g.start(t)
	st := g.waitState(t, "rolled back", func(s api.Status) bool { return s.Assessment != nil })
	if st.Release != nil && st.Release.Pending != "" {
		t.Errorf("release still pending after rollback: %+v", st.Release)
	}
	a, bs := slot(st, "A"), slot(st, "B")
	if !a.Booted || !a.Primary || a.State != "good" || a.TriesLeft != 3 {
		t.Errorf("slot A after rollback: %+v (want booted, primary, good, tries restored to 3)", a)
	}
	if bs.State != "bad" || bs.Primary || bs.TriesLeft != 0 || !strings.Contains(bs.Note, "rolled back") {
		t.Errorf("slot B after rollback: %+v", bs)
	}
	d.stop(t)
}

// TestFlowCrashLoopFallsBack kills the daemon during every assessment of
// the new slot: the daemon never decides, and U-Boot's try counter alone
// brings the board back to the old slot.
func TestFlowCrashLoopFallsBack(t *testing.T) { forBackends(t, testFlowCrashLoopFallsBack) }

func testFlowCrashLoopFallsBack(t *testing.T, backend string) {
	g := installedGateway(t, backend, "  deadline: 10m\n  retry_interval: 1s\n")
	var seq []string
	var left []string
	for i := 0; i < 6; i++ {
		s := g.boot(t)
		seq = append(seq, s)
		left = append(left, g.env(t)["BOOT_B_LEFT"])
		if s == "A" {
			break
		}
		d := g.start(t)
		g.waitState(t, "assessing", func(s api.Status) bool { return s.State == "assessing" })
		d.cmd.Process.Signal(syscall.SIGKILL) // crash (or hang + watchdog reset) mid-assessment
		<-d.done
	}
	if got := strings.Join(seq, " "); got != "B B B A" {
		t.Fatalf("boot sequence %q, want \"B B B A\" (3 tries, then fallback); BOOT_B_LEFT after each boot: %v", got, left)
	}
	if got := strings.Join(left, " "); got != "2 1 0 0" {
		t.Errorf("BOOT_B_LEFT after each boot = %q, want \"2 1 0 0\"", got)
	}
	d := g.start(t)
	g.waitState(t, "rolled back", func(s api.Status) bool { return s.Assessment != nil })
	// Read again: one status is put together part by part, and the read
	// that first saw the assessment may hold the message from just before.
	st := statusOf(t, g.Socket)
	if st.Assessment == nil || st.Assessment.Outcome != "rolled-back" || !strings.Contains(st.Message, "rolled back") {
		t.Errorf("after fallback: %+v, %q", st.Assessment, st.Message)
	}
	if _, err := os.Stat(filepath.Join(g.Dir, "rebooted")); err == nil {
		t.Errorf("the daemon rebooted by itself; the try counter should have done it")
	}
	d.stop(t)
}

// TestWatchdogOnlyWhileHealthy: WATCHDOG=1 stops when a liveness probe
// fails (here the API socket file is removed behind the daemon's back).
func TestWatchdogOnlyWhileHealthy(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ns := newNotifySocket(t, dir)
	cfg := writeConfig(t, dir, "", "")
	d := startDaemon(t, cfg, "NOTIFY_SOCKET="+ns.Path, "WATCHDOG_USEC=1000000")
	ns.wait(t, "READY", "1", 30*time.Second)
	for i := 0; i < 3; i++ {
		ns.wait(t, "WATCHDOG", "1", 5*time.Second)
	}
	os.Remove(filepath.Join(dir, "otagw.sock"))
	// Allow the ping already in flight, then none for well over the timeout.
	time.Sleep(1500 * time.Millisecond)
	for drained := false; !drained; {
		select {
		case <-ns.ch:
		default:
			drained = true
		}
	}
	select {
	case m := <-ns.ch:
		if _, ok := m.Vars["WATCHDOG"]; ok {
			t.Fatalf("WATCHDOG=1 sent while the API socket is gone: %v", m.Vars)
		}
	case <-time.After(3 * time.Second):
	}
	if !strings.Contains(d.out.String(), "unhealthy: not feeding the watchdogs") {
		t.Errorf("unhealthy state not logged")
	}
	d.stop(t)
}
