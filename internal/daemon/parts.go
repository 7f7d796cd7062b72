package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
)

// part is one capability the daemon sequences (boot selection, rootfs
// installs, boot assessment, MCU fan-out). Each lives in its own file,
// owns its routes and its section of the status, and is started in order
// before READY=1. The daemon builds each with what it needs (newParts) and
// holds it by its type (Daemon.boot, .maintenance, .inst, .health, .mcu,
// .channel);
// the state they report moves only through the flow (flow.go). They are
// plain collaborators (their
// dependencies are functions and small interfaces declared here: bootSelection,
// windows, installStore, releaseRecord, fleetRecord); none holds the daemon.
// The release record's accessors live in record.go.
type part interface {
	// start runs after the state is loaded and before READY=1. A returned
	// error stops the daemon: only for configuration that cannot work.
	start(ctx context.Context) error
	// routes adds the part's API routes.
	routes(srv *api.Server)
	// status fills the part's section of `otagw status`.
	status(s *api.Status)
	// reload applies a new, already validated config.
	reload(cfg *config.Config)
	// stop releases what start took; it must return promptly.
	stop()
}

// newParts builds the parts with their dependencies.
func (d *Daemon) newParts() {
	d.boot = &bootPart{log: d.log, cfg: d.config}
	d.maintenance = &maintenancePart{log: d.log, cfg: d.config, clock: d.opts.Clock,
		reboot: rebooter{d}.Reboot, waiting: d.awaitingReboot}
	d.inst = &installPart{log: d.log, cfg: d.config, now: d.opts.Clock.Now, warn: d.warn, boot: d.boot.chooser,
		windows: d.maintenance, flow: d.flow, bus: d.bus, store: recordInstallStore{d}}
	d.health = &healthPart{log: d.log, cfg: d.config, clock: d.opts.Clock, notify: d.opts.Notify, warn: d.warn,
		serving: d.serving.Load, setBeat: d.setBeat, boot: d.boot.chooser, release: releaseStore{d},
		flow: d.flow, bus: d.bus, reboot: rebooter{d}.Reboot, released: func() { d.mcu.afterCommit() }}
	d.mcu = &mcuPart{log: d.log, cfg: d.config, flow: d.flow, bus: d.bus, windows: d.maintenance, rec: &mcuStore{d: d}}
	d.mcu.ctx, d.mcu.cancel = context.WithCancel(context.Background())
	d.channel = &channelPart{log: d.log, cfg: d.config, clock: d.opts.Clock, warn: d.warn, flow: d.flow, bus: d.bus,
		windows: d.maintenance, release: releaseStore{d}.releases, daemonStatus: d.status,
		install: func(url string) (*installJob, error) {
			// resume: an earlier attempt at the same URL that failed in
			// transit continues from its checkpoint.
			return d.inst.begin(nil, url, "", true, false, "channel")
		},
		flash: d.mcu.flash, configPath: d.opts.ConfigPath, reloadConfig: d.reload}
}

// awaitingReboot names the release installed and waiting for its reboot.
func (d *Daemon) awaitingReboot() (string, bool) {
	d.mu.Lock()
	pending := d.st.Pending
	d.mu.Unlock()
	return pending, pending != "" && d.flow.State() == api.StateInstalled
}

// parts lists the parts in start order.
func (d *Daemon) parts() []part {
	return []part{d.boot, d.maintenance, d.inst, d.health, d.mcu, d.channel}
}

// decodeJSON reads a request body (at most 1 MiB), rejecting unknown fields.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && err != io.EOF {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// setBeat sets the main loop's heartbeat (the health loop's, or nil).
func (d *Daemon) setBeat(f func()) {
	d.mu.Lock()
	d.beat = f
	d.mu.Unlock()
}
