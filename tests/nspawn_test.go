package tests

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nspawnRoot returns a debootstrap'd Debian bookworm with systemd, made
// once and cached ($OTAGW_NSPAWN_CACHE, else ~/.cache/otagw/nspawn).
func nspawnRoot(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"debootstrap", "systemd-nspawn"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing (scripts/test-deps.sh installs debootstrap and systemd-container): %v", tool, err)
		}
	}
	cache := os.Getenv("OTAGW_NSPAWN_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "otagw", "nspawn")
	}
	root := filepath.Join(cache, "bookworm-2") // -2: with adduser for the package
	if _, err := os.Stat(filepath.Join(root, ".otagw-complete")); err == nil {
		return root
	}
	os.RemoveAll(root)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,procps,adduser",
		"bookworm", root, "http://deb.debian.org/debian").CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(string(out), 20))
	}
	os.WriteFile(filepath.Join(root, ".otagw-complete"), nil, 0o644)
	t.Logf("debootstrap'd %s in %v", root, time.Since(t0).Round(time.Second))
	return root
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// nspawnJournalMatch is the journalctl match (FIELD=VALUE ...) by which
// the check "journal-fields" in nspawn/check.sh finds one of the daemon's
// entries in the container's journal: it proves the entries reach
// journald with the native protocol, every zap field a journal field of
// its own. "booted slot" with slot=A is logged at every start.
const nspawnJournalMatch = "OTAGW_SLOT=A"

// nspawnCommitMatch finds the commit of release 2.0.0 (check
// "journal-commit"), after check.sh has installed it, booted it with the
// simulated boot loader and restarted the daemon, whose assessment commits
// it.
// The daemon logs each state it enters with zap.String("event", state)
// and the release; the journal core makes them OTAGW_EVENT and
// OTAGW_RELEASE: the issue's `journalctl OTAGW_EVENT=committed`.
const nspawnCommitMatch = "OTAGW_EVENT=committed OTAGW_RELEASE=2.0.0"

