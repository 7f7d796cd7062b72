// Command agent runs inside the torture guest (started by guestinit as
// the "test binary"): on every boot it mounts the state disk, runs the
// boot chain (`otagw sim boot` on the U-Boot env through fw_env.config,
// then `otagw daemon` on the uboot backend), checks what came up, and then
// keeps the gateway busy with config applies, MCU flashes, installs,
// reboots, commits and rollbacks until the host cuts the power.
//
// It reports on the console, one line each, for the host harness:
//
//	TORTURE-PHASE kind            what the gateway is doing from now on
//	TORTURE-BOOT slot=X           the boot chain booted slot X
//	TORTURE-SLOT slot=X version=V the booted slot holds release V, verified
//	TORTURE-CONFIG n              the config file on the state disk is apply n
//	TORTURE-READY                 the daemon sent READY=1
//	TORTURE-STATUS {json}         otagw status --json after READY
//	TORTURE-RESUME V [from chunk N] the daemon resumed an interrupted
//	                              install (by itself, or asked with
//	                              `otagw install --resume FILE`)
//	TORTURE-DONE kind detail      an operation finished (acknowledged)
//	TORTURE-FAIL what: detail     a check failed
//	TORTURE-BRICK what: detail    the gateway did not come up
//
// With "reboot-request" as its argument it is the daemon's reboot_command.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/tests/qemu/torture/image"
	"golang.org/x/sys/unix"
)

const (
	otagw      = "/bin/otagw"
	etc        = "/etc/torture"
	cfgPath    = "/state/otagw.yaml"
	sock       = "/tmp/otagw.sock"
	rebootFlag = "/tmp/reboot-requested"
	bundles    = "/tmp/bundles"
	mcuPkg     = etc + "/motor-ctl.otagwpkg"
	compatible = "otagw-torture"
)

var slotDev = map[string]string{"A": "/dev/vda", "B": "/dev/vdb"}

func say(format string, args ...any) {
	fmt.Printf("TORTURE-"+format+"\n", args...)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "reboot-request" {
		os.WriteFile(rebootFlag, []byte(os.Getenv("OTAGW_REBOOT_REASON")+"\n"), 0o644)
		return
	}
	os.Exit(run())
}

type gw struct {
	daemon *exec.Cmd
	sim    *exec.Cmd
	booted string // slot
	ver    string // release in the booted slot
}

// waitPowerOn blocks at the snapshot point: the host saves the booted
// machine here once (kernel and init up, no disk driver loaded, so no
// disk data in any cache) and restores it for every power-on, then
// writes GO on the console.
func waitPowerOn() error {
	say("SNAPSHOT-POINT")
	tty, err := os.Open("/dev/ttyS0")
	if err != nil {
		return err
	}
	defer tty.Close()
	r := bufio.NewReader(tty)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(l) == "GO" {
			return nil
		}
	}
}

// loadDiskDrivers loads the virtio modules listed in /etc/torture/modules.
func loadDiskDrivers() error {
	b, err := os.ReadFile(etc + "/modules")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(b)) {
		f, err := os.Open(m)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("finit_module %s: %w", m, err)
		}
	}
	return nil
}

