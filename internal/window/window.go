// Package window decides when risky work may run: maintenance windows,
// each a cron start time (five fields, local time) and a duration, and a
// policy per kind of work (install, MCU flash, channel download, reboot).
//
//	p, _ := window.New(window.Options{Windows: []window.Window{{Name: "night", Start: "0 2 * * *", Duration: 2 * time.Hour}},
//		Install: window.InWindow, Reboot: window.InWindow})
//	if err := p.Allowed(window.Install, time.Now()); err != nil { ... } // errors.Is(err, window.ErrClosed)
//	at, w := p.Next(time.Now()) // now when a window is open, else the next start
//
// With no windows configured every kind of work may run at any time.
package window

import (
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Policies.
const (
	Anytime  = "anytime" // install, flash: whenever asked
	InWindow = "window"  // install, flash: only inside a window; reboot: at the next window
	Manual   = "manual"  // reboot: only when an operator asks
)

// Kinds of work.
const (
	Install  = "install"
	Flash    = "flash"
	Download = "download" // fetching from the update channel
)

// ErrClosed: the work is only allowed inside a maintenance window and none
// is open.
var ErrClosed = errors.New("outside the maintenance windows")

// Window is one recurring maintenance window.
type Window struct {
	Name     string        `yaml:"name" json:"name"`
	Start    string        `yaml:"start" json:"start"` // cron: minute hour day-of-month month day-of-week
	Duration time.Duration `yaml:"duration" json:"duration"`
}

// Options is the "maintenance:" configuration section.
type Options struct {
	Windows []Window `yaml:"windows" json:"windows"`
	// Install is anytime or window.
	Install string `yaml:"install" json:"install"`
	// Flash (MCU fan-out) is anytime or window.
	Flash string `yaml:"flash" json:"flash"`
	// Download (fetching releases, MCU packages and config documents from
	// the update channel) is anytime or window; a release from the channel
	// needs both download and install to allow it.
	Download string `yaml:"download" json:"download"`
	// Reboot into a newly installed release: manual (otagw reboot or the
	// operator's own) or window (at the start of the next window, at
	// once when one is open).
	Reboot string `yaml:"reboot" json:"reboot"`
}

// DefaultOptions: no windows; install and flash at any time; reboot manual.
func DefaultOptions() Options {
	return Options{Install: Anytime, Flash: Anytime, Download: Anytime, Reboot: Manual}
}

// Validate checks every window and policy; errors name the entry.
func (o Options) Validate() error {
	var errs []error
	for i, w := range o.Windows {
		at := fmt.Sprintf("windows[%d]", i)
		if w.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty", at))
		}
		if _, err := parse(w.Start); err != nil {
			errs = append(errs, fmt.Errorf("%s.start: %q: %v (want five cron fields: minute hour day month weekday)", at, w.Start, err))
		}
		if w.Duration < time.Minute {
			errs = append(errs, fmt.Errorf("%s.duration: %v: want at least 1m", at, w.Duration))
		}
	}
	download := o.Download
	if download == "" { // options built before the download gate existed
		download = Anytime
	}
	for _, p := range []struct{ key, v string }{{"install", o.Install}, {"flash", o.Flash}, {"download", download}} {
		if p.v != Anytime && p.v != InWindow {
			errs = append(errs, fmt.Errorf("%s: %q: want %s or %s", p.key, p.v, Anytime, InWindow))
		}
	}
	if o.Reboot != Manual && o.Reboot != InWindow {
		errs = append(errs, fmt.Errorf("reboot: %q: want %s or %s", o.Reboot, Manual, InWindow))
	}
	if len(o.Windows) == 0 && (o.Install == InWindow || o.Flash == InWindow || o.Download == InWindow || o.Reboot == InWindow) {
		errs = append(errs, errors.New("windows: a policy says window but no window is defined"))
	}
	return errors.Join(errs...)
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

func parse(spec string) (cron.Schedule, error) { return parser.Parse(spec) }

type parsed struct {
	w Window
	s cron.Schedule
}

// Plan answers questions about the windows.
type Plan struct {
	o  Options
	ws []parsed
}

// New checks o and returns its plan.
func New(o Options) (*Plan, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{o: o}
	for _, w := range o.Windows {
		s, _ := parse(w.Start)
		p.ws = append(p.ws, parsed{w, s})
	}
	return p, nil
}

// Options returns the options the plan was made from.
func (p *Plan) Options() Options { return p.o }

// Open reports whether a window is open at now, and which.
func (p *Plan) Open(now time.Time) (bool, Window) {
	for _, w := range p.ws {
		// The first start after now-duration: if it is not after now,
		// the window that began then is still open.
		if s := w.s.Next(now.Add(-w.w.Duration)); !s.After(now) {
			return true, w.w
		}
	}
	return false, Window{}
}

// Next returns now when a window is open, else the start of the next one;
// the zero time when there are no windows.
func (p *Plan) Next(now time.Time) (time.Time, Window) {
	if open, w := p.Open(now); open {
		return now, w
	}
	var best time.Time
	var bw Window
	for _, w := range p.ws {
		if s := w.s.Next(now); best.IsZero() || s.Before(best) {
			best, bw = s, w.w
		}
	}
	return best, bw
}

// Allowed says whether work of kind (Install, Flash, Download) may start at now.
func (p *Plan) Allowed(kind string, now time.Time) error {
	policy := p.o.Install
	switch kind {
	case Flash:
		policy = p.o.Flash
	case Download:
		policy = p.o.Download
	}
	if policy != InWindow {
		return nil
	}
	if open, _ := p.Open(now); open {
		return nil
	}
	at, w := p.Next(now)
	return fmt.Errorf("%s is only allowed in a maintenance window; the next, %q, opens %s (override with --now): %w",
		kind, w.Name, at.Format(time.RFC3339), ErrClosed)
}
