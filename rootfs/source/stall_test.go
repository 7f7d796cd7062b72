package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// These tests are about hangs: every read runs under a generous bound (the
// code before stall detection blocks forever in each of them) and its
// result says which limit ended it.

const hangBound = 10 * time.Second

// bounded runs f and fails the test if it does not return within hangBound.
func bounded[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangBound):
		t.Fatalf("%s: still blocked after %s", what, hangBound)
		panic("unreachable")
	}
}

type readResult struct {
	data []byte
	err  error
	took time.Duration
}

func readAllCtx(ctx context.Context, s Source, off int64) readResult {
	start := time.Now()
	rc, err := s.Open(ctx, off)
	if err != nil {
		return readResult{err: err, took: time.Since(start)}
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return readResult{data: b, err: err, took: time.Since(start)}
}

// startOf parses "bytes=N-".
func startOf(r *http.Request) int64 {
	v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSuffix(v, "-"), 10, 64)
	return n
}

// headers answers a request for payload from its Range start with
// Content-Length (and Content-Range), flushed, and returns the start.
func headers(w http.ResponseWriter, r *http.Request) int64 {
	start := startOf(r)
	w.Header().Set("ETag", `"v1"`)
	w.Header().Set("Content-Length", strconv.FormatInt(int64(len(payload))-start, 10))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(payload)-1, len(payload)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	w.(http.Flusher).Flush()
	return start
}

// stallServer is an httptest server whose request contexts also end when
// the test does: a failed test must not leave Close waiting for a handler
// whose client is stuck.
func stallServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() {
			select {
			case <-quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		h(w, r.WithContext(ctx))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(quit) }) // runs first
	return srv
}

// stallOpts: short limits, real sleeps, few retries.
func stallOpts() Options {
	o := DefaultOptions()
	o.Retries, o.RetryDelay, o.Timeout = 1, 10*time.Millisecond, 5*time.Second
	o.IdleTimeout, o.SpeedLimit, o.SpeedTime = 0, 0, 0
	return o
}

// noLeak fails if goroutines started since base are still running once
// the servers are closed (polling: they end asynchronously).
func noLeak(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before the test:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantStalled(t *testing.T, err error, url, limit string) {
	t.Helper()
	if !errors.Is(err, ErrStalled) || !errors.Is(err, ErrRetries) {
		t.Fatalf("error %v: want ErrStalled and ErrRetries", err)
	}
	for _, s := range []string{url, " at byte ", limit} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v reads as a cancellation", err)
	}
}

// (a) Headers, then one byte every 200ms: never idle for 5s, but far below
// 100 B/s; each connection is cut after 300ms and, being slower than the
// limit, is no progress, so the retries run out.
func TestHTTPStallSpeedLimit(t *testing.T) {
	base := runtime.NumGoroutine()
	var reqs atomic.Int32
	srv := stallServer(t, func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		start := headers(w, r)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := start; i < int64(len(payload)); i++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			w.Write(payload[i : i+1])
			w.(http.Flusher).Flush()
		}
	})
	o := stallOpts()
	o.IdleTimeout, o.SpeedLimit, o.SpeedTime = 5*time.Second, 100, 300*time.Millisecond
	s, err := New(srv.URL+"/b", o)
	if err != nil {
		t.Fatal(err)
	}
	res := bounded(t, "trickling server", func() readResult { return readAllCtx(context.Background(), s, 0) })
	wantStalled(t, res.err, srv.URL+"/b", "below 100 B/s for 300ms")
	if !bytes.Equal(res.data, payload[:len(res.data)]) {
		t.Errorf("the %d bytes read before the stall are not the payload's", len(res.data))
	}
	if n := reqs.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (Retries 1)", n)
	}
	srv.Close()
	noLeak(t, base)
}

// (b) Headers with Content-Length, then silence.
func TestHTTPStallIdle(t *testing.T) {
	base := runtime.NumGoroutine()
	var reqs atomic.Int32
	srv := stallServer(t, func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		headers(w, r)
		<-r.Context().Done()
	})
	o := stallOpts()
	o.Retries, o.IdleTimeout = 2, 300*time.Millisecond
	s, _ := New(srv.URL, o)
	res := bounded(t, "silent server", func() readResult { return readAllCtx(context.Background(), s, 0) })
	wantStalled(t, res.err, srv.URL, "no byte for 300ms")
	if n := reqs.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (Retries 2)", n)
	}
	if res.took < 900*time.Millisecond {
		t.Errorf("gave up after %s: three 300ms idle limits take longer", res.took)
	}
	srv.Close()
	noLeak(t, base)
}