func run() int {
	if err := waitPowerOn(); err != nil {
		fmt.Printf("agent: console: %v\n", err)
		return 1
	}
	say("PHASE boot")
	g := &gw{}
	if err := loadDiskDrivers(); err != nil {
		say("BRICK disk drivers: %v", err)
		return 1
	}
	os.MkdirAll("/dev/pts", 0o755)
	if err := unix.Mount("devpts", "/dev/pts", "devpts", 0, "mode=620,ptmxmode=666"); err != nil {
		say("BRICK devpts: %v", err)
		return 1
	}
	for _, d := range []string{"/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"} {
		if !waitFile(d, 10*time.Second) {
			say("BRICK disk %s: no such device", d)
			return 1
		}
	}
	os.MkdirAll("/state", 0o755)
	if err := unix.Mount("/dev/vdd", "/state", "ext4", 0, ""); err != nil {
		say("BRICK state-fs: mount /dev/vdd (ext4) on /state: %v", err)
		return 1
	}
	if _, err := os.Stat(cfgPath); err != nil {
		b, _ := os.ReadFile(etc + "/otagw.yaml")
		if err := writeAtomic(cfgPath, b); err != nil {
			say("BRICK config: %v", err)
			return 1
		}
		say("DONE config-initial 0")
	}
	if b, err := os.ReadFile(cfgPath); err == nil {
		say("CONFIG %d", configGen(b))
	} else {
		say("FAIL config: %v", err)
	}
	if err := g.startMCU(); err != nil {
		say("FAIL mcu-sim: %v", err)
	}

	out, err := exec.Command(otagw, "sim", "boot", "--config", cfgPath).CombinedOutput()
	if err != nil {
		say("BRICK boot-chain: otagw sim boot: %v: %s", err, oneLine(out))
		return 1
	}
	cmdline, _ := os.ReadFile("/tmp/cmdline")
	for _, w := range strings.Fields(string(cmdline)) {
		if s, ok := strings.CutPrefix(w, "rauc.slot="); ok {
			g.booted = s
		}
	}
	dev, ok := slotDev[g.booted]
	if !ok {
		say("BRICK boot-chain: no slot on the kernel command line %q", strings.TrimSpace(string(cmdline)))
		return 1
	}
	say("BOOT slot=%s", g.booted)
	v, err := checkSlot(dev)
	if err != nil {
		say("BRICK slot-image: slot %s (%s): %v", g.booted, dev, err)
		return 1
	}
	g.ver = v
	say("SLOT slot=%s version=%s", g.booted, v)
	if !image.Bad(image.Patch(v)) {
		os.WriteFile("/tmp/healthy", nil, 0o644)
	}
	// The bundle of what may be resumed (tmpfs is gone after every boot;
	// bundles are deterministic, so a resumed install finds the same
	// bundle again), and the next one.
	base := image.Patch(v)
	for _, d := range slotDev {
		if f, err := os.Open(d); err == nil {
			head := make([]byte, 64)
			f.Read(head)
			f.Close()
			if l, _, ok := bytes.Cut(head, []byte("\n")); ok {
				if hv, ok := strings.CutPrefix(string(l), "OTAGW-TORTURE-IMAGE "); ok {
					base = max(base, image.Patch(hv))
				}
			}
		}
	}
	for n := max(1, base); n <= base+1; n++ {
		if err := makeBundle(n); err != nil {
			say("FAIL bundle %s: %v", image.Version(n), err)
			return 1
		}
	}
	// A release above the floor in the env is on trial: the daemon
	// commits it (or rolls it back) right after it starts.
	phase := "start"
	if floor := anchorFloor(); image.Patch(v) > max(floor, 0) {
		phase = "commit"
		if image.Bad(image.Patch(v)) {
			phase = "rollback"
		}
	}
	say("PHASE %s", phase)
	if err := g.startDaemon(); err != nil {
		say("BRICK daemon: %v", err)
		g.daemonLog()
		return 1
	}
	say("READY")
	st, err := status()
	if err != nil {
		say("FAIL status: %v", err)
		return 1
	}
	js, _ := json.Marshal(st)
	say("STATUS %s", js)
	if st.State == api.StateInstalling || st.State == api.StateDownloading {
		say("RESUME %s", pendingOf(st))
	}
	g.resumePassed(js)
	return g.work()
}

var (
	resumeHint = regexp.MustCompile(`otagw install --resume (/\S+?\.otagw)`)
	firstChunk = regexp.MustCompile(`"chunk":([1-9]\d*)`)
)

// resumePassed continues an install of a file the agent passed that a cut
// interrupted. The daemon cannot reopen a file a client handed it as an
// open descriptor, so it marks the slot not bootable and names the
// command; the agent runs it, as an operator would, with the same
// (deterministic) bundle. The daemon must continue from its checkpoint,
// or start over when the checkpoint does not fit what the slot holds.
func (g *gw) resumePassed(status []byte) {
	m := resumeHint.FindSubmatch(status)
	if m == nil {
		return
	}
	path := string(m[1])
	v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "gw-"), ".otagw")
	n := image.Patch(v)
	if n <= 0 {
		say("FAIL resume: no release in %q", path)
		return
	}
	if err := makeBundle(n); err != nil {
		say("FAIL bundle: %v", err)
		return
	}
	say("PHASE install")
	out, err := otagwCmd(2*time.Minute, "install", "--json", "--resume", path)
	// The first progress event names the first chunk written in this
	// run: above 0, the install continued from its checkpoint.
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(l, []byte(`"type":"progress"`)) {
			if c := firstChunk.FindSubmatch(l); c != nil {
				say("RESUME %s from chunk %s", v, c[1])
			}
			break
		}
	}
	if err != nil {
		say("DONE install-refused %s: %s", v, oneLine(out))
		return
	}
	say("DONE install %s", v)
}

