package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/watchdog/health"
)

func TestRemoteConfigKeyParses(t *testing.T) {
	t.Parallel()
	c, err := Parse("x.yaml", []byte("daemon:\n  remote_config:\n    allow_commands: true\n"))
	if err != nil || !c.Daemon.RemoteConfig.AllowCommands {
		t.Fatalf("allow_commands: %v %+v", err, c.Daemon.RemoteConfig)
	}
	if Default().Daemon.RemoteConfig.AllowCommands {
		t.Error("commands allowed by default")
	}
}

func withCommands() Config {
	c := Default()
	c.Health.Checks = []health.Check{
		{Name: "tcp", TCP: "127.0.0.1:1"},
		{Name: "app", Command: []string{"/usr/bin/app-check", "--quick"}},
	}
	c.Daemon.RebootCommand = []string{"/bin/true"}
	c.Downstream.Devices = []downstream.Device{{Name: "m1"}, {Name: "m2", Precondition: "test -e /run/ok"}}
	return c
}

func TestCommandsListsEverythingThatRuns(t *testing.T) {
	t.Parallel()
	c := withCommands()
	got := Commands(&c)
	want := []string{
		`health.checks[1].command (health-command): "/usr/bin/app-check" "--quick"`,
		`daemon.reboot_command (reboot-command): "/bin/true"`,
		`downstream.devices[1].precondition (mcu-precondition): test -e /run/ok`,
		`assessment.committed_unit (committed-unit): otagw-committed.target`,
	}
	if len(got) != len(want) {
		t.Fatalf("Commands = %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("Commands[%d] = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestCheckRemoteApply(t *testing.T) {
	t.Parallel()
	cur := withCommands()
	same := withCommands()
	// Reordered, one removed, a non-command setting changed: allowed.
	same.Health.Checks = []health.Check{same.Health.Checks[1]}
	same.Daemon.RebootCommand = nil
	same.Daemon.LogLevel = "debug"
	if err := CheckRemoteApply(&cur, &same); err != nil {
		t.Errorf("no new command: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"new health command": func(c *Config) {
			c.Health.Checks = append(c.Health.Checks, health.Check{Name: "x", Command: []string{"/bin/sh", "-c", "id"}})
		},
		"changed argument":     func(c *Config) { c.Health.Checks[1].Command[1] = "--slow" },
		"check becomes a cmd":  func(c *Config) { c.Health.Checks[0].TCP, c.Health.Checks[0].Command = "", []string{"/bin/id"} },
		"reboot command":       func(c *Config) { c.Daemon.RebootCommand = []string{"/bin/sh", "-c", "id"} },
		"precondition":         func(c *Config) { c.Downstream.Devices[0].Precondition = "id" },
		"committed unit":       func(c *Config) { c.Assessment.CommittedUnit = "evil.service" },
		"argv joined the same": func(c *Config) { c.Health.Checks[1].Command = []string{"/usr/bin/app-check --quick"} },
	} {
		next := withCommands()
		change(&next)
		err := CheckRemoteApply(&cur, &next)
		if !errors.Is(err, ErrRemoteCommands) {
			t.Errorf("%s: %v, want ErrRemoteCommands", name, err)
		}
		allowed := withCommands()
		allowed.Daemon.RemoteConfig.AllowCommands = true
		next.Daemon.RemoteConfig.AllowCommands = true
		if err := CheckRemoteApply(&allowed, &next); err != nil {
			t.Errorf("%s with allow_commands: %v", name, err)
		}
	}
	next := withCommands()
	next.Health.Checks[1].Command = []string{"/bin/evil"}
	if err := CheckRemoteApply(&cur, &next); err == nil || !strings.Contains(err.Error(), `health.checks[1].command (health-command): "/bin/evil"`) {
		t.Errorf("the error does not name the command: %v", err)
	}
	// The policy itself cannot be switched on remotely.
	next = withCommands()
	next.Daemon.RemoteConfig.AllowCommands = true
	next.Health.Checks[1].Command = []string{"/bin/evil"}
	if err := CheckRemoteApply(&cur, &next); !errors.Is(err, ErrRemotePolicy) {
		t.Errorf("remote allow_commands: %v, want ErrRemotePolicy", err)
	}
}
