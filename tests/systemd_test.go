package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdAnalyzeVerify checks every unit in packaging/systemd with
// systemd-analyze verify on a staged root: the units, the binary at its
// ExecStart path, and the host's own units. systemd-analyze exits 0 even
// when it warns, so any output fails the test.
func TestSystemdAnalyzeVerify(t *testing.T) {
	t.Parallel()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not installed (scripts/test-deps.sh installs package systemd): %v", err)
	}
	units, _ := filepath.Glob("../packaging/systemd/*")
	if len(units) == 0 {
		t.Fatal("no units in packaging/systemd")
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755))
	bin, _ := os.ReadFile(otagwBin)
	must(os.WriteFile(filepath.Join(root, "usr/bin/otagw"), bin, 0o755))
	hostUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(hostUnits); err != nil {
		hostUnits = "/lib/systemd/system"
	}
	if out, err := exec.Command("cp", "-a", hostUnits, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy host units: %v %s", err, out)
	}
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		must(err)
		must(os.WriteFile(filepath.Join(root, "etc/systemd/system", filepath.Base(u)), b, 0o644))
		names = append(names, "/etc/systemd/system/"+filepath.Base(u))
	}
	cmd := exec.Command(sa, append([]string{"verify", "--root=" + root}, names...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify %v: %v\n%s", names, err, out)
	}

	// The check itself must be able to fail: a unit with an unknown key.
	bad := filepath.Join(root, "etc/systemd/system/otagw-broken.service")
	must(os.WriteFile(bad, []byte("[Service]\nType=notify\nExecStart=/usr/bin/otagw daemon\nNoSuchKey=1\n"), 0o644))
	out, _ = exec.Command(sa, "verify", "--root="+root, "/etc/systemd/system/otagw-broken.service").CombinedOutput()
	if !strings.Contains(string(out), "NoSuchKey") {
		t.Errorf("systemd-analyze did not flag a broken unit; the check is blind:\n%s", out)
	}
}
