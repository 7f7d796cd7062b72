package api

import "time"

// Status is the answer of GET /v1/status, the body of `otagw status --json`.
// Sections that a feature does not use yet are omitted.
type Status struct {
	State            string     `json:"state"`             // the daemon's state machine state, e.g. "idle"
	Message          string     `json:"message,omitempty"` // the last state change's explanation
	Version          string     `json:"version"`           // the daemon binary's version
	PID              int        `json:"pid"`
	ConfigPath       string     `json:"config_path"`
	ConfigGeneration int        `json:"config_generation"` // 1 at start, +1 per accepted reload
	LogLevel         string     `json:"log_level"`
	StartedAt        time.Time  `json:"started_at"`
	UptimeSeconds    float64    `json:"uptime_seconds"`
	Warnings         []string   `json:"warnings,omitempty"` // e.g. a state file that was tampered with
	LastError        *LastError `json:"last_error,omitempty"`

	Health      *Liveness    `json:"health,omitempty"`
	Maintenance *Maintenance `json:"maintenance,omitempty"`
	Assessment  *Assessment  `json:"assessment,omitempty"`

	Slots   []SlotStatus `json:"slots,omitempty"`
	Release *Release     `json:"release,omitempty"`
	MCUs    []MCUStatus  `json:"mcus,omitempty"`

	Channel *ChannelStatus `json:"channel,omitempty"`
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
	Name       string    `json:"name"`
	Bus        string    `json:"bus"`
	Version    string    `json:"version,omitempty"`
	MinVersion string    `json:"min_version,omitempty"`
	Result     string    `json:"result,omitempty"` // success, not-needed, postponed, failed
	Reason     string    `json:"reason,omitempty"`
	Retries    int       `json:"retries,omitempty"`
	At         time.Time `json:"at,omitzero"`
}

// MCUFlashRequest is the body of POST /v1/mcu/flash.
type MCUFlashRequest struct {
	Package string `json:"package"` // "fd:NAME": the package file travels as a passed descriptor
	// More are further packages for a mixed fleet ("fd:NAME" each, passed
	// after Package): each device takes the first package that targets it.
	More    []string `json:"more_packages,omitempty"`
	Devices []string `json:"devices,omitempty"`
	All     bool     `json:"all,omitempty"` // every configured device the package targets
	Now     bool     `json:"now,omitempty"` // ignore the maintenance windows
}

// LastError is the last failed operation, named by kind.
type LastError struct {
	Kind  string `json:"kind"`
	Error string `json:"error"`
}

// InstallRequest is the body of POST /v1/install.
type InstallRequest struct {
	Source string `json:"source,omitempty"` // absolute file path or http(s):// URL
	Resume bool   `json:"resume,omitempty"` // continue the interrupted install (or follow the running one)
	Now    bool   `json:"now,omitempty"`    // ignore the maintenance windows
}

// Liveness is the health loop that feeds the watchdogs.
type Liveness struct {
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"`
	Hardware bool     `json:"hardware_watchdog"`
	Device   string   `json:"device,omitempty"`
	Timeout  string   `json:"timeout,omitempty"`
	// WatchdogReset: the hardware watchdog's driver says the previous boot
	// ended in a watchdog reset (WDIOF_CARDRESET in WDIOC_GETBOOTSTATUS,
	// read when the daemon opened the device).
	WatchdogReset bool `json:"last_boot_watchdog_reset"`
	// BootStatus names every cause in that boot status ("CARDRESET"),
	// empty after a normal power-on.
	BootStatus []string `json:"boot_status,omitempty"`
}

// Assessment is the outcome of this boot's assessment.
type Assessment struct {
	Outcome string        `json:"outcome"` // not-pending, committed, rolled-back, commit-failed
	Slot    string        `json:"slot"`
	Reason  string        `json:"reason,omitempty"`
	Rounds  int           `json:"rounds,omitempty"`
	Error   string        `json:"error,omitempty"`
	Report  *HealthReport `json:"report,omitempty"` // the last health report
}

// HealthReport is the answer of GET /v1/health: one run of the configured
// health checks (the JSON of watchdog/health.Report).
type HealthReport struct {
	OK       bool          `json:"ok"` // every required check passed
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Results  []HealthCheck `json:"results"`
}

// HealthCheck is one check of a HealthReport.
type HealthCheck struct {
	Name     string        `json:"name"`
	Kind     string        `json:"kind"` // unit, command, tcp, http, file, uptime
	Required bool          `json:"required"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail,omitempty"` // what was seen: "active", "exit 0", "HTTP 200"
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
}

// SlotRequest is the body of mark-bad and rollback.
type SlotRequest struct {
	Slot   string `json:"slot,omitempty"` // empty: the booted slot
	Reboot bool   `json:"reboot,omitempty"`
}

