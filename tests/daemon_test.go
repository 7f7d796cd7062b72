package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

func statusOf(t *testing.T, sock string) api.Status {
	t.Helper()
	out, errOut, code := otagw(t, nil, "status", "--json", "--socket", sock)
	if code != 0 {
		t.Fatalf("otagw status: exit %d: %s", code, errOut)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

// TestSystemdNotifyProtocol runs the real daemon against a NOTIFY_SOCKET
// owned by the test: READY=1 once the API answers, WATCHDOG=1 at half of
// WATCHDOG_USEC, STOPPING=1 on SIGTERM, and exit status 0.
func TestSystemdNotifyProtocol(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ns := newNotifySocket(t, dir)
	cfg := writeConfig(t, dir, "", "")
	const wdUsec = 2_000_000 // pings are due every second
	d := startDaemon(t, cfg, "NOTIFY_SOCKET="+ns.Path, "WATCHDOG_USEC=2000000")

	ready := ns.wait(t, "READY", "1", 30*time.Second)
	if pid := ready.Vars["MAINPID"]; pid == "" {
		t.Errorf("READY without MAINPID: %v", ready.Vars)
	}
	// The API must answer as soon as READY=1 has been sent.
	st := statusOf(t, filepath.Join(dir, "otagw.sock"))
	if st.State != "idle" {
		t.Errorf("state after READY = %q, want idle", st.State)
	}
	if m := ready.Vars["STATUS"]; m != "idle: ready" {
		t.Errorf("READY carries STATUS=%q, want \"idle: ready\"", m)
	}

	// Cadence: collect pings; each gap must stay under WATCHDOG_USEC (what
	// systemd enforces) and well above zero (not a busy loop).
	var pings []time.Time
	for len(pings) < 4 {
		pings = append(pings, ns.wait(t, "WATCHDOG", "1", 10*time.Second).At)
	}
	for i := 1; i < len(pings); i++ {
		gap := pings[i].Sub(pings[i-1])
		if gap >= wdUsec*time.Microsecond || gap < wdUsec*time.Microsecond/8 {
			t.Errorf("watchdog gap %d = %v, want about %v (half of WATCHDOG_USEC)", i, gap, wdUsec*time.Microsecond/2)
		}
	}

	err, took := d.stop(t)
	if err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if took > 5*time.Second {
		t.Errorf("exit took %v after SIGTERM, want within 5 s", took)
	}
	ns.wait(t, "STOPPING", "1", time.Second)
	if _, err := os.Stat(filepath.Join(dir, "otagw.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind after a clean stop")
	}
}

// TestAPIPeerCredentials calls the API as other uids, in child processes
// with switched credentials: outside the groups -> 403, read group -> reads
// only, admin group -> writes too, root -> all.
func TestAPIPeerCredentials(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	// Numeric groups need no /etc/group entries: 4201 may open the socket,
	// 4202 may read, 4203 may administer.
	cfg := writeConfig(t, dir, "  socket_group: \"4201\"\n  read_group: \"4202\"\n  admin_group: \"4203\"\n", "")
	ns := newNotifySocket(t, dir)
	d := startDaemon(t, cfg, "NOTIFY_SOCKET="+ns.Path)
	ns.wait(t, "READY", "1", 30*time.Second)
	sock := filepath.Join(dir, "otagw.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4201 {
		t.Fatalf("socket %v mode/group wrong: %v", fi, err)
	}

	as := func(uid uint32, groups []uint32, args ...string) (string, int) {
		cmd := exec.Command(otagwBin, append(args, "--socket", sock)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534, Groups: groups}}
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run as %d: %v", uid, err)
		}
		return string(out), code
	}
	cases := []struct {
		name   string
		uid    uint32
		groups []uint32
		read   bool
		write  bool
	}{
		{"outsider", 65534, []uint32{4201}, false, false},
		{"reader", 65534, []uint32{4201, 4202}, true, false},
		{"admin", 65534, []uint32{4201, 4203}, true, true},
		{"root", 0, nil, true, true},
	}
	for _, c := range cases {
		out, code := as(c.uid, c.groups, "status", "--json")
		if (code == 0) != c.read {
			t.Errorf("%s: status exit %d, want allowed=%v: %s", c.name, code, c.read, out)
		}
		if !c.read && !strings.Contains(out, "uid 65534 may not call GET /v1/status") {
			t.Errorf("%s: denial does not say why: %s", c.name, out)
		}
		out, code = as(c.uid, c.groups, "reload")
		if (code == 0) != c.write {
			t.Errorf("%s: reload exit %d, want allowed=%v: %s", c.name, code, c.write, out)
		}
	}
	// Not even in the socket's group: the kernel refuses the connection.
	out, code := as(65534, nil, "status")
	if code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("no socket group: exit %d: %s", code, out)
	}
	d.stop(t)
	if !strings.Contains(d.out.String(), "API call denied") {
		t.Errorf("denials were not logged")
	}
}

