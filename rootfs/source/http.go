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
	r := &httpReader{h: h, ctx: ctx, pos: off}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return r, nil
}

type httpReader struct {
	h     *HTTP
	ctx   context.Context
	pos   int64
	body  io.ReadCloser
	fails int
}

// errFatal marks failures a retry cannot fix.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

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
			return fmt.Errorf("%s: %w: %v", r.h.URL, ErrRetries, err)
		}
		if err := r.h.o.Sleep(r.ctx, delay); err != nil {
			return err
		}
		delay *= 2
	}
}

func (r *httpReader) request() error {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.h.URL, nil)
	if err != nil {
		return errFatal{err}
	}
	if r.pos > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.pos))
		if r.h.etag != "" {
			req.Header.Set("If-Range", r.h.etag)
		} else if r.h.lastMod != "" {
			req.Header.Set("If-Range", r.h.lastMod)
		}
	}
	resp, err := r.h.client.Do(req)
	if err != nil {
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
		r.body = io.NopCloser(strings.NewReader(""))
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
	r.body = resp.Body
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
	for {
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.pos += int64(n)
		if n > 0 {
			r.fails = 0
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF {
			if r.h.size < 0 || r.pos >= r.h.size {
				return n, io.EOF
			}
			err = io.ErrUnexpectedEOF // the body ended short of the known size
		}
		r.body.Close()
		r.body = nil
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		r.fails++
		if r.fails > r.h.o.Retries {
			return n, fmt.Errorf("%s at byte %d: %w: %v", r.h.URL, r.pos, ErrRetries, err)
		}
		if n > 0 {
			return n, nil
		}
		if err := r.h.o.Sleep(r.ctx, r.h.o.RetryDelay); err != nil {
			return 0, err
		}
	}
}

func (r *httpReader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}
