// Package health runs the gateway's health checks from the configuration:
// systemd units that must be active, commands with expected exit codes,
// TCP and HTTP endpoints, files that must exist, and a minimum uptime. All
// checks run in parallel, each bounded by its own timeout and all by the
// caller's context; the report is JSON-friendly.
//
//	c := health.New(opts, log)            // opts.Checks from the YAML `health:` key
//	rep := c.Run(ctx)                     // every check, in parallel
//	if err := rep.Err(); err != nil { ... } // a required check failed (wraps ErrCheckFailed)
//	json.NewEncoder(w).Encode(rep)
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/watchdog/internal/systemd"
)

// Sentinel errors.
var (
	// ErrCheckFailed is wrapped by Report.Err and by each failed check's error.
	ErrCheckFailed = errors.New("health check failed")
	// ErrInvalidOptions is wrapped by Options.Validate.
	ErrInvalidOptions = errors.New("invalid health options")
)

// Check kinds.
const (
	KindUnit    = "unit"
	KindCommand = "command"
	KindTCP     = "tcp"
	KindHTTP    = "http"
	KindFile    = "file"
	KindUptime  = "uptime"
)

// UnitStater reports a systemd unit's ActiveState.
type UnitStater interface {
	ActiveState(ctx context.Context, unit string) (string, error)
}

// Checker runs checks. The fields are the outside world it touches; New
// fills them with the real ones.
type Checker struct {
	Options Options
	// Units answers unit checks: systemd over D-Bus when it is PID 1,
	// `systemctl is-active` otherwise.
	Units UnitStater
	// UptimePath is read for uptime checks; default /proc/uptime.
	UptimePath string
	// HTTP is the client of http checks; redirects are not followed.
	HTTP *http.Client
	Now  func() time.Time
	Log  *zap.Logger
}

// New returns a Checker for opts with the real systemd, /proc/uptime and
// an HTTP client.
func New(opts Options, log *zap.Logger) *Checker {
	if log == nil {
		log = zap.NewNop()
	}
	return &Checker{
		Options:    opts,
		Units:      systemd.Detect(),
		UptimePath: "/proc/uptime",
		HTTP: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		Now: time.Now,
		Log: log,
	}
}

// Result is the outcome of one check.
type Result struct {
	Name     string        `json:"name"`
	Kind     string        `json:"kind"`
	Required bool          `json:"required"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail,omitempty"` // what was seen: "active", "exit 0", "HTTP 200"
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
}

// Report is the outcome of a run.
type Report struct {
	OK       bool          `json:"ok"` // every required check passed
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Results  []Result      `json:"results"`
}

// Failed lists the required checks that failed.
func (r Report) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Required && !res.OK {
			out = append(out, res)
		}
	}
	return out
}

// Err is nil when every required check passed, else an error wrapping
// ErrCheckFailed that names each failed check and why.
func (r Report) Err() error {
	failed := r.Failed()
	if len(failed) == 0 {
		return nil
	}
	parts := make([]string, len(failed))
	for i, f := range failed {
		parts[i] = fmt.Sprintf("%s (%s): %s", f.Name, f.Kind, f.Error)
	}
	return fmt.Errorf("%w: %s", ErrCheckFailed, strings.Join(parts, "; "))
}

// Run runs every configured check.
func (c *Checker) Run(ctx context.Context) Report {
	return c.RunChecks(ctx, c.Options.Checks)
}

// RunChecks runs the given checks in parallel and returns their results in
// the given order. A check still running when ctx ends fails with the
// context's error.
func (c *Checker) RunChecks(ctx context.Context, checks []Check) Report {
	now := c.now()
	rep := Report{Started: now, Results: make([]Result, len(checks))}
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Results[i] = c.RunOne(ctx, ch)
		}()
	}
	wg.Wait()
	rep.Duration = c.now().Sub(now)
	rep.OK = len(rep.Failed()) == 0
	return rep
}

// RunOne runs one check within its timeout.
func (c *Checker) RunOne(ctx context.Context, ch Check) Result {
	res := Result{Name: ch.Name, Kind: ch.Kind(), Required: ch.IsRequired(), Started: c.now()}
	timeout := ch.Timeout
	if timeout <= 0 {
		timeout = c.Options.DefaultTimeout
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type outcome struct {
		detail string
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		d, err := c.run(cctx, ch)
		done <- outcome{d, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-cctx.Done():
		// A check that does not honour its context (a stuck D-Bus call)
		// still ends here; its goroutine finishes on its own.
		o = outcome{err: fmt.Errorf("no answer within %v: %w", timeout, cctx.Err())}
	}
	if o.err == nil && cctx.Err() != nil {
		o.err = fmt.Errorf("no answer within %v: %w", timeout, cctx.Err())
	}
	res.Detail = o.detail
	res.Duration = c.now().Sub(res.Started)
	if o.err != nil {
		res.Error = o.err.Error()
		c.Log.Debug("health check failed", zap.String("check", ch.Name), zap.Error(o.err))
	} else {
		res.OK = true
	}
	return res
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checker) run(ctx context.Context, ch Check) (string, error) {
	switch ch.Kind() {
	case KindUnit:
		return c.checkUnit(ctx, ch)
	case KindCommand:
		return c.checkCommand(ctx, ch)
	case KindTCP:
		return c.checkTCP(ctx, ch)
	case KindHTTP:
		return c.checkHTTP(ctx, ch)
	case KindFile:
		return c.checkFile(ch)
	case KindUptime:
		return c.checkUptime(ch)
	}
	return "", fmt.Errorf("check %q: %w: no kind (set one of unit, command, tcp, http, file, uptime)", ch.Name, ErrInvalidOptions)
}

// WriteText prints the report as a table for people: one line per check
// ("ok", "FAIL" for a required failure, "warn" for an optional one).
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, res := range r.Results {
		status := "ok"
		switch {
		case !res.OK && res.Required:
			status = "FAIL"
		case !res.OK:
			status = "warn"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", status, res.Name, res.Kind, res.Detail,
			res.Duration.Round(time.Millisecond), res.Error)
	}
	verdict := "healthy"
	if !r.OK {
		verdict = fmt.Sprintf("UNHEALTHY: %d required check(s) failed", len(r.Failed()))
	}
	fmt.Fprintf(tw, "%s (%d checks in %v)\n", verdict, len(r.Results), r.Duration.Round(time.Millisecond))
	return tw.Flush()
}
