package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/internal/config"
)

func init() {
	register("config validate", "check a configuration file; lists every error", runConfigValidate)
	register("config show", "print the effective configuration with defaults filled", runConfigShow)
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
	if _, err := config.Load(path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
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
