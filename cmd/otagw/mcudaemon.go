package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/otagw/otagw/internal/api"
)

func init() {
	mcuFlashDaemon = runMCUFlashDaemon
	register("mcu list", "the configured MCUs with their versions and last results", runMCUList)
}

// runMCUFlashDaemon: otagw mcu flash (DEVICE... | --all) PACKAGE [--json],
// through the daemon, with a progress line per device.
func runMCUFlashDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu flash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "every configured device the package targets")
	asJSON := fs.Bool("json", false, "print line-delimited JSON events")
	now := fs.Bool("now", false, "flash now even outside the maintenance windows")
	sock := socketFlag(fs)
	ops, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(ops) < 1 || (!*all && len(ops) < 2) || (*all && len(ops) > 4) {
		fmt.Fprintln(stderr, "usage: otagw mcu flash (DEVICE... PACKAGE | --all PACKAGE...) [--json]\n       otagw mcu flash --port DEV --protocol stm32-rom|esp32-rom --keyring DIR PACKAGE   (standalone)")
		return 2
	}
	// --all takes up to four packages (a mixed STM32/ESP32 fleet); each
	// device gets the first that targets it.
	pkgArgs, devices := ops[len(ops)-1:], ops[:len(ops)-1]
	if *all {
		pkgArgs, devices = ops, nil
	}
	// Opened here, with the caller's credentials, and passed as descriptors.
	var files []*os.File
	var srcs []string
	for _, a := range pkgArgs {
		f, pkg, err := openPassed(a)
		if err != nil {
			return clientError(stderr, "mcu flash", err)
		}
		defer f.Close()
		files, srcs = append(files, f), append(srcs, api.FDSource(pkg))
	}
	req := api.MCUFlashRequest{Package: srcs[0], More: srcs[1:], All: *all, Devices: devices, Now: *now}
	end, err := api.NewClient(*sock).MCUFlash(ctx, req, files, func(ev api.Event) error {
		if *asJSON {
			return writeEvent(stdout, ev)
		}
		switch ev.Type {
		case api.EventDevice:
			switch {
			case ev.Result != "":
				fmt.Fprintf(stderr, "%-12s %s\n", ev.Device, joinNonEmpty(ev.Result, ev.Message))
			case ev.Phase != "":
				fmt.Fprintf(stderr, "%-12s %s\n", ev.Device, ev.Phase)
			case ev.Message != "":
				fmt.Fprintf(stderr, "%-12s %s\n", ev.Device, ev.Message)
			}
		case api.EventProgress:
			if ev.Total > 0 && (ev.Done == ev.Total || ev.Done%(16<<10) == 0) {
				fmt.Fprintf(stderr, "%-12s %s %d/%d bytes\n", ev.Device, ev.Phase, ev.Done, ev.Total)
			}
		}
		return nil
	})
	var failed *api.FailedError
	switch {
	case errors.As(err, &failed):
		if !*asJSON {
			fmt.Fprintf(stderr, "otagw mcu flash: %s\n", failed)
		}
		return 1
	case err != nil:
		return clientError(stderr, "mcu flash", err)
	}
	if !*asJSON {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tBUS\tRESULT\tFROM\tVERSION\tRETRIES\tREASON")
		for _, r := range end.Devices {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Device, r.Bus, r.Result, orDash(r.From), orDash(r.Version), r.Retries, r.Reason)
		}
		tw.Flush()
	}
	if len(end.Devices) == 0 {
		return 1
	}
	for _, r := range end.Devices {
		if r.Result == "failed" {
			return 1
		}
	}
	return 0
}

// joinNonEmpty joins the non-empty parts with ": ".
func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}

func runMCUList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	mcus, err := api.NewClient(*sock).MCUs(ctx)
	if err != nil {
		return clientError(stderr, "mcu list", err)
	}
	if *asJSON {
		writeJSON(stdout, mcus)
		return 0
	}
	if len(mcus) == 0 {
		fmt.Fprintln(stdout, "no MCUs configured (downstream.devices)")
		return 0
	}
	printMCUs(stdout, mcus)
	return 0
}
