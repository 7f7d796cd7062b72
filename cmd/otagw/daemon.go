package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/daemon"
	"github.com/otagw/otagw/internal/fault"
	"github.com/otagw/otagw/internal/logging"
)

func init() {
	register("daemon", "run the update service (what systemd starts)", runDaemon)
}

// daemonGCPercent is the daemon's GOGC unless the environment sets one.
// Its live heap is small and fixed during an install (the pipeline's chunk
// buffers, the zstd decoders, the chunk table), while events and logs
// leave garbage: Go's default of 100 lets the heap grow to twice the live
// data between collections, 25 to a quarter more. Measured with
// scripts/bench-rootfs.sh (docs/benchmarks-rootfs.md): the daemon's peak
// RSS 3-4 MiB lower, CPU time unchanged (a collection of a heap this size
// takes about a millisecond). Unlike a memory limit (GOMEMLIMIT), it
// cannot make the collector thrash when a gateway's pipeline needs more
// (more cores, more workers).
const daemonGCPercent = 25

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	logFormat := fs.String("log-format", "", "console, json, journal (stderr lines with <N> priorities) or native (journald protocol, fields as OTAGW_* journal fields) (default: native under systemd with the journal, console otherwise)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "otagw daemon: %v\n", err)
		return 1
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(daemonGCPercent)
	}
	log, level, err := logging.New(*logFormat, cfg.Daemon.LogLevel, os.Stderr)
	if err != nil {
		fmt.Fprintf(stderr, "otagw daemon: %v\n", err)
		return 2
	}
	defer log.Sync()
	d, err := daemon.New(daemon.Options{ConfigPath: *cfgPath, Config: cfg, Log: log, Level: level, Clock: fault.Clock()})
	if err != nil {
		fmt.Fprintf(stderr, "otagw daemon: %v\n", err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		log.Error("daemon failed", logging.Err(err))
		return 1
	}
	return 0
}
