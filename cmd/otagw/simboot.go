package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/abboot/bootscript"
	"github.com/otagw/otagw/abboot/ubootenv"
	"github.com/otagw/otagw/internal/config"
)

func init() {
	register("sim boot", "simulated U-Boot power-on: run boot.cmd on the configured env, write the kernel cmdline", runSimBoot)
}

// runSimBoot is the bootloader of the simulated gateway (demo, tests):
// it runs otagw's boot.cmd through the Go model of U-Boot against the
// boot environment the config names, exactly as the board would on
// power-on, and writes the resulting kernel command line to boot.cmdline
// (and "1.00 1.00" to daemon.uptime_file, the new boot's uptime).
func runSimBoot(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw sim boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "the gateway's otagw config")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	b := cfg.Boot
	if b.Cmdline == "/proc/cmdline" || cfg.Daemon.UptimeFile == "/proc/uptime" {
		fmt.Fprintln(stderr, "otagw sim boot: boot.cmdline and daemon.uptime_file must be stand-in files, not /proc")
		return 2
	}
	m := &bootscript.Machine{Bootcount: b.Backend == abboot.BackendUBootBootcount,
		Commands: map[string]func([]string) int{"load": func([]string) int { return 0 }}}
	switch b.Backend {
	case abboot.BackendFile:
		m.Load = func() (map[string]string, error) { return abboot.ReadEnvFile(b.File) }
		m.Save = func(e map[string]string) error { return abboot.WriteEnvFile(b.File, e) }
	default:
		ec, err := ubootenv.LoadConfig(b.FWEnvConfig)
		if err != nil {
			fmt.Fprintln(stderr, "otagw sim boot:", err)
			return 1
		}
		o := ubootenv.DefaultOptions()
		o.LockFile = b.LockFile
		st, err := ubootenv.Open(ec, o)
		if err != nil {
			fmt.Fprintln(stderr, "otagw sim boot:", err)
			return 1
		}
		m.Load = func() (map[string]string, error) {
			snap, err := st.Read(ctx)
			if err != nil {
				return nil, err
			}
			return snap.Env, nil
		}
		m.Save = func(e map[string]string) error { return st.Write(ctx, e) }
	}
	// The board's compiled-in default environment: how to load and boot a
	// slot. Only variables the environment lacks are filled in.
	load := m.Load
	m.Load = func() (map[string]string, error) {
		env, err := load()
		if err != nil {
			return nil, err
		}
		for k, v := range map[string]string{
			"default_bootargs": "console=ttyS0,115200",
			"kernel_addr_r":    "0x42000000",
			"fdt_addr_r":       "0x43000000",
			"otagw_root_A":     "/dev/mmcblk0p2",
			"otagw_root_B":     "/dev/mmcblk0p3",
			"otagw_load_A":     "load mmc 0:2 ${kernel_addr_r} /boot/zImage",
			"otagw_load_B":     "load mmc 0:3 ${kernel_addr_r} /boot/zImage",
			"otagw_boot":       "bootz ${kernel_addr_r} - ${fdt_addr_r}",
		} {
			if _, ok := env[k]; !ok {
				env[k] = v
			}
		}
		return env, nil
	}
	for i := 0; i < 8; i++ { // a reset (a failed load, no slot with tries) boots again
		res, err := m.PowerOn()
		if err != nil {
			fmt.Fprintln(stderr, "otagw sim boot:", err)
			return 1
		}
		for _, l := range res.Output {
			fmt.Fprintf(stdout, "U-Boot> %s\n", l)
		}
		if res.Action == bootscript.Reset {
			fmt.Fprintln(stdout, "U-Boot> resetting")
			continue
		}
		if res.Action != bootscript.Boot {
			fmt.Fprintf(stderr, "otagw sim boot: the boot script ended with %s, not a boot\n", res.Action)
			return 1
		}
		args := strings.TrimSpace(res.Bootargs)
		if err := os.WriteFile(b.Cmdline, []byte(args+"\n"), 0o644); err != nil {
			fmt.Fprintln(stderr, "otagw sim boot:", err)
			return 1
		}
		os.WriteFile(cfg.Daemon.UptimeFile, []byte("1.00 1.00\n"), 0o644)
		fmt.Fprintf(stdout, "booting: %s\n", args)
		return 0
	}
	fmt.Fprintln(stderr, "otagw sim boot: the board keeps resetting")
	return 1
}
