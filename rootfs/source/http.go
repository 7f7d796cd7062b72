package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTP is a bundle behind an http(s) URL. Reads resume with a Range request
// (If-Range on the first response's validator) when a body ends early.
type HTTP struct {
	URL     string
	o       Options
	client  *http.Client
	size    int64
	etag    string // strong validator from the first response, for If-Range
	lastMod string
}

func newHTTP(url string, o Options) (*HTTP, error) {
	c, err := httpClient(o)
	if err != nil {
		return nil, err
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	return &HTTP{URL: url, o: o, client: c, size: -1}, nil
}

// Size implements Source.
func (h *HTTP) Size() int64 { return h.size }

func (h *HTTP) String() string { return h.URL }

// Open implements Source. The returned reader retries dropped bodies by
// itself; only Retries failures in a row without progress end it.
func (h *HTTP) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	r := &httpReader{h: h, ctx: ctx, pos: off, end: -1}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return r, nil
}

// OpenRange implements Ranger: every request, resumes included, asks for
// "bytes=off-(end-1)", so the server sends nothing past end.
func (h *HTTP) OpenRange(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	if end <= off {
		return nil, fmt.Errorf("%s: range %d-%d", h.URL, off, end)
	}
	r := &httpReader{h: h, ctx: ctx, pos: off, end: end}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return r, nil
}

type httpReader struct {
	h     *HTTP
	ctx   context.Context
	pos   int64
	end   int64 // exclusive end of a ranged read; -1: to the end
	fails int   // failures in a row without progress

	// The current connection (body nil: none). cancel ends it, with a
	// *stallError as the cause when a limit was hit.
	body   io.ReadCloser
	conn   context.Context
	cancel context.CancelCauseFunc
	// Bytes received and time spent blocked in Read on this connection,
	// and the same for the current SpeedTime window.
	connBytes, winBytes int64
	connWait, winWait   time.Duration
}

// errFatal marks failures a retry cannot fix.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

// stallError is a connection ended because a limit was hit; it is
// ErrStalled.
type stallError struct{ limit string }

func (e *stallError) Error() string        { return ErrStalled.Error() + ": " + e.limit }
func (e *stallError) Is(target error) bool { return target == ErrStalled }

// fmtDur writes whole seconds as "60s" rather than "1m0s".
func fmtDur(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// giveUp is the error once the retries are spent; err is the last failure.
// Only a stall is wrapped (as ErrStalled): other causes stay text, so that
// a transport timeout is never taken for a cancellation.
func (r *httpReader) giveUp(err error) error {
	var se *stallError
	if errors.As(err, &se) {
		return fmt.Errorf("%s at byte %d: %w: %w", r.h.URL, r.pos, ErrRetries, se)
	}
	return fmt.Errorf("%s at byte %d: %w: %v", r.h.URL, r.pos, ErrRetries, err)
}

func (r *httpReader) connect() error {
	delay := r.h.o.RetryDelay
	for {
		err := r.request()
		if err == nil {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) || r.ctx.Err() != nil {
			return err
		}
		r.fails++
		if r.fails > r.h.o.Retries {
			return r.giveUp(err)
		}
		if err := r.h.o.Sleep(r.ctx, delay); err != nil {
			return err
		}
		delay *= 2
	}
}

func (r *httpReader) request() error {
	// Each connection has its own context: cancelling it is what ends a
	// blocked header wait or body read when a limit is hit.
	conn, cancel := context.WithCancelCause(r.ctx)
	req, err := http.NewRequestWithContext(conn, http.MethodGet, r.h.URL, nil)
	if err != nil {
		cancel(nil)
		return errFatal{err}
	}
	if r.pos > 0 || r.end >= 0 {
		rng := fmt.Sprintf("bytes=%d-", r.pos)
		if r.end >= 0 {
			rng += strconv.FormatInt(r.end-1, 10)
		}
		req.Header.Set("Range", rng)
		if r.h.etag != "" {
			req.Header.Set("If-Range", r.h.etag)
		} else if r.h.lastMod != "" {
			req.Header.Set("If-Range", r.h.lastMod)
		}
	}
	// Timeout bounds the whole wait for headers, dial and TLS included,
	// whatever the client (the transport's ResponseHeaderTimeout starts
	// only once the request is written, and an injected client has none).
	var hdr *time.Timer
	if t := r.h.o.Timeout; t > 0 {
		hdr = time.AfterFunc(t, func() { cancel(&stallError{"no response headers within " + fmtDur(t)}) })
	}
	resp, err := r.h.client.Do(req)
	if hdr != nil {
		hdr.Stop()
	}
	if err != nil {
		var se *stallError
		if errors.As(context.Cause(conn), &se) && r.ctx.Err() == nil {
			cancel(nil)
			return se
		}
		cancel(nil)
		var cv *tls.CertificateVerificationError
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) {
			return errFatal{fmt.Errorf("%s: %w", r.h.URL, err)} // retrying cannot fix trust
		}
		return fmt.Errorf("%s: %w", r.h.URL, err)
	}
	fail := func(fatal bool, format string, a ...any) error {
		resp.Body.Close()
		cancel(nil)
		err := fmt.Errorf("%s: "+format, append([]any{r.h.URL}, a...)...)
		if fatal {
			return errFatal{err}
		}
		return err
	}
	switch {
	case resp.StatusCode == http.StatusOK && r.pos == 0:
		if resp.ContentLength >= 0 {
			r.h.size = resp.ContentLength
		}
		// A ranged read from 0 answered with the whole object: Read
		// stops at end, Close drops the rest.
	case resp.StatusCode == http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != r.pos {
			return fail(true, "Content-Range %q for a request from %d", resp.Header.Get("Content-Range"), r.pos)
		}
		if total >= 0 {
			if r.h.size >= 0 && total != r.h.size {
				return fail(true, "size changed from %d to %d: %w", r.h.size, total, ErrChanged)
			}
			r.h.size = total
		}
	case resp.StatusCode == http.StatusOK:
		// If-Range failed, or the server ignores Range.
		if r.h.etag != "" || r.h.lastMod != "" {
			return fail(true, "server answered a resume with the whole object: %w", ErrChanged)
		}
		return fail(true, "server does not support Range requests (needed to start at %d)", r.pos)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// Nothing at or after pos: an empty remainder (the caller decides if that is short).
		resp.Body.Close()
		cancel(nil)
		r.body, r.conn, r.cancel = io.NopCloser(strings.NewReader("")), nil, nil
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fail(false, "%s", resp.Status)
	default:
		return fail(true, "%s", resp.Status)
	}
	if r.h.etag == "" && r.h.lastMod == "" {
		if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
			r.h.etag = et
		} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
			r.h.lastMod = lm
		}
	}
	r.body, r.conn, r.cancel = resp.Body, conn, cancel
	r.connBytes, r.connWait, r.winBytes, r.winWait = 0, 0, 0, 0
	return nil
}

