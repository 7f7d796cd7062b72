package api

import "time"

// ChannelStatus is the update channel agent's part of the status: what it
// does or waits for (a postponement's reason) and the index it accepted
// last. Each change of State or Reason is also a channel event on
// GET /v1/events (Kind: State, Message: Reason).
type ChannelStatus struct {
	URL      string    `json:"url"`
	State    string    `json:"state"` // idle, postponed, waiting, downloading, installing, flashing, configuring, refused, error
	Reason   string    `json:"reason,omitempty"`
	Sequence uint64    `json:"sequence,omitempty"`
	LastPoll time.Time `json:"last_poll,omitempty"`
	NextPoll time.Time `json:"next_poll,omitempty"`
	Failures int       `json:"failures,omitempty"`
}

// ConfigVersion is one entry of `otagw config history`.
type ConfigVersion struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"`
	SHA256  string    `json:"sha256"`
	Outcome string    `json:"outcome"` // applied, rejected, reverted
	Reason  string    `json:"reason,omitempty"`
}
