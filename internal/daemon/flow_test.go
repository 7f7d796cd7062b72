package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
)

// fakeClock advances one second per reading.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(time.Second)
	return c.t
}

// testFlow is a flow on a memory "disk" with an injected clock.
type testFlow struct {
	*flow
	clock  *fakeClock
	saved  []string // states persisted, in order
	fails  []*failure
	status []string
	sub    *subscriber
}

func newTestFlow(t *testing.T, at string) *testFlow {
	t.Helper()
	tf := &testFlow{clock: &fakeClock{t: time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)}}
	b := newBus(tf.clock.now)
	tf.flow = newFlow(tf.clock.now, zap.NewNop(), func(s string) { tf.status = append(tf.status, s) },
		func(s string, f *failure) error {
			tf.saved = append(tf.saved, s)
			tf.fails = append(tf.fails, f)
			return nil
		}, b)
	tf.flow.state = at
	tf.sub, _ = b.subscribe(SubscriberBuffer, nil)
	return tf
}

func (tf *testFlow) events() []api.Event {
	var out []api.Event
	for {
		select {
		case ev := <-tf.sub.C:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// TestTransitionTable walks every cell of the table, legal and illegal.
func TestTransitionTable(t *testing.T) {
	legalCount := 0
	for _, from := range states {
		for _, to := range states {
			want := slices.Contains(transitions[from], to)
			tf := newTestFlow(t, from)
			err := tf.enter(to, "test "+from+" to "+to, entry{Release: "2.0.0", Slot: "B", Kind: "k", Error: "e"})
			evs := tf.events()
			if !want {
				var te *TransitionError
				if !errors.As(err, &te) || te.From != from || te.To != to {
					t.Errorf("%s → %s: not in the table, enter returned %v, want a TransitionError", from, to, err)
				}
				if tf.State() != from || len(tf.saved) != 0 || len(evs) != 0 || len(tf.status) != 0 {
					t.Errorf("%s → %s refused, yet the state is %s, persisted %v, events %v, STATUS %v",
						from, to, tf.State(), tf.saved, evs, tf.status)
				}
				continue
			}
			legalCount++
			if err != nil {
				t.Errorf("%s → %s: in the table, enter returned %v", from, to, err)
				continue
			}
			if tf.State() != to || !slices.Equal(tf.saved, []string{to}) {
				t.Errorf("%s → %s: state %s, persisted %v", from, to, tf.State(), tf.saved)
			}
			if len(tf.status) != 1 || tf.status[0] != "STATUS="+to+": test "+from+" to "+to {
				t.Errorf("%s → %s: sd_notify %q", from, to, tf.status)
			}
			if len(evs) != 1 {
				t.Fatalf("%s → %s: %d events, want 1: %+v", from, to, len(evs), evs)
			}
			ev := evs[0]
			// The clock was read once by newFlow and once by enter.
			wantTime := time.Date(2026, 12, 2, 15, 0, 2, 0, time.UTC)
			if ev.Type != api.EventState || ev.State != to || ev.From != from || ev.Seq != 1 || !ev.Time.Equal(wantTime) ||
				ev.Release != "2.0.0" || ev.Slot != "B" {
				t.Errorf("%s → %s: event %+v (want state event at %v)", from, to, ev, wantTime)
			}
			if to == api.StateFailed && (ev.Attempt != 1 || tf.fails[0] == nil || tf.fails[0].Kind != "k" || tf.fails[0].Attempt != 1) {
				t.Errorf("%s → failed: attempt %d, persisted failure %+v", from, ev.Attempt, tf.fails[0])
			}
		}
	}
	if legalCount == 0 || legalCount == len(states)*len(states) {
		t.Fatalf("%d legal cells of %d: the table is degenerate", legalCount, len(states)*len(states))
	}
	for from, tos := range transitions {
		if !slices.Contains(states, from) {
			t.Errorf("the table has a row for %q, which is not a state", from)
		}
		for _, to := range tos {
			if !slices.Contains(states, to) || to == api.StateStarting {
				t.Errorf("%s → %q: not a state the flow may enter", from, to)
			}
		}
	}
}

// TestEveryStateReachable: from starting, every state is reachable and
// every state but starting has a way out.
func TestEveryStateReachable(t *testing.T) {
	seen := map[string]bool{api.StateStarting: true}
	queue := []string{api.StateStarting}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, to := range transitions[s] {
			if !seen[to] {
				seen[to] = true
				queue = append(queue, to)
			}
		}
	}
	for _, s := range states {
		if !seen[s] {
			t.Errorf("state %s is unreachable from starting", s)
		}
		if len(transitions[s]) == 0 {
			t.Errorf("state %s has no way out", s)
		}
	}
}

// TestFailedAttempts: failures in a row count up; a success resets the
// count; a restart restores the same failure, not one more.
func TestFailedAttempts(t *testing.T) {
	tf := newTestFlow(t, api.StateIdle)
	step := func(to string) {
		t.Helper()
		if err := tf.enter(to, to, entry{Kind: "verify-failed", Error: "chunk 3"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		step(api.StateDownloading)
		step(api.StateFailed)
		if _, _, f := tf.current(); f == nil || f.Attempt != i || f.Kind != "verify-failed" || f.Reason != "chunk 3" {
			t.Fatalf("failure %d: %+v", i, f)
		}
	}
	// A restart: the record's failure, entered from starting, is the same.
	saved := tf.fails[len(tf.fails)-1]
	tf2 := newTestFlow(t, api.StateStarting)
	tf2.restoreFailure(saved)
	if err := tf2.enter(api.StateFailed, "restored", entry{}); err != nil {
		t.Fatal(err)
	}
	if _, _, f := tf2.current(); f == nil || f.Attempt != 3 {
		t.Fatalf("restored failure %+v, want attempt 3", f)
	}
	if evs := tf2.events(); len(evs) != 1 || evs[0].Attempt != 3 || evs[0].Kind != "verify-failed" {
		t.Fatalf("restored failure event %+v", evs)
	}
	step(api.StateDownloading)
	step(api.StateInstalling)
	step(api.StateInstalled)
	if _, _, f := tf.current(); f != nil {
		t.Fatalf("failure reported after installed: %+v", f)
	}
	step(api.StateDownloading)
	step(api.StateFailed)
	if _, _, f := tf.current(); f == nil || f.Attempt != 1 {
		t.Fatalf("after a success the count starts again: %+v", f)
	}
}

// TestRestore: the state a restart resumes from, for each state the
// daemon may have been killed in.
func TestRestore(t *testing.T) {
	pending := func(p *persisted) { p.Pending, p.PendingSlot, p.PendingSwitched = "2.0.0", "B", true }
	onA := bootFacts{Known: true, Booted: "A", Primary: "B"}
	fellBack := bootFacts{Known: true, Booted: "A", Primary: "A"}
	onB := bootFacts{Known: true, Booted: "B", Primary: "B"}
	for _, c := range []struct {
		last string
		rec  func(*persisted)
		boot bootFacts
		want string
	}{
		{api.StateStarting, nil, onA, api.StateIdle},
		{api.StateIdle, nil, onA, api.StateIdle},
		{api.StateDownloading, nil, onA, api.StateIdle}, // killed before the record: nothing written
		{api.StateDownloading, func(p *persisted) { p.Install.Active = true }, onA, api.StateInstalling},
		{api.StateInstalling, func(p *persisted) { p.Install.Active = true }, onA, api.StateInstalling},
		{api.StateInstalling, nil, onA, api.StateIdle}, // ended; the state write was lost
		{api.StateInstalling, pending, onA, api.StateInstalled},
		{api.StateInstalled, pending, onA, api.StateInstalled},
		{api.StateInstalled, pending, bootFacts{}, api.StateInstalled},
		{api.StateRebooting, pending, onB, api.StateAssessing},
		{api.StateRebooting, pending, onA, api.StateInstalled}, // the reboot did not happen
		{api.StateRebooting, nil, onA, api.StateIdle},          // an operator's rollback reboot
		{api.StateAssessing, pending, onB, api.StateAssessing},
		{api.StateAssessing, pending, fellBack, api.StateRolledBack},
		{api.StateInstalled, pending, fellBack, api.StateRolledBack},
		{api.StateCommitted, nil, onB, api.StateCommitted},
		{api.StateRolledBack, nil, fellBack, api.StateRolledBack},
		{api.StateFlashing, func(p *persisted) { p.MCUPayloads = []string{"/x"} }, onB, api.StateFlashing},
		{api.StateFlashing, nil, onB, api.StateIdle},
		{api.StateFailed, nil, onA, api.StateFailed},
	} {
		p := persisted{State: c.last}
		if c.rec != nil {
			c.rec(&p)
		}
		if got := restore(c.last, &p, c.boot); got != c.want {
			t.Errorf("killed in %s (%+v, boot %+v): restored %s, want %s", c.last, p, c.boot, got, c.want)
		}
		if got := restore(c.last, &p, c.boot); !legal(api.StateStarting, got) {
			t.Errorf("restore gives %s, which starting cannot enter", got)
		}
	}
}

// TestMigrate: an old state file's parts become the one record.
func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "mcu-payloads"), 0o700)
	os.WriteFile(filepath.Join(dir, "mcu-payloads", "stm32-app"), []byte("pkg"), 0o600)
	p := persisted{State: api.StateCommitted, Parts: map[string]json.RawMessage{
		"install": json.RawMessage(`{"active":true,"source":"http://x/b.otab","bootname":"B","installed":{"A":"1.0.0"}}`),
		"mcu":     json.RawMessage(`{"sensor":{"device":"sensor","bus":"can0","state":"success","version":"1.2.0"}}`),
	}}
	if err := migrate(&p, dir); err != nil {
		t.Fatal(err)
	}
	if !p.Install.Active || p.Install.Source != "http://x/b.otab" || p.Install.Bootname != "B" || p.Install.Installed["A"] != "1.0.0" {
		t.Errorf("install record: %+v", p.Install)
	}
	if r := p.MCU["sensor"]; r.Version != "1.2.0" || r.Bus != "can0" {
		t.Errorf("mcu records: %+v", p.MCU)
	}
	if len(p.MCUPayloads) != 1 || filepath.Base(p.MCUPayloads[0]) != "stm32-app" || p.Parts != nil {
		t.Errorf("payloads %v, parts %v", p.MCUPayloads, p.Parts)
	}
	// Idempotent: a record in the new layout is left as it is.
	before := fmt.Sprintf("%+v", p)
	if err := migrate(&p, dir); err != nil || fmt.Sprintf("%+v", p) != before {
		t.Errorf("second migrate changed the record or failed: %v", err)
	}
	bad := persisted{Parts: map[string]json.RawMessage{"install": json.RawMessage(`[1]`)}}
	if err := migrate(&bad, dir); err == nil || !strings.Contains(err.Error(), "parts.install") {
		t.Errorf("a broken old part: %v, want an error naming parts.install", err)
	}
}

// TestArchitectureTable: docs/ARCHITECTURE.md's copy of the transition
// table is the table.
func TestArchitectureTable(t *testing.T) {
	b, err := os.ReadFile("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 4 || !slices.Contains(states, strings.TrimSpace(f[1])) {
			continue
		}
		var tos []string
		for _, to := range strings.Split(f[2], ",") {
			tos = append(tos, strings.TrimSpace(to))
		}
		rows[strings.TrimSpace(f[1])] = tos
	}
	for _, from := range states {
		if !slices.Equal(rows[from], transitions[from]) {
			t.Errorf("docs/ARCHITECTURE.md: %s may enter %v; the code says %v", from, rows[from], transitions[from])
		}
	}
}

// FuzzMigrate: an old record's parts, whatever they hold, migrate or
// fail with an error naming the part; never a panic.
func FuzzMigrate(f *testing.F) {
	f.Add([]byte(`{"active":true,"source":"x","installed":{"A":"1"}}`), []byte(`{"d":{"device":"d"}}`))
	f.Add([]byte(`[]`), []byte(`null`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, install, mcu []byte) {
		p := persisted{Parts: map[string]json.RawMessage{"install": install, "mcu": mcu}}
		err := migrate(&p, dir)
		if err != nil && !strings.Contains(err.Error(), "parts.") {
			t.Fatalf("error %v names no part", err)
		}
		if p.Parts != nil {
			t.Fatalf("parts left after migrate")
		}
	})
}
