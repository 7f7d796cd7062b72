package channel

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otagw/otagw/internal/sign"
)

type fixture struct {
	srv   *countingServer
	flow  *recordingFlow
	store *memStore
	agent *Agent
	clock *clockwork.FakeClock
	ss    []sign.Signer // ss[0], ss[1] trusted; ss[2] not
	thr   int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ss, ps := keys(t, 3)
	f := &fixture{srv: newCountingServer(t), flow: &recordingFlow{}, store: &memStore{},
		clock: clockwork.NewFakeClockAt(t0.Add(time.Hour)), ss: ss, thr: 1}
	kr := sign.NewKeyring(ps[0], ps[1])
	o := DefaultOptions()
	o.URL, o.AllowHTTP, o.Name = f.srv.srv.URL+"/stable/"+IndexFile, true, "stable"
	a, err := NewAgent(AgentOptions{Options: o, Store: f.store, Flow: f.flow, Dir: t.TempDir(), Clock: f.clock,
		Policy: func() (Policy, error) { return Policy{Keyring: kr, Threshold: f.thr, Compatible: "gw-a"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	f.agent = a
	f.srv.put("/stable/files/bundle", []byte("bundle"))
	f.srv.put("/stable/files/mcu", []byte("mcu"))
	f.srv.put("/stable/files/config", []byte("config"))
	return f
}

func (f *fixture) serve(data []byte) { f.srv.put("/stable/"+IndexFile, data) }

// TestRefusedIndexes: every kind of bad index is refused with its own
// error, and nothing but the index is requested; the Flow is never called.
func TestRefusedIndexes(t *testing.T) {
	later := t0.Add(30 * 24 * time.Hour)
	cases := []struct {
		name string
		want error
		// setup serves the bad index (after any good ones it needs)
		setup func(t *testing.T, f *fixture)
	}{
		{"replayed", ErrReplayed, func(t *testing.T, f *fixture) {
			old := signed(t, testIndex(2, later), f.ss[0])
			f.store.r.Mark = Mark{Sequence: 3, Digest: "aa", Earlier: []string{digestOf(t, old)}}
			f.serve(old)
		}},
		{"same sequence, other content", ErrReplayed, func(t *testing.T, f *fixture) {
			idx := testIndex(3, later)
			f.store.r.Mark = Mark{Sequence: 3, Digest: "aa"}
			f.serve(signed(t, idx, f.ss[0]))
		}},
		{"older sequence", ErrOlder, func(t *testing.T, f *fixture) {
			f.store.r.Mark = Mark{Sequence: 5, Digest: "aa"}
			f.serve(signed(t, testIndex(4, later), f.ss[0]))
		}},
		{"expired", ErrExpired, func(t *testing.T, f *fixture) {
			f.serve(signed(t, testIndex(1, t0.Add(time.Hour-time.Second)), f.ss[0]))
		}},
		{"unknown key", ErrUnknownKey, func(t *testing.T, f *fixture) {
			f.serve(signed(t, testIndex(1, later), f.ss[2]))
		}},
		{"under threshold", ErrThreshold, func(t *testing.T, f *fixture) {
			f.thr = 2
			f.serve(signed(t, testIndex(1, later), f.ss[0], f.ss[2]))
		}},
		{"altered after signing", ErrSignature, func(t *testing.T, f *fixture) {
			b := signed(t, testIndex(1, later), f.ss[0])
			f.serve([]byte(strings.Replace(string(b), `"1.1.0"`, `"1.1.9"`, 1)))
		}},
		{"other compatible", ErrCompatible, func(t *testing.T, f *fixture) {
			idx := testIndex(1, later)
			idx.Entries[0].Compatible = "gw-b"
			f.serve(signed(t, idx, f.ss[0]))
		}},
		{"tags the device lacks", ErrCompatible, func(t *testing.T, f *fixture) {
			idx := testIndex(1, later)
			idx.Entries[0].Tags = []string{"pilot"}
			f.serve(signed(t, idx, f.ss[0]))
		}},
		{"other channel", ErrChannel, func(t *testing.T, f *fixture) {
			idx := testIndex(1, later)
			idx.Channel = "beta"
			f.serve(signed(t, idx, f.ss[0]))
		}},
		{"truncated", ErrTruncated, func(t *testing.T, f *fixture) {
			b := signed(t, testIndex(1, later), f.ss[0])
			f.serve(b[:len(b)/2])
		}},
		{"empty", ErrTruncated, func(t *testing.T, f *fixture) { f.serve(nil) }},
		{"garbage", ErrGarbage, func(t *testing.T, f *fixture) {
			f.serve([]byte("<html><body>502 Bad Gateway</body></html>"))
		}},
		{"garbage JSON", ErrGarbage, func(t *testing.T, f *fixture) {
			f.serve([]byte(`{"index": {"format": 1}, "signatures": []}`))
		}},
	}
	sentinels := []error{ErrReplayed, ErrOlder, ErrExpired, ErrUnknownKey, ErrThreshold, ErrSignature, ErrCompatible, ErrChannel, ErrTruncated, ErrGarbage}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.setup(t, f)
			before := f.store.r.Mark
			err := f.agent.Poll(context.Background())
			if !errors.Is(err, c.want) || !errors.Is(err, ErrRefused) {
				t.Fatalf("Poll = %v, want %v", err, c.want)
			}
			for _, s := range sentinels {
				if s != c.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v; each refusal needs its own error", err, s)
				}
			}
			if o := f.srv.others(); len(o) > 0 {
				t.Errorf("requests besides the index: %v", o)
			}
			if calls := f.flow.callList(); len(calls) > 0 {
				t.Errorf("flow called: %v", calls)
			}
			if f.store.r.Mark.Sequence != before.Sequence || f.store.r.Mark.Digest != before.Digest {
				t.Errorf("stored mark changed to %+v", f.store.r.Mark)
			}
			if r := f.agent.Report(); r.State != "refused" || r.Reason == "" {
				t.Errorf("report = %+v, want refused with the reason", r)
			}
		})
	}
}

