package tests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/internal/api"
)

// simESP32 starts `otagw sim esp32` and returns its pseudo-terminal.
func simESP32(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(otagwBin, append([]string{"sim", "esp32"}, args...)...)
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
		t.Fatalf("sim esp32 printed no path: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestMCUMixedFleetThroughDaemon: two STM32s and two ESP32s (an ESP32 and
// an ESP32-S3 with a corrupted block) on four pseudo-terminals, one
// `otagw mcu flash --all STM32PKG ESP32PKG ESP32S3PKG` through the daemon.
// Every device ends in success; the event trace shows the four buses in
// parallel without timing: every device starts before any finishes.
func TestMCUMixedFleetThroughDaemon(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	stmA, stmB := simSTM32(t, "--chip", "0x410"), simSTM32(t, "--chip", "0x410")
	espA, espB := simESP32(t, "--chip", "esp32"), simESP32(t, "--chip", "esp32s3", "--fault", "corrupt-block=5")
	keys := filepath.Join(dir, "keys")
	if _, e, code := otagw(t, nil, "keygen", "--out", keys); code != 0 {
		t.Fatal(e)
	}
	cfg := writeConfig(t, dir, "", fmt.Sprintf(`update:
  keyring: %s
downstream:
  buses:
    - {name: uart1, transport: uart, port: %s, parity: none, reset: manual}
    - {name: uart2, transport: uart, port: %s, parity: none, reset: manual}
    - {name: uart3, transport: uart, port: %s, reset: manual}
    - {name: uart4, transport: uart, port: %s, reset: manual}
  devices:
    - {name: pump, bus: uart1, protocol: stm32-rom, family: F1, product_id: 0x410}
    - {name: valve, bus: uart2, protocol: stm32-rom, family: F1, product_id: 0x410}
    - {name: radio, bus: uart3, protocol: esp32-rom, chip: esp32}
    - {name: display, bus: uart4, protocol: esp32-rom, chip: esp32s3}
  backoff: 10ms
  esp32: {baud: 460800}
`, keys, stmA, stmB, espA, espB))
	img := make([]byte, 32<<10)
	rand.Read(img)
	bin := filepath.Join(dir, "fw.bin")
	os.WriteFile(bin, img, 0o644)
	stmPkg := filepath.Join(dir, "stm.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(keys, "signing.key"), "--target", "F1",
		"--product-id", "0x410", "--version", "1.2.0", "--address", "0x08000000", bin, "-o", stmPkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	var espPkgs []string
	for _, name := range []string{"esp32", "esp32s3"} {
		chip, _ := esp32.LookupChip(name)
		app := filepath.Join(dir, name+".bin")
		os.WriteFile(app, esp32.BuildImage(chip, "1.2.0", append(img, bytes.Repeat([]byte("text "), 8000)...)), 0o644)
		pkg := filepath.Join(dir, name+".otagwpkg")
		if out, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(keys, "signing.key"), "--chip", name,
			"--region", "0x10000="+app, "-o", pkg); code != 0 || !strings.Contains(out, "from esp_app_desc") {
			t.Fatalf("mcu package create --chip %s: %s%s", name, out, e)
		}
		espPkgs = append(espPkgs, pkg)
	}
	d := startDaemon(t, cfg)
	sock := filepath.Join(dir, "otagw.sock")
	waitSocket(t, sock)

	out, e, code := otagw(t, nil, "mcu", "flash", "--all", stmPkg, espPkgs[0], espPkgs[1], "--socket", sock, "--json")
	if code != 0 {
		t.Fatalf("mcu flash --all: exit %d\n%s\n%s", code, out, e)
	}
	// the trace: each device's start and done, in the order the daemon sent them
	var trace []string
	started, finishedBeforeAllStarted := map[string]bool{}, false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev api.Event
		json.Unmarshal([]byte(line), &ev)
		switch {
		case ev.Device == "" || ev.Type == api.EventDone:
		case !started[ev.Device]: // a device's first event
			started[ev.Device] = true
			trace = append(trace, ev.Device+":start")
		case ev.Type == api.EventDevice && ev.Result != "":
			finishedBeforeAllStarted = finishedBeforeAllStarted || len(started) < 4
			trace = append(trace, ev.Device+":done")
		}
	}
	t.Logf("trace: %s", strings.Join(trace, " "))
	if finishedBeforeAllStarted || len(started) != 4 {
		t.Errorf("a device finished before all four had started: the buses did not run in parallel: %v", trace)
	}
	var mcus []api.MCUStatus
	lo, _, _ := otagw(t, nil, "mcu", "list", "--json", "--socket", sock)
	json.Unmarshal([]byte(lo), &mcus)
	if len(mcus) != 4 {
		t.Fatalf("mcu list: %s", lo)
	}
	for _, m := range mcus {
		if m.Result != "success" || m.Version != "1.2.0" {
			t.Errorf("%s: %+v", m.Name, m)
		}
		if m.Name == "display" && m.Retries == 0 {
			t.Errorf("display: the corrupted block was not repaired by a retry: %+v", m)
		}
	}
	d.stop(t)
}
