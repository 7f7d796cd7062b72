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
// before READY=1. The daemon holds each by its type (Daemon.boot,
// .maintenance, .inst, .health, .mcu); the state they report moves only
// through the flow (flow.go).
type part interface {
	// start runs after the state is loaded and before READY=1. A returned
	// error stops the daemon: only for configuration that cannot work.
	start(ctx context.Context, d *Daemon) error
	// routes adds the part's API routes.
	routes(srv *api.Server)
	// status fills the part's section of `otagw status`.
	status(s *api.Status)
	// reload applies a new, already validated config.
	reload(cfg *config.Config)
	// stop releases what start took; it must return promptly.
	stop()
}

// parts lists the parts in start order.
func (d *Daemon) parts() []part {
	return []part{d.boot, d.maintenance, d.inst, d.health, d.mcu}
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

// loadInstall returns a copy of the install's part of the record.
func (d *Daemon) loadInstall() installRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Install.clone()
}

// saveInstall writes the install's part of the record with the rest of it.
func (d *Daemon) saveInstall(rec *installRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Install = rec.clone()
	return d.saveLocked()
}

// clone is a deep copy (the maps and the checkpoint are not shared).
func (r installRecord) clone() installRecord {
	c := r
	if r.Checkpoint != nil {
		cp := *r.Checkpoint
		c.Checkpoint = &cp
	}
	c.Installed = cloneMap(r.Installed)
	c.NotBootable = cloneMap(r.NotBootable)
	return c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