// TestConfigReloadKeepsOldOnError: SIGHUP with a good file swaps it in;
// with a broken one the daemon says why and keeps the old one.
func TestConfigReloadKeepsOldOnError(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	cfg := writeConfig(t, dir, "", "")
	ns := newNotifySocket(t, dir)
	d := startDaemon(t, cfg, "NOTIFY_SOCKET="+ns.Path)
	ns.wait(t, "READY", "1", 30*time.Second)
	sock := filepath.Join(dir, "otagw.sock")

	writeConfig(t, dir, "  log_level: debug\n", "")
	d.cmd.Process.Signal(syscall.SIGHUP)
	ns.wait(t, "RELOADING", "1", 10*time.Second)
	ns.wait(t, "READY", "1", 10*time.Second)
	if st := statusOf(t, sock); st.ConfigGeneration != 2 || st.LogLevel != "debug" {
		t.Fatalf("after good reload: generation %d level %s", st.ConfigGeneration, st.LogLevel)
	}

	writeConfig(t, dir, "  log_level: loud\n  sockets: x\n", "")
	d.cmd.Process.Signal(syscall.SIGHUP)
	ns.wait(t, "RELOADING", "1", 10*time.Second)
	ns.wait(t, "READY", "1", 10*time.Second)
	st := statusOf(t, sock)
	if st.ConfigGeneration != 2 || st.LogLevel != "debug" {
		t.Errorf("broken file replaced the config: generation %d level %s", st.ConfigGeneration, st.LogLevel)
	}
	if !strings.Contains(st.Message, "config reload rejected") || !strings.Contains(st.Message, "otagw.yaml:5:3: daemon.sockets: unknown key") {
		t.Errorf("status message = %q", st.Message)
	}
	logs := d.out.String()
	if !strings.Contains(logs, "the old one stays in force") || !strings.Contains(logs, "daemon.sockets: unknown key") {
		t.Errorf("rejection not logged with its reason:\n%s", logs)
	}
	// The API reload verb reports the same errors.
	_, errOut, code := otagw(t, nil, "reload", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "unknown key") {
		t.Errorf("otagw reload: exit %d, %s", code, errOut)
	}
	if err, _ := d.stop(t); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// TestConfigValidateCLI: every error, with file:line:column and key path.
func TestConfigValidateCLI(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("daemon:\n  socket: rel\n  colour: red\nextra: 1\n"), 0o644)
	_, errOut, code := otagw(t, nil, "config", "validate", bad)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{bad + ":3:3: daemon.colour: unknown key", bad + ":4:1: extra: unknown key"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("output lacks %q:\n%s", want, errOut)
		}
	}
	good := writeConfig(t, dir, "", "")
	if out, errOut, code := otagw(t, nil, "config", "validate", good); code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("good file: exit %d %s %s", code, out, errOut)
	}
	out, _, code := otagw(t, nil, "config", "show", "--json", good)
	if code != 0 || !strings.Contains(out, `"key_file": "`+filepath.Join(dir, "state", "device.key")) {
		t.Errorf("config show: exit %d\n%s", code, out)
	}
	// The shipped default config is valid.
	if _, errOut, code := otagw(t, nil, "config", "validate", "../configs/otagw.yaml"); code != 0 {
		t.Errorf("configs/otagw.yaml: %s", errOut)
	}
}

