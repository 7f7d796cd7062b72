// Package ubootqemu boots a real U-Boot for tests: Debian's u-boot-qemu
// qemu_arm64 build in qemu-system-aarch64 (software emulation), with an
// environment image otagw wrote in the second pflash and a compiled boot
// script loaded into RAM, and returns what U-Boot printed.
//
//	b := ubootqemu.New(t, "bootscript/boot.cmd")   // mkimage -T script
//	console, err := b.Run(ctx, env, t.TempDir())   // env: bootcmd "source ${scriptaddr}", ...
//
// U-Boot's saveenv cannot persist in Debian's QEMU 7.2 (a pflash write
// bug, see TESTING.md): tests read the environment back from the console
// (printenv in the board's boot command).
package ubootqemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/abboot/ubootenv"
)

// BIOS is the U-Boot build that runs.
const BIOS = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// ScriptAddr is where the boot script is loaded; set bootcmd to
// "source ${scriptaddr}" with scriptaddr=ScriptAddr.
const ScriptAddr = "0x40200000"

// EnvSize is the size of the environment in the second pflash.
const EnvSize = 0x40000

// Board is one U-Boot setup: the emulator, the firmware, the script.
type Board struct {
	qemu, script string
}

// New finds the tools and compiles bootCmd with mkimage; it skips the test,
// naming the Debian package, when a tool is missing (scripts/test-deps.sh
// installs them all).
func New(t testing.TB, bootCmd string) *Board {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (Debian package qemu-system-arm)")
	}
	if _, err := os.Stat(BIOS); err != nil {
		t.Skipf("%s missing (Debian package u-boot-qemu)", BIOS)
	}
	mk, err := exec.LookPath("mkimage")
	if err != nil {
		t.Skip("mkimage not installed (u-boot-tools)")
	}
	scr := filepath.Join(t.TempDir(), "boot.scr")
	if out, err := exec.Command(mk, "-A", "arm64", "-T", "script", "-C", "none", "-n", "otagw", "-d", bootCmd, scr).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v %s", err, out)
	}
	return &Board{qemu: qemu, script: scr}
}

// Run boots U-Boot once with env (encoded by ubootenv as a single-copy
// image at offset 0 of the second pflash) and returns the console without
// carriage returns. dir holds the flash image while it runs.
func (b *Board) Run(ctx context.Context, env ubootenv.Env, dir string) (string, error) {
	img, err := ubootenv.EncodeImage(env, EnvSize, false, 0)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "flash-*.img")
	if err != nil {
		return "", err
	}
	flash := f.Name()
	defer os.Remove(flash)
	_, err = f.Write(img)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Truncate(flash, 64<<20)
	}
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, b.qemu, "-M", "virt", "-cpu", "cortex-a57", "-m", "256",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-bios", BIOS, "-drive", "if=pflash,format=raw,index=1,file="+flash,
		"-device", "loader,file="+b.script+",addr="+ScriptAddr+",force-raw=on")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("qemu: %v\n%s", err, out.String())
	}
	return strings.ReplaceAll(out.String(), "\r", ""), nil
}
