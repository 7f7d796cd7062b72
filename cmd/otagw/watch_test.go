package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// eventServer serves GET /v1/events on a unix socket by the contract of
// the daemon: NDJSON, one api.Event per line, the first a state event with
// the current state, ?types= filters, a lagged event when the subscriber is
// dropped. After the script it ends as told: "lagged" (a lagged event, then
// the stream ends), "close" (the stream ends cleanly), "abort" (the
// connection drops mid-stream) or "hang" (waits for the client to go).
type eventServer struct {
	sock    string
	current string
	script  []api.Event
	end     string
	query   chan string // the types= each request asked for
}

var t0 = time.Date(2026, 12, 2, 14, 3, 7, 0, time.UTC)

func startEventServer(t *testing.T, current string, script []api.Event, end string) *eventServer {
	t.Helper()
	es := &eventServer{sock: filepath.Join(t.TempDir(), "otagw.sock"), current: current, script: script, end: end, query: make(chan string, 4)}
	srv := api.NewServer(api.Access{}, nil)
	srv.Read("GET /v1/events", es.serve)
	ln, err := api.Listen(es.sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return es
}

func (es *eventServer) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("types")
	es.query <- q
	var types []string
	if q != "" {
		types = strings.Split(q, ",")
	}
	sw := api.NewStreamWriter(w)
	seq := uint64(0)
	send := func(ev api.Event) {
		seq++
		ev.Seq = seq
		if len(types) == 0 || slices.Contains(types, ev.Type) {
			sw.Send(ev)
		}
	}
	send(api.Event{Time: t0, Type: api.EventState, State: es.current})
	for _, ev := range es.script {
		send(ev)
	}
	switch es.end {
	case "lagged":
		send(api.Event{Time: t0.Add(time.Minute), Type: api.EventLagged, Message: "256 events behind"})
	case "abort":
		panic(http.ErrAbortHandler) // the connection drops without the stream's end
	case "hang":
		<-r.Context().Done()
	}
}

// installFlow is the script of an install as the daemon publishes it.
func installFlow() []api.Event {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	const total = 100 << 20
	evs := []api.Event{
		{Time: at(1), Type: api.EventState, State: api.StateDownloading, From: api.StateIdle, Source: "cli", Bundle: "https://updates.example/gw-1.4.0.otab"},
		{Time: at(2), Type: api.EventState, State: api.StateInstalling, From: api.StateDownloading, Release: "1.4.0", Slot: "B", Message: "writing slot B"},
	}
	for i, done := range []int64{0, 5 << 20, 15 << 20, 40 << 20, 45 << 20, 100 << 20} {
		evs = append(evs, api.Event{Time: at(3 + i), Type: api.EventProgress, State: api.StateInstalling, Slot: "B", Payload: "rootfs", Done: done, Total: total, Rate: 5 << 20})
	}
	return append(evs,
		api.Event{Time: at(10), Type: api.EventState, State: api.StateInstalled, From: api.StateInstalling, Release: "1.4.0", Slot: "B", Message: "reboot to activate"},
		api.Event{Time: at(11), Type: api.EventState, State: api.StateRebooting, From: api.StateInstalled, Release: "1.4.0", Slot: "B"},
	)
}

