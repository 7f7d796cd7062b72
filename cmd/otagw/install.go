package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/otagw/otagw/internal/api"
)

func init() {
	register("install", "install a signed bundle (file or http(s) URL) into the inactive slot", runInstall)
}

func runInstall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print line-delimited JSON progress events")
	resume := fs.Bool("resume", false, "continue the interrupted install (or follow the running one)")
	now := fs.Bool("now", false, "install now even outside the maintenance windows")
	cancel := fs.Bool("cancel", false, "stop the running or interrupted install; its slot stays not bootable")
	sock := socketFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otagw install [--json] [--resume] [--now] [SOURCE]\n       otagw install --cancel [--json]\n\nSOURCE is a bundle file or an http(s):// URL. A file is opened by otagw install\nitself, with your permissions, and handed to the daemon as an open file;\nwith --resume, name the same file again.")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if *cancel {
		if len(pos) > 0 || *resume {
			fs.Usage()
			return 2
		}
		ev, err := api.NewClient(*sock).InstallCancel(ctx)
		if err != nil {
			return clientError(stderr, "install --cancel", err)
		}
		if *asJSON {
			writeJSON(stdout, ev)
			return 0
		}
		fmt.Fprintf(stdout, "%s; slot %s is not bootable until a new install\n", ev.Error, ev.Slot)
		return 0
	}
	src := ""
	if len(pos) > 0 {
		src = pos[0]
	}
	if len(pos) > 1 || (src == "" && !*resume) {
		fs.Usage()
		return 2
	}
	var bundle *os.File
	if src != "" && !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		// A local file is opened here, with the caller's own credentials,
		// and passed to the daemon as an open descriptor: the daemon (root)
		// never opens a path a caller names. Also for --resume.
		f, name, err := openPassed(src)
		if err != nil {
			return clientError(stderr, "install", err)
		}
		defer f.Close()
		src, bundle = api.FDSource(name), f
	}
	var bar *progressbar.ProgressBar
	tty := false
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	lastLine := time.Time{}
	req := api.InstallRequest{Source: src, Resume: *resume, Now: *now}
	outcome, err := api.NewClient(*sock).Install(ctx, req, bundle, func(ev api.Event) error {
		if *asJSON {
			return writeEvent(stdout, ev)
		}
		if ev.Type != api.EventProgress {
			return nil
		}
		if tty {
			if bar == nil {
				bar = progressbar.NewOptions64(ev.Total, progressbar.OptionSetWriter(stderr),
					progressbar.OptionShowBytes(true), progressbar.OptionSetDescription("installing "+ev.Slot),
					progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond))
			}
			bar.Set64(ev.Done)
		} else if time.Since(lastLine) > 2*time.Second || ev.Done == ev.Total {
			lastLine = time.Now()
			eta := "-"
			if ev.Rate > 0 {
				eta = (time.Duration(float64(ev.Total-ev.Done)/ev.Rate) * time.Second).Round(time.Second).String()
			}
			fmt.Fprintf(stderr, "%s: chunk %d/%d, %d/%d MiB, %.1f MiB/s, ETA %s\n", ev.Slot, ev.Chunk+1, ev.Chunks,
				ev.Done>>20, ev.Total>>20, ev.Rate/(1<<20), eta)
		}
		return nil
	})
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(stderr)
	}
	var failed *api.FailedError
	switch {
	case errors.As(err, &failed):
		if !*asJSON {
			fmt.Fprintf(stderr, "otagw install: %s\n", failed)
		}
		return 1
	case errors.Is(err, api.ErrStreamCut):
		fmt.Fprintln(stderr, "otagw install: the daemon stopped before the install ended; it resumes from its last verified chunk at the next start (see otagw status)")
		return 1
	case errors.Is(err, api.ErrBusy):
		fmt.Fprintf(stderr, "otagw install: %v (follow it with: otagw install --resume)\n", err)
		return 1
	case err != nil:
		return clientError(stderr, "install", err)
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "installed release %s into slot %s; it boots next (reboot to activate)\n", outcome.Release, outcome.Slot)
	}
	return 0
}

// openPassed opens a local file (bundle, MCU package) for reading as the
// caller, to be passed to the daemon as a descriptor; name is its
// absolute path, for the daemon's messages.
func openPassed(path string) (*os.File, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, "", err // "open PATH: permission denied"
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", abs)
	}
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return f, abs, nil
}
