package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/rootfs/bundle"
)

func runVerb(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBundleVerbs(t *testing.T) {
	dir := t.TempDir()
	keys, ring := filepath.Join(dir, "keys"), filepath.Join(dir, "ring")
	for _, name := range []string{"signing", "second"} {
		if code, _, e := runVerb(t, "keygen", "--out", keys, "--name", name); code != 0 {
			t.Fatalf("keygen: %d %s", code, e)
		}
	}
	st, err := os.Stat(filepath.Join(keys, "signing.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("signing.key: %v %v", st, err)
	}
	if code, _, _ := runVerb(t, "keygen", "--out", keys); code != 1 {
		t.Fatal("keygen overwrote a key")
	}
	os.MkdirAll(ring, 0o755)
	for _, n := range []string{"signing.pub", "second.pub"} {
		b, _ := os.ReadFile(filepath.Join(keys, n))
		os.WriteFile(filepath.Join(ring, n), b, 0o644)
	}

	img := make([]byte, 300000)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range img[:150000] {
		img[i] = byte(r.Uint32())
	}
	imgPath, fwPath := filepath.Join(dir, "img"), filepath.Join(dir, "fw")
	os.WriteFile(imgPath, img, 0o644)
	os.WriteFile(fwPath, img[:5000], 0o644)
	out := filepath.Join(dir, "b.otab")
	code, _, e := runVerb(t, "bundle", "create", "--key", filepath.Join(keys, "signing.key"), "--key", filepath.Join(keys, "second.key"),
		"--compatible", "acme", "--version", "1.2.0", "--chunk-size", "65536", "--expires", "30d",
		"rootfs="+imgPath, "mcu:stm32="+fwPath, "-o", out)
	if code != 0 {
		t.Fatalf("bundle create: %d %s", code, e)
	}

	code, o, e := runVerb(t, "bundle", "info", out, "--keyring", ring, "--threshold", "2", "--json")
	var info struct {
		Format   int    `json:"format"`
		Digest   string `json:"digest"`
		Manifest struct {
			Version  string `json:"version"`
			Payloads []struct {
				Name   string `json:"name"`
				Target string `json:"target"`
			} `json:"payloads"`
		} `json:"manifest"`
		Checked bool `json:"signatures_checked"`
	}
	if code != 0 || json.Unmarshal([]byte(o), &info) != nil || info.Manifest.Version != "1.2.0" || !info.Checked || info.Format != bundle.FormatV2 ||
		len(info.Manifest.Payloads) != 2 || info.Manifest.Payloads[1].Name != "stm32" || info.Manifest.Payloads[1].Target != "mcu" {
		t.Fatalf("bundle info: %d %s %s", code, o, e)
	}
	// --format 1 writes a bundle that readers of format 1 take; info names the format.
	out1 := filepath.Join(dir, "b1.otab")
	if code, _, e := runVerb(t, "bundle", "create", "--key", filepath.Join(keys, "signing.key"), "--format", "1",
		"--compatible", "acme", "--version", "1.2.0", "rootfs="+imgPath, "-o", out1); code != 0 {
		t.Fatalf("bundle create --format 1: %d %s", code, e)
	}
	if code, o, e := runVerb(t, "bundle", "info", out1, "--keyring", ring); code != 0 || !strings.Contains(o, "format      1 (manifest") {
		t.Fatalf("bundle info of a format-1 bundle: %d %s %s", code, o, e)
	}
	if code, _, _ := runVerb(t, "bundle", "create", "--key", filepath.Join(keys, "signing.key"), "--format", "3",
		"--compatible", "acme", "--version", "1.2.0", "rootfs="+imgPath, "-o", out1); code != 1 {
		t.Fatal("bundle create --format 3 accepted")
	}
	if code, _, e := runVerb(t, "bundle", "verify", out, "--keyring", ring); code != 0 {
		t.Fatalf("bundle verify: %d %s", code, e)
	}
	if code, _, _ := runVerb(t, "bundle", "verify", out, "--keyring", ring, "--threshold", "3"); code != 1 {
		t.Fatal("verify with an unreachable threshold passed")
	}
	if code, _, _ := runVerb(t, "bundle", "verify", out); code != 2 {
		t.Fatal("verify without --keyring is not a usage error")
	}

	b, _ := os.ReadFile(out)
	b[len(b)-6000] ^= 1 // in the last rootfs chunk or the mcu payload
	bad := filepath.Join(dir, "bad.otab")
	os.WriteFile(bad, b, 0o644)
	code, _, e = runVerb(t, "bundle", "verify", bad, "--keyring", ring)
	if code != 1 || !strings.Contains(e, "chunk") || !strings.Contains(e, "hash mismatch") {
		t.Fatalf("verify of a damaged bundle: %d %q", code, e)
	}

	slot := filepath.Join(dir, "slot")
	os.WriteFile(slot, make([]byte, len(img)+4096), 0o644)
	mcuDir := t.TempDir()
	code, o, e = runVerb(t, "bundle", "write", out, "--slot-device", slot, "--keyring", ring, "--compatible", "acme",
		"--mcu-dir", mcuDir, "--checkpoint", filepath.Join(dir, "ckpt.json"), "--json")
	if code != 0 || !strings.Contains(o, `"event":"done"`) {
		t.Fatalf("bundle write: %d %s %s", code, o, e)
	}
	got, _ := os.ReadFile(slot)
	fw, _ := os.ReadFile(filepath.Join(mcuDir, "stm32"))
	if !bytes.Equal(got[:len(img)], img) || !bytes.Equal(fw, img[:5000]) {
		t.Fatal("bundle write: slot or MCU payload differs")
	}
	code, o, _ = runVerb(t, "bundle", "write", out, "--slot-device", slot, "--keyring", ring, "--compatible", "other", "--json")
	if code != 1 || !strings.Contains(o, `"kind":"incompatible"`) {
		t.Fatalf("bundle write with a wrong compatible: %d %s", code, o)
	}
}

func TestBundleSignCommand(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (run scripts/test-deps.sh)")
	}
	dir := t.TempDir()
	if code, _, e := runVerb(t, "keygen", "--out", dir, "--name", "hsm"); code != 0 {
		t.Fatal(e)
	}
	// An "HSM": openssl signs the message it gets on stdin.
	script := filepath.Join(dir, "sign.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nset -e\nt=$(mktemp)\ncat > \"$t\"\nopenssl pkeyutl -sign -inkey "+filepath.Join(dir, "hsm.key")+" -rawin -in \"$t\"\nrm -f \"$t\"\n"), 0o755)
	img := filepath.Join(dir, "img")
	os.WriteFile(img, bytes.Repeat([]byte("x"), 10000), 0o644)
	out := filepath.Join(dir, "b.otab")
	code, _, e := runVerb(t, "bundle", "create", "--sign-cmd", "sh "+script, "--sign-pub", filepath.Join(dir, "hsm.pub"),
		"--compatible", "acme", "--version", "2.0.0", "rootfs="+img, "-o", out)
	if code != 0 {
		t.Fatalf("create with --sign-cmd: %d %s", code, e)
	}
	if code, _, e := runVerb(t, "bundle", "verify", out, "--keyring", filepath.Join(dir, "hsm.pub")); code != 0 {
		t.Fatalf("verify: %s", e)
	}
}
