package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/otagw/otagw/downstream/fanout"
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
	var results []api.DeviceResult
	failed := false
	err = api.NewClient(*sock).WithFiles(files...).Stream(ctx, "POST", "/v1/mcu/flash", req, func(raw json.RawMessage) error {
		if *asJSON {
			fmt.Fprintln(stdout, string(raw))
		}
		var e api.Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		switch e.Type {
		case api.EventDevice:
			if *asJSON {
				return nil
			}
			switch {
			case strings.HasPrefix(e.Message, "retry "):
				fmt.Fprintf(stderr, "%-12s %s\n", e.Device, e.Message)
			case e.Phase != "" && e.Result == "" && e.Message != "started":
				fmt.Fprintf(stderr, "%-12s %s\n", e.Device, e.Phase)
			}
		case api.EventProgress:
			if !*asJSON && e.Total > 0 && (e.Done == e.Total || e.Done%(16<<10) == 0) {
				fmt.Fprintf(stderr, "%-12s %s %d/%d bytes\n", e.Device, e.Phase, e.Done, e.Total)
			}
		case api.EventDone:
			results = e.Devices
		case api.EventError, api.EventLagged:
			failed = true
			if !*asJSON {
				msg := e.Error
				if e.Type == api.EventLagged {
					msg = "this client fell behind the fan-out's events; see otagw mcu list"
				}
				fmt.Fprintf(stderr, "otagw mcu flash: %s\n", msg)
			}
		}
		return nil
	})
	if err != nil {
		return clientError(stderr, "mcu flash", err)
	}
	if !*asJSON {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tBUS\tRESULT\tFROM\tTO\tRETRIES\tREASON")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Device, r.Bus, r.Result, orDash(r.From), r.Version, r.Retries, r.Reason)
		}
		tw.Flush()
	}
	for _, r := range results {
		if r.Result == string(fanout.Failed) {
			failed = true
		}
	}
	if failed || results == nil {
		return 1
	}
	return 0
}

func runMCUList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var mcus []api.MCUStatus
	if err := api.NewClient(*sock).Get(ctx, "/v1/mcu", &mcus); err != nil {
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