// TestUnderSystemd installs the Debian package (scripts/deb.sh) into a
// Debian userland with dpkg, boots it with systemd as PID 1 in
// systemd-nspawn and checks the packaged otagw.service there: enabled by
// the package's postinst, groups created, Type=notify
// readiness, STATUS=, `systemctl reload` through `otagw reload` (and its
// failure on a broken config while the service stays up), the health
// check of a unit over D-Bus, otagw-committed.target started over D-Bus
// on the boot of a committed slot, and the systemd watchdog restarting a hung
// daemon (SIGSTOP), the daemon's structured fields in the journal
// (nspawnJournalMatch), and a release through the whole flow: install,
// boot (`otagw sim boot`), assessment, commit, found in the journal by
// its fields (nspawnCommitMatch).
func TestUnderSystemd(t *testing.T) {
	t.Parallel()
	cached := nspawnRoot(t)
	root := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", cached, root).CombinedOutput(); err != nil {
		t.Fatalf("copy root: %v %s", err, out)
	}
	put := func(path string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Install the Debian package the way a gateway would: dpkg -i in the
	// container (no systemd running yet: postinst only enables the unit).
	put("otagw.deb", read(buildDebs(t, "amd64")[0]), 0o644)
	if out, err := exec.Command("systemd-nspawn", "-q", "-D", root, "--register=no", "--keep-unit", "--pipe",
		"dpkg", "-i", "/otagw.deb").CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i in the container: %v\n%s", err, out)
	}
	put("etc/systemd/system/otagw.service.d/test.conf", []byte("[Service]\nWatchdogSec=4s\nRestartSec=1s\nReadWritePaths=/var/lib/otagw-test\n"), 0o644)
	// Release 2.0.0, signed here, for the container to install into slot B.
	keys, work := t.TempDir(), t.TempDir()
	if _, e, code := otagw(t, nil, "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen: %s", e)
	}
	put("etc/otagw/keyring/signing.pub", read(filepath.Join(keys, "signing.pub")), 0o644)
	os.WriteFile(filepath.Join(work, "image"), testImage(1<<20), 0o644)
	bundle := filepath.Join(root, "var/lib/otagw-test/bundle-2.0.0.otagw")
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	if _, e, code := otagw(t, nil, "bundle", "create", "--key", filepath.Join(keys, "signing.key"), "--compatible", "otagw-nspawn",
		"--version", "2.0.0", "--chunk-size", "262144", "rootfs="+filepath.Join(work, "image"), "-o", bundle); code != 0 {
		t.Fatalf("bundle create: %s", e)
	}
	for _, img := range []string{"A.img", "B.img"} {
		put("var/lib/otagw-test/"+img, nil, 0o644)
		os.Truncate(filepath.Join(root, "var/lib/otagw-test", img), 2<<20)
	}
	put("var/lib/otagw-test/uptime", []byte("5.00 5.00\n"), 0o644)
	put("etc/otagw/otagw.yaml", []byte(`daemon:
  read_group: "0"
  admin_group: "0"
  reboot_command: [/bin/true]
  uptime_file: /var/lib/otagw-test/uptime
boot:
  backend: file
  file: /var/lib/otagw-test/bootenv.txt
  cmdline: /var/lib/otagw-test/cmdline
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: /var/lib/otagw-test/A.img, bootname: A}
    - {name: rootfs.1, class: rootfs, device: /var/lib/otagw-test/B.img, bootname: B}
update:
  keyring: /etc/otagw/keyring
  compatible: otagw-nspawn
health:
  checks:
    - {name: bus, unit: dbus.service}
watchdog:
  enabled: false
`), 0o644)
	put("var/lib/otagw-test/cmdline", []byte("rauc.slot=A\n"), 0o644)
	put("usr/local/bin/otagw-nspawn-check", read("nspawn/check.sh"), 0o755)
	put("etc/otagw-nspawn-check.env", []byte("JOURNAL_MATCH="+nspawnJournalMatch+"\nJOURNAL_COMMIT="+nspawnCommitMatch+"\n"), 0o644)
	put("etc/systemd/system/otagw-nspawn-check.service", []byte(`[Unit]
Description=otagw test driver
After=otagw.service
Wants=otagw.service
[Service]
Type=oneshot
EnvironmentFile=/etc/otagw-nspawn-check.env
ExecStart=/usr/local/bin/otagw-nspawn-check
`), 0o644)
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	os.MkdirAll(wants, 0o755)
	os.Symlink("/etc/systemd/system/otagw-nspawn-check.service", filepath.Join(wants, "otagw-nspawn-check.service"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemd-nspawn", "-q", "-b", "-D", root, "--register=no", "--keep-unit", "--console=pipe")
	// On timeout ask nspawn to shut the container down, so nothing of it
	// outlives the test; kill only if that does not work.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	res, rerr := os.ReadFile(filepath.Join(root, "results"))
	if rerr != nil || !strings.Contains(string(res), "RESULTS DONE") {
		t.Fatalf("the container did not finish its checks (nspawn: %v)\nresults:\n%s\nconsole:\n%s", err, res, tail(string(out), 30))
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(res)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "CHECK" {
			continue
		}
		n++
		if f[2] != "ok" {
			t.Errorf("%s: %s", f[1], strings.Join(f[3:], " "))
		}
	}
	if n < 10 {
		t.Errorf("only %d checks ran", n)
	}
	if t.Failed() {
		t.Logf("results:\n%s", res)
	}
}

// TestDebianPackageLintian: the .deb for every gateway architecture passes
// lintian with errors and warnings fatal.
func TestDebianPackageLintian(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatalf("lintian missing (scripts/test-deps.sh installs it): %v", err)
	}
	for _, deb := range buildDebs(t, "amd64", "arm64", "armhf") {
		out, err := exec.Command("lintian", "--fail-on", "error,warning", deb).CombinedOutput()
		var problems []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
				problems = append(problems, l)
			}
		}
		if err != nil || len(problems) > 0 {
			t.Errorf("lintian %s: %v\n%s", filepath.Base(deb), err, strings.Join(problems, "\n"))
		}
	}
}

// buildDebs runs scripts/deb.sh for archs into a temporary directory.
func buildDebs(t *testing.T, archs ...string) []string {
	t.Helper()
	dist := t.TempDir()
	build := exec.Command("sh", append([]string{"../scripts/deb.sh"}, archs...)...)
	build.Env = append(os.Environ(), "DIST="+dist, "VERSION=0.0.0+test")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	if len(debs) != len(archs) {
		t.Fatalf("scripts/deb.sh %v made %v", archs, debs)
	}
	return debs
}
