package bootscript

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInterp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		script  string
		wantEnv map[string]string
		action  Action
		out     []string
		err     error
	}{
		{name: "setexpr is hex", env: map[string]string{"n": "10"}, script: "setexpr n ${n} - 1",
			wantEnv: map[string]string{"n": "f"}},
		{name: "setexpr 0x prefix", env: map[string]string{"n": "0x3"}, script: "setexpr n ${n} - 1",
			wantEnv: map[string]string{"n": "2"}},
		{name: "test numbers base 0", env: map[string]string{"n": "a"}, script: `if test 0x${n} -gt 9; then echo yes; fi; if test 010 -eq 8; then echo octal; fi; if test 12abc -eq 12; then echo stops; fi`,
			wantEnv: map[string]string{"n": "a"}, out: []string{"yes", "octal", "stops"}},
		{name: "setenv joins and deletes", env: map[string]string{"x": "1"}, script: `setenv y a b "c d"; setenv x`,
			wantEnv: map[string]string{"y": "a b c d"}},
		{name: "for splits quoted list on spaces", env: map[string]string{"L": "B  A C"}, script: `for s in "${L}"; do echo "[${s}]"; done`,
			wantEnv: map[string]string{"L": "B  A C"}, out: []string{"[B]", "[A]", "[C]"}},
		{name: "locals shadow env", env: map[string]string{"v": "env"}, script: `v=local; echo "${v}"; setenv v new; echo "${v}"`,
			wantEnv: map[string]string{"v": "new"}, out: []string{"local", "new"}},
		{name: "and or", script: `false && echo no; false || echo yes; true && echo yes2`,
			wantEnv: map[string]string{}, out: []string{"yes", "yes2"}},
		{name: "run and reset", env: map[string]string{"c": "echo in c; reset; echo never"}, script: `run c; echo never`,
			wantEnv: map[string]string{"c": "echo in c; reset; echo never"}, action: Reset, out: []string{"in c"}},
		{name: "run undefined fails", script: `run nothing || echo failed`, wantEnv: map[string]string{}, out: []string{"failed"}},
		{name: "boot", env: map[string]string{"bootargs": "root=x"}, script: `bootz 0x1 - 0x2; echo never`,
			wantEnv: map[string]string{"bootargs": "root=x"}, action: Boot},
		{name: "unknown command", script: `mmc dev 0`, err: ErrUnsupported},
		{name: "command substitution", script: `echo $(ls)`, err: ErrUnsupported},
		{name: "unquoted empty", script: `test -n ${nothing}`, err: errors.New("quote it")},
		{name: "test operators", script: `test ! -z "x" -a "a" = "a" && echo and; test "a" = "b" -o 1 -lt 2 && echo or; test -z "" && echo z`,
			wantEnv: map[string]string{}, out: []string{"and", "or", "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			in := &Interp{Env: env}
			res, err := in.Run(tt.script)
			if tt.err != nil {
				if err == nil || (!errors.Is(err, tt.err) && !strings.Contains(err.Error(), tt.err.Error())) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantEnv, env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if res.Action != tt.action {
				t.Errorf("action = %v, want %v", res.Action, tt.action)
			}
			if diff := cmp.Diff(tt.out, res.Output); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBootScriptCompiles builds boot.scr with u-boot-tools' mkimage and
// checks the legacy image header and that the payload is boot.cmd.
func TestBootScriptCompiles(t *testing.T) {
	mk, err := exec.LookPath("mkimage")
	if err != nil {
		t.Skipf("mkimage not installed (run scripts/test-deps.sh): %v", err)
	}
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "boot.scr")
	cmd := exec.Command(mk, "-A", "arm", "-T", "script", "-C", "none", "-n", "otagw boot script", "-d", "boot.cmd", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, b)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(img) != 0x27051956 {
		t.Fatalf("no uImage magic")
	}
	if img[30] != 6 { // IH_TYPE_SCRIPT
		t.Fatalf("image type %d, want script (6)", img[30])
	}
	// Script payload: a 0-terminated list of u32 lengths, then the data.
	payload := img[64+8:]
	if !bytes.HasPrefix(payload, []byte(BootCmd)) {
		t.Fatalf("boot.scr payload is not boot.cmd")
	}
	// mkimage -l recognises it.
	if b, err := exec.Command(mk, "-l", out).CombinedOutput(); err != nil || !strings.Contains(string(b), "Script") {
		t.Fatalf("mkimage -l: %v\n%s", err, b)
	}
}

// TestCopiesInSync keeps the copies shipped by the Yocto layer and the
// Debian packaging identical to the source of truth.
func TestCopiesInSync(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		"../../yocto/meta-otagw/recipes-bsp/u-boot/files/boot.cmd",
		"../../packaging/uboot/boot.cmd",
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v (copy abboot/bootscript/boot.cmd there)", p, err)
		}
		if string(b) != BootCmd {
			t.Errorf("%s differs from abboot/bootscript/boot.cmd; copy it again", p)
		}
	}
	env, err := os.ReadFile("uboot-env-bootcount.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../packaging/uboot/uboot-env-bootcount.txt")
	if err != nil || !bytes.Equal(b, env) {
		t.Errorf("packaging/uboot/uboot-env-bootcount.txt differs from abboot/bootscript/uboot-env-bootcount.txt: %v", err)
	}
}

// TestScriptParsesStrictly runs boot.cmd through both flavours once, so a
// construct outside the modelled subset fails here.
func TestScriptRunsBothFlavours(t *testing.T) {
	t.Parallel()
	board := map[string]string{
		"otagw_load_A": "echo load A", "otagw_load_B": "echo load B",
		"otagw_root_A": "/dev/mmcblk0p2", "otagw_root_B": "/dev/mmcblk0p3",
		"otagw_boot": "bootz ${kernel_addr_r} - ${fdt_addr_r}", "kernel_addr_r": "0x42000000", "fdt_addr_r": "0x43000000",
		"default_bootargs": "console=ttyS0,115200",
	}
	env := map[string]string{}
	for k, v := range board {
		env[k] = v
	}
	res, err := (&Interp{Env: env}).Run(BootCmd)
	if err != nil || res.Action != Boot || res.Bootargs != "console=ttyS0,115200 root=/dev/mmcblk0p2 rauc.slot=A" || env["BOOT_A_LEFT"] != "2" {
		t.Fatalf("rauc flavour: %+v %v env=%v", res, err, env)
	}
	env = map[string]string{"otagw_mode": "bootcount", "boot_slot": "B"}
	for k, v := range board {
		env[k] = v
	}
	res, err = (&Interp{Env: env}).Run(BootCmd)
	if err != nil || res.Action != Boot || !strings.HasSuffix(res.Bootargs, "rauc.slot=B") {
		t.Fatalf("bootcount flavour: %+v %v", res, err)
	}
}

func FuzzInterp(f *testing.F) {
	f.Add(BootCmd)
	f.Add("for x in a b; do run x; done")
	f.Add("x=1; setexpr y ${x} / 0; test 1 -a")
	f.Fuzz(func(t *testing.T, script string) {
		env := map[string]string{"x": "run x", "bootargs": "a"}
		_, _ = (&Interp{Env: env}).Run(script)
	})
}
