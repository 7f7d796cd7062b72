package daemon

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// SubscriberBuffer is how many events a GET /v1/events subscriber may
// have unread before it is dropped with a final lagged event.
const SubscriberBuffer = 256

// RequestBuffer is the same for the answer of a request the client is
// waiting on (POST /v1/install, POST /v1/mcu/flash): an install sends one
// progress event per chunk, and a client briefly descheduled should not
// lose its outcome. Bounded all the same (about 400 KiB).
const RequestBuffer = 1024

// bus fans the daemon's events out to subscribers (GET /v1/events, the
// install and MCU flash streams). Publishing never blocks: each subscriber
// has a bounded buffer, and one that falls behind gets a last
// api.EventLagged event in a slot kept for it and is dropped.
type bus struct {
	now func() time.Time

	mu     sync.Mutex
	seq    uint64
	subs   map[*subscriber]struct{}
	closed bool
}

// subscriber is one reader of the bus. C is closed after the last event
// (a lagged one, or none when the bus closed).
type subscriber struct {
	C    chan api.Event
	size int
	keep func(api.Event) bool
}

func newBus(now func() time.Time) *bus {
	return &bus{now: now, subs: map[*subscriber]struct{}{}}
}

// subscribe adds a subscriber that receives the events keep accepts (nil:
// all), with room for size of them; it returns the sequence number of the
// last event published before it.
func (b *bus) subscribe(size int, keep func(api.Event) bool) (*subscriber, uint64) {
	if size < 1 {
		size = SubscriberBuffer
	}
	s := &subscriber{C: make(chan api.Event, size+1), size: size, keep: keep}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.C)
		return s, b.seq
	}
	b.subs[s] = struct{}{}
	return s, b.seq
}

// unsubscribe removes s (a reader that went away); idempotent.
func (b *bus) unsubscribe(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.C)
	}
}

// publish numbers ev, stamps its time when unset, and hands it to every
// subscriber that keeps it. It never waits for a reader.
func (b *bus) publish(ev api.Event) api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	ev.Seq = b.seq
	if ev.Time.IsZero() {
		ev.Time = b.now()
	}
	for s := range b.subs {
		if s.keep != nil && !s.keep(ev) {
			continue
		}
		if len(s.C) >= s.size {
			// Full: the slot kept free takes the lagged event, and the
			// subscriber is dropped.
			s.C <- api.Event{Seq: ev.Seq, Time: ev.Time, Type: api.EventLagged,
				Message: "subscriber fell behind by more than its buffer; reconnect and read GET /v1/status"}
			delete(b.subs, s)
			close(s.C)
			continue
		}
		s.C <- ev
	}
	return ev
}

// subscribers returns how many readers are attached.
func (b *bus) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// close ends every subscription (the daemon is stopping).
func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.C)
	}
}

// typeFilter keeps the events whose type is in the comma-separated list
// (empty: all). Lagged is always kept: it ends the subscription.
func typeFilter(list string) (func(api.Event) bool, []string) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var types []string
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			types = append(types, t)
		}
	}
	return func(ev api.Event) bool {
		return ev.Type == api.EventLagged || slices.Contains(types, ev.Type)
	}, types
}

var eventTypes = []string{api.EventState, api.EventProgress, api.EventDevice, api.EventDone, api.EventError, api.EventChannel, api.EventLagged}

// handleEvents is GET /v1/events[?types=state,progress,...]: NDJSON, one
// api.Event per line, the first a state event with the current state;
// it ends when the client goes, the daemon stops, or with lagged.
func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	keep, types := typeFilter(r.URL.Query().Get("types"))
	for _, t := range types {
		if !slices.Contains(eventTypes, t) {
			api.WriteError(w, http.StatusBadRequest, "bad-request", "types: unknown event type "+t+" (known: "+strings.Join(eventTypes, ",")+")")
			return
		}
	}
	s, first := d.flow.subscribe(SubscriberBuffer, keep)
	defer d.bus.unsubscribe(s)
	sw := api.NewStreamWriter(w)
	if keep == nil || keep(first) {
		if sw.Send(first) != nil {
			return
		}
	}
	stream(sw, r, s)
}

// stream copies a subscriber's events to a client until a terminal event
// of the subscription (lagged), the end of the bus, or the client going.
func stream(sw *api.StreamWriter, r *http.Request, s *subscriber) {
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				return
			}
			if sw.Send(ev) != nil || ev.Type == api.EventLagged {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// follow copies a request's view of the bus to its client until the
// request's done or error event (or lagged).
func follow(sw *api.StreamWriter, r *http.Request, s *subscriber) {
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				return
			}
			if sw.Send(ev) != nil || ev.Terminal() {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}
