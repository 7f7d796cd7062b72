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
// owns its routes, its section of the status and its piece of the
// persisted state (savePart/loadPart), and is started in order before
// READY=1.
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

// newParts lists the parts in start order.
func newParts() []part {
	return []part{&bootPart{}, &maintenancePart{}, &installPart{}, &healthPart{}, &mcuPart{}, &channelPart{}}
}

// bootPart returns the boot selection part.
func (d *Daemon) bootPart() *bootPart {
	for _, p := range d.parts {
		if b, ok := p.(*bootPart); ok {
			return b
		}
	}
	panic("daemon: no boot part")
}

// maintenancePart returns the maintenance-window part.
func (d *Daemon) maintenancePart() *maintenancePart {
	for _, p := range d.parts {
		if m, ok := p.(*maintenancePart); ok {
			return m
		}
	}
	return nil
}

// mcuPart returns the MCU fan-out part.
func (d *Daemon) mcuPart() *mcuPart {
	for _, p := range d.parts {
		if m, ok := p.(*mcuPart); ok {
			return m
		}
	}
	return nil
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

// loadPart decodes the part's persisted piece into v (left as is if none).
func (d *Daemon) loadPart(name string, v any) error {
	d.mu.Lock()
	raw, ok := d.st.Parts[name]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("persisted state of %s: %w", name, err)
	}
	return nil
}

// savePart persists the part's piece atomically with the rest of the state.
func (d *Daemon) savePart(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.Parts == nil {
		d.st.Parts = map[string]json.RawMessage{}
	}
	d.st.Parts[name] = b
	return d.saveLocked()
}
