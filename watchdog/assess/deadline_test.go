package assess

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// otherClock is a clock that is neither clockwork's real nor its fake one
// (like the e2e tests' file clock): its time is not the real time.
type otherClock struct{ *clockwork.FakeClock }

// TestDeadlineOnOtherClock: the assessment's deadline is told by the
// daemon's clock, also when that clock is neither real nor fake.
func TestDeadlineOnOtherClock(t *testing.T) {
	fc := clockwork.NewFakeClockAt(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) // years behind the real time
	clock := otherClock{fc}
	ctx, cancel := deadlineOn(context.Background(), clock, fc.Now().Add(time.Hour))
	defer cancel()
	if ctx.Err() != nil {
		t.Fatalf("the deadline an hour ahead on the clock has passed already: %v", ctx.Err())
	}
	fc.Advance(2 * time.Hour)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context outlived its deadline on the clock")
	}
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Errorf("cause %v, want the deadline", context.Cause(ctx))
	}
}
