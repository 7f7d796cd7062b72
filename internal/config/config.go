// Package config loads otagw's YAML configuration and maps it onto each
// package's own Options. It is the only helper, besides internal/daemon,
// that sees the domain packages.
//
//	cfg, err := config.Load("/etc/otagw/otagw.yaml")
//	if err != nil { fmt.Println(err) } // every problem, one per line, "file:line:col: key.path: what"
//	cfg.Daemon.Socket                 // defaults filled for everything the file leaves out
//
// Unknown keys, duplicate keys, values of the wrong type and values that a
// package's Validate rejects are all reported, not just the first.
package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/downstream"
	_ "github.com/otagw/otagw/downstream/protocols" // stm32-rom, esp32-rom for validation
	"github.com/otagw/otagw/internal/channel"
	"github.com/otagw/otagw/internal/precond"
	"github.com/otagw/otagw/internal/window"
	"github.com/otagw/otagw/rootfs"
	"github.com/otagw/otagw/watchdog"
	"github.com/otagw/otagw/watchdog/assess"
	"github.com/otagw/otagw/watchdog/health"
)

// DefaultPath is where the packaged config lives.
const DefaultPath = "/etc/otagw/otagw.yaml"

// Config is the whole file.
type Config struct {
	Daemon Daemon         `yaml:"daemon" json:"daemon"`
	Boot   abboot.Options `yaml:"boot" json:"boot"`
	Rootfs rootfs.Options `yaml:"rootfs" json:"rootfs"`
	Update Update         `yaml:"update" json:"update"`

	Watchdog   watchdog.Options `yaml:"watchdog" json:"watchdog"`
	Health     health.Options   `yaml:"health" json:"health"`
	Assessment assess.Options   `yaml:"assessment" json:"assessment"`

	Downstream downstream.Options `yaml:"downstream" json:"downstream"`

	Maintenance window.Options `yaml:"maintenance" json:"maintenance"`

	Channel       channel.Options `yaml:"channel" json:"channel"`
	Preconditions precond.Options `yaml:"preconditions" json:"preconditions"`
}

// Update is the bundle acceptance policy and how installs run.
type Update struct {
	// Keyring is a directory of trusted *.pub keys (or one key file).
	Keyring string `yaml:"keyring" json:"keyring"`
	// Threshold is how many distinct trusted keys must have signed.
	Threshold int `yaml:"threshold" json:"threshold"`
	// Compatible must equal the bundle's compatible string.
	Compatible string `yaml:"compatible" json:"compatible"`
	// AllowDowngrade permits bundles below the stored minimum version
	// when they are themselves signed with allow_downgrade.
	AllowDowngrade bool `yaml:"allow_downgrade" json:"allow_downgrade"`
	// Resume is auto (an interrupted install continues at the next start
	// when its source is still there) or manual (otagw install --resume).
	Resume string `yaml:"resume" json:"resume"`
	// ResumeRetries bounds the automatic attempts at an interrupted or
	// failed-in-transit install (stalled or unreachable server) in a row
	// without progress (a new checkpoint), counted across daemon restarts;
	// after them the install ends in the failed state with its reason, and
	// only a new request starts it again.
	ResumeRetries int `yaml:"resume_retries" json:"resume_retries"`
	// ResumeBackoff is the wait before the first automatic retry; it
	// doubles with each further one.
	ResumeBackoff time.Duration `yaml:"resume_backoff" json:"resume_backoff"`
}

// Daemon configures the service itself: its socket, who may talk to it,
// where it keeps state, how it logs.
type Daemon struct {
	// Socket is the local API's unix socket.
	Socket string `yaml:"socket" json:"socket"`
	// ReadGroup may call read-only API methods (status, list, ...).
	ReadGroup string `yaml:"read_group" json:"read_group"`
	// AdminGroup may also call methods that change things (install, flash, mark-good, ...).
	AdminGroup string `yaml:"admin_group" json:"admin_group"`
	// SocketGroup owns the socket file (mode 0660); empty means ReadGroup.
	SocketGroup string `yaml:"socket_group" json:"socket_group"`
	// StateDir holds the persistent state and the device key.
	StateDir string `yaml:"state_dir" json:"state_dir"`
	// KeyFile is the device key for the state's HMAC; empty means StateDir/device.key.
	KeyFile string `yaml:"key_file" json:"key_file"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" json:"log_level"`
	// RebootCommand replaces the real reboot (systemd, else reboot(2));
	// for development, the demo and tests.
	RebootCommand []string `yaml:"reboot_command" json:"reboot_command"`
	// UptimeFile stands in for /proc/uptime (development and tests): the
	// assessment deadline counts from kernel boot.
	UptimeFile string `yaml:"uptime_file" json:"uptime_file"`
	// RemoteConfig is what a config applied through the API (otagw config
	// apply, POST /v1/config) may do. Local-only: an applied config cannot
	// change it (CheckRemoteApply).
	RemoteConfig RemoteConfig `yaml:"remote_config" json:"remote_config"`
}

// RemoteConfig is the policy for configs applied through the API.
type RemoteConfig struct {
	// AllowCommands lets an applied config add or change what the daemon
	// runs as root (Commands); false (the default) refuses such a config.
	AllowCommands bool `yaml:"allow_commands" json:"allow_commands"`
}

