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
	register("config history", "list the configurations from the update channel: applied, rejected, reverted", runConfigHistory)
	register("channel poll", "make the daemon poll its update channel now", runChannelPoll)
}

func runConfigHistory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw config history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return 2
	}
	var vs []api.ConfigVersion
	if err := api.NewClient(*sock).Get(ctx, "/v1/config/history", &vs); err != nil {
		return clientError(stderr, "config history", err)
	}
	if *asJSON {
		if err := writeJSON(stdout, vs); err != nil {
			return 1
		}
		return 0
	}
	if len(vs) == 0 {
		fmt.Fprintln(stdout, "no configuration has come from the update channel")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tOUTCOME\tVERSION\tREASON")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Time.Local().Format(time.DateTime), v.Outcome, v.Version, firstLine(v.Reason))
	}
	tw.Flush()
	return 0
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}

func runChannelPoll(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw channel poll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	if _, err := parseArgs(fs, args); err != nil {
		return 2
	}
	var st api.Status
	if err := api.NewClient(*sock).Post(ctx, "/v1/channel/poll", nil, &st); err != nil {
		return clientError(stderr, "channel poll", err)
	}
	fmt.Fprintln(stdout, "the daemon polls its channel now; see otagw status")
	return 0
}