func watch(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(ctx, append([]string{"watch"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func TestWatchJSONUntil(t *testing.T) {
	es := startEventServer(t, api.StateIdle, installFlow(), "hang")
	out, errOut, code := watch(t, context.Background(), "--json", "--until", api.StateInstalled, "--socket", es.sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// every event up to and including the state entered, as it came
	var want bytes.Buffer
	all := append([]api.Event{{Time: t0, Type: api.EventState, State: api.StateIdle}}, installFlow()...)
	for i, ev := range all[:len(all)-1] {
		ev.Seq = uint64(i + 1)
		b, _ := json.Marshal(ev)
		want.Write(append(b, '\n'))
	}
	if out != want.String() {
		t.Errorf("output:\n%s\nwant:\n%s", out, want.String())
	}
	if errOut != "" {
		t.Errorf("stderr: %s", errOut)
	}
}

func TestWatchHuman(t *testing.T) {
	es := startEventServer(t, api.StateIdle, installFlow(), "hang")
	out, errOut, code := watch(t, context.Background(), "--until", api.StateRebooting, "--socket", es.sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `14:03:07 state idle
14:03:08 state downloading (from idle) bundle https://updates.example/gw-1.4.0.otab
14:03:09 state installing (from downloading) release 1.4.0 slot B: writing slot B
14:03:10 progress slot B rootfs 0% (0.0 MiB of 100.0 MiB)
14:03:12 progress slot B rootfs 15% (15.0 MiB of 100.0 MiB)
14:03:13 progress slot B rootfs 40% (40.0 MiB of 100.0 MiB)
14:03:15 progress slot B rootfs 100% (100.0 MiB of 100.0 MiB)
14:03:17 state installed (from installing) release 1.4.0 slot B: reboot to activate
14:03:18 state rebooting (from installed) release 1.4.0 slot B
`
	// (the 5% and 45% steps stay within a tenth already printed)
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestWatchDevicesAndFailure(t *testing.T) {
	script := []api.Event{
		{Time: t0.Add(time.Second), Type: api.EventState, State: api.StateFlashing, From: api.StateIdle},
		{Time: t0.Add(2 * time.Second), Type: api.EventDevice, State: api.StateFlashing, Device: "pump", Bus: "can0", Phase: "write", Retries: 2},
		{Time: t0.Add(3 * time.Second), Type: api.EventDevice, State: api.StateFlashing, Device: "pump", Bus: "can0", Result: "success", Release: "1.2.0"},
		{Time: t0.Add(4 * time.Second), Type: api.EventDone, State: api.StateFlashing, Devices: []api.DeviceResult{
			{Device: "pump", Result: "success"}, {Device: "valve", Result: "failed"}, {Device: "door", Result: "success"}}},
		{Time: t0.Add(5 * time.Second), Type: api.EventState, State: api.StateFailed, From: api.StateFlashing, Device: "valve", Kind: "verify-failed", Error: "CRC mismatch at 0x08004000", Attempt: 2},
	}
	es := startEventServer(t, api.StateIdle, script, "hang")
	out, errOut, code := watch(t, context.Background(), "--until", api.StateIdle, "--socket", es.sock)
	// idle is the current state when watch starts: that counts as entered
	if code != 0 || out != "14:03:07 state idle\n" {
		t.Fatalf("--until the current state: exit %d, output %q, %s", code, out, errOut)
	}
	out, errOut, code = watch(t, context.Background(), "--until", api.StateCommitted, "--socket", es.sock)
	if code != 1 {
		t.Errorf("failed before --until: exit %d, want 1", code)
	}
	want := `14:03:07 state idle
14:03:08 state flashing (from idle)
14:03:09 device pump write (retries 2)
14:03:10 device pump success release 1.2.0
14:03:11 done devices: 2 success, 1 failed
14:03:12 state failed (from flashing) device valve attempt 2: verify-failed: CRC mismatch at 0x08004000
`
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if errOut != "otagw watch: the daemon entered failed before committed\n" {
		t.Errorf("stderr: %q", errOut)
	}
}

func TestWatchLagged(t *testing.T) {
	es := startEventServer(t, api.StateInstalling, nil, "lagged")
	out, errOut, code := watch(t, context.Background(), "--socket", es.sock)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if want := "14:03:07 state installing\n14:04:07 lagged: 256 events behind\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if !strings.Contains(errOut, "lagged") {
		t.Errorf("stderr: %q", errOut)
	}
	// with --json the lagged event is the last line too
	out, _, code = watch(t, context.Background(), "--json", "--socket", es.sock)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last api.Event
	if code != 1 || len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &last) != nil || last.Type != api.EventLagged {
		t.Errorf("--json: exit %d, output %q", code, out)
	}
}

func TestWatchStreamEnds(t *testing.T) {
	for _, end := range []string{"close", "abort"} {
		t.Run(end, func(t *testing.T) {
			es := startEventServer(t, api.StateIdle, installFlow()[:2], end)
			out, errOut, code := watch(t, context.Background(), "--until", api.StateInstalled, "--socket", es.sock)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if n := strings.Count(out, "\n"); n != 3 {
				t.Errorf("%d lines before the end, want 3:\n%s", n, out)
			}
			if !strings.HasPrefix(errOut, "otagw watch: ") {
				t.Errorf("stderr: %q", errOut)
			}
			if end == "close" && !strings.Contains(errOut, api.ErrStreamCut.Error()) {
				t.Errorf("a stream the daemon closed: %q", errOut)
			}
		})
	}
}

// lineWriter tells when a line containing mark was written.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	mark  string
	seen  chan struct{}
	fired bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.fired && strings.Contains(w.buf.String(), w.mark) {
		close(w.seen)
		w.fired = true
	}
	return len(p), nil
}

func TestWatchInterrupted(t *testing.T) {
	es := startEventServer(t, api.StateIdle, installFlow(), "hang")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan struct{})
	out := &lineWriter{mark: "state rebooting", seen: seen}
	var errb bytes.Buffer
	done := make(chan int)
	go func() { done <- dispatch(ctx, []string{"watch", "--types", "state", "--socket", es.sock}, out, &errb) }()
	<-seen
	cancel() // what Ctrl-C and SIGTERM do (main's signal.NotifyContext)
	if code := <-done; code != 0 {
		t.Errorf("exit %d after the interrupt, want 0: %s", code, errb.String())
	}
	if q := <-es.query; q != "state" {
		t.Errorf("types asked for: %q", q)
	}
	want := `14:03:07 state idle
14:03:08 state downloading (from idle) bundle https://updates.example/gw-1.4.0.otab
14:03:09 state installing (from downloading) release 1.4.0 slot B: writing slot B
14:03:17 state installed (from installing) release 1.4.0 slot B: reboot to activate
14:03:18 state rebooting (from installed) release 1.4.0 slot B
`
	if out.buf.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.buf.String(), want)
	}
}

func TestWatchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--until", "installing-now"},
		{"--types", "state,gossip"},
		{"--types", "progress", "--until", "installed"},
		{"extra"},
	} {
		_, errOut, code := watch(t, context.Background(), append(args, "--socket", "/nonexistent.sock")...)
		if code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	_, errOut, code := watch(t, context.Background(), "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(errOut, "not running") {
		t.Errorf("no daemon: exit %d, %q", code, errOut)
	}
	// a daemon without the route
	sock, _ := serveStream(t, "POST /v1/install", nil)
	_, errOut, code = watch(t, context.Background(), "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "no event stream") {
		t.Errorf("an older daemon: exit %d, %q", code, errOut)
	}
}

// On a terminal progress is a live bar, ended before the next line.
func TestWatchBar(t *testing.T) {
	var b bytes.Buffer
	p := &eventPrinter{w: &b, tty: true}
	for _, ev := range installFlow()[1:] {
		p.print(ev)
	}
	out := b.String()
	installing := "14:03:09 state installing (from downloading) release 1.4.0 slot B: writing slot B\n"
	installed := "\n14:03:17 state installed (from installing) release 1.4.0 slot B: reboot to activate\n"
	i, j := strings.Index(out, installing), strings.Index(out, installed)
	if i < 0 || j < 0 {
		t.Fatalf("the state lines are not whole lines:\n%q", out)
	}
	bar := out[i+len(installing) : j]
	if !strings.Contains(bar, "slot B rootfs") || !strings.Contains(bar, "100%") || strings.Contains(bar, "progress") {
		t.Errorf("bar: %q", bar)
	}
}