// (c) A server that accepts the connection and never answers: Timeout
// bounds the wait for headers, with the default client (which also has a
// ResponseHeaderTimeout) and with an injected one (which has none).
func TestHTTPHeadersTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { // read the request, answer nothing
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	defer ln.Close()
	url := "http://" + ln.Addr().String() + "/b"
	for _, name := range []string{"default client", "injected client"} {
		t.Run(name, func(t *testing.T) {
			conns.Store(0)
			o := stallOpts()
			o.Timeout = 300 * time.Millisecond
			if name == "injected client" {
				o.Client = &http.Client{Transport: &http.Transport{}}
			}
			s, _ := New(url, o)
			res := bounded(t, "server silent before headers", func() readResult { return readAllCtx(context.Background(), s, 0) })
			wantStalled(t, res.err, url, "no response headers within 300ms")
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2 (Retries 1)", n)
			}
		})
	}
}

// (d) The first connection stalls after 100000 bytes; the reader
// reconnects with a Range request and gets the rest.
func TestHTTPStallOnceResumes(t *testing.T) {
	var reqs atomic.Int32
	var ranges []string
	srv := stallServer(t, func(w http.ResponseWriter, r *http.Request) {
		if reqs.Add(1) == 1 {
			headers(w, r)
			w.Write(payload[:100000])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		ranges = append(ranges, r.Header.Get("Range")+" "+r.Header.Get("If-Range"))
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(payload))
	})
	o := stallOpts()
	o.IdleTimeout = 300 * time.Millisecond
	o.SpeedLimit, o.SpeedTime = 1024, 300*time.Millisecond
	s, _ := New(srv.URL, o)
	res := bounded(t, "server stalling once", func() readResult { return readAllCtx(context.Background(), s, 0) })
	if res.err != nil || !bytes.Equal(res.data, payload) {
		t.Fatalf("read: %v, %d bytes (want %d, equal)", res.err, len(res.data), len(payload))
	}
	if reqs.Load() != 2 || len(ranges) != 1 || ranges[0] != `bytes=100000- "v1"` {
		t.Errorf("%d requests, resumes %q; want one resume `bytes=100000- \"v1\"`", reqs.Load(), ranges)
	}
}

// (e) Cancelling the context ends a read blocked on a stalled body at
// once: with no limits at all, and while waiting out the retry delay after
// a stall.
func TestHTTPCancelDuringStall(t *testing.T) {
	srv := stallServer(t, func(w http.ResponseWriter, r *http.Request) {
		headers(w, r)
		w.Write(payload[:10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	for _, c := range []struct {
		name  string
		idle  time.Duration
		delay time.Duration
	}{{"no limits", 0, time.Millisecond}, {"in the retry delay", 100 * time.Millisecond, time.Hour}} {
		t.Run(c.name, func(t *testing.T) {
			o := stallOpts()
			o.IdleTimeout, o.RetryDelay, o.Retries = c.idle, c.delay, 5
			s, _ := New(srv.URL, o)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(500*time.Millisecond, cancel)
			res := bounded(t, "cancelled read", func() readResult { return readAllCtx(ctx, s, 0) })
			if !errors.Is(res.err, context.Canceled) || res.took > 5*time.Second {
				t.Fatalf("after cancel: %v after %s; want context.Canceled soon after 500ms", res.err, res.took)
			}
			if errors.Is(res.err, ErrStalled) {
				t.Errorf("a cancellation reads as a stall: %v", res.err)
			}
		})
	}
}

// A caller slower than the limits (writing to flash between reads, say) is
// not a stalled server: only time blocked in Read counts.
func TestHTTPSlowReaderIsNotStalled(t *testing.T) {
	var reqs atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(payload[:64<<10]))
	}))
	defer srv.Close()
	o := stallOpts()
	o.Retries = 0
	o.IdleTimeout, o.SpeedLimit, o.SpeedTime = 50*time.Millisecond, 1<<20, 100*time.Millisecond
	s, _ := New(srv.URL, o)
	rc, err := s.Open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := rc.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if !bytes.Equal(got, payload[:64<<10]) || reqs.Load() != 1 {
		t.Fatalf("%d bytes in %d requests", len(got), reqs.Load())
	}
}

func TestValidateStallOptions(t *testing.T) {
	for key, o := range map[string]Options{
		"idle_timeout": {IdleTimeout: -1},
		"speed_limit":  {SpeedLimit: -1},
		"speed_time":   {SpeedTime: -time.Second},
	} {
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s < 0: %v, want an error naming it", key, err)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	o := DefaultOptions()
	o.IdleTimeout, o.SpeedLimit, o.SpeedTime = 0, 0, 0
	if err := o.Validate(); err != nil {
		t.Errorf("all disabled: %v", err)
	}
}
