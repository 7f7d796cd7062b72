package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
)

// socketFlag adds --socket to a verb that talks to the daemon. The default
// comes from OTAGW_SOCKET, else the socket named in the default config
// file, else the built-in default.
func socketFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("OTAGW_SOCKET")
	if def == "" {
		def = config.Default().Daemon.Socket
		if c, err := config.Load(config.DefaultPath); err == nil {
			def = c.Daemon.Socket
		}
	}
	return fs.String("socket", def, "the daemon's API socket (env OTAGW_SOCKET)")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeEvent prints one event as one line of JSON (the --json form of the
// event streams: install, mcu flash, watch).
func writeEvent(w io.Writer, ev api.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// clientError prints one line for a failed API call and returns exit 1.
func clientError(stderr io.Writer, verb string, err error) int {
	fmt.Fprintf(stderr, "otagw %s: %v\n", verb, err)
	return 1
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("otagw install FILE --json" as well as
// "otagw install --json FILE"), and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