func parseContentRange(s string) (start, total int64, ok bool) {
	// bytes START-END/TOTAL (TOTAL may be *)
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, false
		}
	}
	return start, total, true
}

func (r *httpReader) Read(p []byte) (int, error) {
	if r.end >= 0 {
		if r.pos >= r.end {
			return 0, io.EOF
		}
		p = p[:min(int64(len(p)), r.end-r.pos)]
	}
	for {
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		n, err := r.read(p)
		r.pos += int64(n)
		if err == nil {
			return n, nil
		}
		if err == io.EOF {
			if r.end >= 0 && (r.pos >= r.end || (r.h.size >= 0 && r.pos >= r.h.size)) {
				return n, io.EOF
			}
			if r.end < 0 && (r.h.size < 0 || r.pos >= r.h.size) {
				return n, io.EOF
			}
			err = io.ErrUnexpectedEOF // the body ended short of the known size
		}
		progress := r.progress()
		r.closeBody()
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if progress {
			r.fails = 0
		}
		r.fails++
		if r.fails > r.h.o.Retries {
			return n, r.giveUp(err)
		}
		if n > 0 {
			return n, nil
		}
		if err := r.h.o.Sleep(r.ctx, r.h.o.RetryDelay); err != nil {
			return 0, err
		}
	}
}

// speedCheck reports whether SpeedLimit and SpeedTime are both set.
func (r *httpReader) speedCheck() bool { return r.h.o.SpeedLimit > 0 && r.h.o.SpeedTime > 0 }

func (r *httpReader) slow() *stallError {
	return &stallError{fmt.Sprintf("below %d B/s for %s", r.h.o.SpeedLimit, fmtDur(r.h.o.SpeedTime))}
}

// progress: the connection that just ended moved the download on. Any
// byte counts, unless the speed check is on and the connection's bytes
// came slower than SpeedLimit on average: a server that sends a little
// and stalls, again and again, must use up the retries.
func (r *httpReader) progress() bool {
	if r.connBytes == 0 {
		return false
	}
	if !r.speedCheck() || r.connWait <= 0 {
		return true
	}
	return float64(r.connBytes) >= float64(r.h.o.SpeedLimit)*r.connWait.Seconds()
}

// read is one body read under the idle and speed limits: a timer cancels
// the connection's context (which unblocks the read) at the first moment a
// limit is certainly hit. Only time blocked here counts; the caller's time
// between reads never does. No goroutine outlives the read: the timer is
// stopped, and a fired timer's function only calls cancel.
func (r *httpReader) read(p []byte) (int, error) {
	o := &r.h.o
	var d time.Duration
	var cause *stallError
	if o.IdleTimeout > 0 {
		d, cause = o.IdleTimeout, &stallError{"no byte for " + fmtDur(o.IdleTimeout)}
	}
	if r.speedCheck() {
		// With no more bytes the current window fails at its end, or,
		// if it already has enough, the next (empty) one does.
		s := o.SpeedTime - r.winWait
		if float64(r.winBytes) >= float64(o.SpeedLimit)*o.SpeedTime.Seconds() {
			s += o.SpeedTime
		}
		if s < 0 {
			s = 0
		}
		if cause == nil || s < d {
			d, cause = s, r.slow()
		}
	}
	var t *time.Timer
	if cause != nil && r.cancel != nil {
		cancel, c := r.cancel, cause
		t = time.AfterFunc(d, func() { cancel(c) })
	}
	start := time.Now()
	n, err := r.body.Read(p)
	wait := time.Since(start)
	if t != nil {
		t.Stop()
	}
	r.connBytes += int64(n)
	r.connWait += wait
	if err != nil {
		var se *stallError
		if r.conn != nil && r.ctx.Err() == nil && errors.As(context.Cause(r.conn), &se) {
			err = se
		}
		return n, err
	}
	if r.speedCheck() {
		r.winBytes += int64(n)
		r.winWait += wait
		if r.winWait >= o.SpeedTime {
			if float64(r.winBytes) < float64(o.SpeedLimit)*r.winWait.Seconds() {
				return n, r.slow()
			}
			r.winBytes, r.winWait = 0, 0
		}
	}
	return n, nil
}

func (r *httpReader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		r.cancel(nil)
		r.cancel, r.conn = nil, nil
	}
}

func (r *httpReader) Close() error {
	var err error
	if r.body != nil {
		err = r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		r.cancel(nil)
		r.cancel, r.conn = nil, nil
	}
	return err
}