// Maintenance is the maintenance-window view of `otagw status`.
type Maintenance struct {
	Open      bool       `json:"open"`
	Window    string     `json:"window,omitempty"` // the open one, or the next
	NextStart time.Time  `json:"next_start,omitzero"`
	Install   string     `json:"install"` // anytime, window
	Flash     string     `json:"flash"`
	Reboot    string     `json:"reboot"`             // manual, window
	Download  string     `json:"download,omitempty"` // anytime, window: fetching from the update channel
	RebootAt  *time.Time `json:"reboot_at,omitempty"`
	// FlashAt: MCU firmware of the committed release waits for the
	// window that opens then (flash: window).
	FlashAt *time.Time `json:"flash_at,omitempty"`
}

// State names of the daemon's update flow (Status.State and Event.State).
// The transition table that moves between them lives in internal/daemon.
const (
	StateStarting    = "starting"    // restoring the persisted record after a (re)start
	StateIdle        = "idle"        // nothing pending
	StateDownloading = "downloading" // fetching a bundle before installing it
	StateInstalling  = "installing"  // writing the inactive slot
	StateInstalled   = "installed"   // slot written and selected, waiting for the reboot
	StateRebooting   = "rebooting"   // reboot requested
	StateAssessing   = "assessing"   // booted into the new slot, health checks running
	StateCommitted   = "committed"   // the new slot is good and primary
	StateRolledBack  = "rolled-back" // the new slot failed; the old one boots again
	StateFlashing    = "flashing"    // MCU fan-out running
	StateFailed      = "failed"      // the last step failed (Event.Kind, Event.Error, Event.Attempt)
)

// Event types on GET /v1/events.
const (
	EventState    = "state"    // the daemon entered State (from From)
	EventProgress = "progress" // a long step moved on (Done of Total)
	EventDevice   = "device"   // an MCU device changed phase or finished (Device, Phase, Result)
	EventDone     = "done"     // a request the caller started finished
	EventError    = "error"    // a request failed (Kind, Error)
	EventLagged   = "lagged"   // the subscriber fell behind and is dropped; reconnect
	EventChannel  = "channel"  // the update channel agent changed what it does or waits for (Kind: its state, e.g. postponed; Message: why)
)

// Event is one line of GET /v1/events (NDJSON), and of the install and MCU
// flash streams, which are filtered views of the same events. One shape for
// all: fields that do not apply to a type are omitted.
type Event struct {
	Seq  uint64    `json:"seq"` // increases by one per event the daemon publishes
	Time time.Time `json:"time"`
	Type string    `json:"type"` // EventState, EventProgress, ...

	State   string `json:"state,omitempty"` // the state entered (type state), or the state the event belongs to
	From    string `json:"from,omitempty"`  // the state left (type state)
	Message string `json:"message,omitempty"`

	Release string `json:"release,omitempty"` // bundle version involved
	Slot    string `json:"slot,omitempty"`    // rootfs slot involved
	Bundle  string `json:"bundle,omitempty"`  // bundle file name or URL
	Source  string `json:"source,omitempty"`  // where the work came from: cli, channel, resume

	Device string `json:"device,omitempty"` // MCU device name
	Bus    string `json:"bus,omitempty"`
	Phase  string `json:"phase,omitempty"`  // identify, erase, write, verify, start
	Result string `json:"result,omitempty"` // success, not-needed, postponed, failed

	Payload string  `json:"payload,omitempty"` // bundle payload being written
	Chunk   int     `json:"chunk,omitempty"`
	Chunks  int     `json:"chunks,omitempty"`
	Done    int64   `json:"done,omitempty"`
	Total   int64   `json:"total,omitempty"`
	Rate    float64 `json:"rate,omitempty"` // bytes per second

	Attempt int    `json:"attempt,omitempty"` // failed: how many times this step has failed in a row
	Retries int    `json:"retries,omitempty"` // MCU line errors absorbed
	Kind    string `json:"kind,omitempty"`    // error kind, e.g. downgrade-refused, verify-failed
	Error   string `json:"error,omitempty"`

	Devices []DeviceResult `json:"devices,omitempty"` // type done of an MCU fan-out
}

// DeviceResult is one device's outcome at the end of an MCU fan-out.
type DeviceResult struct {
	Device  string `json:"device"`
	Bus     string `json:"bus,omitempty"`
	Result  string `json:"result"`
	From    string `json:"from,omitempty"`    // the version before the fan-out
	Version string `json:"version,omitempty"` // the version after it
	Reason  string `json:"reason,omitempty"`
	Retries int    `json:"retries,omitempty"`
}

// Terminal reports whether e ends the stream of a request (done or error)
// or the subscription (lagged).
func (e Event) Terminal() bool {
	return e.Type == EventDone || e.Type == EventError || e.Type == EventLagged
}
