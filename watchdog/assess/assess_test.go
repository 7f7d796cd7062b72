package assess_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/watchdog/assess"
	"github.com/otagw/otagw/watchdog/health"
)

// fakeBoot is the boot loader: slot B booted on trial.
type fakeBoot struct {
	mu                 sync.Mutex
	booted             string
	pending            bool
	bootedErr, goodErr error
	badErr, pendingErr error
	calls              []string
}

func (b *fakeBoot) Booted() (string, error) { return b.booted, b.bootedErr }
func (b *fakeBoot) Pending() (bool, error)  { return b.pending, b.pendingErr }
func (b *fakeBoot) MarkGood(s string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "MarkGood "+s)
	if b.goodErr == nil {
		b.pending = false
	}
	return b.goodErr
}
func (b *fakeBoot) MarkBad(s string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "MarkBad "+s)
	return b.badErr
}

type recorder struct {
	mu    sync.Mutex
	calls []string
	errs  []error // returned in order; nil when exhausted
}

func (r *recorder) next(call string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
	if len(r.errs) == 0 {
		return nil
	}
	err := r.errs[0]
	r.errs = r.errs[1:]
	return err
}

func (r *recorder) Reboot(_ context.Context, reason string) error { return r.next("Reboot") }
func (r *recorder) StartUnit(_ context.Context, unit string) error {
	return r.next("StartUnit " + unit)
}
func (r *recorder) Commit(_ context.Context, slot string) error { return r.next("Commit " + slot) }

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// scripted returns a checker whose rounds pass from round passFrom on (0:
// never); hang makes every round block until its context ends.
func scripted(passFrom int, hang bool) (assess.Checker, *int) {
	var mu sync.Mutex
	round := 0
	return func(ctx context.Context) health.Report {
		mu.Lock()
		round++
		r := round
		mu.Unlock()
		if hang {
			<-ctx.Done()
			return health.Report{Results: []health.Result{{Name: "api", Kind: "http", Required: true, Error: ctx.Err().Error()}}}
		}
		ok := passFrom > 0 && r >= passFrom
		res := health.Result{Name: "broker", Kind: "unit", Required: true, OK: ok}
		if !ok {
			res.Error = "unit mosquitto.service is failed, not active"
		}
		return health.Report{OK: ok, Results: []health.Result{res}}
	}, &round
}

type step struct {
	waiters int
	advance time.Duration
}