// Default returns the configuration used for everything a file leaves out.
func Default() Config {
	return Config{
		Daemon: Daemon{
			Socket:     "/run/otagw/otagw.sock",
			ReadGroup:  "otagw",
			AdminGroup: "otagw-admin",
			StateDir:   "/var/lib/otagw",
			LogLevel:   "info",
			UptimeFile: "/proc/uptime",
		},
		Boot:   abboot.DefaultOptions(),
		Rootfs: rootfs.DefaultOptions(),
		Update: Update{Keyring: "/etc/otagw/keys", Threshold: 1, Resume: "auto", ResumeRetries: 3, ResumeBackoff: 30 * time.Second},

		Watchdog:   watchdog.DefaultOptions(),
		Health:     health.DefaultOptions(),
		Assessment: assess.DefaultOptions(),
		Downstream: downstream.DefaultOptions(),

		Maintenance: window.DefaultOptions(),

		Channel:       channel.DefaultOptions(),
		Preconditions: precond.DefaultOptions(),
	}
}

// Error is every problem found in one file.
type Error struct {
	File     string
	Problems []Problem
}

// Problem is one error at one place.
type Problem struct {
	Line, Column int
	Path         string // dotted key path, e.g. "daemon.socket" or "downstream.devices[2].bus"
	Msg          string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if p.Line > 0 {
			fmt.Fprintf(&b, "%s:%d:%d: %s", e.File, p.Line, p.Column, p)
		} else {
			fmt.Fprintf(&b, "%s: %s", e.File, p)
		}
	}
	return b.String()
}

// Load reads, decodes and validates a file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg := Default()
	d := &decoder{file: name}
	pos := d.decodeDocument(data, &cfg)
	if len(d.problems) == 0 {
		cfg.fill()
		for _, p := range cfg.validate() {
			if at, ok := pos[p.Path]; ok {
				p.Line, p.Column = at.line, at.col
			} else {
				// Attribute to the nearest enclosing key the file has.
				for q := p.Path; q != ""; {
					i := strings.LastIndexAny(q, ".[")
					if i < 0 {
						break
					}
					q = q[:i]
					if at, ok := pos[q]; ok {
						p.Line, p.Column = at.line, at.col
						break
					}
				}
			}
			d.problems = append(d.problems, p)
		}
	}
	if len(d.problems) > 0 {
		return nil, &Error{File: name, Problems: d.problems}
	}
	return &cfg, nil
}

// fill derives values that default from others.
func (c *Config) fill() {
	if c.Daemon.KeyFile == "" && c.Daemon.StateDir != "" {
		c.Daemon.KeyFile = filepath.Join(c.Daemon.StateDir, "device.key")
	}
	if c.Daemon.SocketGroup == "" {
		c.Daemon.SocketGroup = c.Daemon.ReadGroup
	}
	// Bundles named by the update channel download through rootfs.source:
	// it trusts the channel's CA and presents its client certificate
	// unless it has its own.
	if c.Rootfs.Source.CAFile == "" {
		c.Rootfs.Source.CAFile = c.Channel.CAFile
	}
	if c.Rootfs.Source.CertFile == "" && c.Rootfs.Source.KeyFile == "" {
		c.Rootfs.Source.CertFile, c.Rootfs.Source.KeyFile = c.Channel.CertFile, c.Channel.KeyFile
	}
}

func (c *Config) validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	d := c.Daemon
	if d.Socket == "" || !filepath.IsAbs(d.Socket) {
		add("daemon.socket", "must be an absolute path, got %q", d.Socket)
	} else if len(d.Socket) > 107 {
		add("daemon.socket", "%d bytes is longer than a unix socket path may be (107)", len(d.Socket))
	}
	if d.StateDir == "" || !filepath.IsAbs(d.StateDir) {
		add("daemon.state_dir", "must be an absolute path, got %q", d.StateDir)
	}
	if d.KeyFile != "" && !filepath.IsAbs(d.KeyFile) {
		add("daemon.key_file", "must be an absolute path, got %q", d.KeyFile)
	}
	u := c.Update
	if u.Threshold < 1 {
		add("update.threshold", "must be at least 1, got %d", u.Threshold)
	}
	if u.Resume != "auto" && u.Resume != "manual" {
		add("update.resume", "must be auto or manual, got %q", u.Resume)
	}
	if u.ResumeRetries < 0 {
		add("update.resume_retries", "must be 0 or more, got %d", u.ResumeRetries)
	}
	if u.ResumeBackoff < 0 {
		add("update.resume_backoff", "must be 0 or more, got %v", u.ResumeBackoff)
	}
	if u.Keyring == "" {
		add("update.keyring", "must name a directory of *.pub keys or a key file")
	}
	switch d.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("daemon.log_level", "must be debug, info, warn or error, got %q", d.LogLevel)
	}
	// Each domain package validates its own Options.
	v := reflect.ValueOf(c).Elem()
	for i := 0; i < v.NumField(); i++ {
		val, ok := v.Field(i).Interface().(interface{ Validate() error })
		if !ok {
			continue
		}
		section := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
		for _, err := range flatten(val.Validate()) {
			p := Problem{Path: section, Msg: err.Error()}
			// A package may name the offending key: "field: message" or
			// an error with a Field() method.
			var fe interface{ Field() string }
			if errors.As(err, &fe) && fe.Field() != "" {
				p.Path = section + "." + fe.Field()
			}
			ps = append(ps, p)
		}
	}
	return ps
}

// flatten splits an errors.Join into its parts.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Group resolves a group name or numeric id. A group that does not exist
// on this machine is an error the daemon reports at start.
func Group(name string) (int, error) {
	if name == "" {
		return -1, errors.New("no group configured")
	}
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil // a numeric gid needs no entry in /etc/group
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if g2, err2 := user.LookupGroupId(name); err2 == nil {
			g = g2
		} else {
			return -1, fmt.Errorf("group %q: %w", name, err)
		}
	}
	var id int
	if _, err := fmt.Sscan(g.Gid, &id); err != nil {
		return -1, fmt.Errorf("group %q: gid %q: %w", name, g.Gid, err)
	}
	return id, nil
}
