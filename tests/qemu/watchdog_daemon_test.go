package qemu_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/abboot/ubootenv"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/tests/qemu/qemutest"
)

// The daemon's hardware watchdog, end to end, in a QEMU guest with an
// emulated i6300esb that resets the machine (-watchdog-action reset). The
// U-Boot environment (redundant, two copies of 0x4000) lives on a virtual
// disk, so it survives the resets; a second disk is the test's notebook,
// where each boot writes what it saw before the next reset. Every boot runs
// the boot chain: `otagw sim boot` (otagw's boot.cmd in the Go model of
// U-Boot, reading the env through fw_env.config) counts BOOT_B_LEFT down,
// then `otagw daemon` starts on the uboot backend with watchdog.enabled.
//
//	boot 1  normal power-on: status says no watchdog reset, the daemon keeps
//	        the machine up for three timeouts by petting; SIGTERM (what
//	        systemctl stop sends) magic-closes, the watchdog stays off for
//	        three timeouts; then the daemon again, SIGSTOP: the i6300esb
//	        resets the machine
//	boot 2  the bootloader counted the try (BOOT_B_LEFT one below what the
//	        daemon left), status and log say watchdog reset (CARDRESET, also
//	        in sysfs bootstatus), a clean stop disarms; then the daemon with
//	        watchdog.nowayout: SIGTERM leaves the watchdog armed and it
//	        resets the machine
//	boot 3  the checks of boot 2 after the nowayout reset, and a clean stop
//
// A boot that found a failure stops before its reset, so the failure is
// reported (go test prints subtest results only when the top-level test
// ends, which a reset prevents) and the host sees fewer boots than three.
// The host demands exactly three boots, no skip in the guest, and reads the
// environment afterwards with libubootenv's own fw_printenv.
const (
	wdTimeout    = 5 * time.Second
	envCopySize  = 0x4000
	envDiskSize  = 64 << 10
	noteDiskSize = 64 << 10
)

// bootNote is what one boot leaves in the notebook disk.
type bootNote struct {
	Boot          int    `json:"boot"`
	Phase         string `json:"phase"`           // how the boot ended: sigstop, nowayout, clean
	LeftAtBoot    int    `json:"left_at_boot"`    // BOOT_B_LEFT before the boot chain ran
	LeftAfterBoot int    `json:"left_after_boot"` // after otagw sim boot counted this try
	LeftAtEnd     int    `json:"left_at_end"`     // when this boot ended (the daemon marked B good)
	WatchdogReset bool   `json:"watchdog_reset"`  // otagw status --json said so
	SysBootStatus string `json:"sys_bootstatus"`  // /sys/class/watchdog/watchdogN/bootstatus
}