func TestAssessment(t *testing.T) {
	t.Parallel()
	eio := errors.New("EIO")
	for _, tc := range []struct {
		name       string
		opts       func(*assess.Options)
		pending    bool
		uptime     time.Duration
		passFrom   int
		hang       bool
		steps      []step
		goodErr    error
		badErr     error
		commitErrs []error
		rebootErrs []error
		unitErrs   []error

		want       assess.Outcome
		wantErr    error
		wantRounds int
		wantBoot   []string
		wantCalls  []string // commit, unit, reboot
		wantEvents []string
		reasonHas  string
	}{
		{
			name: "not pending: committed before, the committed target starts", pending: false, want: assess.NotPending,
			wantCalls: []string{"StartUnit otagw-committed.target"},
		},
		{
			name: "pass first round -> mark good, commit, committed target", pending: true, passFrom: 1,
			want: assess.Committed, wantRounds: 1,
			wantBoot:   []string{"MarkGood B"},
			wantCalls:  []string{"Commit B", "StartUnit otagw-committed.target"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventCommitted},
		},
		{
			name: "services come up in round 3", pending: true, passFrom: 3,
			steps: []step{{2, 10 * time.Second}, {2, 10 * time.Second}},
			want:  assess.Committed, wantRounds: 3,
			wantBoot:   []string{"MarkGood B"},
			wantCalls:  []string{"Commit B", "StartUnit otagw-committed.target"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventRound, assess.EventRound, assess.EventCommitted},
		},
		{
			name: "fail fast -> mark bad, reboot", pending: true, opts: func(o *assess.Options) { o.FailFast = true },
			want: assess.RolledBack, wantRounds: 1,
			wantBoot:   []string{"MarkBad B"},
			wantCalls:  []string{"Reboot"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventMarkedBad, assess.EventReboot},
			reasonHas:  "required check failed in round 1",
		},
		{
			name: "deadline -> mark bad, reboot", pending: true,
			opts:  func(o *assess.Options) { o.Deadline = 25 * time.Second },
			steps: []step{{2, 10 * time.Second}, {2, 10 * time.Second}, {2, 5 * time.Second}},
			want:  assess.RolledBack, wantRounds: 3,
			wantBoot:   []string{"MarkBad B"},
			wantCalls:  []string{"Reboot"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventRound, assess.EventRound, assess.EventMarkedBad, assess.EventReboot},
			reasonHas:  "deadline (25s after boot) passed after 3 rounds",
		},
		{
			name: "a hanging check is cut at the deadline", pending: true, hang: true,
			opts:  func(o *assess.Options) { o.Deadline = 25 * time.Second },
			steps: []step{{1, 25 * time.Second}},
			want:  assess.RolledBack, wantRounds: 1,
			wantBoot: []string{"MarkBad B"}, wantCalls: []string{"Reboot"},
			reasonHas: "deadline",
		},
		{
			name: "deadline counts from boot", pending: true, uptime: 20 * time.Second,
			opts:  func(o *assess.Options) { o.Deadline = 25 * time.Second },
			steps: []step{{2, 5 * time.Second}},
			want:  assess.RolledBack, wantRounds: 1,
			wantBoot: []string{"MarkBad B"}, wantCalls: []string{"Reboot"},
			reasonHas: "passed after 1 rounds",
		},
		{
			name: "crash loop past the deadline: one last round fails", pending: true, uptime: 6 * time.Minute,
			want: assess.RolledBack, wantRounds: 1,
			wantBoot: []string{"MarkBad B"}, wantCalls: []string{"Reboot"},
			reasonHas: "had passed when the daemon started",
		},
		{
			name: "crash loop past the deadline: the last round passes", pending: true, uptime: 6 * time.Minute, passFrom: 1,
			want: assess.Committed, wantRounds: 1,
			wantBoot: []string{"MarkGood B"}, wantCalls: []string{"Commit B", "StartUnit otagw-committed.target"},
		},
		{
			name: "commit fails once, retried", pending: true, passFrom: 1, commitErrs: []error{eio},
			steps: []step{{2, 10 * time.Second}},
			want:  assess.Committed, wantRounds: 1,
			wantBoot:  []string{"MarkGood B"},
			wantCalls: []string{"Commit B", "Commit B", "StartUnit otagw-committed.target"},
		},
		{
			name: "commit keeps failing: no rollback of a healthy system", pending: true, passFrom: 1,
			commitErrs: []error{eio, eio, eio},
			steps:      []step{{2, 10 * time.Second}, {2, 10 * time.Second}},
			want:       assess.CommitFailed, wantErr: assess.ErrCommit, wantRounds: 1,
			wantBoot:   []string{"MarkGood B"},
			wantCalls:  []string{"Commit B", "Commit B", "Commit B"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventCommitErr},
			reasonHas:  "marked good but the commit failed 3 times",
		},
		{
			name: "mark good fails: no commit, no rollback", pending: true, passFrom: 1, goodErr: eio,
			want: assess.CommitFailed, wantErr: assess.ErrMarkGood, wantRounds: 1,
			wantBoot: []string{"MarkGood B"},
		},
		{
			name: "mark bad fails: reboot anyway", pending: true, opts: func(o *assess.Options) { o.FailFast = true }, badErr: eio,
			want: assess.RolledBack, wantErr: assess.ErrMarkBad, wantRounds: 1,
			wantBoot: []string{"MarkBad B"}, wantCalls: []string{"Reboot"},
		},
		{
			name: "reboot fails", pending: true, opts: func(o *assess.Options) { o.FailFast = true }, rebootErrs: []error{eio},
			want: assess.RolledBack, wantErr: assess.ErrReboot, wantRounds: 1,
			wantBoot: []string{"MarkBad B"}, wantCalls: []string{"Reboot"},
		},
		{
			name: "committed target fails to start: still committed", pending: true, passFrom: 1, unitErrs: []error{eio},
			want: assess.Committed, wantRounds: 1,
			wantBoot:   []string{"MarkGood B"},
			wantCalls:  []string{"Commit B", "StartUnit otagw-committed.target"},
			wantEvents: []string{assess.EventStarted, assess.EventRound, assess.EventCommitted, assess.EventUnitErr},
		},
		{
			name: "no committed unit configured", pending: true, passFrom: 1, opts: func(o *assess.Options) { o.CommittedUnit = "" },
			want: assess.Committed, wantRounds: 1,
			wantBoot: []string{"MarkGood B"}, wantCalls: []string{"Commit B"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			clk := clockwork.NewFakeClock()
			o := assess.DefaultOptions()
			if tc.opts != nil {
				tc.opts(&o)
			}
			boot := &fakeBoot{booted: "B", pending: tc.pending, goodErr: tc.goodErr, badErr: tc.badErr}
			calls := &recorder{}
			commits := &recorder{errs: tc.commitErrs}
			reboots := &recorder{errs: tc.rebootErrs}
			units := &recorder{errs: tc.unitErrs}
			check, _ := scripted(tc.passFrom, tc.hang)
			var evMu sync.Mutex
			var events []string
			a := &assess.Assessor{
				Options: o, Boot: boot, Check: check,
				Commit: func(ctx context.Context, slot string) error {
					calls.next("Commit " + slot)
					return commits.Commit(ctx, slot)
				},
				Reboot: rebootFunc(func(ctx context.Context, r string) error { calls.next("Reboot"); return reboots.Reboot(ctx, r) }),
				Units: unitFunc(func(ctx context.Context, u string) error {
					calls.next("StartUnit " + u)
					return units.StartUnit(ctx, u)
				}),
				Events: func(e assess.Event) { evMu.Lock(); events = append(events, e.Kind); evMu.Unlock() },
				Uptime: func() (time.Duration, error) { return tc.uptime, nil },
				Clock:  clk,
			}
			type out struct {
				res assess.Result
				err error
			}
			done := make(chan out, 1)
			go func() { r, err := a.Run(ctx); done <- out{r, err} }()
			for i, s := range tc.steps {
				if err := clk.BlockUntilContext(ctx, s.waiters); err != nil {
					t.Fatalf("step %d: waiting for %d timers: %v", i, s.waiters, err)
				}
				clk.Advance(s.advance)
			}
			var got out
			select {
			case got = <-done:
			case <-ctx.Done():
				t.Fatal("Run did not return")
			}
			if got.res.Outcome != tc.want {
				t.Errorf("Outcome = %q (%s); want %q", got.res.Outcome, got.res.Reason, tc.want)
			}
			if tc.wantErr == nil && got.err != nil {
				t.Errorf("err = %v; want nil", got.err)
			}
			if tc.wantErr != nil && !errors.Is(got.err, tc.wantErr) {
				t.Errorf("err = %v; want %v", got.err, tc.wantErr)
			}
			if got.res.Rounds != tc.wantRounds {
				t.Errorf("Rounds = %d; want %d", got.res.Rounds, tc.wantRounds)
			}
			if diff := cmp.Diff(tc.wantBoot, boot.calls); diff != "" {
				t.Errorf("boot calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantCalls, calls.get()); diff != "" {
				t.Errorf("commit/unit/reboot calls (-want +got):\n%s", diff)
			}
			if tc.wantEvents != nil {
				evMu.Lock()
				if diff := cmp.Diff(tc.wantEvents, events); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				evMu.Unlock()
			}
			if !strings.Contains(got.res.Reason, tc.reasonHas) {
				t.Errorf("Reason = %q; want it to contain %q", got.res.Reason, tc.reasonHas)
			}
		})
	}
}

type rebootFunc func(ctx context.Context, reason string) error

func (f rebootFunc) Reboot(ctx context.Context, reason string) error { return f(ctx, reason) }

type unitFunc func(ctx context.Context, unit string) error

func (f unitFunc) StartUnit(ctx context.Context, unit string) error { return f(ctx, unit) }

// With the real health checker: a file check fails until the file appears
// after round 2; the event of the failing round carries the report.
func TestAssessmentWithHealthChecker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ready")
	up := filepath.Join(dir, "uptime")
	os.WriteFile(up, []byte("30.00 10.00\n"), 0o644)
	ho := health.DefaultOptions()
	ho.Checks = []health.Check{{Name: "ready", File: marker}, {Name: "settled", Uptime: 10 * time.Second}}
	checker := health.New(ho, nil)
	checker.UptimePath = up
	clk := clockwork.NewFakeClock()
	boot := &fakeBoot{booted: "A", pending: true}
	var reasons []string
	a := &assess.Assessor{
		Options: assess.DefaultOptions(), Boot: boot, Check: checker.Run, Clock: clk,
		Units:  unitFunc(func(context.Context, string) error { return nil }),
		Uptime: func() (time.Duration, error) { return 30 * time.Second, nil },
		Events: func(e assess.Event) {
			if e.Kind == assess.EventRound && e.Report != nil {
				reasons = append(reasons, fmt.Sprint(e.Report.Err()))
				if e.Round == 2 {
					os.WriteFile(marker, nil, 0o644)
				}
			}
		},
	}
	done := make(chan assess.Result, 1)
	go func() { r, _ := a.Run(ctx); done <- r }()
	for i := 0; i < 2; i++ {
		if err := clk.BlockUntilContext(ctx, 2); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Second)
	}
	res := <-done
	if res.Outcome != assess.Committed || res.Rounds != 3 || !slices.Equal(boot.calls, []string{"MarkGood A"}) {
		t.Fatalf("result %+v, boot calls %v", res, boot.calls)
	}
	if len(reasons) != 3 || !strings.Contains(reasons[0], "ready (file)") || reasons[2] != "<nil>" {
		t.Errorf("round reports %q", reasons)
	}
}

