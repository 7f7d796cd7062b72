package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
)

func init() {
	register("config validate", "check a configuration file; lists every error", runConfigValidate)
	register("config show", "print the effective configuration with defaults filled", runConfigShow)
	register("config apply", "hand the daemon a whole new config file: validated, written atomically, loaded", runConfigApply)
}

// runConfigApply is remote configuration's entry point: an agent that
// fetched a new otagw.yaml hands it over; nothing changes unless all of it
// is valid.
func runConfigApply(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw config apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the status after the change as JSON")
	sock := socketFlag(fs)
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: otagw config apply [--json] FILE|-")
		return 2
	}
	var data []byte
	if pos[0] == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(pos[0])
	}
	if err != nil {
		return clientError(stderr, "config apply", err)
	}
	st, err := api.NewClient(*sock).ConfigApply(ctx, data)
	if err != nil {
		fmt.Fprintf(stderr, "otagw config apply: refused, nothing changed:\n%v\n", err)
		return 1
	}
	if *asJSON {
		writeJSON(stdout, st)
		return 0
	}
	fmt.Fprintf(stdout, "configuration applied (generation %d)\n", st.ConfigGeneration)
	return 0
}

func runConfigValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := config.DefaultPath
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		fmt.Fprintln(stderr, "usage: otagw config validate [FILE]")
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Downstream.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	fmt.Fprintf(stdout, "%s: valid\n", path)
	return 0
}

func runConfigShow(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw config show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *asJSON {
		if err := writeJSON(stdout, cfg); err != nil {
			fmt.Fprintln(stderr, "otagw config show:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "# effective configuration of %s (defaults filled)\n", *path)
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
