package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
	"github.com/otagw/otagw/internal/sign"
)

func mcuRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := dispatch(context.Background(), args, &out, &errb)
	return rc, out.String(), errb.String()
}

// intelHex encodes data at addr as Intel HEX with type 04 records.
func intelHex(addr uint32, data []byte) string {
	var b strings.Builder
	rec := func(typ byte, off uint16, p []byte) {
		r := append([]byte{byte(len(p)), byte(off >> 8), byte(off), typ}, p...)
		var sum byte
		for _, x := range r {
			sum += x
		}
		fmt.Fprintf(&b, ":%X%02X\n", r, byte(-int(sum)))
	}
	hi := uint32(1 << 31)
	for i := 0; i < len(data); i += 16 {
		a := addr + uint32(i)
		if a>>16 != hi {
			hi = a >> 16
			rec(4, 0, []byte{byte(hi >> 8), byte(hi)})
		}
		rec(0, uint16(a), data[i:min(i+16, len(data))])
	}
	rec(1, 0, nil)
	return b.String()
}

// TestMCUVerbs: package create from Intel HEX, info, then a standalone
// flash through the real serial path onto the simulator's pseudo-terminal;
// a tampered package is refused before the device sees an erase.
func TestMCUVerbs(t *testing.T) {
	dir := t.TempDir()
	keyFile, _, err := sign.GenerateKey(filepath.Join(dir, "keys"), "signing")
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 70000)
	rand.New(rand.NewSource(5)).Read(img)
	hexFile := filepath.Join(dir, "fw.hex")
	os.WriteFile(hexFile, []byte(intelHex(0x08004000, img)), 0o644)
	pkgFile := filepath.Join(dir, "fw.mcu")
	if rc, _, e := mcuRun(t, "mcu", "package", "create", "--key", keyFile, "--target", "f4", "--product-id", "0x413", "--version", "3.0.1", hexFile, "-o", pkgFile); rc != 0 {
		t.Fatalf("create: %d %s", rc, e)
	}
	rc, out, e := mcuRun(t, "mcu", "package", "info", pkgFile, "--keyring", filepath.Join(dir, "keys"), "--json")
	var info struct {
		Manifest struct {
			Target struct {
				Family    string
				ProductID uint16 `json:"product_id"`
			}
			LoadAddress uint32 `json:"load_address"`
			ImageSize   int    `json:"image_size"`
		}
		Verified *bool
	}
	if rc != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Verified == nil || !*info.Verified ||
		info.Manifest.Target.ProductID != 0x413 || info.Manifest.Target.Family != "F4" || info.Manifest.LoadAddress != 0x08004000 || info.Manifest.ImageSize != len(img) {
		t.Fatalf("info: %d %s %s", rc, out, e)
	}
	if rc, _, _ := mcuRun(t, "mcu", "package", "create", "--key", keyFile, "--target", "F1", "--product-id", "0x412", "--version", "1.0", hexFile, "-o", pkgFile+".x"); rc != 1 {
		t.Fatalf("create for a 32 KiB part with 70 KB at 0x08004000: rc %d, want 1", rc)
	}

	chip, _ := chips.Lookup(0x413)
	sim := stm32sim.New(chip, stm32sim.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := stm32sim.ServePTY(ctx, sim)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// tampered: one image byte flipped
	data, _ := os.ReadFile(pkgFile)
	data[len(data)-100] ^= 0x40
	bad := filepath.Join(dir, "bad.mcu")
	os.WriteFile(bad, data, 0o644)
	if rc, _, e := mcuRun(t, "mcu", "flash", "--port", p.Path, "--keyring", filepath.Join(dir, "keys"), "--parity", "none", bad); rc != 1 || !strings.Contains(e, "does not match") {
		t.Fatalf("tampered package: rc %d, %s", rc, e)
	}
	if st := sim.Stats(); st.HostBytes != 0 {
		t.Fatalf("tampered package reached the device: %+v", st)
	}

	rc, out, e = mcuRun(t, "mcu", "flash", "--port", p.Path, "--protocol", "stm32-uart", "--keyring", filepath.Join(dir, "keys"), "--parity", "none", pkgFile, "--json")
	if rc != 0 {
		t.Fatalf("flash: rc %d\n%s\n%s", rc, out, e)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(lines[len(lines)-1], `"state":"success"`) || !strings.Contains(out, `"kind":"progress"`) {
		t.Fatalf("json output:\n%s", out)
	}
	if !bytes.Equal(sim.Flash()[0x4000:0x4000+len(img)], img) {
		t.Fatal("flash differs from the HEX image")
	}
	if run, at := sim.Running(); !run || at != 0x08004000 {
		t.Fatalf("not started at the load address: %v 0x%x", run, at)
	}
	if mcuFlashDaemon == nil {
		if rc, _, _ := mcuRun(t, "mcu", "flash", pkgFile); rc != 2 {
			t.Fatalf("daemon path not wired: rc %d, want 2", rc)
		}
	}
}
