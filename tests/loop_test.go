package tests

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// losetup attaches file to a free loop device and detaches it at cleanup.
func losetup(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup (the end-to-end tests run as root): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestInstallIntoLoopDevices: the daemon installs into a real block device
// (a loop device) and the boot environment then names the new slot with
// its tries; the booted slot's device is not touched.
func TestInstallIntoLoopDevices(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 16<<20, "")
	devA, devB := losetup(t, g.SlotA), losetup(t, g.SlotB)
	cfg, _ := os.ReadFile(g.Config)
	cfg = bytes.ReplaceAll(cfg, []byte("device: "+g.SlotA), []byte("device: "+devA))
	cfg = bytes.ReplaceAll(cfg, []byte("device: "+g.SlotB), []byte("device: "+devB))
	os.WriteFile(g.Config, cfg, 0o644)
	os.WriteFile(g.Env, []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
	img := testImage(6 << 20)
	b := g.bundle(t, "3.1.0", img)
	aBefore, _ := os.ReadFile(g.SlotA)

	d := g.start(t)
	if out, e, code := otagw(t, nil, "install", "--socket", g.Socket, b); code != 0 {
		t.Fatalf("install into %s: %s %s", devB, out, e)
	}
	st := statusOf(t, g.Socket)
	if s := slot(st, "B"); s.Device != devB || !s.Primary || s.TriesLeft != 3 || s.Version != "3.1.0" {
		t.Errorf("slot B after install: %+v", s)
	}
	d.stop(t)
	if e := g.env(t); e["BOOT_ORDER"] != "B A" || e["BOOT_B_LEFT"] != "3" {
		t.Errorf("boot env after install: %v", e)
	}
	got, _ := os.ReadFile(g.SlotB)
	if !bytes.Equal(got[:len(img)], img) {
		t.Errorf("loop slot B differs from the image")
	}
	if aAfter, _ := os.ReadFile(g.SlotA); !bytes.Equal(aBefore, aAfter) {
		t.Errorf("the booted slot A was written")
	}
}
