package health

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds a check that sets no timeout.
const DefaultTimeout = 10 * time.Second

// Options are the YAML `health:` key.
//
//	health:
//	  default_timeout: 10s
//	  checks:
//	    - name: broker
//	      unit: mosquitto.service
//	    - name: modem
//	      command: [/usr/bin/mmcli, -L]
//	      exit_codes: [0]
//	      timeout: 20s
//	    - name: broker-port
//	      tcp: 127.0.0.1:1883
//	    - name: api
//	      http: http://127.0.0.1:8080/healthz
//	      status: [200, 204]
//	    - name: data
//	      file: /data/.mounted
//	    - name: settled
//	      uptime: 2m
//	      required: false
type Options struct {
	// DefaultTimeout bounds checks that set no timeout (default 10s).
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	Checks         []Check       `yaml:"checks"`
}

// DefaultOptions has no checks: a gateway that configures none commits
// once the daemon itself is up.
func DefaultOptions() Options {
	return Options{DefaultTimeout: DefaultTimeout}
}

// Check is one health check. Exactly one of Unit, Command, TCP, HTTP, File
// or Uptime says what it checks.
type Check struct {
	Name string `yaml:"name" json:"name"`
	// Timeout bounds the check; 0 means Options.DefaultTimeout.
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Required: a failing required check fails the assessment (default
	// true); a failing optional one is only reported.
	Required *bool `yaml:"required,omitempty" json:"required,omitempty"`

	// Unit must be active (systemd ActiveState "active").
	Unit string `yaml:"unit,omitempty" json:"unit,omitempty"`
	// Command is run (argv, no shell) and must exit with one of ExitCodes
	// (default [0]) within the timeout.
	Command   []string `yaml:"command,omitempty" json:"command,omitempty"`
	ExitCodes []int    `yaml:"exit_codes,omitempty" json:"exit_codes,omitempty"`
	// TCP is host:port that must accept a connection.
	TCP string `yaml:"tcp,omitempty" json:"tcp,omitempty"`
	// HTTP is a URL that must answer a GET with one of Status (default:
	// any 2xx).
	HTTP   string `yaml:"http,omitempty" json:"http,omitempty"`
	Status []int  `yaml:"status,omitempty" json:"status,omitempty"`
	// File must exist.
	File string `yaml:"file,omitempty" json:"file,omitempty"`
	// Uptime is the minimum time since boot (/proc/uptime): a settle time
	// before a new slot may be committed.
	Uptime time.Duration `yaml:"uptime,omitempty" json:"uptime,omitempty"`
}

// IsRequired is Required, true when unset.
func (c Check) IsRequired() bool { return c.Required == nil || *c.Required }

// Kind names what the check checks, "" when nothing or more than one is set.
func (c Check) Kind() string {
	var kinds []string
	if c.Unit != "" {
		kinds = append(kinds, KindUnit)
	}
	if len(c.Command) > 0 {
		kinds = append(kinds, KindCommand)
	}
	if c.TCP != "" {
		kinds = append(kinds, KindTCP)
	}
	if c.HTTP != "" {
		kinds = append(kinds, KindHTTP)
	}
	if c.File != "" {
		kinds = append(kinds, KindFile)
	}
	if c.Uptime != 0 {
		kinds = append(kinds, KindUptime)
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// Validate checks the options; errors name the check by index and name.
func (o Options) Validate() error {
	if o.DefaultTimeout < 0 {
		return fmt.Errorf("%w: health.default_timeout %v is negative", ErrInvalidOptions, o.DefaultTimeout)
	}
	seen := map[string]bool{}
	for i, c := range o.Checks {
		where := fmt.Sprintf("health.checks[%d]", i)
		if c.Name == "" {
			return fmt.Errorf("%w: %s: name is empty", ErrInvalidOptions, where)
		}
		where += " (" + c.Name + ")"
		if seen[c.Name] {
			return fmt.Errorf("%w: %s: name used twice", ErrInvalidOptions, where)
		}
		seen[c.Name] = true
		if err := c.validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidOptions, where, err)
		}
	}
	return nil
}

func (c Check) validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %v is negative", c.Timeout)
	}
	kind := c.Kind()
	if kind == "" {
		return fmt.Errorf("set exactly one of unit, command, tcp, http, file, uptime")
	}
	if len(c.ExitCodes) > 0 && kind != KindCommand {
		return fmt.Errorf("exit_codes only applies to command checks")
	}
	if len(c.Status) > 0 && kind != KindHTTP {
		return fmt.Errorf("status only applies to http checks")
	}
	switch kind {
	case KindUnit:
		if strings.ContainsAny(c.Unit, " \t\n/") {
			return fmt.Errorf("unit %q is not a unit name", c.Unit)
		}
	case KindCommand:
		if c.Command[0] == "" {
			return fmt.Errorf("command[0] is empty")
		}
		for _, e := range c.ExitCodes {
			if e < 0 || e > 255 {
				return fmt.Errorf("exit code %d is outside 0..255", e)
			}
		}
	case KindTCP:
		if _, port, err := net.SplitHostPort(c.TCP); err != nil || port == "" {
			return fmt.Errorf("tcp %q is not host:port", c.TCP)
		}
	case KindHTTP:
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http %q is not an http(s) URL", c.HTTP)
		}
		for _, s := range c.Status {
			if s < 100 || s > 599 {
				return fmt.Errorf("status %d is not an HTTP status", s)
			}
		}
	case KindFile:
		if !strings.HasPrefix(c.File, "/") {
			return fmt.Errorf("file %q is not an absolute path", c.File)
		}
	case KindUptime:
		if c.Uptime < 0 {
			return fmt.Errorf("uptime %v is negative", c.Uptime)
		}
	}
	return nil
}
