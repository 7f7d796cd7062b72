package assess

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/otagw/otagw/watchdog/internal/systemd"
)

// SystemRebooter reboots through systemd (reboot.target over D-Bus) when
// systemd is PID 1, and with sync(2) + reboot(2) otherwise or when systemd
// refuses. Every field is injectable; NewRebooter fills the real ones.
type SystemRebooter struct {
	// Systemd is used when Booted reports true.
	Systemd interface {
		Reboot(ctx context.Context) error
	}
	Booted func() bool
	Sync   func()
	// Syscall is reboot(2) with LINUX_REBOOT_CMD_RESTART.
	Syscall func(cmd int) error
	Log     *zap.Logger
}

// NewRebooter returns the real rebooter.
func NewRebooter(log *zap.Logger) *SystemRebooter {
	if log == nil {
		log = zap.NewNop()
	}
	return &SystemRebooter{
		Systemd: systemd.DBus{},
		Booted:  systemd.Booted,
		Sync:    unix.Sync,
		Syscall: unix.Reboot,
		Log:     log,
	}
}

// Reboot asks systemd for an orderly reboot, or restarts the machine
// directly. With systemd it returns once the reboot job is queued.
func (r *SystemRebooter) Reboot(ctx context.Context, reason string) error {
	if r.Booted != nil && r.Booted() && r.Systemd != nil {
		err := r.Systemd.Reboot(ctx)
		if err == nil {
			r.Log.Warn("rebooting through systemd", zap.String("reason", reason))
			return nil
		}
		r.Log.Error("systemd reboot failed; calling reboot(2)", zap.Error(err))
	}
	r.Log.Warn("rebooting with reboot(2)", zap.String("reason", reason))
	if r.Sync != nil {
		r.Sync()
	}
	if r.Syscall == nil {
		return fmt.Errorf("reboot(2): no syscall configured")
	}
	if err := r.Syscall(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot(2): %w", err)
	}
	return nil
}
