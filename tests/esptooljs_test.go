package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEsptoolJS is the third-party check of the ESP32 simulator: npm's
// esptool-js 0.7.0 (installed by scripts/test-deps.sh into
// tests/esptooljs) drives `otagw sim esp32` over its pseudo-terminal under
// Node with a Web Serial stand-in. Its default path: chip detection, stub
// upload (MEM_*), compressed write (FLASH_DEFL_* with 16 KiB blocks), the
// stub's raw MD5, READ_FLASH read-back; once at the ROM's rate and once
// after its CHANGE_BAUDRATE. The read-back and the simulator's flash dump
// must equal the image byte for byte. A missing tool fails the test.
func TestEsptoolJS(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (Node.js) not found: run scripts/test-deps.sh")
	}
	dir, _ := filepath.Abs("esptooljs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "esptool-js", "package.json")); err != nil {
		t.Fatalf("esptool-js not installed in %s: run scripts/test-deps.sh (%v)", dir, err)
	}
	for _, tc := range []struct{ chip, baud string }{{"esp32", "115200"}, {"esp32s3", "460800"}} {
		t.Run(tc.chip+"@"+tc.baud, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			img := make([]byte, 204_800)
			rand.Read(img[:len(img)/2])
			copy(img[len(img)/2:], bytes.Repeat([]byte("esptool-js check text "), len(img)/44))
			imgPath, back, dump, stats := filepath.Join(work, "img.bin"), filepath.Join(work, "back.bin"), filepath.Join(work, "dump.bin"), filepath.Join(work, "stats.json")
			os.WriteFile(imgPath, img, 0o644)
			sim := exec.Command(otagwBin, "sim", "esp32", "--chip", tc.chip, "--dump", dump, "--stats", stats)
			out, _ := sim.StdoutPipe()
			sim.Stderr = os.Stderr
			if err := sim.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { sim.Process.Kill(); sim.Wait() }()
			line := make([]byte, 64)
			n, _ := out.Read(line)
			pty := strings.TrimSpace(string(line[:n]))
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			js := exec.CommandContext(ctx, node, filepath.Join(dir, "flash.mjs"), pty, imgPath, "0x10000", back, tc.baud)
			js.Dir = dir
			res, err := js.CombinedOutput()
			if err != nil {
				t.Fatalf("esptool-js: %v\n%s", err, res)
			}
			got, _ := os.ReadFile(back)
			if !bytes.Equal(got, img) {
				t.Fatalf("esptool-js read back %d bytes that differ from the image", len(got))
			}
			sim.Process.Signal(syscall.SIGTERM)
			sim.Wait()
			fl, err := os.ReadFile(dump)
			if err != nil || len(fl) < 0x10000+len(img) || !bytes.Equal(fl[0x10000:0x10000+len(img)], img) {
				t.Fatalf("the simulator's flash differs from the image (%v)", err)
			}
			var st struct {
				HostBytes  int64          `json:"host_bytes"`
				Commands   map[string]int `json:"commands"`
				Baud       int            `json:"baud"`
				Stub       bool           `json:"stub"`
				Deviations []string       `json:"deviations"`
			}
			data, _ := os.ReadFile(stats)
			json.Unmarshal(data, &st)
			if !st.Stub || st.Commands["0x11"] == 0 || st.Commands["0x13"] == 0 || st.Commands["0xd2"] == 0 {
				t.Fatalf("esptool-js did not take the stub path (defl data, MD5, read flash): %s", data)
			}
			if tc.baud != "115200" && st.Baud != 460800 {
				t.Fatalf("no CHANGE_BAUDRATE to 460800: %s", data)
			}
			t.Logf("%s: %d bytes host→chip, commands %v, deviations %v", tc.chip, st.HostBytes, st.Commands, st.Deviations)
		})
	}
}