// TestDaemonNotRunning: one line, how to start it, exit 1.
func TestDaemonNotRunning(t *testing.T) {
	t.Parallel()
	_, errOut, code := otagw(t, nil, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "systemctl start otagw") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestStateTamperingSurvived: flip a byte, truncate, delete the key; each
// time the daemon starts, reports tampering and runs from safe defaults.
func TestStateTamperingSurvived(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	cfg := writeConfig(t, dir, "", "")
	sock := filepath.Join(dir, "otagw.sock")
	statePath := filepath.Join(dir, "state", "state")
	run := func() (api.Status, string) {
		ns := newNotifySocket(t, t.TempDir())
		d := startDaemon(t, cfg, "NOTIFY_SOCKET="+ns.Path)
		ns.wait(t, "READY", "1", 30*time.Second)
		st := statusOf(t, sock)
		if err, _ := d.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
		return st, d.out.String()
	}
	tampering := func(st api.Status) (n int) {
		for _, w := range st.Warnings {
			if strings.Contains(w, "tampering") {
				n++
			}
		}
		return n
	}
	if st, _ := run(); tampering(st) != 0 {
		t.Fatalf("clean start has warnings: %v", st.Warnings)
	}
	tampers := []struct {
		name string
		do   func()
	}{
		{"flip a byte", func() {
			b, _ := os.ReadFile(statePath)
			b[len(b)/2] ^= 0x20
			os.WriteFile(statePath, b, 0o600)
		}},
		{"truncate", func() {
			b, _ := os.ReadFile(statePath)
			os.WriteFile(statePath, b[:len(b)-7], 0o600)
		}},
		{"delete the key", func() { os.Remove(filepath.Join(dir, "state", "device.key")) }},
	}
	for _, tc := range tampers {
		tc.do()
		st, logs := run()
		if tampering(st) != 1 {
			t.Errorf("%s: warnings = %v", tc.name, st.Warnings)
		}
		if !strings.Contains(logs, "state tampering detected") {
			t.Errorf("%s: not logged as tampering", tc.name)
		}
		if st.State != "idle" {
			t.Errorf("%s: state %q, want idle (safe default)", tc.name, st.State)
		}
		// The next start is clean again.
		if st, _ := run(); tampering(st) != 0 {
			t.Errorf("%s: warning persists on the next start: %v", tc.name, st.Warnings)
		}
	}
	moved, _ := filepath.Glob(statePath + ".bad-*")
	if len(moved) == 0 {
		t.Errorf("no moved-aside state files")
	}
}

// TestConfigApply: a whole new config handed over the API (what a remote
// configuration agent does) is validated whole, written and loaded; an
// invalid one is refused with every error and the file stays as it was.
func TestConfigApply(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	cfg := writeConfig(t, dir, "", "")
	d := startReady(t, cfg)
	sock := filepath.Join(dir, "otagw.sock")
	orig, _ := os.ReadFile(cfg)

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, append(append([]byte(nil), orig...), []byte("colour: red\nupdate: {threshold: 0}\n")...), 0o644)
	_, e, code := otagw(t, nil, "config", "apply", bad, "--socket", sock)
	if code != 1 || !strings.Contains(e, "colour: unknown key") || !strings.Contains(e, "nothing changed") {
		t.Errorf("invalid apply: exit %d: %s", code, e)
	}
	if now, _ := os.ReadFile(cfg); string(now) != string(orig) {
		t.Errorf("an invalid apply changed the config file")
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(strings.Replace(string(orig), "daemon:\n", "daemon:\n  log_level: warn\n", 1)), 0o644)
	if out, e, code := otagw(t, nil, "config", "apply", good, "--socket", sock); code != 0 {
		t.Fatalf("apply: %s %s", out, e)
	}
	if st := statusOf(t, sock); st.LogLevel != "warn" || st.ConfigGeneration != 2 {
		t.Errorf("after apply: level %s generation %d", st.LogLevel, st.ConfigGeneration)
	}
	if now, _ := os.ReadFile(cfg); !strings.Contains(string(now), "log_level: warn") {
		t.Errorf("the applied config was not written to %s", cfg)
	}
	d.stop(t)
}
