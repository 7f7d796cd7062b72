package daemon

import (
	"slices"
	"testing"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/channel"
)

// TestChannelFlow: the channel agent's MCU downloads are the flow's
// downloading state, entered from the resting state and left back to it
// (idle after failed); a busy flow is not moved; every report is a channel
// event with the agent's state and reason.
func TestChannelFlow(t *testing.T) {
	for _, c := range []struct {
		from, back string
		then       string // the agent's next state
	}{
		{api.StateCommitted, api.StateCommitted, "flashing"},
		{api.StateIdle, api.StateIdle, "error"},
		{api.StateRolledBack, api.StateRolledBack, "waiting"},
		{api.StateInstalled, api.StateInstalled, "postponed"},
		{api.StateFailed, api.StateIdle, "flashing"},
	} {
		tf := newTestFlow(t, c.from)
		cp := &channelPart{log: zap.NewNop(), flow: tf.flow, bus: tf.flow.bus}
		f := channelFlow{cp}
		f.Report(channel.Report{State: "downloading", Reason: "MCU package pump 1.2.0"})
		if s := tf.State(); s != api.StateDownloading {
			t.Fatalf("%s: after the agent's download began the flow is %s", c.from, s)
		}
		f.Report(channel.Report{State: "downloading", Reason: "MCU package fan 2.0.0"})
		if _, msg, _ := tf.current(); msg != "MCU package fan 2.0.0" {
			t.Errorf("%s: a second package is a note, the message is %q", c.from, msg)
		}
		f.Report(channel.Report{State: c.then, Reason: "why"})
		if s := tf.State(); s != c.back {
			t.Errorf("%s: after the download (%s) the flow is %s, want %s", c.from, c.then, s, c.back)
		}
		var states, kinds []string
		for _, ev := range tf.events() {
			switch ev.Type {
			case api.EventState:
				states = append(states, ev.State)
			case api.EventChannel:
				kinds = append(kinds, ev.Kind)
				if ev.Source != "channel" || ev.Message == "" {
					t.Errorf("%s: channel event %+v", c.from, ev)
				}
			}
		}
		if want := []string{api.StateDownloading, c.back}; !slices.Equal(states, want) {
			t.Errorf("%s: states %v, want %v", c.from, states, want)
		}
		if want := []string{"downloading", "downloading", c.then}; !slices.Equal(kinds, want) {
			t.Errorf("%s: channel events %v, want %v", c.from, kinds, want)
		}
	}

	// Busy: an install under way is not moved; the report is still an event.
	tf := newTestFlow(t, api.StateInstalling)
	cp := &channelPart{log: zap.NewNop(), flow: tf.flow, bus: tf.flow.bus}
	channelFlow{cp}.Report(channel.Report{State: "downloading", Reason: "MCU package pump 1.2.0"})
	channelFlow{cp}.Report(channel.Report{State: "postponed", Reason: "battery"})
	if s := tf.State(); s != api.StateInstalling {
		t.Errorf("the agent moved an install to %s", s)
	}
	evs := tf.events()
	if len(evs) != 2 || evs[1].Type != api.EventChannel || evs[1].Kind != "postponed" || evs[1].Message != "battery" ||
		evs[1].State != api.StateInstalling {
		t.Errorf("events while installing: %+v", evs)
	}
}