func (g *gw) work() int {
	step := 0
	reported := false
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(rebootFlag); err == nil {
			g.reboot("daemon: " + strings.TrimSpace(string(b)))
		}
		st, err := status()
		if err != nil {
			say("FAIL status: %v", err)
			g.daemonLog()
			return 1
		}
		if !reported && st.Assessment != nil && st.Assessment.Outcome == "committed" && st.Release != nil {
			say("DONE commit %s min=%s", st.Release.Committed, st.Release.MinVersion)
			reported = true
		}
		switch st.State {
		case api.StateAssessing:
			say("PHASE commit")
			time.Sleep(200 * time.Millisecond)
			continue
		case api.StateRolledBack, api.StateRebooting:
			// rolled-back on the bad release: the daemon is about to
			// reboot into the other slot. rolled-back on a good release
			// is where that reboot came back to: the gateway works on.
			if st.State == api.StateRebooting || image.Bad(image.Patch(g.ver)) {
				say("PHASE rollback")
				time.Sleep(200 * time.Millisecond)
				continue
			}
		case api.StateStarting, api.StateDownloading, api.StateInstalling, api.StateFlashing:
			time.Sleep(200 * time.Millisecond)
			continue
		case api.StateInstalled:
			g.reboot("installed " + pendingOf(st))
		}
		switch step % 3 {
		case 0:
			say("PHASE config")
			n := g.configApply()
			if n > 0 {
				say("DONE config %d", n)
			}
		case 1:
			say("PHASE mcu")
			out, err := otagwCmd(60*time.Second, "mcu", "flash", "--all", mcuPkg)
			if err != nil {
				say("FAIL mcu: %v: %s", err, oneLine(out))
			} else {
				say("DONE mcu")
			}
		case 2:
			n := nextPatch(st, g.ver)
			if err := makeBundle(n); err != nil {
				say("FAIL bundle: %v", err)
				return 1
			}
			say("PHASE install")
			out, err := otagwCmd(2*time.Minute, "install", filepath.Join(bundles, "gw-"+image.Version(n)+".otagw"))
			if err != nil {
				say("DONE install-refused %s: %s", image.Version(n), oneLine(out))
			} else {
				say("DONE install %s", image.Version(n))
			}
		}
		step++
	}
	g.reboot("agent: time")
	return 0
}

// anchorFloor is the minimum version the daemon noted in the U-Boot env.
func anchorFloor() int {
	out, err := exec.Command(otagw, "env", "print", "-c", etc+"/fw_env.config", "--lock", "/tmp/fw_env.lock",
		"-n", "otagw_anchor_min_version").Output()
	if err != nil {
		return -1
	}
	return image.Patch(strings.TrimSpace(string(out)))
}

func pendingOf(st *api.Status) string {
	if st.Release != nil {
		return st.Release.Pending
	}
	return ""
}

func nextPatch(st *api.Status, booted string) int {
	n := image.Patch(booted)
	if st.Release != nil {
		for _, v := range []string{st.Release.Committed, st.Release.MinVersion, st.Release.Pending} {
			n = max(n, image.Patch(v))
		}
	}
	for _, s := range st.Slots {
		n = max(n, image.Patch(s.Version))
	}
	return n + 1
}

var genRe = regexp.MustCompile(`(?m)^# torture-config (\d+)$`)

