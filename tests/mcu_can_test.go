package tests

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/otagw/otagw/internal/api"
)

// TestMCUOverCANThroughDaemon: an STM32 on a CAN bus (`otagw sim stm32
// --slcan`: the CAN bootloader behind an slcan USB-CAN adapter on a
// pseudo-terminal), configured as transport: can with a port, flashed by
// `otagw mcu flash --all` through the daemon.
func TestMCUOverCANThroughDaemon(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	pty := simSTM32(t, "--chip", "0x413", "--slcan")
	keys := filepath.Join(dir, "keys")
	if _, e, code := otagw(t, nil, "keygen", "--out", keys); code != 0 {
		t.Fatal(e)
	}
	cfg := writeConfig(t, dir, "", fmt.Sprintf(`update:
  keyring: %s
downstream:
  buses:
    - {name: can1, transport: can, port: %s, bitrate: 500000, reset: manual}
  devices:
    - {name: drive, bus: can1, protocol: stm32-rom, family: F4, product_id: 0x413}
  backoff: 10ms
`, keys, pty))
	img := make([]byte, 6<<10)
	rand.Read(img)
	bin := filepath.Join(dir, "fw.bin")
	os.WriteFile(bin, img, 0o644)
	pkg := filepath.Join(dir, "fw.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(keys, "signing.key"), "--target", "F4",
		"--product-id", "0x413", "--version", "2.3.0", "--address", "0x08000000", bin, "-o", pkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	d := startDaemon(t, cfg)
	sock := filepath.Join(dir, "otagw.sock")
	waitSocket(t, sock)
	if out, e, code := otagw(t, nil, "mcu", "flash", "--all", pkg, "--socket", sock); code != 0 {
		t.Fatalf("mcu flash --all: exit %d\n%s\n%s", code, out, e)
	}
	var mcus []api.MCUStatus
	lo, _, _ := otagw(t, nil, "mcu", "list", "--json", "--socket", sock)
	if err := json.Unmarshal([]byte(lo), &mcus); err != nil {
		t.Fatalf("mcu list --json: %v: %s", err, lo)
	}
	if len(mcus) != 1 || mcus[0].Result != "success" || mcus[0].Version != "2.3.0" {
		t.Errorf("drive over CAN: %+v", mcus)
	}
	d.stop(t)
}
