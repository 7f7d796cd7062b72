package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/watchdog/assess"
)

// rebooter runs daemon.reboot_command when configured (development, the
// demo and tests), else reboots through systemd or reboot(2). The flow
// enters rebooting first: a reboot the flow does not allow now (an install
// is writing) is refused. A reboot that failed returns the flow to where
// it was (or to failed, after a rollback).
type rebooter struct{ d *Daemon }

func (r rebooter) Reboot(ctx context.Context, reason string) error {
	cfg := r.d.config()
	prev := r.d.flow.State()
	if err := r.d.flow.enter(api.StateRebooting, reason, entry{}); err != nil {
		return err
	}
	err := r.reboot(ctx, cfg, reason)
	if err != nil {
		back := prev
		if !legal(api.StateRebooting, back) {
			back = api.StateFailed
		}
		r.d.flow.enter(back, "reboot failed: "+err.Error(), entry{Kind: "reboot-failed", Error: err.Error()})
	}
	return err
}

func (r rebooter) reboot(ctx context.Context, cfg *config.Config, reason string) error {
	if len(cfg.Daemon.RebootCommand) == 0 {
		return assess.NewRebooter(r.d.log).Reboot(ctx, reason)
	}
	r.d.log.Warn("rebooting with daemon.reboot_command", zap.Strings("command", cfg.Daemon.RebootCommand), zap.String("reason", reason))
	cmd := exec.CommandContext(ctx, cfg.Daemon.RebootCommand[0], cfg.Daemon.RebootCommand[1:]...)
	cmd.Env = append(os.Environ(), "OTAGW_REBOOT_REASON="+reason)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("reboot command %v: %w: %s", cfg.Daemon.RebootCommand, err, out)
	}
	return nil
}

// rebootFunc adapts a reboot function to assess.Rebooter.
type rebootFunc func(ctx context.Context, reason string) error

func (f rebootFunc) Reboot(ctx context.Context, reason string) error { return f(ctx, reason) }