func configGen(b []byte) int {
	m := genRe.FindSubmatch(b)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// configApply hands the daemon its config with the next generation
// number in a comment and a changed retry interval.
func (g *gw) configApply() int {
	cur, err := os.ReadFile(cfgPath)
	if err != nil {
		say("FAIL config: %v", err)
		return 0
	}
	n := configGen(cur) + 1
	tmpl, _ := os.ReadFile(etc + "/otagw.yaml")
	next := genRe.ReplaceAll(tmpl, []byte(fmt.Sprintf("# torture-config %d", n)))
	next = bytes.Replace(next, []byte("retry_interval: 1s"), []byte(fmt.Sprintf("retry_interval: %dms", 500+n%5*100)), 1)
	os.WriteFile("/tmp/next.yaml", next, 0o644)
	if out, err := otagwCmd(30*time.Second, "config", "apply", "/tmp/next.yaml"); err != nil {
		say("FAIL config-apply: %v: %s", err, oneLine(out))
		return 0
	}
	return n
}

func makeBundle(n int) error {
	v := image.Version(n)
	out := filepath.Join(bundles, "gw-"+v+".otagw")
	if _, err := os.Stat(out); err == nil {
		return nil
	}
	os.MkdirAll(bundles, 0o755)
	img := filepath.Join(bundles, "img-"+v)
	if err := os.WriteFile(img, image.Build(v), 0o644); err != nil {
		return err
	}
	defer os.Remove(img)
	s, err := sign.LoadSigner(etc + "/signing.key")
	if err != nil {
		return err
	}
	_, err = bundle.Create(context.Background(), out, bundle.CreateOptions{
		Compatible: compatible, Version: v, ChunkSize: 256 << 10, Compress: bundle.CompressNone,
		Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Hour),
		Signers: []sign.Signer{s}, Payloads: []bundle.PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: img}},
		Workers: 1,
	})
	return err
}

func checkSlot(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return image.Check(bufio.NewReaderSize(f, 1<<20))
}

func (g *gw) startMCU() error {
	g.sim = exec.Command(otagw, "sim", "stm32", "--chip", "0x410")
	out, err := g.sim.StdoutPipe()
	if err != nil {
		return err
	}
	if err := g.sim.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("otagw sim stm32 printed no pty: %w", err)
	}
	os.Remove("/tmp/mcu-tty")
	return os.Symlink(strings.TrimSpace(line), "/tmp/mcu-tty")
}

func (g *gw) startDaemon() error {
	ns := "/tmp/notify.sock"
	os.Remove(ns)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	logf, err := os.Create("/tmp/daemon.log")
	if err != nil {
		return err
	}
	g.daemon = exec.Command(otagw, "daemon", "--config", cfgPath, "--log-format", "console")
	g.daemon.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns)
	g.daemon.Stdout, g.daemon.Stderr = logf, logf
	if err := g.daemon.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- g.daemon.Wait() }()
	got := make(chan bool, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					got <- true
					return
				}
			}
		}
	}()
	select {
	case <-got:
		return nil
	case err := <-exited:
		return fmt.Errorf("otagw daemon exited before READY=1: %v", err)
	case <-time.After(90 * time.Second):
		return fmt.Errorf("otagw daemon sent no READY=1 within 90s")
	}
}

func (g *gw) daemonLog() {
	b, _ := os.ReadFile("/tmp/daemon.log")
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	for _, l := range lines {
		fmt.Println("daemon| " + l)
	}
}

// reboot is a clean reboot: stop the daemon, unmount, power off; the
// host powers the machine on again (from the snapshot, like every boot).
func (g *gw) reboot(why string) {
	say("PHASE reboot")
	say("DONE reboot-begin %s", why)
	if g.daemon != nil && g.daemon.Process != nil {
		g.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			for {
				if err := g.daemon.Process.Signal(syscall.Signal(0)); err != nil {
					close(done)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			g.daemon.Process.Kill()
		}
	}
	if g.sim != nil && g.sim.Process != nil {
		g.sim.Process.Kill()
	}
	unix.Sync()
	if err := unix.Unmount("/state", 0); err != nil {
		say("FAIL umount /state: %v", err)
	}
	unix.Sync()
	say("POWEROFF")
	os.Exit(0)
}

func status() (*api.Status, error) {
	out, err := otagwCmd(20*time.Second, "status", "--json")
	if err != nil {
		return nil, fmt.Errorf("otagw status: %v: %s", err, oneLine(out))
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("otagw status --json: %v", err)
	}
	return &st, nil
}

func otagwCmd(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, otagw, args...)
	cmd.Env = append(os.Environ(), "OTAGW_SOCKET="+sock)
	return cmd.CombinedOutput()
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func waitFile(p string, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if _, err := os.Stat(p); err == nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
