package abboot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/abboot/bootscript"
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
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (Debian package qemu-system-arm)")
	}
	const bios = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
	if _, err := os.Stat(bios); err != nil {
		t.Skipf("%s missing (Debian package u-boot-qemu)", bios)
	}
	mk, err := exec.LookPath("mkimage")
	if err != nil {
		t.Skip("mkimage not installed (u-boot-tools)")
	}
	t.Parallel()
	r := newRig(t, BackendUBoot)
	dir := t.TempDir()
	scr := filepath.Join(dir, "boot.scr")
	if out, err := exec.Command(mk, "-A", "arm64", "-T", "script", "-C", "none", "-n", "otagw", "-d", "bootscript/boot.cmd", scr).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v %s", err, out)
	}
	st := r.ch.store.(*ubootStore).st
	ctx := context.Background()
	if err := st.Update(ctx, func(e ubootenv.Env) error {
		e["bootcmd"] = "source ${scriptaddr}"
		e["scriptaddr"] = "0x40200000"
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
		img, err := ubootenv.EncodeImage(env, 0x40000, false, 0)
		if err != nil {
			return bootscript.Result{}, err
		}
		flash := filepath.Join(dir, fmt.Sprintf("flash%d.img", boots))
		if err := os.WriteFile(flash, img, 0o644); err != nil {
			return bootscript.Result{}, err
		}
		if err := os.Truncate(flash, 64<<20); err != nil {
			return bootscript.Result{}, err
		}
		qctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(qctx, qemu, "-M", "virt", "-cpu", "cortex-a57", "-m", "256",
			"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
			"-bios", bios, "-drive", "if=pflash,format=raw,index=1,file="+flash,
			"-device", "loader,file="+scr+",addr=0x40200000,force-raw=on")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return bootscript.Result{}, fmt.Errorf("qemu: %v\n%s", err, out.String())
		}
		os.Remove(flash)
		console := strings.ReplaceAll(out.String(), "\r", "")
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
