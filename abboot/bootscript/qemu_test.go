package bootscript

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/otagw/otagw/abboot/bootscript/ubootqemu"
	"github.com/otagw/otagw/abboot/ubootenv"
)

// TestRealUBootAgreesWithModel runs boot.scr (compiled from boot.cmd) in a
// real U-Boot (Debian's u-boot-qemu qemu_arm64 build under
// qemu-system-aarch64, software emulation) for a set of starting
// environments, and checks that the interpreter in this package ends in the
// same state: the same "otagw:" messages, the same boot-or-reset outcome and
// the same variables. The environment reaches U-Boot as an image written by
// ubootenv (single copy at offset 0 of the second pflash, 0x40000 bytes), so
// this also proves that U-Boot accepts otagw's encoding.
//
// saveenv fails in this setup (a QEMU 7.2 pflash write bug, see
// TESTING.md), which does not matter here: the check is on the in-memory
// state at the moment the script boots or resets.
func TestRealUBootAgreesWithModel(t *testing.T) {
	board := ubootqemu.New(t, "boot.cmd")
	dir := t.TempDir()
	watch := []string{"BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "bootargs", "otagw_slot", "boot_slot", "boot_bad", "upgrade_available", "bootcount", "otagw_altboot"}
	base := map[string]string{
		"bootcmd":          "source ${scriptaddr}",
		"bootdelay":        "0",
		"scriptaddr":       ubootqemu.ScriptAddr,
		"otagw_load_A":     "echo OTAGW-LOAD A",
		"otagw_load_B":     "echo OTAGW-LOAD B",
		"otagw_root_A":     "/dev/vda2",
		"otagw_root_B":     "/dev/vda3",
		"default_bootargs": "console=ttyAMA0",
	}
	cases := []struct {
		name string
		env  map[string]string
	}{
		{"fresh env, defaults", map[string]string{}},
		{"B primary", map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}},
		{"hex counter", map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "a"}},
		{"hex counter 0x10", map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "10"}},
		{"B exhausted, fallback", map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "1", "BOOT_B_LEFT": "0"}},
		{"B removed from order", map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}},
		{"double space in order", map[string]string{"BOOT_ORDER": "B  A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}},
		{"all exhausted resets", map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"}},
		{"bootcount normal", map[string]string{"otagw_mode": "bootcount", "boot_slot": "B", "upgrade_available": "1", "bootcount": "2"}},
		{"bootcount altboot", map[string]string{"otagw_mode": "bootcount", "boot_slot": "B", "upgrade_available": "1", "bootcount": "4", "otagw_altboot": "1"}},
		{"bootcount altboot from A", map[string]string{"otagw_mode": "bootcount", "boot_slot": "A", "boot_bad": "B", "otagw_altboot": "1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			// The model.
			model := map[string]string{"otagw_boot": "bootz 0x40400000"}
			for k, v := range env {
				model[k] = v
			}
			res, err := (&Interp{Env: model}).Run(BootCmd)
			if err != nil {
				t.Fatal(err)
			}
			// Real U-Boot.
			real := ubootenv.Env{"otagw_boot": "echo OTAGW-BOOT; printenv " + strings.Join(watch, " ") + "; reset"}
			for k, v := range env {
				real[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			console, err := board.Run(ctx, real, dir)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(console, "## Executing script at 40200000") {
				t.Fatalf("U-Boot did not run the script (env not accepted?):\n%s", console)
			}
			var realMsgs []string
			realVars := map[string]string{}
			booted := false
			notDefined := regexp.MustCompile(`^## Error: "(.*)" not defined$`)
			for _, l := range strings.Split(console[strings.Index(console, "## Executing script"):], "\n") {
				switch {
				case strings.HasPrefix(l, "otagw: "):
					realMsgs = append(realMsgs, l)
				case l == "OTAGW-BOOT":
					booted = true
				case booted && notDefined.MatchString(l):
				case booted && strings.Contains(l, "="):
					k, v, _ := strings.Cut(l, "=")
					realVars[k] = v
				}
			}
			var modelMsgs []string
			for _, l := range res.Output {
				if strings.HasPrefix(l, "otagw: ") {
					modelMsgs = append(modelMsgs, l)
				}
			}
			if diff := cmp.Diff(modelMsgs, realMsgs); diff != "" {
				t.Errorf("messages (-model +U-Boot):\n%s\nconsole:\n%s", diff, console)
			}
			if (res.Action == Boot) != booted {
				t.Fatalf("model action %v, U-Boot booted=%v\n%s", res.Action, booted, console)
			}
			if !booted {
				if !strings.Contains(console, "resetting ...") {
					t.Fatalf("U-Boot neither booted nor reset:\n%s", console)
				}
				return
			}
			modelVars := map[string]string{}
			for _, k := range watch {
				if v, ok := model[k]; ok {
					modelVars[k] = v
				}
			}
			if diff := cmp.Diff(modelVars, realVars); diff != "" {
				t.Errorf("variables at boot (-model +U-Boot):\n%s", diff)
			}
		})
	}
}
