package tests

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// stallingServer serves one file with Range support until stall is set;
// from then on every request gets its headers and then silence.
func stallingServer(t *testing.T, path string) (string, *atomic.Bool, *atomic.Int64) {
	t.Helper()
	data := mustRead(t, path)
	var stall atomic.Bool
	var reqs atomic.Int64
	done := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		if stall.Load() {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-done:
			case <-r.Context().Done():
			}
			return
		}
		http.ServeContent(w, r, "b.otagw", time.Unix(1700000000, 0), bytes.NewReader(data))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(done); srv.Close() })
	return "http://" + ln.Addr().String() + "/b.otagw", &stall, &reqs
}

// TestResumeRetriesEndInFailedState: an install is cut (SIGKILL at its
// first checkpoint) and its server then stalls for good. The automatic
// resume at the next start meets the stall, retries with backoff, and ends
// in the failed state with the slot not bootable; a new install from a
// working server then succeeds. Before issue 9, item 1, every restart went
// straight back into the same endless stall.
func TestResumeRetriesEndInFailedState(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 16<<20, "  resume_retries: 2\n  resume_backoff: 200ms\n")
	cfg := strings.Replace(string(mustRead(t, g.Config)), "  checkpoint_bytes: 1048576\n",
		"  checkpoint_bytes: 1048576\n  source: {idle_timeout: 500ms, retries: 1, retry_delay: 100ms}\n", 1)
	os.WriteFile(g.Config, []byte(cfg), 0o644)
	img := testImage(6 << 20)
	b := g.bundle(t, "2.0.0", img)
	url, stall, reqs := stallingServer(t, b)

	d := startReady(t, g.Config, "OTAGW_FAULT=install.checkpoint")
	g.install(t, url)
	d.waitExit(t, "install.checkpoint")
	stall.Store(true)
	before := reqs.Load()
	t0 := time.Now()
	d = g.start(t)
	st := g.waitState(t, "failed", func(s api.Status) bool { return s.State == "failed" })
	if !strings.Contains(st.Message, "3 automatic attempts") {
		t.Errorf("failed state: %q, want the attempt count (3 = 1 + resume_retries)", st.Message)
	}
	if n := reqs.Load() - before; n < 3 {
		t.Errorf("%d requests after the restart, want at least one per attempt (3)", n)
	}
	if b := slot(st, "B"); b.State != "bad" || !strings.Contains(b.Note, "not bootable") {
		t.Errorf("slot B after the failed resume: %+v", b)
	}
	t.Logf("resume gave up after %v", time.Since(t0).Round(time.Millisecond))
	// The failure is final across a restart: no new attempt.
	d.stop(t)
	n := reqs.Load()
	d = g.start(t)
	time.Sleep(time.Second)
	if st := statusOf(t, g.Socket); st.State != "failed" || reqs.Load() != n {
		t.Errorf("after a restart: %s (%d new requests)", st.State, reqs.Load()-n)
	}
	// A fix (here: the same bundle from a working server) installs.
	stall.Store(false)
	if out, code := g.install(t, url); code != 0 {
		t.Fatalf("install after the failure: %s", out)
	}
	if st := statusOf(t, g.Socket); st.State != "installed" || !slotHolds(t, g.SlotB, img) {
		t.Errorf("after the new install: %s %q", st.State, st.Message)
	}
	d.stop(t)
}

// TestInstallStalledServersTimeOut: a server that trickles one byte a
// second and one that goes silent after its headers both end the install
// with "source-stalled" within the configured limits, the slot not
// bootable and the daemon free for the next install. Before issue 9,
// item 1, both hung for as long as the server kept the connection.
func TestInstallStalledServersTimeOut(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 8<<20, "")
	cfg := strings.Replace(string(mustRead(t, g.Config)), "  checkpoint_bytes: 1048576\n",
		"  checkpoint_bytes: 1048576\n  source: {idle_timeout: 1s, speed_limit: 1000, speed_time: 2s, retries: 1, retry_delay: 100ms}\n", 1)
	os.WriteFile(g.Config, []byte(cfg), 0o644)
	trickle := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A well-behaved server (Range answered), only slow.
			const size = 1 << 20
			start := 0
			if rg, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
				start, _ = strconv.Atoi(strings.TrimSuffix(rg, "-"))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, size-1, size))
				w.Header().Set("Content-Length", strconv.Itoa(size-start))
				w.WriteHeader(http.StatusPartialContent)
			} else {
				w.Header().Set("Content-Length", strconv.Itoa(size))
				w.WriteHeader(http.StatusOK)
			}
			for i := 0; i < 600; i++ {
				if _, err := w.Write([]byte{'O'}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return "http://" + ln.Addr().String() + "/trickle.otagw"
	}()
	d := g.start(t)
	for name, url := range map[string]string{"trickling": trickle, "silent": silentServer(t)} {
		t0 := time.Now()
		out, code := g.install(t, url)
		if code == 0 || !strings.Contains(out, "source-stalled") {
			t.Errorf("%s server: exit %d after %v: %s", name, code, time.Since(t0), out)
		}
		if st := statusOf(t, g.Socket); st.State == "downloading" || st.State == "installing" || !slot(st, "A").Primary {
			t.Errorf("%s server: after the stall: %s %q", name, st.State, st.Message)
		}
	}
	d.stop(t)
}
