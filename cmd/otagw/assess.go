package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/otagw/otagw/internal/api"
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
	res, err := api.NewClient(*sock).MarkGood(ctx)
	if err != nil {
		return clientError(stderr, "mark-good", err)
	}
	if *asJSON {
		writeJSON(stdout, res)
		return 0
	}
	fmt.Fprintf(stdout, "slot %s marked good and committed\n", res.Slot)
	return 0
}

func runMarkBad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mark-bad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reboot := fs.Bool("reboot", false, "reboot afterwards (into the other slot)")
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	sock := socketFlag(fs)
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) > 1 {
		return 2
	}
	req := api.SlotRequest{Reboot: *reboot}
	if len(pos) == 1 {
		req.Slot = pos[0]
	}
	res, err := api.NewClient(*sock).MarkBad(ctx, req)
	if err != nil {
		return clientError(stderr, "mark-bad", err)
	}
	if *asJSON {
		writeJSON(stdout, res)
		return 0
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
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out, err := api.NewClient(*sock).Rollback(ctx, api.SlotRequest{Reboot: *reboot})
	if err != nil {
		return clientError(stderr, "rollback", err)
	}
	if *asJSON {
		writeJSON(stdout, out)
		return 0
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
	rep, err := api.NewClient(*sock).Health(ctx)
	if err != nil {
		return clientError(stderr, "health", err)
	}
	if *asJSON {
		writeJSON(stdout, rep)
	} else {
		writeHealthText(stdout, rep)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// writeHealthText prints a health report as a table for people: one line
// per check ("ok", "FAIL" for a required failure, "warn" for an optional
// one), then the verdict.
func writeHealthText(w io.Writer, r api.HealthReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	failed := 0
	for _, res := range r.Results {
		status := "ok"
		switch {
		case !res.OK && res.Required:
			status = "FAIL"
			failed++
		case !res.OK:
			status = "warn"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", status, res.Name, res.Kind, res.Detail,
			res.Duration.Round(time.Millisecond), res.Error)
	}
	verdict := "healthy"
	if !r.OK {
		verdict = fmt.Sprintf("UNHEALTHY: %d required check(s) failed", failed)
	}
	fmt.Fprintf(tw, "%s (%d checks in %v)\n", verdict, len(r.Results), r.Duration.Round(time.Millisecond))
	tw.Flush()
}
