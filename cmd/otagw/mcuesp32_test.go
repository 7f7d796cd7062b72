package main

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
	"github.com/otagw/otagw/internal/sign"
)

// TestMCUESP32Verbs: an ESP32-S3 package from three regions, its version
// read from the app descriptor; a C3 image is refused; a standalone flash
// over the real serial path (with CHANGE_BAUDRATE) onto the simulator.
func TestMCUESP32Verbs(t *testing.T) {
	dir := t.TempDir()
	keyFile, _, err := sign.GenerateKey(filepath.Join(dir, "keys"), "signing")
	if err != nil {
		t.Fatal(err)
	}
	s3, _ := esp32.LookupChip("esp32s3")
	c3, _ := esp32.LookupChip("esp32c3")
	body := make([]byte, 40000)
	rand.New(rand.NewSource(5)).Read(body[:20000])
	files := map[string][]byte{
		"boot.bin": esp32.BuildImage(s3, "", body[:5000]),
		"part.bin": bytes.Repeat([]byte{0xAA, 0x50, 1, 2}, 768),
		"app.bin":  esp32.BuildImage(s3, "3.4.5", body),
		"c3.bin":   esp32.BuildImage(c3, "3.4.5", body),
	}
	for n, d := range files {
		if err := os.WriteFile(filepath.Join(dir, n), d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pkgFile := filepath.Join(dir, "s3.mcupkg")
	rc, out, e := mcuRun(t, "mcu", "package", "create", "--key", keyFile, "--chip", "esp32s3",
		"--region", "0x0="+filepath.Join(dir, "boot.bin"), "--region", "0x8000="+filepath.Join(dir, "part.bin"),
		"--region", "0x10000="+filepath.Join(dir, "app.bin"), "-o", pkgFile)
	if rc != 0 || !strings.Contains(out, "version 3.4.5 (from esp_app_desc") {
		t.Fatalf("create: rc %d\n%s%s", rc, out, e)
	}
	rc, _, e = mcuRun(t, "mcu", "package", "create", "--key", keyFile, "--chip", "esp32s3",
		"--region", "0x10000="+filepath.Join(dir, "c3.bin"), "-o", filepath.Join(dir, "bad.mcupkg"))
	if rc != 1 || !strings.Contains(e, "built for ESP32-C3") {
		t.Fatalf("a C3 image in an S3 package: rc %d: %s", rc, e)
	}
	sim := esp32sim.New(s3, esp32sim.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := esp32sim.ServePTY(ctx, sim)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rc, out, e = mcuRun(t, "mcu", "flash", "--port", p.Path, "--keyring", filepath.Join(dir, "keys"), "--esp-baud", "460800", pkgFile)
	if rc != 0 {
		t.Fatalf("flash: rc %d\n%s%s", rc, out, e)
	}
	fl := sim.Flash()
	for off, n := range map[int]string{0: "boot.bin", 0x8000: "part.bin", 0x10000: "app.bin"} {
		if !bytes.Equal(fl[off:off+len(files[n])], files[n]) {
			t.Fatalf("%s at 0x%x differs", n, off)
		}
	}
	if st := sim.Stats(); st.Baud != 460800 || st.Starts != 1 {
		t.Fatalf("sim stats %+v", st)
	}
}