func TestAssessmentStopsWithoutDecidingWhenCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	clk := clockwork.NewFakeClock()
	boot := &fakeBoot{booted: "B", pending: true}
	check, _ := scripted(0, false)
	a := &assess.Assessor{Options: assess.DefaultOptions(), Boot: boot, Check: check, Clock: clk,
		Uptime: func() (time.Duration, error) { return 0, nil }}
	done := make(chan error, 1)
	go func() { _, err := a.Run(ctx); done <- err }()
	if err := clk.BlockUntilContext(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v; want context.Canceled", err)
	}
	if len(boot.calls) != 0 {
		t.Errorf("boot calls %v after cancel; want none", boot.calls)
	}
}

func TestAssessmentBootErrors(t *testing.T) {
	t.Parallel()
	check, _ := scripted(1, false)
	for _, b := range []*fakeBoot{
		{bootedErr: errors.New("no env")},
		{booted: "A", pendingErr: errors.New("crc")},
	} {
		a := &assess.Assessor{Options: assess.DefaultOptions(), Boot: b, Check: check}
		if _, err := a.Run(context.Background()); !errors.Is(err, assess.ErrBoot) {
			t.Errorf("Run = %v; want ErrBoot", err)
		}
	}
}

func TestManualMarkGoodAndBad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	boot := &fakeBoot{booted: "B", pending: true}
	calls := &recorder{}
	a := &assess.Assessor{
		Options: assess.DefaultOptions(), Boot: boot,
		Commit: calls.Commit, Reboot: calls, Units: calls,
	}
	if res, err := a.MarkGood(ctx); err != nil || res.Outcome != assess.Committed {
		t.Fatalf("MarkGood = %+v, %v", res, err)
	}
	if res, err := a.MarkBad(ctx, "A", false); err != nil || res.Slot != "A" {
		t.Fatalf("MarkBad(A) = %+v, %v", res, err)
	}
	if res, err := a.MarkBad(ctx, "", true); err != nil || res.Outcome != assess.RolledBack || res.Slot != "B" {
		t.Fatalf("MarkBad('', reboot) = %+v, %v", res, err)
	}
	if diff := cmp.Diff([]string{"MarkGood B", "MarkBad A", "MarkBad B"}, boot.calls); diff != "" {
		t.Errorf("boot calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Commit B", "StartUnit otagw-committed.target", "Reboot"}, calls.get()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestSystemRebooter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		booted  bool
		sdErr   error
		want    []string
		sysErr  error
		wantErr bool
	}{
		{name: "systemd", booted: true, want: []string{"systemd"}},
		{name: "systemd refuses", booted: true, sdErr: errors.New("access denied"), want: []string{"systemd", "sync", fmt.Sprintf("reboot(%#x)", unix.LINUX_REBOOT_CMD_RESTART)}},
		{name: "no systemd", want: []string{"sync", fmt.Sprintf("reboot(%#x)", unix.LINUX_REBOOT_CMD_RESTART)}},
		{name: "reboot(2) fails", sysErr: unix.EPERM, want: []string{"sync", fmt.Sprintf("reboot(%#x)", unix.LINUX_REBOOT_CMD_RESTART)}, wantErr: true},
	} {
		var got []string
		r := assess.NewRebooter(nil)
		r.Booted = func() bool { return tc.booted }
		r.Systemd = sdFunc(func(context.Context) error { got = append(got, "systemd"); return tc.sdErr })
		r.Sync = func() { got = append(got, "sync") }
		r.Syscall = func(cmd int) error { got = append(got, fmt.Sprintf("reboot(%#x)", cmd)); return tc.sysErr }
		err := r.Reboot(context.Background(), "test")
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: Reboot = %v", tc.name, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: calls %v; want %v", tc.name, got, tc.want)
		}
	}
}

