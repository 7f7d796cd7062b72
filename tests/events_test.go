package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// vmHWM is a process's peak resident memory in KiB (/proc/PID/status).
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestStalledSubscriberDropped: a GET /v1/events subscriber that never
// reads does not hold up an install; it is dropped, and what it finds when
// it reads at last ends with a lagged event. A subscriber that reads (the
// state and done events: ?types=state,done) gets each of them, in order.
//
// It also logs, for scripts/bench-events.sh, the install times without
// and with the stalled subscriber, the daemon's VmHWM after each, and the
// physical limit of the same write (the image copied to a file and synced).
func TestStalledSubscriberDropped(t *testing.T) {
	t.Parallel()
	const size, chunk = 48 << 20, 16 << 10 // 3072 chunks: one progress event each
	g := newGateway(t, size+(1<<20), "")
	b := g.bundle(t, "2.0.0", testImage(size), "--chunk-size", strconv.Itoa(chunk))
	d := startReady(t, g.Config)
	pid := d.cmd.Process.Pid

	install := func(what string) time.Duration {
		t.Helper()
		t0 := time.Now()
		if out, code := g.install(t, b); code != 0 {
			t.Fatalf("install %s: %s", what, out)
		}
		return time.Since(t0)
	}
	// Physical limit: the same bytes written to a file of the slot's disk and synced.
	limit := func() time.Duration {
		img, _ := os.ReadFile(filepath.Join(g.Dir, "image-2.0.0"))
		t0 := time.Now()
		f, err := os.Create(filepath.Join(g.Dir, "limit.img"))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(img)
		f.Sync()
		f.Close()
		return time.Since(t0)
	}()

	plain := install("without a subscriber")
	hwmPlain := vmHWM(t, pid)

	// The stalled subscriber: a request, then nothing read until the end.
	conn, err := net.Dial("unix", g.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.UnixConn).SetReadBuffer(4096)
	if _, err := io.WriteString(conn, "GET /v1/events HTTP/1.1\r\nHost: otagw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	reader := followEventsOf(t, g.Socket, "/v1/events?types=state,done")
	time.Sleep(200 * time.Millisecond) // both subscribed (the reader's first event arrives below)

	stalled := install("with a stalled subscriber")
	hwmStalled := vmHWM(t, pid)
	again := install("without a subscriber, again")
	hwmAgain := vmHWM(t, pid)

	// The reader got the state entries and the outcomes of both installs,
	// in order.
	var seen []string
	var last uint64
	deadline := time.After(30 * time.Second)
	for done := 0; done < 2; {
		select {
		case ev, ok := <-reader.ch:
			if !ok {
				t.Fatalf("the reading subscriber's stream ended")
			}
			if ev.Type == api.EventLagged {
				t.Fatalf("the reading subscriber was dropped: %+v", ev)
			}
			if ev.Type != api.EventState && ev.Type != api.EventDone {
				t.Fatalf("?types=state,done let through %+v", ev)
			}
			if ev.Seq <= last && last != 0 {
				t.Fatalf("reading subscriber: event %d after %d", ev.Seq, last)
			}
			last = ev.Seq
			seen = append(seen, ev.Type+":"+ev.State)
			if ev.Type == api.EventDone {
				done++
			}
		case <-deadline:
			t.Fatalf("the reading subscriber did not see both installs end: %v", seen)
		}
	}
	want := "state:installed state:downloading state:installing state:installed done:installing " +
		"state:downloading state:installing state:installed done:installing"
	if got := strings.Join(seen, " "); got != want {
		t.Errorf("the reading subscriber saw %q, want %q", got, want)
	}

	// The stalled one reads now: its stream ends, with lagged.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("stalled subscriber's answer: %v", err)
	}
	sc := bufio.NewScanner(resp.Body)
	var evs []api.Event
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stalled subscriber: line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("the stalled subscriber's stream did not end after lagged: %v (%d events read)", err, len(evs))
	}
	if len(evs) < 2 || evs[0].Type != api.EventState || evs[len(evs)-1].Type != api.EventLagged {
		t.Fatalf("stalled subscriber read %d events; want the state first and lagged last", len(evs))
	}
	if len(evs) >= 2*size/chunk { // two installs' progress events alone
		t.Errorf("the stalled subscriber got %d events: it was not dropped", len(evs))
	}
	t.Logf("bench-events: limit_s=%.3f plain_s=%.3f stalled_s=%.3f again_s=%.3f hwm_plain_kib=%d hwm_stalled_kib=%d hwm_again_kib=%d stalled_events=%d chunks=%d",
		limit.Seconds(), plain.Seconds(), stalled.Seconds(), again.Seconds(), hwmPlain, hwmStalled, hwmAgain, len(evs), size/chunk)
	d.stop(t)
}
