package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/watchdog/health"
)

func init() {
	register("mark-good", "commit the booted slot now (what a passed assessment does)", runMarkGood)
	register("mark-bad", "take a slot (default: the booted one) out of the boot order; --reboot to leave it", runMarkBad)
	register("rollback", "make the other slot primary if it is good; --reboot to boot it now", runRollback)
	register("health", "run the configured health checks now and show the results", runHealth)
}

func runMarkGood(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mark-good", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var res json.RawMessage
	if err := api.NewClient(*sock).Post(ctx, "/v1/mark-good", nil, &res); err != nil {
		return clientError(stderr, "mark-good", err)
	}
	if *asJSON {
		fmt.Fprintln(stdout, string(res))
		return 0
	}
	var r struct{ Slot string }
	json.Unmarshal(res, &r)
	fmt.Fprintf(stdout, "slot %s marked good and committed\n", r.Slot)
	return 0
}

func runMarkBad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mark-bad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reboot := fs.Bool("reboot", false, "reboot afterwards (into the other slot)")
	sock := socketFlag(fs)
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) > 1 {
		return 2
	}
	req := api.SlotRequest{Reboot: *reboot}
	if len(pos) == 1 {
		req.Slot = pos[0]
	}
	if err := api.NewClient(*sock).Post(ctx, "/v1/mark-bad", req, nil); err != nil {
		return clientError(stderr, "mark-bad", err)
	}
	what := req.Slot
	if what == "" {
		what = "the booted slot"
	}
	fmt.Fprintf(stdout, "%s marked bad%s\n", what, map[bool]string{true: "; rebooting", false: ""}[*reboot])
	return 0
}

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw rollback", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reboot := fs.Bool("reboot", false, "reboot into it now")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var out api.SlotRequest
	if err := api.NewClient(*sock).Post(ctx, "/v1/rollback", api.SlotRequest{Reboot: *reboot}, &out); err != nil {
		return clientError(stderr, "rollback", err)
	}
	fmt.Fprintf(stdout, "slot %s boots next%s\n", out.Slot, map[bool]string{true: "; rebooting", false: " (reboot to switch)"}[*reboot])
	return 0
}

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var rep health.Report
	if err := api.NewClient(*sock).Get(ctx, "/v1/health", &rep); err != nil {
		return clientError(stderr, "health", err)
	}
	if *asJSON {
		writeJSON(stdout, rep)
	} else {
		rep.WriteText(stdout)
	}
	if !rep.OK {
		return 1
	}
	return 0
}
