package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// The typed client: one method per route of the local API, each taking and
// returning the types of this package. cmd/otagw talks to the daemon only
// through these. Errors keep their kind: a non-2xx answer is a
// *StatusError (errors.Is matches ErrBusy, ErrDenied, ...), a stream that
// ends with an error event is a *FailedError carrying the event's Kind.

// ErrStreamCut: a stream ended (the daemon closed the connection or
// stopped) before the event that ends it.
var ErrStreamCut = errors.New("the daemon ended the stream before it was finished")

// ErrLagged: the daemon dropped this subscriber because it read too slowly
// (the stream's last event was of type lagged); reconnect to go on.
var ErrLagged = errors.New("the daemon dropped this subscriber: it fell behind (lagged)")

// FailedError is a request whose stream ended with an event of type error.
type FailedError struct {
	Kind string // e.g. downgrade-refused, cancelled
	Msg  string
}

func (e *FailedError) Error() string {
	if e.Kind == "" {
		return e.Msg
	}
	return e.Kind + ": " + e.Msg
}

// Status answers GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Get(ctx, "/v1/status", &st)
	return st, err
}

// Reload asks the daemon to re-read its config file (POST /v1/reload) and
// returns the status after it.
func (c *Client) Reload(ctx context.Context) (Status, error) {
	var st Status
	err := c.Post(ctx, "/v1/reload", nil, &st)
	return st, err
}

// ConfigApply hands the daemon a whole new YAML config file
// (POST /v1/config); nothing changes unless all of it is valid.
func (c *Client) ConfigApply(ctx context.Context, yaml []byte) (Status, error) {
	var st Status
	err := c.PostRaw(ctx, "/v1/config", "application/yaml", yaml, &st)
	return st, err
}

// Health runs the configured health checks now (GET /v1/health).
func (c *Client) Health(ctx context.Context) (HealthReport, error) {
	var rep HealthReport
	err := c.Get(ctx, "/v1/health", &rep)
	return rep, err
}

// MarkGood commits the booted slot (POST /v1/mark-good).
func (c *Client) MarkGood(ctx context.Context) (Assessment, error) {
	var a Assessment
	err := c.Post(ctx, "/v1/mark-good", nil, &a)
	return a, err
}

// MarkBad takes a slot (empty: the booted one) out of the boot order
// (POST /v1/mark-bad).
func (c *Client) MarkBad(ctx context.Context, req SlotRequest) (Assessment, error) {
	var a Assessment
	err := c.Post(ctx, "/v1/mark-bad", req, &a)
	return a, err
}

// Rollback makes the other slot primary if it is good (POST /v1/rollback)
// and returns the slot that boots next.
func (c *Client) Rollback(ctx context.Context, req SlotRequest) (SlotRequest, error) {
	var out SlotRequest
	err := c.Post(ctx, "/v1/rollback", req, &out)
	return out, err
}

// MCUs lists the configured MCUs (GET /v1/mcu).
func (c *Client) MCUs(ctx context.Context) ([]MCUStatus, error) {
	var ms []MCUStatus
	err := c.Get(ctx, "/v1/mcu", &ms)
	return ms, err
}

// Install starts (or, with req.Resume, follows) an install
// (POST /v1/install) and hands each event to fn until the one that ends
// it, which it returns. bundle, when not nil, is passed to the daemon as an
// open descriptor (req.Source then reads FDSource(name)). The error is an
// *FailedError when the install failed, ErrStreamCut when the daemon
// stopped first, or what fn returned.
func (c *Client) Install(ctx context.Context, req InstallRequest, bundle *os.File, fn func(Event) error) (Event, error) {
	cl := c
	if bundle != nil {
		cl = c.WithFile(bundle)
	}
	return cl.request1(ctx, "/v1/install", req, fn)
}

// InstallCancel stops the running or interrupted install
// (POST /v1/install/cancel); the event says which slot stays not bootable.
func (c *Client) InstallCancel(ctx context.Context) (Event, error) {
	var raw json.RawMessage
	if err := c.Post(ctx, "/v1/install/cancel", struct{}{}, &raw); err != nil {
		return Event{}, err
	}
	return DecodeEvent(raw)
}

// MCUFlash flashes MCUs through the daemon (POST /v1/mcu/flash), passing
// the package files as open descriptors in order (req.Package, then
// req.More), and hands each event to fn until the one that ends it, which
// it returns (type done: Devices holds each device's outcome). Errors as
// for Install.
func (c *Client) MCUFlash(ctx context.Context, req MCUFlashRequest, pkgs []*os.File, fn func(Event) error) (Event, error) {
	cl := c
	if len(pkgs) > 0 {
		cl = c.WithFiles(pkgs...)
	}
	return cl.request1(ctx, "/v1/mcu/flash", req, fn)
}

// request1 runs one streamed request to its terminal event.
func (c *Client) request1(ctx context.Context, path string, req any, fn func(Event) error) (Event, error) {
	var last *Event
	err := c.Stream(ctx, "POST", path, req, func(raw json.RawMessage) error {
		ev, err := DecodeEvent(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if fn != nil {
			if err := fn(ev); err != nil {
				return err
			}
		}
		if ev.Type == EventDone || ev.Type == EventError {
			last = &ev
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return Event{}, err
	}
	if last == nil {
		return Event{}, fmt.Errorf("%s: %w", path, ErrStreamCut)
	}
	if last.Type == EventError {
		return *last, &FailedError{Kind: last.Kind, Msg: last.Error}
	}
	return *last, nil
}

var errStop = errors.New("stop")

// Events follows GET /v1/events and hands each event to fn; the first is a
// state event with the current state. types, when not empty, filters the
// event types (EventState, EventProgress, ...). It returns nil when ctx
// ends, ErrLagged after a lagged event (fn sees it first), ErrStreamCut
// when the daemon closes the stream, or what fn returned.
func (c *Client) Events(ctx context.Context, types []string, fn func(Event) error) error {
	path := "/v1/events"
	if len(types) > 0 {
		path += "?types=" + url.QueryEscape(strings.Join(types, ","))
	}
	lagged := false
	err := c.Stream(ctx, "GET", path, nil, func(raw json.RawMessage) error {
		ev, err := DecodeEvent(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
		if ev.Type == EventLagged {
			lagged = true
			return errStop
		}
		return nil
	})
	switch {
	case lagged:
		return ErrLagged
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%s: %w", path, ErrStreamCut)
}

// DecodeEvent reads one line of an event stream.
func DecodeEvent(raw []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Event{}, fmt.Errorf("event %.80q: %w", raw, err)
	}
	if ev.Type == "" {
		return Event{}, fmt.Errorf("event %.80q: no type", raw)
	}
	return ev, nil
}