func digestOf(t *testing.T, b []byte) string {
	t.Helper()
	env, _, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return sha256hex(env.Index)
}

// TestAcceptedIndexDrivesTheFlow: a good index: config first, then the
// release; MCU packages only once that release is committed; the mark
// advances and an earlier index is then a replay.
func TestAcceptedIndexDrivesTheFlow(t *testing.T) {
	f := newFixture(t)
	f.flow.committed = "1.0.0"
	first := signed(t, testIndex(1, t0.Add(48*time.Hour)), f.ss[0])
	f.serve(first)
	err := f.agent.Poll(context.Background())
	if !errors.Is(err, ErrPostponed) {
		t.Fatalf("first poll = %v, want postponed (waiting for the reboot)", err)
	}
	want := []string{"config config", "install " + f.srv.srv.URL + "/stable/files/bundle"}
	if got := f.flow.callList(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("calls = %q, want %q", got, want)
	}
	if f.store.r.Mark.Sequence != 1 {
		t.Errorf("mark = %+v, want sequence 1", f.store.r.Mark)
	}
	// Installed, not committed: the agent waits; nothing is installed again.
	f.flow.pending = "1.1.0"
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrPostponed) {
		t.Fatalf("poll while pending = %v", err)
	}
	if n := len(f.flow.callList()); n != 2 {
		t.Errorf("calls while pending: %q", f.flow.callList())
	}
	// Committed: the MCU package is downloaded and flashed.
	f.flow.committed, f.flow.pending = "1.1.0", ""
	if err := f.agent.Poll(context.Background()); err != nil {
		t.Fatalf("poll after commit = %v", err)
	}
	calls := f.flow.callList()
	if len(calls) != 3 || !strings.HasPrefix(calls[2], "flash ") {
		t.Fatalf("calls = %q, want a flash last", calls)
	}
	if r := f.agent.Report(); r.State != "idle" || r.Sequence != 1 {
		t.Errorf("report = %+v", r)
	}
	// A new sequence, then the first one again: a replay.
	f.serve(signed(t, testIndex(2, t0.Add(48*time.Hour)), f.ss[0]))
	if err := f.agent.Poll(context.Background()); err != nil {
		t.Fatalf("poll of sequence 2 = %v", err)
	}
	f.serve(first)
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replayed first index = %v, want ErrReplayed", err)
	}
}

// TestPostponedByWindowAndPrecondition: a closed download window and a
// failed gateway precondition each postpone with their reason; the work
// proceeds once they clear.
func TestPostponedByWindowAndPrecondition(t *testing.T) {
	f := newFixture(t)
	f.flow.committed = "1.0.0"
	idx := testIndex(1, t0.Add(48*time.Hour))
	idx.Entries[0].Config, idx.Entries[0].MCU = nil, nil
	f.serve(signed(t, idx, f.ss[0]))
	f.flow.closed = map[string]error{KindDownload: errors.New("download is only allowed in a maintenance window")}
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrPostponed) {
		t.Fatalf("poll = %v, want postponed", err)
	}
	if r := f.agent.Report(); r.State != "waiting" || !strings.Contains(r.Reason, "maintenance window") {
		t.Errorf("report = %+v", r)
	}
	gate := &switchGate{err: errors.New("on battery at 12% (below 30%)")}
	f.agent.o.Gate = gate
	f.flow.closed = nil
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrPostponed) {
		t.Fatalf("poll = %v, want postponed", err)
	}
	if r := f.agent.Report(); r.State != "postponed" || !strings.Contains(r.Reason, "battery") {
		t.Errorf("report = %+v", r)
	}
	if len(f.flow.callList()) != 0 || len(f.srv.others()) != 0 {
		t.Fatalf("work started while postponed: %q %v", f.flow.callList(), f.srv.others())
	}
	gate.err = nil
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrPostponed) { // waits for the reboot
		t.Fatalf("poll = %v", err)
	}
	if c := f.flow.callList(); len(c) != 1 || !strings.HasPrefix(c[0], "install ") {
		t.Fatalf("calls = %q, want the install", c)
	}
}

