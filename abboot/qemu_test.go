package abboot

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/abboot/bootscript"
	"github.com/otagw/otagw/abboot/bootscript/ubootqemu"
	"github.com/otagw/otagw/abboot/ubootenv"
)

// TestABStateMachineRealUBoot runs the A/B table for the uboot backend with
// a real U-Boot (Debian's u-boot-qemu qemu_arm64 build in
// qemu-system-aarch64) as the bootloader instead of the Go model: every
// "boot" step hands the current environment to U-Boot, which runs boot.scr
// (compiled from boot.cmd by mkimage).
//
// U-Boot's saveenv cannot persist in this QEMU (a pflash write bug, see
// TESTING.md), so the test plays the flash: it dumps U-Boot's environment
// with printenv when boot.scr reaches the boot command and stores it with
// ubootenv, as saveenv would have (bootargs, which boot.cmd sets after its
// saveenv, keeps its previously saved value).
func TestABStateMachineRealUBoot(t *testing.T) {
	board := ubootqemu.New(t, "bootscript/boot.cmd")
	t.Parallel()
	r := newRig(t, BackendUBoot)
	dir := t.TempDir()
	st := r.ch.store.(*ubootStore).st
	ctx := context.Background()
	if err := st.Update(ctx, func(e ubootenv.Env) error {
		e["bootcmd"] = "source ${scriptaddr}"
		e["scriptaddr"] = ubootqemu.ScriptAddr
		e["bootdelay"] = "0"
		e["otagw_load_A"] = "echo OTAGW-LOAD A"
		e["otagw_load_B"] = "echo OTAGW-LOAD B"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	boots := 0
	r.boot = func() (bootscript.Result, error) {
		boots++
		snap, err := st.Read(ctx)
		if err != nil {
			return bootscript.Result{}, err
		}
		env := snap.Env.Clone()
		env["otagw_boot"] = "echo OTAGW-BOOT; printenv; reset"
		qctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		console, err := board.Run(qctx, env, dir)
		if err != nil {
			return bootscript.Result{}, err
		}
		i := strings.Index(console, "\nOTAGW-BOOT\n")
		if i < 0 {
			if strings.Contains(console, "resetting ...") && strings.Contains(console, "## Executing script") {
				return bootscript.Result{Action: bootscript.Reset}, nil
			}
			return bootscript.Result{}, fmt.Errorf("U-Boot did not boot:\n%s", console)
		}
		saved := ubootenv.Env{}
		for _, l := range strings.Split(console[i+len("\nOTAGW-BOOT\n"):], "\n") {
			if strings.HasPrefix(l, "Environment size:") {
				break
			}
			if k, v, ok := strings.Cut(l, "="); ok {
				saved[k] = v
			}
		}
		bootargs := saved["bootargs"]
		saved["otagw_boot"] = snap.Env["otagw_boot"]
		if v, ok := snap.Env["bootargs"]; ok {
			saved["bootargs"] = v
		} else {
			delete(saved, "bootargs")
		}
		if err := st.Write(ctx, saved); err != nil {
			return bootscript.Result{}, err
		}
		return bootscript.Result{Action: bootscript.Boot, Bootargs: bootargs}, nil
	}
	runTable(t, r)
	if boots < 10 {
		t.Fatalf("only %d boots", boots)
	}
}
