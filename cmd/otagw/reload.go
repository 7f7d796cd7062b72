package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/otagw/otagw/internal/api"
)

func init() {
	register("reload", "make the daemon re-read its config file (like SIGHUP)", runReload)
}

func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the status after the reload as JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := api.NewClient(*sock).Reload(ctx)
	if err != nil {
		return clientError(stderr, "reload", err)
	}
	if *asJSON {
		writeJSON(stdout, st)
		return 0
	}
	fmt.Fprintf(stdout, "configuration reloaded (generation %d)\n", st.ConfigGeneration)
	return 0
}
