package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Kinds of Command.
const (
	CommandHealth        = "health-command"   // health.checks[i].command: argv, run as root
	CommandReboot        = "reboot-command"   // daemon.reboot_command: argv, run as root
	CommandPrecondition  = "mcu-precondition" // downstream.devices[i].precondition: /bin/sh -c, as root
	CommandCommittedUnit = "committed-unit"   // assessment.committed_unit: systemctl start UNIT
)

// Command is one setting that makes the daemon run something as root.
type Command struct {
	Path string // dotted key path, e.g. "health.checks[2].command"
	Kind string // CommandHealth, ...
	Run  string // what runs: the argv joined by spaces, the shell line, the unit
}

func (c Command) String() string { return fmt.Sprintf("%s (%s): %s", c.Path, c.Kind, c.Run) }

// Commands lists every setting in c that makes the daemon run a program
// (or start a systemd unit) as root: health checks of type command,
// daemon.reboot_command, downstream device preconditions and
// assessment.committed_unit.
func Commands(c *Config) []Command {
	var out []Command
	for i, ch := range c.Health.Checks {
		if len(ch.Command) > 0 {
			out = append(out, Command{fmt.Sprintf("health.checks[%d].command", i), CommandHealth, argvString(ch.Command)})
		}
	}
	if len(c.Daemon.RebootCommand) > 0 {
		out = append(out, Command{"daemon.reboot_command", CommandReboot, argvString(c.Daemon.RebootCommand)})
	}
	for i, d := range c.Downstream.Devices {
		if strings.TrimSpace(d.Precondition) != "" {
			out = append(out, Command{fmt.Sprintf("downstream.devices[%d].precondition", i), CommandPrecondition, d.Precondition})
		}
	}
	if c.Assessment.CommittedUnit != "" {
		out = append(out, Command{"assessment.committed_unit", CommandCommittedUnit, c.Assessment.CommittedUnit})
	}
	return out
}

// argvString joins an argv so that different argvs give different
// strings (each element quoted).
func argvString(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}

// ErrRemoteCommands: an applied config adds or changes a command while
// daemon.remote_config.allow_commands is false.
var ErrRemoteCommands = errors.New("a config applied through the API may not add or change commands (daemon.remote_config.allow_commands is false)")

// ErrRemotePolicy: an applied config changes daemon.remote_config.
var ErrRemotePolicy = errors.New("daemon.remote_config is local-only: a config applied through the API may not change it")

// CheckRemoteApply says whether next, a config applied through the API,
// may replace cur, the config in force (read from the local file). next
// may not change daemon.remote_config. Unless cur allows commands, every
// command in next (Commands) must already be in cur, same kind and same
// program/arguments (it may move, e.g. when checks are reordered, or go
// away); the error names each new or changed one.
func CheckRemoteApply(cur, next *Config) error {
	if next.Daemon.RemoteConfig != cur.Daemon.RemoteConfig {
		return fmt.Errorf("%w (in force: allow_commands: %v; applied: allow_commands: %v)", ErrRemotePolicy,
			cur.Daemon.RemoteConfig.AllowCommands, next.Daemon.RemoteConfig.AllowCommands)
	}
	if cur.Daemon.RemoteConfig.AllowCommands {
		return nil
	}
	have := map[string]bool{}
	for _, c := range Commands(cur) {
		have[c.Kind+"\x00"+c.Run] = true
	}
	var bad []string
	for _, c := range Commands(next) {
		if !have[c.Kind+"\x00"+c.Run] {
			bad = append(bad, c.String())
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("%w: new or changed: %s", ErrRemoteCommands, strings.Join(bad, "; "))
}
