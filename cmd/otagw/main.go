// Command otagw is the over-the-air update daemon for ARM Linux gateways and
// its command-line interface. One binary holds both:
//
//	otagw daemon --config /etc/otagw/otagw.yaml   # what systemd runs
//	otagw status [--json]                          # asks the daemon over its socket
//	otagw config validate FILE                     # offline verbs work without it
//
// Each verb lives in its own file and registers itself with register; the
// files hold flag parsing and output only, the logic sits in the packages.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one CLI verb. run gets the arguments after the verb name and
// returns the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

// register adds a verb. Verbs with a space in the name ("config validate")
// are matched on their first two words.
func register(name, summary string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	if _, dup := commands[name]; dup {
		panic("otagw: verb registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	if len(args) >= 2 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			return c.run(ctx, args[2:], stdout, stderr)
		}
	}
	if c, ok := commands[args[0]]; ok {
		return c.run(ctx, args[1:], stdout, stderr)
	}
	var group []string
	for name := range commands {
		if strings.HasPrefix(name, args[0]+" ") {
			group = append(group, name)
		}
	}
	if len(group) > 0 {
		sort.Strings(group)
		fmt.Fprintf(stderr, "otagw %s: missing or unknown sub-command; one of:\n", args[0])
		for _, g := range group {
			fmt.Fprintf(stderr, "  otagw %-22s %s\n", g, commands[g].summary)
		}
		return 2
	}
	fmt.Fprintf(stderr, "otagw: unknown command %q (see 'otagw help')\n", args[0])
	return 2
}

func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "otagw: over-the-air updates for the gateway's A/B root filesystem and its MCUs")
	fmt.Fprintln(w, "\nUsage: otagw COMMAND [ARGS]\n\nCommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-24s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRead verbs take --json for machine-readable output.")
}
