package api

import "time"

// Status is the answer of GET /v1/status, the body of `otagw status --json`.
// Sections that a feature does not use yet are omitted.
type Status struct {
	State            string    `json:"state"`             // the daemon's state machine state, e.g. "idle"
	Message          string    `json:"message,omitempty"` // the last state change's explanation
	Version          string    `json:"version"`           // the daemon binary's version
	PID              int       `json:"pid"`
	ConfigPath       string    `json:"config_path"`
	ConfigGeneration int       `json:"config_generation"` // 1 at start, +1 per accepted reload
	LogLevel         string    `json:"log_level"`
	StartedAt        time.Time `json:"started_at"`
	UptimeSeconds    float64   `json:"uptime_seconds"`
	Warnings         []string  `json:"warnings,omitempty"` // e.g. a state file that was tampered with

	Slots   []SlotStatus `json:"slots,omitempty"`
	Release *Release     `json:"release,omitempty"`
	MCUs    []MCUStatus  `json:"mcus,omitempty"`
}

// SlotStatus is one A/B slot.
type SlotStatus struct {
	Name      string `json:"name"`     // e.g. rootfs.1
	Bootname  string `json:"bootname"` // e.g. B
	Device    string `json:"device"`
	State     string `json:"state"` // good, bad, unknown
	Primary   bool   `json:"primary"`
	Booted    bool   `json:"booted"`
	TriesLeft int    `json:"tries_left"`
	Version   string `json:"version,omitempty"` // the release installed there, when known
	Note      string `json:"note,omitempty"`    // e.g. "install interrupted: not bootable"
}

// Release is the bundle version policy as stored.
type Release struct {
	Committed       string `json:"committed,omitempty"`   // the release last committed
	Pending         string `json:"pending,omitempty"`     // installed, not yet committed
	MinVersion      string `json:"min_version,omitempty"` // nothing below is accepted
	SecurityCounter uint64 `json:"security_counter,omitempty"`
}

// MCUStatus is one downstream device.
type MCUStatus struct {
	Name    string    `json:"name"`
	Bus     string    `json:"bus"`
	Version string    `json:"version,omitempty"`
	Result  string    `json:"result,omitempty"` // Success, NotNeeded, Postponed, Failed
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at,omitempty"`
}
