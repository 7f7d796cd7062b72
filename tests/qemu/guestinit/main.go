// Command guestinit is the /init of the initramfs that tests/qemu/qemutest
// boots: it mounts /dev, /proc, /sys and /tmp, loads the kernel modules the
// host listed, runs the Go test binary, prints a marker line with its exit
// code and powers the machine off.
//
//	OTAGW-QEMU-INIT                 first line of every boot
//	OTAGW-QEMU-MODULE name ok|err   one per module
//	OTAGW-QEMU-EXIT code            after the test binary ended
//
// It reads its plan from /otagw-qemu.json (see qemutest.plan).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type plan struct {
	Modules []struct {
		Name   string `json:"name"`
		Path   string `json:"path"`
		Params string `json:"params"`
	} `json:"modules"`
	Args []string `json:"args"`
	Env  []string `json:"env"`
}

func main() {
	fmt.Println("OTAGW-QEMU-INIT")
	code := run()
	fmt.Printf("OTAGW-QEMU-EXIT %d\n", code)
	// Let the UART drain before the power goes.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	time.Sleep(200 * time.Millisecond)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// PID 1 must not exit.
	for {
		time.Sleep(time.Hour)
	}
}

func run() int {
	for _, m := range []struct{ src, dst, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Printf("guestinit: mount %s: %v\n", m.dst, err)
			return 125
		}
	}
	raw, err := os.ReadFile("/otagw-qemu.json")
	if err != nil {
		fmt.Printf("guestinit: %v\n", err)
		return 125
	}
	var p plan
	if err := json.Unmarshal(raw, &p); err != nil {
		fmt.Printf("guestinit: /otagw-qemu.json: %v\n", err)
		return 125
	}
	for _, m := range p.Modules {
		if err := insmod(m.Path, m.Params); err != nil {
			fmt.Printf("OTAGW-QEMU-MODULE %s err %v\n", m.Name, err)
			return 125
		}
		fmt.Printf("OTAGW-QEMU-MODULE %s ok\n", m.Name)
	}
	// Device nodes of freshly loaded drivers appear in devtmpfs
	// asynchronously; give them a moment.
	time.Sleep(100 * time.Millisecond)

	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Dir = "/tmp"
	cmd.Env = append([]string{"PATH=/bin:/sbin:/", "HOME=/tmp", "TMPDIR=/tmp"}, p.Env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Printf("guestinit: %s killed by %v\n", p.Args[0], ws.Signal())
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Printf("guestinit: %v\n", err)
		return 126
	}
}

func insmod(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
