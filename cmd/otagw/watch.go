package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/otagw/otagw/internal/api"
)

func init() {
	register("watch", "follow the daemon's events live (states, progress, devices); --until STATE to wait for one", runWatch)
}

// The values --until and --types accept.
var (
	watchStates = []string{api.StateStarting, api.StateIdle, api.StateDownloading, api.StateInstalling, api.StateInstalled,
		api.StateRebooting, api.StateAssessing, api.StateCommitted, api.StateRolledBack, api.StateFlashing, api.StateFailed}
	watchTypes = []string{api.EventState, api.EventProgress, api.EventDevice, api.EventDone, api.EventError, api.EventLagged}
)

// runWatch: otagw watch [--json] [--until STATE] [--types LIST]. It exits
// 0 on Ctrl-C or SIGTERM, or when the daemon enters STATE (or is in it when
// watch starts); 1 when the stream ends first: the daemon dropped the
// watcher (lagged), closed the stream, or, with --until, entered failed.
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print each event as one line of JSON, as it comes")
	until := fs.String("until", "", "exit 0 when the daemon enters this state: "+strings.Join(watchStates, ", "))
	typeList := fs.String("types", "", "only these event types, comma-separated: "+strings.Join(watchTypes, ", "))
	sock := socketFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otagw watch [--json] [--until STATE] [--types LIST]")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fs.Usage()
		return 2
	}
	if *until != "" && !slices.Contains(watchStates, *until) {
		fmt.Fprintf(stderr, "otagw watch: --until %q: not a state (one of %s)\n", *until, strings.Join(watchStates, ", "))
		return 2
	}
	var types []string
	if *typeList != "" {
		for _, t := range strings.Split(*typeList, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(watchTypes, t) {
				fmt.Fprintf(stderr, "otagw watch: --types: %q is not an event type (one of %s)\n", t, strings.Join(watchTypes, ", "))
				return 2
			}
			types = append(types, t)
		}
		if *until != "" && !slices.Contains(types, api.EventState) {
			fmt.Fprintln(stderr, "otagw watch: --until needs the state events: add state to --types")
			return 2
		}
	}

	p := &eventPrinter{w: stdout}
	if f, ok := stdout.(*os.File); ok && !*asJSON && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	var reached, failed bool
	err = api.NewClient(*sock).Events(ctx, types, func(ev api.Event) error {
		if *asJSON {
			if err := writeEvent(stdout, ev); err != nil {
				return err
			}
		} else {
			p.print(ev)
		}
		if ev.Type == api.EventState && *until != "" {
			switch ev.State {
			case *until:
				reached = true
				return errWatchDone
			case api.StateFailed:
				failed = true
				return errWatchDone
			}
		}
		return nil
	})
	p.endBar()
	switch {
	case reached:
		return 0
	case failed:
		fmt.Fprintf(stderr, "otagw watch: the daemon entered %s before %s\n", api.StateFailed, *until)
		return 1
	case errors.Is(err, api.ErrLagged):
		fmt.Fprintln(stderr, "otagw watch: the daemon dropped this watcher because it fell behind (lagged); run it again")
		return 1
	case errors.Is(err, api.ErrNotFound):
		fmt.Fprintf(stderr, "otagw watch: the daemon has no event stream (GET /v1/events: %v): it is older than this CLI\n", err)
		return 1
	case err != nil:
		return clientError(stderr, "watch", err)
	}
	return 0 // Ctrl-C or SIGTERM
}

var errWatchDone = errors.New("watch: done")

// eventPrinter writes the human form of events: one line each, and for
// progress a live bar on a terminal, else a line per tenth of the way.
type eventPrinter struct {
	w   io.Writer
	tty bool

	bar      *progressbar.ProgressBar
	barKey   string // what the progress is of (slot/payload or device/phase)
	lastTens int64  // plain mode: the last tenth printed for barKey
}

func (p *eventPrinter) print(ev api.Event) {
	if ev.Type == api.EventProgress {
		p.progress(ev)
		return
	}
	p.endBar()
	fmt.Fprintln(p.w, eventLine(ev))
}

