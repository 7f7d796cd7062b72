package ubootenv

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []Device
		err      error
		errText  string
	}{
		{name: "single file", in: "/boot/uboot.env 0x0 0x4000\n",
			want: []Device{{Path: "/boot/uboot.env", EnvSize: 0x4000, Line: 1}}},
		{name: "redundant emmc with comments", in: "# eMMC\n\n/dev/mmcblk0 0x3fc000 0x2000\t0x200\n  # x\n/dev/mmcblk0 0x3fe000 0x2000 0x200\n",
			want: []Device{{Path: "/dev/mmcblk0", Offset: 0x3fc000, EnvSize: 0x2000, SectorSize: 0x200, Line: 3},
				{Path: "/dev/mmcblk0", Offset: 0x3fe000, EnvSize: 0x2000, SectorSize: 0x200, Line: 5}}},
		{name: "negative offset, sizes without 0x", in: "/dev/mmcblk0 -0x4000 2000\n",
			want: []Device{{Path: "/dev/mmcblk0", Offset: -0x4000, EnvSize: 0x2000, Line: 1}}},
		{name: "nand with sectors and lock column", in: "/dev/mtd1 0x0 0x20000 0x20000 4 1\n",
			want: []Device{{Path: "/dev/mtd1", EnvSize: 0x20000, SectorSize: 0x20000, Sectors: 4, DisableLock: 1, Line: 1}}},
		{name: "decimal and octal offset like strtoll", in: "f 16384 0x2000\nf 020000 0x2000\n",
			want: []Device{{Path: "f", Offset: 16384, EnvSize: 0x2000, Line: 1}, {Path: "f", Offset: 0o20000, EnvSize: 0x2000, Line: 2}}},
		{name: "empty", in: "# nothing\n", err: ErrConfig, errText: "no device line"},
		{name: "two fields", in: "/dev/mtd0 0x0\n", err: ErrConfig, errText: "cfg:1:"},
		{name: "bad offset", in: "/dev/mtd0 zz 0x2000\n", err: ErrConfig, errText: `offset "zz"`},
		{name: "bad size", in: "/dev/mtd0 0x0 0xg\n", err: ErrConfig, errText: "env size"},
		{name: "zero size", in: "/dev/mtd0 0x0 0x0\n", err: ErrConfig, errText: "too small"},
		{name: "three lines", in: "a 0 0x2000\na 0x2000 0x2000\na 0x4000 0x2000\n", err: ErrConfig, errText: "cfg:3:"},
		{name: "size mismatch", in: "a 0 0x2000\na 0x4000 0x4000\n", err: ErrConfig, errText: "differs"},
		{name: "overlap", in: "a 0 0x2000\na 0x1000 0x2000\n", err: ErrConfig, errText: "overlaps"},
		{name: "ubi", in: "/dev/ubi0:env 0x0 0x1f000 0x1f000\n", err: ErrNotSupported},
		{name: "yaml", in: "uboot:\n  size: 0x4000\n", err: ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("cfg", []byte(tt.in))
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParseConfig = %v; want %v containing %q", err, tt.err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg.Devices); diff != "" {
				t.Errorf("devices (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("/dev/mtd0 0x0 0x2000 0x10000\n/dev/mtd0 0x10000 0x2000 0x10000\n"))
	f.Add([]byte("# c\n/boot/uboot.env -0x4000 4000 200 2 0\n"))
	f.Add([]byte("a: b\n"))
	f.Add([]byte("x 0x 0x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if n := len(cfg.Devices); n < 1 || n > 2 {
			t.Fatalf("%d devices", n)
		}
		for _, d := range cfg.Devices {
			if d.EnvSize <= 5 || d.Path == "" {
				t.Fatalf("accepted %+v", d)
			}
		}
	})
}

// TestExampleConfigs parses the shipped fw_env.config examples and checks
// that the Yocto layer's copies are identical.
func TestExampleConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../packaging/uboot/fw_env.config.*")
	if err != nil || len(files) < 5 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !cfg.Redundant() {
			t.Errorf("%s: example is not redundant", f)
		}
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join("../../yocto/meta-otagw/recipes-bsp/u-boot/files", filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("yocto copy of %s differs or is missing: %v", filepath.Base(f), err)
		}
	}
}
