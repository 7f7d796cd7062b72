package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/buildinfo"
)

func init() {
	register("version", "print the CLI's version and, when it runs, the daemon's", runVersion)
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	sock := socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := struct {
		CLI      string `json:"cli"`
		Revision string `json:"revision,omitempty"`
		Daemon   string `json:"daemon,omitempty"`
	}{CLI: buildinfo.Version, Revision: buildinfo.Revision()}
	if st, err := api.NewClient(*sock).Status(ctx); err == nil {
		out.Daemon = st.Version
	}
	if *asJSON {
		writeJSON(stdout, out)
		return 0
	}
	fmt.Fprintln(stdout, buildinfo.String())
	if out.Daemon != "" {
		fmt.Fprintf(stdout, "daemon: otagw %s\n", out.Daemon)
	} else {
		fmt.Fprintln(stdout, "daemon: not running")
	}
	return 0
}