type sdFunc func(ctx context.Context) error

func (f sdFunc) Reboot(ctx context.Context) error { return f(ctx) }

func TestOptions(t *testing.T) {
	t.Parallel()
	var o assess.Options
	dec := yaml.NewDecoder(strings.NewReader("deadline: 10m\nretry_interval: 15s\nfail_fast: true\ncommit_attempts: 5\ncommitted_unit: \"\"\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&o); err != nil {
		t.Fatal(err)
	}
	want := assess.Options{Deadline: 10 * time.Minute, RetryInterval: 15 * time.Second, FailFast: true, CommitAttempts: 5}
	if o != want {
		t.Errorf("decoded %+v; want %+v", o, want)
	}
	if err := assess.DefaultOptions().Validate(); err != nil {
		t.Errorf("DefaultOptions invalid: %v", err)
	}
	for _, bad := range []assess.Options{
		{Deadline: 0, RetryInterval: time.Second, CommitAttempts: 1},
		{Deadline: time.Minute, RetryInterval: 0, CommitAttempts: 1},
		{Deadline: time.Minute, RetryInterval: 2 * time.Minute, CommitAttempts: 1},
		{Deadline: time.Minute, RetryInterval: time.Second},
	} {
		if err := bad.Validate(); !errors.Is(err, assess.ErrInvalidOptions) {
			t.Errorf("Validate(%+v) = %v; want ErrInvalidOptions", bad, err)
		}
	}
}
