package ubootenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNoValidCopyNeverWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "env.img")
	garbage := bytes.Repeat([]byte("garbage!"), 0x800)
	if err := os.WriteFile(img, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("%s 0x0 0x2000\n%s 0x2000 0x2000\n", img, img)), 0o644)
	st := openStore(t, cfgPath)
	if _, err := st.Read(ctx); !errors.Is(err, ErrNoValidCopy) || !strings.Contains(err.Error(), "copy 1") {
		t.Fatalf("Read = %v", err)
	}
	if err := st.Update(ctx, func(e Env) error { e["a"] = "1"; return nil }); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("Update = %v", err)
	}
	if err := st.Write(ctx, Env{"a": "1"}); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("Write = %v", err)
	}
	if got, _ := os.ReadFile(img); !bytes.Equal(got, garbage) {
		t.Fatal("device written although no copy was valid")
	}
	// Reset is the explicit way to start over.
	if err := st.Reset(ctx, Env{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	if snap, err := st.Read(ctx); err != nil || snap.Env["a"] != "1" {
		t.Fatalf("after Reset: %v %v", snap, err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "env.img")
	os.WriteFile(img, make([]byte, 0x4000), 0o644)
	for _, tc := range []struct{ cfg, want string }{
		{img + " -0x2000 0x2000\n", "only allowed on a block device"},
		{filepath.Join(dir, "missing") + " 0 0x2000\n", "no such file"},
	} {
		cfg, err := ParseConfig("cfg", []byte(tc.cfg))
		if err != nil {
			t.Fatal(err)
		}
		opts := DefaultOptions()
		opts.NoLock = true
		if _, err := Open(cfg, opts); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cfg:1") {
			t.Errorf("Open(%q) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// A file shorter than offset+size: a clear error on read.
	cfg, _ := ParseConfig("cfg", []byte(img+" 0x3000 0x2000\n"))
	opts := DefaultOptions()
	opts.NoLock = true
	st, err := Open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Read(context.Background()); !errors.Is(err, ErrShort) {
		t.Errorf("short file: %v", err)
	}
}

// TestNegativeOffsetBlockDevice puts a redundant env at the end of a loop
// device addressed with negative offsets and cross-checks with fw_printenv.
func TestNegativeOffsetBlockDevice(t *testing.T) {
	needTool(t, "fw_printenv")
	if os.Getuid() != 0 {
		t.Skip("needs root for losetup")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk.img")
	os.WriteFile(backing, make([]byte, 1<<20), 0o644)
	out, err := exec.Command("losetup", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	cfgPath := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("%s -0x8000 0x4000\n%s -0x4000 0x4000\n", loop, loop)), 0o644)
	st := openStore(t, cfgPath)
	env := Env{"BOOT_ORDER": "A B", "loop": "yes"}
	if err := st.Reset(ctx, env); err != nil {
		t.Fatal(err)
	}
	if got := fwPrintenv(t, cfgPath); !got.Equal(env) {
		t.Fatalf("fw_printenv = %v", got)
	}
	raw, _ := os.ReadFile(backing)
	if _, _, err := DecodeImage(raw[(1<<20)-0x4000:], true); err != nil {
		t.Fatalf("copy 1 not at the device end - 0x4000: %v", err)
	}
}

func TestResetCreatesFileEnv(t *testing.T) {
	needTool(t, "fw_printenv")
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "uboot.env")
	os.WriteFile(img, nil, 0o644) // empty: a new development env file
	cfgPath := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("%s 0x0 0x2000\n%s 0x2000 0x2000\n", img, img)), 0o644)
	st := openStore(t, cfgPath)
	if _, err := st.Read(ctx); !errors.Is(err, ErrShort) {
		t.Fatalf("Read of empty file: %v", err)
	}
	if err := st.Update(ctx, func(Env) error { return nil }); !errors.Is(err, ErrShort) {
		t.Fatalf("Update of empty file: %v", err)
	}
	if err := st.Reset(ctx, Env{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	// copy 1 was written; copy 0 is a hole of zeros: still invalid, and the
	// next write goes to copy 0.
	if got := fwPrintenv(t, cfgPath); !got.Equal(Env{"a": "1"}) {
		t.Fatalf("fw_printenv = %v", got)
	}
	if err := st.Update(ctx, func(e Env) error { e["b"] = "2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := fwPrintenv(t, cfgPath); !got.Equal(Env{"a": "1", "b": "2"}) {
		t.Fatalf("fw_printenv = %v", got)
	}
}
