package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otagw/otagw/internal/api"
)

func init() {
	register("status", "show the daemon's state, slots, release versions and MCUs", runStatus)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := api.NewClient(*sock).Status(ctx)
	if err != nil {
		return clientError(stderr, "status", err)
	}
	if *asJSON {
		writeJSON(stdout, st)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st api.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "State:\t%s\n", st.State)
	if st.Message != "" {
		fmt.Fprintf(tw, "Message:\t%s\n", st.Message)
	}
	fmt.Fprintf(tw, "Daemon:\totagw %s, pid %d, up %s\n", st.Version, st.PID, (time.Duration(st.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(tw, "Config:\t%s (generation %d, log level %s)\n", st.ConfigPath, st.ConfigGeneration, st.LogLevel)
	if m := st.Maintenance; m != nil {
		line := "closed; next window " + m.Window + " at " + m.NextStart.Local().Format(time.DateTime)
		if m.Open {
			line = "open (" + m.Window + ")"
		}
		line += fmt.Sprintf("; install %s, flash %s, reboot %s", m.Install, m.Flash, m.Reboot)
		if m.Download != "" {
			line += ", download " + m.Download
		}
		if m.RebootAt != nil {
			line += ", reboot scheduled at " + m.RebootAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "Maintenance:\t%s\n", line)
	}
	if r := st.Release; r != nil {
		fmt.Fprintf(tw, "Release:\tcommitted %s, pending %s, minimum %s\n", orDash(r.Committed), orDash(r.Pending), orDash(r.MinVersion))
	}
	if c := st.Channel; c != nil && c.URL != "" {
		line := orDash(c.State)
		if c.Reason != "" {
			line += ": " + c.Reason
		}
		if c.Sequence != 0 {
			line += fmt.Sprintf(" (index sequence %d)", c.Sequence)
		}
		fmt.Fprintf(tw, "Channel:\t%s\n", line)
	}
	tw.Flush()
	if len(st.Slots) > 0 {
		fmt.Fprintln(w, "\nSlots:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SLOT\tBOOT\tDEVICE\tSTATE\tTRIES\tVERSION\tNOTE")
		for _, s := range st.Slots {
			var flags []string
			flags = append(flags, s.State)
			if s.Primary {
				flags = append(flags, "primary")
			}
			if s.Booted {
				flags = append(flags, "booted")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.Bootname, s.Device, strings.Join(flags, ","), s.TriesLeft, orDash(s.Version), s.Note)
		}
		tw.Flush()
	}
	if len(st.MCUs) > 0 {
		fmt.Fprintln(w, "\nMCUs:")
		printMCUs(w, st.MCUs)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "\nWARNING: %s\n", warn)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printMCUs(w io.Writer, mcus []api.MCUStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tBUS\tVERSION\tMINIMUM\tLAST RESULT\tRETRIES\tAT")
	for _, m := range mcus {
		res := orDash(m.Result)
		if m.Reason != "" {
			res += " (" + m.Reason + ")"
		}
		at := "-"
		if !m.At.IsZero() {
			at = m.At.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Bus, orDash(m.Version), orDash(m.MinVersion), res, m.Retries, at)
	}
	tw.Flush()
}
