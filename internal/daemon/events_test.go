package daemon

import (
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// TestBusDropsSlowSubscriber: a subscriber that never reads does not hold
// up publishing, gets exactly its buffer of events and then one lagged
// event, and is dropped; a reading subscriber gets every event.
func TestBusDropsSlowSubscriber(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)}
	b := newBus(clock.now)
	stalled, _ := b.subscribe(8, nil)
	reader, _ := b.subscribe(8, nil)
	got := 0
	const n = 10000
	for i := 0; i < n; i++ {
		b.publish(api.Event{Type: api.EventProgress, Done: int64(i)})
		for len(reader.C) > 0 {
			<-reader.C
			got++
		}
	}
	if got != n {
		t.Errorf("the reading subscriber got %d of %d events", got, n)
	}
	if b.subscribers() != 1 {
		t.Errorf("%d subscribers attached, want only the reader", b.subscribers())
	}
	var evs []api.Event
	for ev := range stalled.C { // closed after lagged
		evs = append(evs, ev)
	}
	if len(evs) != 9 {
		t.Fatalf("the stalled subscriber got %d events, want its 8 and lagged", len(evs))
	}
	for i, ev := range evs[:8] {
		if ev.Type != api.EventProgress || ev.Done != int64(i) || ev.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v", i, ev)
		}
	}
	if last := evs[8]; last.Type != api.EventLagged || !last.Terminal() || last.Seq != 9 {
		t.Errorf("last event %+v, want lagged at seq 9", last)
	}
	b.unsubscribe(stalled) // already dropped: a no-op, no double close
	b.close()
	if _, ok := <-reader.C; ok {
		t.Errorf("close left the reader's channel open")
	}
	late, _ := b.subscribe(8, nil)
	if _, ok := <-late.C; ok {
		t.Errorf("a subscription after close is open")
	}
}

// TestTypeFilter: ?types= keeps the named types, and lagged always.
func TestTypeFilter(t *testing.T) {
	keep, types := typeFilter(" state, device ")
	if len(types) != 2 {
		t.Fatalf("types %q", types)
	}
	for typ, want := range map[string]bool{api.EventState: true, api.EventDevice: true, api.EventProgress: false,
		api.EventDone: false, api.EventLagged: true} {
		if keep(api.Event{Type: typ}) != want {
			t.Errorf("type %s kept = %v, want %v", typ, !want, want)
		}
	}
	if keep, _ := typeFilter(""); keep != nil {
		t.Errorf("an empty filter filters")
	}
}

// TestSubscribeSnapshot: the first event of a subscription is the
// current state, and the next one follows it without a gap.
func TestSubscribeSnapshot(t *testing.T) {
	tf := newTestFlow(t, api.StateIdle)
	tf.enter(api.StateDownloading, "reading", entry{})
	s, first := tf.subscribe(4, nil)
	if first.Type != api.EventState || first.State != api.StateDownloading || first.Message != "reading" || first.Seq != 1 {
		t.Fatalf("first event %+v", first)
	}
	tf.enter(api.StateInstalling, "writing", entry{})
	ev := <-s.C
	if ev.Seq != first.Seq+1 || ev.From != api.StateDownloading || ev.State != api.StateInstalling {
		t.Fatalf("next event %+v after %+v", ev, first)
	}
}

// FuzzTypeFilter: ?types= is outside input; any value gives a filter
// that keeps lagged and only the types it names.
func FuzzTypeFilter(f *testing.F) {
	f.Add("state,progress")
	f.Add(" , ,device,,")
	f.Add("")
	f.Fuzz(func(t *testing.T, list string) {
		keep, types := typeFilter(list)
		if keep == nil {
			if len(types) != 0 {
				t.Fatalf("no filter but types %q", types)
			}
			return
		}
		if !keep(api.Event{Type: api.EventLagged}) {
			t.Fatalf("%q drops lagged", list)
		}
		for _, typ := range []string{api.EventState, api.EventProgress, api.EventDevice, api.EventDone, api.EventError} {
			named := false
			for _, n := range types {
				named = named || n == typ
			}
			if keep(api.Event{Type: typ}) != named {
				t.Fatalf("%q: type %s kept=%v, named=%v", list, typ, !named, named)
			}
		}
	})
}