type switchGate struct{ err error }

func (g *switchGate) Check(ctx context.Context) error { return g.err }

// TestMCUPostponedDeviceRetried: a device postponed by its precondition
// keeps the package due; the next poll flashes again, and once nothing
// is postponed the package is recorded as done.
func TestMCUPostponedDeviceRetried(t *testing.T) {
	f := newFixture(t)
	idx := testIndex(1, t0.Add(48*time.Hour))
	idx.Entries[0].Bundle, idx.Entries[0].Config = nil, nil
	f.serve(signed(t, idx, f.ss[0]))
	f.flow.postponed = []string{"sensor-1"}
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrPostponed) {
		t.Fatalf("poll = %v, want postponed", err)
	}
	if r := f.agent.Report(); !strings.Contains(r.Reason, "sensor-1") {
		t.Errorf("report = %+v, want the device named", r)
	}
	f.flow.postponed = nil
	if err := f.agent.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.agent.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := f.flow.callList(); len(c) != 2 {
		t.Errorf("calls = %q, want two flashes (postponed, then done) and no third", c)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 9: time.Hour, 100: time.Hour} {
		if got := Backoff(time.Minute, time.Hour, n); got != want {
			t.Errorf("Backoff(1m, 1h, %d) = %v, want %v", n, got, want)
		}
	}
}

// TestTruncatedInTransit: a body shorter than its Content-Length (the
// connection dropped) is ErrTruncated, and nothing else is requested.
func TestTruncatedInTransit(t *testing.T) {
	f := newFixture(t)
	full := signed(t, testIndex(1, t0.Add(48*time.Hour)), f.ss[0])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(full)))
		w.WriteHeader(http.StatusOK)
		w.Write(full[:len(full)/3])
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	f.agent.client = NewClient(srv.URL+"/stable/"+IndexFile, srv.Client())
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Poll = %v, want ErrTruncated", err)
	}
	if c := f.flow.callList(); len(c) > 0 {
		t.Errorf("flow called: %q", c)
	}
}

// TestFailingReleaseGivenUp: a bundle whose install keeps failing is tried
// MaxInstallAttempts times, then not again; a new bundle in the channel is
// tried at once.
func TestFailingReleaseGivenUp(t *testing.T) {
	f := newFixture(t)
	f.flow.committed = "1.0.0"
	f.flow.installErr = errors.New("manifest signatures: too few valid signatures")
	idx := testIndex(1, t0.Add(48*time.Hour))
	idx.Entries[0].Config, idx.Entries[0].MCU = nil, nil
	f.serve(signed(t, idx, f.ss[0]))
	for i := 0; i < MaxInstallAttempts+2; i++ {
		if err := f.agent.Poll(context.Background()); err == nil || errors.Is(err, ErrPostponed) {
			t.Fatalf("poll %d = %v, want the failure", i, err)
		}
	}
	if n := len(f.flow.callList()); n != MaxInstallAttempts {
		t.Errorf("installs = %d, want %d", n, MaxInstallAttempts)
	}
	if r := f.agent.Report(); r.State != "error" || !strings.Contains(r.Reason, "not tried again") {
		t.Errorf("report = %+v", r)
	}
	idx.Sequence = 2
	idx.Entries[0].Bundle = fileOf("files/bundle2", []byte("bundle2"), "1.2.0")
	f.serve(signed(t, idx, f.ss[0]))
	f.agent.Poll(context.Background())
	if n := len(f.flow.callList()); n != MaxInstallAttempts+1 {
		t.Errorf("the new bundle was not tried: %q", f.flow.callList())
	}
}

// TestFrozenBehind304: a server that keeps answering 304 Not Modified
// cannot keep an expired index alive: the cached index is checked for
// expiry at every poll.
func TestFrozenBehind304(t *testing.T) {
	f := newFixture(t)
	f.flow.committed = "1.1.0"
	idx := testIndex(1, t0.Add(3*time.Hour))
	idx.Entries[0].Config, idx.Entries[0].MCU = nil, nil
	body := signed(t, idx, f.ss[0])
	var notModified int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"v1"` {
			notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(body)
	}))
	defer srv.Close()
	f.agent.client = NewClient(srv.URL+"/stable/"+IndexFile, srv.Client())
	if err := f.agent.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.agent.Poll(context.Background()); err != nil || notModified != 1 {
		t.Fatalf("second poll: %v, 304s: %d", err, notModified)
	}
	f.clock.Advance(3 * time.Hour)
	if err := f.agent.Poll(context.Background()); !errors.Is(err, ErrExpired) || notModified != 2 {
		t.Fatalf("poll after the expiry behind a 304: %v (304s: %d), want ErrExpired", err, notModified)
	}
}
