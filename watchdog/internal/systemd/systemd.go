// Package systemd is the little of systemd the watchdog packages need:
// a unit's ActiveState, starting a unit, and rebooting. Each goes over
// D-Bus (go-systemd) when systemd runs as PID 1 (/run/systemd/system
// exists) and falls back to the systemctl command otherwise.
//
//	m := systemd.Detect()             // D-Bus or systemctl
//	state, err := m.ActiveState(ctx, "mosquitto.service")
//	err = m.StartUnit(ctx, "otagw-committed.target")
//	err = m.Reboot(ctx)
package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// ErrNoSystemd: systemd is not PID 1 and systemctl could not answer.
var ErrNoSystemd = errors.New("systemd not available")

// Manager talks to the service manager.
type Manager interface {
	ActiveState(ctx context.Context, unit string) (string, error)
	StartUnit(ctx context.Context, unit string) error
	Reboot(ctx context.Context) error
}

// Booted reports whether systemd is PID 1, as sd_booted(3) decides it.
func Booted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// Detect picks D-Bus when systemd runs, else the systemctl command.
func Detect() Manager {
	if Booted() {
		return DBus{}
	}
	return Systemctl{}
}

// DBus asks systemd over the system bus; one connection per call (checks
// and reboots are rare).
type DBus struct{}

func (DBus) conn(ctx context.Context) (*sddbus.Conn, error) {
	c, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	return c, nil
}

// ActiveState is the unit's ActiveState property ("active", "failed", ...).
func (d DBus) ActiveState(ctx context.Context, unit string) (string, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	p, err := c.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("unit %s: ActiveState over D-Bus: %w", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("unit %s: ActiveState is %v, not a string", unit, p.Value)
	}
	return s, nil
}

// StartUnit starts a unit with mode "replace" and waits for the job.
func (d DBus) StartUnit(ctx context.Context, unit string) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan string, 1)
	if _, err := c.StartUnitContext(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("start %s over D-Bus: %w", unit, err)
	}
	select {
	case r := <-done:
		if r != "done" {
			return fmt.Errorf("start %s: job %s", unit, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("start %s: %w", unit, ctx.Err())
	}
}

// Reboot starts reboot.target as `systemctl reboot` does.
func (d DBus) Reboot(ctx context.Context) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("start reboot.target over D-Bus: %w", err)
	}
	return nil
}

// Systemctl runs the systemctl command; Path defaults to "systemctl".
type Systemctl struct {
	Path string
}

func (s Systemctl) run(ctx context.Context, args ...string) (string, string, error) {
	path := s.Path
	if path == "" {
		path = "systemctl"
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()), err
}

// ActiveState runs `systemctl is-active UNIT`, which prints the state and
// exits non-zero unless it is "active".
func (s Systemctl) ActiveState(ctx context.Context, unit string) (string, error) {
	out, stderr, err := s.run(ctx, "is-active", unit)
	if out != "" && !strings.Contains(out, "\n") {
		return out, nil
	}
	if err == nil {
		err = errors.New("no output")
	}
	if stderr != "" {
		return "", fmt.Errorf("systemctl is-active %s: %w: %w: %s", unit, ErrNoSystemd, err, firstLine(stderr))
	}
	return "", fmt.Errorf("systemctl is-active %s: %w", unit, err)
}

// StartUnit runs `systemctl start UNIT`.
func (s Systemctl) StartUnit(ctx context.Context, unit string) error {
	if _, stderr, err := s.run(ctx, "start", unit); err != nil {
		return fmt.Errorf("systemctl start %s: %w: %s", unit, err, firstLine(stderr))
	}
	return nil
}

// Reboot runs `systemctl reboot`.
func (s Systemctl) Reboot(ctx context.Context) error {
	if _, stderr, err := s.run(ctx, "reboot"); err != nil {
		return fmt.Errorf("systemctl reboot: %w: %w: %s", ErrNoSystemd, err, firstLine(stderr))
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