func TestWatchdogDaemonInGuest(t *testing.T) {
	if os.Getenv(qemutest.GuestEnv) == "1" {
		guestWatchdogDaemon(t)
		return
	}
	// Each guest is its own QEMU process with one TCG thread; the guest
	// tests of this package run side by side on a machine's cores.
	t.Parallel()
	for _, tool := range []string{"fw_setenv", "fw_printenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (Debian libubootenv-tool, scripts/test-deps.sh): %v", tool, err)
		}
	}
	dir := t.TempDir()
	envImg, noteImg := filepath.Join(dir, "env.img"), filepath.Join(dir, "notebook.img")
	for _, f := range []struct {
		path string
		size int64
	}{{envImg, envDiskSize}, {noteImg, noteDiskSize}} {
		if err := os.WriteFile(f.path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path, f.size); err != nil {
			t.Fatal(err)
		}
	}
	// The factory environment, written by libubootenv's fw_setenv: slot B
	// is primary and booted, three tries each.
	fwcfg := filepath.Join(dir, "fw_env.config")
	os.WriteFile(fwcfg, []byte(fmt.Sprintf("%s 0x0 0x%x\n%s 0x%x 0x%x\n", envImg, envCopySize, envImg, envCopySize, envCopySize)), 0o644)
	defenv := filepath.Join(dir, "defenv")
	os.WriteFile(defenv, []byte("BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
	if out, err := exec.Command("fw_setenv", "-c", fwcfg, "-f", defenv, "otagw_test", "watchdog-e2e").CombinedOutput(); err != nil {
		t.Fatalf("fw_setenv -c %s: %v\n%s", fwcfg, err, out)
	}

	qemutest.Run(t, qemutest.Config{
		TestPkg:  "./tests/qemu",
		TestRun:  "^TestWatchdogDaemonInGuest$",
		Modules:  []string{"i6300esb", "virtio_pci", "virtio_blk"},
		Binaries: map[string]string{"/bin/otagw": "./cmd/otagw"},
		QEMUArgs: []string{"-device", "i6300esb", "-watchdog-action", "reset",
			"-drive", "file=" + envImg + ",format=raw,if=virtio,cache=writeback",
			"-drive", "file=" + noteImg + ",format=raw,if=virtio,cache=writeback"},
		Boots:   3,
		Timeout: 10 * time.Minute, // 6 minutes seen under heavy load; bounded, not tight
	})

	// What the guest wrote before each reset, and the environment as
	// U-Boot's own userspace tool reads it.
	raw, err := os.ReadFile(noteImg)
	if err != nil {
		t.Fatal(err)
	}
	notes, err := decodeNotebook(raw)
	if err != nil {
		t.Fatalf("notebook %s: %v", noteImg, err)
	}
	for _, n := range notes {
		t.Logf("boot %d: %+v", n.Boot, n)
	}
	if len(notes) != 3 {
		t.Fatalf("notebook has %d boots; want 3", len(notes))
	}
	if got := []string{notes[0].Phase, notes[1].Phase, notes[2].Phase}; !slices.Equal(got, []string{"sigstop", "nowayout", "clean"}) {
		t.Errorf("boots ended %v; want [sigstop nowayout clean]", got)
	}
	for i, n := range notes {
		if i > 0 && n.LeftAfterBoot != notes[i-1].LeftAtEnd-1 {
			t.Errorf("boot %d: BOOT_B_LEFT %d after the boot chain; the previous boot left %d, so the bootloader did not count the reset", n.Boot, n.LeftAfterBoot, notes[i-1].LeftAtEnd)
		}
		if n.WatchdogReset != (i > 0) {
			t.Errorf("boot %d: status last_boot_watchdog_reset = %v; want %v", n.Boot, n.WatchdogReset, i > 0)
		}
	}
	out, err := exec.Command("fw_printenv", "-c", fwcfg, "BOOT_ORDER", "BOOT_B_LEFT").CombinedOutput()
	if err != nil {
		t.Fatalf("fw_printenv -c %s: %v\n%s", fwcfg, err, out)
	}
	if want := fmt.Sprintf("BOOT_ORDER=B A\nBOOT_B_LEFT=%x\n", notes[2].LeftAtEnd); string(out) != want {
		t.Errorf("fw_printenv after the run:\n%s\nwant\n%s", out, want)
	}
}

// decodeNotebook reads the notebook disk: a big-endian uint32 length, then
// that much JSON (a list of bootNote).
func decodeNotebook(raw []byte) ([]bootNote, error) {
	if len(raw) < 4 {
		return nil, fmt.Errorf("%d bytes, too short", len(raw))
	}
	n := binary.BigEndian.Uint32(raw)
	if n == 0 {
		return nil, nil
	}
	if int64(n) > int64(len(raw)-4) {
		return nil, fmt.Errorf("length %d beyond the %d bytes of the disk", n, len(raw))
	}
	var notes []bootNote
	if err := json.Unmarshal(raw[4:4+n], &notes); err != nil {
		return nil, err
	}
	return notes, nil
}

// guest is the gateway the guest test sets up on each boot.
type guest struct {
	t        *testing.T
	dir      string
	fwcfg    string
	notebook string
	wdDev    string // /dev/watchdogN of the i6300esb
	wdSys    string // /sys/class/watchdog/watchdogN
	notes    []bootNote
}

func guestWatchdogDaemon(t *testing.T) {
	g := &guest{t: t, dir: "/tmp/gw", notebook: "/dev/vdb"}
	for _, dev := range []string{"/dev/vda", "/dev/vdb"} {
		waitFor(t, 20*time.Second, dev+" to appear (virtio_blk)", func() bool { _, err := os.Stat(dev); return err == nil })
	}
	raw := make([]byte, noteDiskSize)
	f, err := os.Open(g.notebook)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(raw, 0); err != nil {
		t.Fatalf("read notebook %s: %v", g.notebook, err)
	}
	f.Close()
	if g.notes, err = decodeNotebook(raw); err != nil {
		t.Fatalf("notebook %s: %v", g.notebook, err)
	}
	boot := len(g.notes) + 1
	g.findWatchdog()
	g.setup()

	note := bootNote{Boot: boot, SysBootStatus: g.sysfs("bootstatus")}
	note.LeftAtBoot = g.left()
	g.otagw("sim", "boot", "--config", g.config(false))
	note.LeftAfterBoot = g.left()
	t.Logf("boot %d: BOOT_B_LEFT %d at power-on, %d after the boot chain; sysfs bootstatus %s", boot, note.LeftAtBoot, note.LeftAfterBoot, note.SysBootStatus)
	if note.LeftAfterBoot != note.LeftAtBoot-1 {
		t.Fatalf("otagw sim boot took BOOT_B_LEFT from %d to %d; want one try less", note.LeftAtBoot, note.LeftAfterBoot)
	}
	bs, err := strconv.ParseUint(note.SysBootStatus, 0, 32)
	if err != nil {
		t.Fatalf("%s/bootstatus = %q: %v", g.wdSys, note.SysBootStatus, err)
	}
	const cardReset = 0x20 // WDIOF_CARDRESET
	// go test prints a subtest's result only when its top-level test ends,
	// and a reset ends nothing: a boot that found a failure must not go on
	// to the reset, or the failure would vanish (the host then sees too few
	// boots and this boot's FAIL).
	switch boot {
	case 1:
		if bs&cardReset != 0 {
			t.Fatalf("first power-on but %s/bootstatus = %s has WDIOF_CARDRESET", g.wdSys, note.SysBootStatus)
		}
		ok := t.Run("power-on is not a watchdog reset, the daemon pets", func(t *testing.T) {
			d := g.start(t, false)
			st := d.status(t)
			note.WatchdogReset = st.Health.WatchdogReset
			if st.Health.WatchdogReset || len(st.Health.BootStatus) != 0 {
				t.Errorf("status health %+v after a power-on; want no watchdog reset", *st.Health)
			}
			// Armed for three timeouts: without the daemon's petting the
			// machine resets here, and the next boot fails on its
			// unexpected CARDRESET.
			time.Sleep(3 * wdTimeout)
			if st := d.status(t); !st.Health.Healthy || g.sysfs("state") != "active" {
				t.Errorf("after three timeouts: health %+v, %s/state %q; want healthy and active", *st.Health, g.wdSys, g.sysfs("state"))
			}
			d.stopClean(t)
		}) && t.Run("SIGTERM magic-closes", func(t *testing.T) {
			d := g.start(t, false)
			d.stopClean(t)
			if s := g.sysfs("state"); s != "inactive" {
				t.Fatalf("%s/state = %q after the daemon stopped cleanly; want inactive (magic close)", g.wdSys, s)
			}
			time.Sleep(3 * wdTimeout)
			if s := g.sysfs("state"); s != "inactive" {
				t.Fatalf("%s/state = %q three timeouts after a clean stop; want inactive", g.wdSys, s)
			}
		})
		if !ok || t.Failed() {
			return
		}
		t.Run("SIGSTOP resets", func(t *testing.T) {
			d := g.start(t, false)
			note.LeftAtEnd = g.waitLeft(t, 3) // the daemon gave the booted slot its tries back
			note.Phase = "sigstop"
			g.write(note)
			t.Logf("stopping the daemon (pid %d) with SIGSTOP; the i6300esb must reset the machine", d.cmd.Process.Pid)
			os.Stdout.Sync()
			d.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(12 * wdTimeout)
			t.Fatalf("the machine was not reset within %v of stopping the daemon (watchdog timeout %v)", 12*wdTimeout, wdTimeout)
		})
	case 2, 3:
		if bs&cardReset == 0 {
			t.Errorf("%s/bootstatus = %s after a watchdog reset; want WDIOF_CARDRESET (0x20)", g.wdSys, note.SysBootStatus)
		}
		if prev := g.notes[len(g.notes)-1]; note.LeftAtBoot != prev.LeftAtEnd {
			t.Errorf("BOOT_B_LEFT = %d at power-on; boot %d left %d (the env on the disk did not persist)", note.LeftAtBoot, prev.Boot, prev.LeftAtEnd)
		}
		ok := t.Run("watchdog reset reported", func(t *testing.T) {
			d := g.start(t, false)
			st := d.status(t)
			note.WatchdogReset = st.Health.WatchdogReset
			if !st.Health.WatchdogReset || !slices.Contains(st.Health.BootStatus, "CARDRESET") {
				t.Errorf("status health %+v; want last_boot_watchdog_reset and CARDRESET in boot_status", *st.Health)
			}
			if !slices.Contains(st.Warnings, "the last boot was a hardware watchdog reset") {
				t.Errorf("status warnings %q lack the watchdog reset", st.Warnings)
			}
			if !d.logged("hardware watchdog armed", "last_boot_was_watchdog_reset", true) {
				t.Errorf("the daemon's log has no 'hardware watchdog armed' line with last_boot_was_watchdog_reset=true:\n%s", d.out.String())
			}
			note.LeftAtEnd = g.waitLeft(t, 3)
			d.stopClean(t)
			if s := g.sysfs("state"); s != "inactive" {
				t.Errorf("%s/state = %q after a clean stop; want inactive", g.wdSys, s)
			}
		})
		if !ok || t.Failed() {
			return
		}
		if boot == 3 {
			note.Phase = "clean"
			g.write(note)
			return
		}
		t.Run("SIGTERM with nowayout leaves it armed", func(t *testing.T) {
			d := g.start(t, true)
			note.LeftAtEnd = g.waitLeft(t, 3)
			note.Phase = "nowayout"
			g.write(note)
			d.stopClean(t)
			if s := g.sysfs("state"); s != "active" {
				t.Fatalf("%s/state = %q after a clean stop with watchdog.nowayout; want active (left armed)", g.wdSys, s)
			}
			t.Logf("the daemon stopped cleanly with nowayout; the watchdog stays armed and must reset the machine")
			os.Stdout.Sync()
			time.Sleep(12 * wdTimeout)
			t.Fatalf("with watchdog.nowayout the machine was not reset within %v of a clean stop", 12*wdTimeout)
		})
	default:
		t.Fatalf("boot %d: the test resets the machine only twice", boot)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findWatchdog picks the i6300esb among /sys/class/watchdog.
func (g *guest) findWatchdog() {
	t := g.t
	waitFor(t, 10*time.Second, "the i6300esb watchdog device", func() bool {
		dirs, _ := filepath.Glob("/sys/class/watchdog/watchdog*")
		for _, d := range dirs {
			id, _ := os.ReadFile(filepath.Join(d, "identity"))
			if strings.Contains(string(id), "6300ESB") {
				g.wdSys, g.wdDev = d, "/dev/"+filepath.Base(d)
				_, err := os.Stat(g.wdDev)
				return err == nil
			}
		}
		return false
	})
}

func (g *guest) sysfs(name string) string {
	b, err := os.ReadFile(filepath.Join(g.wdSys, name))
	if err != nil {
		g.t.Fatalf("read %s/%s: %v", g.wdSys, name, err)
	}
	return strings.TrimSpace(string(b))
}

// setup writes the gateway's files in /tmp (fresh on every boot: the
// initramfs is); only the environment and the notebook persist.
func (g *guest) setup() {
	t := g.t
	for _, d := range []string{g.dir, filepath.Join(g.dir, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g.fwcfg = filepath.Join(g.dir, "fw_env.config")
	files := map[string]string{
		"fw_env.config": fmt.Sprintf("/dev/vda 0x0 0x%x\n/dev/vda 0x%x 0x%x\n", envCopySize, envCopySize, envCopySize),
		"uptime":        "1.00 1.00\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(g.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"A.img", "B.img"} {
		if err := os.WriteFile(filepath.Join(g.dir, s), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.otagw("keygen", "--out", filepath.Join(g.dir, "keys"))
	for _, nowayout := range []bool{false, true} {
		cfg := fmt.Sprintf(`daemon:
  socket: %[1]s/otagw.sock
  state_dir: %[1]s/state
  uptime_file: %[1]s/uptime
  reboot_command: [/bin/false] # never the guest's reboot(2); this test needs none
boot:
  backend: uboot
  fw_env_config: %[1]s/fw_env.config
  lock_file: %[1]s/fw_env.lock
  cmdline: %[1]s/cmdline
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: %[1]s/A.img, bootname: A}
    - {name: rootfs.1, class: rootfs, device: %[1]s/B.img, bootname: B}
update:
  keyring: %[1]s/keys
  compatible: otagw-qemu-gw
watchdog:
  enabled: true
  device: %[2]s
  timeout: %[3]v
  nowayout: %[4]v
`, g.dir, g.wdDev, wdTimeout, nowayout)
		if err := os.WriteFile(g.config(nowayout), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (g *guest) config(nowayout bool) string {
	if nowayout {
		return filepath.Join(g.dir, "otagw-nowayout.yaml")
	}
	return filepath.Join(g.dir, "otagw.yaml")
}

func (g *guest) otagw(args ...string) string {
	g.t.Helper()
	out, err := exec.Command("/bin/otagw", args...).CombinedOutput()
	if err != nil {
		g.t.Fatalf("otagw %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	g.t.Logf("otagw %s:\n%s", strings.Join(args, " "), bytes.TrimSpace(out))
	return string(out)
}

// left reads BOOT_B_LEFT (hexadecimal, as boot.cmd's setexpr writes it)
// from the environment disk.
func (g *guest) left() int {
	t := g.t
	t.Helper()
	ec, err := ubootenv.LoadConfig(g.fwcfg)
	if err != nil {
		t.Fatal(err)
	}
	o := ubootenv.DefaultOptions()
	o.NoLock = true
	st, err := ubootenv.Open(ec, o)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Read(context.Background())
	if err != nil {
		t.Fatalf("read the U-Boot environment on /dev/vda: %v", err)
	}
	v, err := strconv.ParseInt(snap.Env["BOOT_B_LEFT"], 16, 32)
	if err != nil {
		t.Fatalf("BOOT_B_LEFT = %q: %v", snap.Env["BOOT_B_LEFT"], err)
	}
	return int(v)
}

func (g *guest) waitLeft(t *testing.T, want int) int {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("the daemon to give slot B its tries back (BOOT_B_LEFT=%d)", want), func() bool { return g.left() == want })
	return want
}

// write puts the notes of the earlier boots and this one on the notebook
// disk and flushes it: the next thing may be a reset.
func (g *guest) write(n bootNote) {
	t := g.t
	data, err := json.Marshal(append(slices.Clone(g.notes), n))
	if err != nil {
		t.Fatal(err)
	}
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	buf = append(buf, data...)
	f, err := os.OpenFile(g.notebook, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(buf, 0); err != nil {
		t.Fatalf("write notebook %s: %v", g.notebook, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("sync notebook %s: %v", g.notebook, err)
	}
}

// guestDaemon is `otagw daemon` running in the guest.
type guestDaemon struct {
	g    *guest
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// syncBuffer is the daemon's output, written by exec's copier while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (g *guest) start(t *testing.T, nowayout bool) *guestDaemon {
	t.Helper()
	cmd := exec.Command("/bin/otagw", "daemon", "--config", g.config(nowayout), "--log-format", "json")
	d := &guestDaemon{g: g, cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.out.String())
		}
	})
	waitFor(t, 60*time.Second, "the daemon to answer otagw status with its hardware watchdog armed", func() bool {
		st, err := d.statusErr()
		return err == nil && st.State == "idle" && st.Health != nil && st.Health.Hardware
	})
	if s := g.sysfs("state"); s != "active" {
		t.Fatalf("%s/state = %q with the daemon running; want active", g.wdSys, s)
	}
	return d
}

func (d *guestDaemon) statusErr() (*api.Status, error) {
	out, err := exec.Command("/bin/otagw", "status", "--json", "--socket", filepath.Join(d.g.dir, "otagw.sock")).Output()
	if err != nil {
		return nil, err
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("otagw status --json: %w: %s", err, out)
	}
	return &st, nil
}

func (d *guestDaemon) status(t *testing.T) *api.Status {
	t.Helper()
	st, err := d.statusErr()
	if err != nil {
		t.Fatal(err)
	}
	if st.Health == nil {
		t.Fatalf("otagw status --json has no health section")
	}
	return st
}

// stopClean is systemctl stop: SIGTERM, and a clean exit.
func (d *guestDaemon) stopClean(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon still running 30s after SIGTERM")
	}
}

// logged: a JSON log line with msg and key=value.
func (d *guestDaemon) logged(msg, key string, value any) bool {
	sc := bufio.NewScanner(strings.NewReader(d.out.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if m["msg"] == msg && m[key] == value {
			return true
		}
	}
	return false
}

func TestDecodeNotebook(t *testing.T) {
	t.Parallel()
	blank := make([]byte, 64)
	if notes, err := decodeNotebook(blank); err != nil || notes != nil {
		t.Errorf("blank notebook: %v, %v; want none", notes, err)
	}
	data, _ := json.Marshal([]bootNote{{Boot: 1, Phase: "sigstop", LeftAtEnd: 3}})
	raw := append(binary.BigEndian.AppendUint32(nil, uint32(len(data))), data...)
	notes, err := decodeNotebook(append(raw, 0, 0, 0))
	if err != nil || len(notes) != 1 || notes[0].Phase != "sigstop" || notes[0].LeftAtEnd != 3 {
		t.Errorf("decodeNotebook = %+v, %v", notes, err)
	}
	if _, err := decodeNotebook(raw[:len(raw)-1]); err == nil {
		t.Error("a length beyond the disk was accepted")
	}
}

func FuzzDecodeNotebook(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '[', ']'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 30, '[', '{', '"', 'b', 'o', 'o', 't', '"', ':', '1', '}', ']'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		notes, err := decodeNotebook(raw)
		if err == nil && len(raw) >= 4 && binary.BigEndian.Uint32(raw) > uint32(len(raw)-4) {
			t.Fatalf("accepted a length beyond the data: %v", notes)
		}
	})
}
