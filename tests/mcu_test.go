package tests

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/internal/api"
)

// simSTM32 starts `otagw sim stm32` and returns its pseudo-terminal.
func simSTM32(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(otagwBin, append([]string{"sim", "stm32"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("sim stm32 printed no path: %v", err)
	}
	go func() { bufio.NewReader(out).WriteTo(io_discard{}) }()
	return strings.TrimSpace(line)
}

type io_discard struct{}

func (io_discard) Write(p []byte) (int, error) { return len(p), nil }

// TestMCUFanOutThroughDaemon: two buses with simulated STM32s (one with a
// flaky link) and a device whose precondition fails; `otagw mcu flash
// --all` through the daemon, then again: already current.
func TestMCUFanOutThroughDaemon(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	pty1 := simSTM32(t, "--chip", "0x410")
	pty2 := simSTM32(t, "--chip", "0x410", "--fault", "nack=0.05", "--seed", "7")
	pty3 := simSTM32(t, "--chip", "0x410")
	keys := filepath.Join(dir, "keys")
	if _, e, code := otagw(t, nil, "keygen", "--out", keys); code != 0 {
		t.Fatal(e)
	}
	cfg := writeConfig(t, dir, "", fmt.Sprintf(`update:
  keyring: %s
downstream:
  buses:
    - {name: uart1, protocol: stm32-uart, port: %s, parity: none, reset: manual}
    - {name: uart2, protocol: stm32-uart, port: %s, parity: none, reset: manual}
    - {name: uart3, protocol: stm32-uart, port: %s, parity: none, reset: manual}
  devices:
    - {name: pump, bus: uart1, family: F1, product_id: 0x410}
    - {name: valve, bus: uart2, family: F1, product_id: 0x410}
    - {name: door, bus: uart3, family: F1, product_id: 0x410, precondition: "exit 3"}
  backoff: 10ms
`, keys, pty1, pty2, pty3))
	img := make([]byte, 8<<10)
	rand.Read(img)
	bin := filepath.Join(dir, "fw.bin")
	os.WriteFile(bin, img, 0o644)
	pkg := filepath.Join(dir, "fw.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(keys, "signing.key"), "--target", "F1",
		"--product-id", "0x410", "--version", "1.2.0", "--address", "0x08000000", bin, "-o", pkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	d := startDaemon(t, cfg)
	sock := filepath.Join(dir, "otagw.sock")
	waitSocket(t, sock)

	out, e, code := otagw(t, nil, "mcu", "flash", "--all", pkg, "--socket", sock)
	// door is postponed, so not every device succeeded, but none failed.
	if code != 0 {
		t.Fatalf("mcu flash --all: exit %d\n%s\n%s", code, out, e)
	}
	for _, want := range []string{"pump", "valve", "door"} {
		if !strings.Contains(out, want) {
			t.Errorf("result table lacks %s:\n%s", want, out)
		}
	}
	var mcus []api.MCUStatus
	lo, _, _ := otagw(t, nil, "mcu", "list", "--json", "--socket", sock)
	json.Unmarshal([]byte(lo), &mcus)
	got := map[string]api.MCUStatus{}
	for _, m := range mcus {
		got[m.Name] = m
	}
	if got["pump"].Result != "success" || got["pump"].Version != "1.2.0" {
		t.Errorf("pump: %+v", got["pump"])
	}
	if got["valve"].Result != "success" {
		t.Errorf("valve (flaky link): %+v", got["valve"])
	}
	if got["door"].Result != "postponed" {
		t.Errorf("door (precondition fails): %+v", got["door"])
	}
	out, e, code = otagw(t, nil, "mcu", "flash", "--all", pkg, "--socket", sock, "--json")
	if code != 0 || strings.Count(out, `"result":"not-needed"`) < 2 {
		t.Errorf("second run: exit %d, want pump and valve not-needed:\n%s\n%s", code, out, e)
	}
	if st := statusOf(t, sock); len(st.MCUs) != 3 {
		t.Errorf("status MCUs: %+v", st.MCUs)
	}
	d.stop(t)
}

func waitSocket(t *testing.T, sock string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if _, _, code := otagw(t, nil, "status", "--socket", sock); code == 0 {
			return
		}
	}
	t.Fatalf("daemon socket %s never answered", sock)
}

// TestMCUFirmwareInBundleAfterCommit: a release bundle carries an MCU
// package as a payload; it is verified with the bundle, kept until the
// release is committed on its first boot, then fanned out.
func TestMCUFirmwareInBundleAfterCommit(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	tty := simSTM32(t, "--chip", "0x413")
	reboot := filepath.Join(dir, "reboot.sh")
	os.WriteFile(reboot, []byte("#!/bin/sh\ntouch "+filepath.Join(dir, "rebooted")+"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "healthy"), nil, 0o644)
	g := newGatewayIn(t, dir, 16<<20, fmt.Sprintf(`health:
  checks:
    - {name: app-data, file: %s}
assessment:
  deadline: 60s
  retry_interval: 1s
  committed_unit: ""
downstream:
  buses:
    - {name: uart1, protocol: stm32-uart, port: %s, parity: none, reset: manual}
  devices:
    - {name: sensor-hub, bus: uart1, family: F4, product_id: 0x413}
`, filepath.Join(dir, "healthy"), tty), fmt.Sprintf("  uptime_file: %s\n  reboot_command: [/bin/sh, %s]\n", filepath.Join(dir, "uptime"), reboot))
	fw := make([]byte, 20<<10)
	rand.Read(fw)
	bin := filepath.Join(dir, "fw.bin")
	os.WriteFile(bin, fw, 0o644)
	pkg := filepath.Join(dir, "sensor-hub.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(g.Keys, "signing.key"), "--target", "F4",
		"--product-id", "0x413", "--version", "3.0.0", "--address", "0x08000000", bin, "-o", pkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	b := g.bundle(t, "2.0.0", testImage(2<<20), "mcu="+pkg)

	g.boot(t)
	d := g.start(t)
	if out, code := g.install(t, b); code != 0 {
		t.Fatalf("install: %s", out)
	}
	if st := statusOf(t, g.Socket); len(st.MCUs) != 1 || st.MCUs[0].Result != "" {
		t.Fatalf("MCU touched before the release was committed: %+v", st.MCUs)
	}
	d.stop(t)
	if s := g.boot(t); s != "B" {
		t.Fatalf("booted %s", s)
	}
	d = g.start(t)
	st := g.waitState(t, "MCU fan-out after commit", func(s api.Status) bool {
		return len(s.MCUs) == 1 && s.MCUs[0].Result != "" && s.State == "idle"
	})
	if m := st.MCUs[0]; m.Result != "success" || m.Version != "3.0.0" {
		t.Errorf("sensor-hub after commit: %+v", m)
	}
	if st.Release == nil || st.Release.Committed != "2.0.0" {
		t.Errorf("release: %+v", st.Release)
	}
	d.stop(t)
}