func (p *eventPrinter) progress(ev api.Event) {
	key := progressSubject(ev)
	if key != p.barKey {
		p.endBar()
		p.barKey, p.lastTens = key, -1
	}
	if p.tty {
		if p.bar == nil {
			p.bar = progressbar.NewOptions64(ev.Total, progressbar.OptionSetWriter(p.w),
				progressbar.OptionShowBytes(true), progressbar.OptionSetDescription(key),
				progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond))
		}
		if ev.Total > 0 {
			p.bar.ChangeMax64(ev.Total)
		}
		p.bar.Set64(ev.Done)
		return
	}
	if ev.Total <= 0 {
		return
	}
	tens := ev.Done * 10 / ev.Total
	if tens <= p.lastTens {
		return
	}
	p.lastTens = tens
	fmt.Fprintln(p.w, eventLine(ev))
}

// endBar finishes the live bar, if one is drawn, so that the next line
// starts on its own.
func (p *eventPrinter) endBar() {
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
	p.barKey = ""
}

// progressSubject names what a progress event is about.
func progressSubject(ev api.Event) string {
	var parts []string
	if ev.Device != "" {
		parts = append(parts, ev.Device)
	}
	if ev.Slot != "" {
		parts = append(parts, "slot "+ev.Slot)
	}
	for _, s := range []string{ev.Payload, ev.Phase} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return ev.State
	}
	return strings.Join(parts, " ")
}

// eventLine is the one-line human form of an event:
//
//	14:03:07 state installing (from idle) release 1.4.0 slot B: writing slot B
//	14:03:09 progress slot B rootfs 40% (40.0 of 100.0 MiB)
//	14:05:11 device pump success release 1.2.0
//	14:05:12 state failed (from installing) release 1.4.0 slot B attempt 2: verify-failed: hash mismatch
func eventLine(ev api.Event) string {
	var b strings.Builder
	b.WriteString(ev.Time.Format(time.TimeOnly))
	b.WriteString(" " + ev.Type)
	switch ev.Type {
	case api.EventState:
		b.WriteString(" " + ev.State)
		if ev.From != "" {
			b.WriteString(" (from " + ev.From + ")")
		}
	case api.EventProgress:
		b.WriteString(" " + progressSubject(ev))
		if ev.Total > 0 {
			fmt.Fprintf(&b, " %d%% (%s of %s)", ev.Done*100/ev.Total, mib(ev.Done), mib(ev.Total))
		}
	case api.EventDevice:
		b.WriteString(" " + ev.Device)
		for _, s := range []string{ev.Phase, ev.Result} {
			if s != "" {
				b.WriteString(" " + s)
			}
		}
		if ev.Retries > 0 {
			fmt.Fprintf(&b, " (retries %d)", ev.Retries)
		}
	}
	if ev.Release != "" {
		b.WriteString(" release " + ev.Release)
	}
	if ev.Slot != "" && ev.Type != api.EventProgress {
		b.WriteString(" slot " + ev.Slot)
	}
	if ev.Device != "" && ev.Type != api.EventDevice && ev.Type != api.EventProgress {
		b.WriteString(" device " + ev.Device)
	}
	if ev.Bundle != "" {
		b.WriteString(" bundle " + ev.Bundle)
	}
	if len(ev.Devices) > 0 {
		counts := map[string]int{}
		var order []string
		for _, d := range ev.Devices {
			if counts[d.Result] == 0 {
				order = append(order, d.Result)
			}
			counts[d.Result]++
		}
		var parts []string
		for _, r := range order {
			parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
		}
		fmt.Fprintf(&b, " devices: %s", strings.Join(parts, ", "))
	}
	if ev.Attempt > 0 {
		fmt.Fprintf(&b, " attempt %d", ev.Attempt)
	}
	if ev.Message != "" {
		b.WriteString(": " + ev.Message)
	}
	if ev.Kind != "" || ev.Error != "" {
		b.WriteString(": " + joinNonEmpty(ev.Kind, ev.Error))
	}
	return b.String()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
