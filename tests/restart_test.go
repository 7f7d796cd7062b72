package tests

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// eventStream reads GET /v1/events of one daemon run as NDJSON.
type eventStream struct {
	ch     chan api.Event
	cancel context.CancelFunc
}

// followEvents follows the daemon through `otagw watch --json`, as an
// operator's script would.
func followEvents(t *testing.T, sock string) *eventStream {
	t.Helper()
	ch, stop := followWatch(t, sock)
	return &eventStream{ch: ch, cancel: stop}
}

// followEventsOf reads path (GET /v1/events with a query) as NDJSON.
func followEventsOf(t *testing.T, sock, path string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://otagw"+path, nil)
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		cancel()
		t.Fatalf("GET /v1/events: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &eventStream{ch: make(chan api.Event, 100000), cancel: cancel}
	go func() {
		defer close(s.ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev api.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = api.Event{Type: "undecodable", Message: sc.Text()}
			}
			s.ch <- ev
		}
	}()
	t.Cleanup(cancel)
	return s
}

// restartLog is the state events of a whole flow over several daemon runs.
type restartLog struct {
	states []string // every state entered, in order, across runs
	firsts []string // the first state event of each run (the restored state)
}

// reach is waitState unless the daemon is in want already (the first
// event of the stream said so).
func (l *restartLog) reach(t *testing.T, s *eventStream, want string, d *daemonProc) {
	t.Helper()
	if len(l.states) > 0 && l.states[len(l.states)-1] == want {
		return
	}
	l.waitState(t, s, want, d)
}

// waitState reads events until a state event entering want; it records
// every state event on the way.
func (l *restartLog) waitState(t *testing.T, s *eventStream, want string, d *daemonProc) api.Event {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				t.Fatalf("the event stream ended waiting for state %s; states so far %v\n%s", want, l.states, d.out.String())
			}
			if ev.Type == "undecodable" || ev.Type == api.EventLagged {
				t.Fatalf("event stream: %+v", ev)
			}
			if ev.Type != api.EventState {
				continue
			}
			l.states = append(l.states, ev.State)
			if ev.State == want {
				return ev
			}
		case <-timeout:
			t.Fatalf("no state %s within 90 s; states so far %v\n%s", want, l.states, d.out.String())
		}
	}
}

// run starts the daemon, follows its events, and checks the state it
// restored (its log's state entry from starting) is want. The first
// event of the stream is the current state: the restored one, or one the
// daemon moved on to before the subscription (a reboot in an open window).
func (l *restartLog) run(t *testing.T, g *gateway, want string) (*daemonProc, *eventStream) {
	t.Helper()
	d := g.start(t)
	s := followEvents(t, g.Socket)
	var first api.Event
	select {
	case first = <-s.ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no first event")
	}
	if first.Type != api.EventState {
		t.Fatalf("first event of GET /v1/events: %+v, want the current state", first)
	}
	restored := restoredState(d.out.String())
	l.firsts = append(l.firsts, restored)
	if restored != want {
		t.Fatalf("restart %d: the daemon restored %q (now %s: %s), want %s\n%s", len(l.firsts), restored, first.State, first.Message, want, d.out.String())
	}
	l.states = append(l.states, restored)
	if first.State != restored {
		l.states = append(l.states, first.State)
	}
	return d, s
}

// restoredState is the state the daemon's log says it entered from
// starting (console format: state {"event": "X", "state": "X", "from": "starting", ...}).
func restoredState(log string) string {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"from": "starting"`) {
			continue
		}
		_, rest, ok := strings.Cut(line, `"state": "`)
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, `"`)
		return v
	}
	return ""
}

func kill(t *testing.T, d *daemonProc, s *eventStream) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	s.cancel()
}

// inOrder reports whether want is a subsequence of got.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// slowBundleServer serves a file over HTTP on 127.0.0.1 at about
// 2 MiB/s, so that an install of it is still running when it is killed.
func slowBundleServer(t *testing.T, path string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		http.ServeContent(slowWriter{w}, r, filepath.Base(path), fi.ModTime(), f)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(path)
}

type slowWriter struct{ http.ResponseWriter }

func (s slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 32<<10)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[k:]
		time.Sleep(15 * time.Millisecond)
	}
	return n, nil
}

// restartGateway is a flow gateway (file boot environment, `otagw sim
// boot`, a marker-file reboot) that reboots in an always-open maintenance
// window, with one simulated STM32 whose precondition takes two seconds
// (so that a fan-out is long enough to be killed in), and a health check
// round of two seconds (so that the event stream, connected after READY=1,
// sees the assessment end).
func restartGateway(t *testing.T, assessment string) (*gateway, string) {
	t.Helper()
	dir := testDir(t)
	reboot := filepath.Join(dir, "reboot.sh")
	os.WriteFile(reboot, []byte("#!/bin/sh\necho \"$OTAGW_REBOOT_REASON\" > "+filepath.Join(dir, "rebooted")+"\n"), 0o755)
	pty := simSTM32(t, "--chip", "0x410")
	g := newGatewayIn(t, dir, 32<<20, fmt.Sprintf(`  resume_backoff: 100ms
health:
  checks:
    - {name: app-data, command: [/bin/sh, -c, "sleep 2; test -f %s"], timeout: 20s}
assessment:
%s  committed_unit: ""
maintenance:
  windows:
    - {name: always, start: "* * * * *", duration: 5m}
  reboot: window
downstream:
  buses:
    - {name: uart1, transport: uart, port: %s, parity: none, reset: manual}
  devices:
    - {name: pump, bus: uart1, protocol: stm32-rom, family: F1, product_id: 0x410, precondition: "sleep 2"}
  backoff: 10ms
`, filepath.Join(dir, "healthy"), assessment, pty),
		fmt.Sprintf("  uptime_file: %s\n  reboot_command: [/bin/sh, %s]\n", filepath.Join(dir, "uptime"), reboot))
	img := make([]byte, 8<<10)
	rand.Read(img)
	bin := filepath.Join(dir, "fw.bin")
	os.WriteFile(bin, img, 0o644)
	pkg := filepath.Join(dir, "fw.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(g.Keys, "signing.key"), "--target", "F1",
		"--product-id", "0x410", "--version", "1.2.0", "--address", "0x08000000", bin, "-o", pkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	return g, pkg
}

// TestRestartInEveryState SIGKILLs the daemon in each state of the good
// flow in turn (install → reboot → assess → commit → MCU fan-out) and of
// the bad one (install → reboot → failing check → rollback), restarts
// it, and checks it resumes or reports the right state; GET /v1/events
// shows the states of the whole flow in order.
func TestRestartInEveryState(t *testing.T) {
	t.Parallel()
	t.Run("commit", func(t *testing.T) {
		t.Parallel()
		g, pkg := restartGateway(t, "  deadline: 60s\n  retry_interval: 1s\n")
		if s := g.boot(t); s != "A" {
			t.Fatalf("first boot: %s", s)
		}
		bundle := g.bundle(t, "2.0.0", testImage(8<<20), "mcu="+pkg)
		url := slowBundleServer(t, bundle)
		var l restartLog

		d, s := l.run(t, g, api.StateIdle)
		kill(t, d, s) // killed in idle

		d, s = l.run(t, g, api.StateIdle)
		cli := exec.Command(otagwBin, "install", "--socket", g.Socket, url)
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		l.waitState(t, s, api.StateDownloading, d)
		l.waitState(t, s, api.StateInstalling, d)
		for ev := range s.ch { // killed in installing, once it wrote something
			if ev.Type == api.EventProgress && ev.Done >= 2<<20 {
				break
			}
		}
		kill(t, d, s)
		cli.Wait()

		// The interrupted install resumes by itself from its checkpoint.
		d, s = l.run(t, g, api.StateInstalling)
		l.waitState(t, s, api.StateInstalled, d)
		kill(t, d, s) // killed in installed (the reboot may have begun)

		d, s = l.run(t, g, api.StateInstalled)
		l.reach(t, s, api.StateRebooting, d) // the window is open: it reboots
		kill(t, d, s)                        // killed in rebooting: the reboot
		if b := g.boot(t); b != "B" {
			t.Fatalf("boot after the install: %s", b)
		}

		d, s = l.run(t, g, api.StateAssessing) // no "healthy" file yet: the checks fail
		kill(t, d, s)                          // killed in assessing
		if b := g.boot(t); b != "B" {
			t.Fatalf("second try of B: booted %s", b)
		}
		os.WriteFile(filepath.Join(g.Dir, "healthy"), nil, 0o644)

		d, s = l.run(t, g, api.StateAssessing)
		ev := l.waitState(t, s, api.StateCommitted, d)
		if ev.Release != "2.0.0" || ev.Slot != "B" {
			t.Errorf("committed event %+v", ev)
		}
		l.waitState(t, s, api.StateFlashing, d)
		kill(t, d, s) // killed in flashing: the precondition takes 2 s

		d, s = l.run(t, g, api.StateFlashing) // the fan-out of the release's firmware runs again
		l.waitState(t, s, api.StateCommitted, d)
		kill(t, d, s) // killed in committed

		d, s = l.run(t, g, api.StateCommitted)
		st := statusOf(t, g.Socket)
		if st.Release == nil || st.Release.Committed != "2.0.0" || st.Release.Pending != "" {
			t.Errorf("release after the flow: %+v", st.Release)
		}
		if len(st.MCUs) != 1 || st.MCUs[0].Result != "success" || st.MCUs[0].Version != "1.2.0" {
			t.Errorf("MCU after the flow: %+v", st.MCUs)
		}
		kill(t, d, s)

		want := []string{api.StateIdle, api.StateDownloading, api.StateInstalling, api.StateInstalled, api.StateRebooting,
			api.StateAssessing, api.StateCommitted, api.StateFlashing, api.StateCommitted}
		t.Logf("states: %v; restored at each start: %v", l.states, l.firsts)
		if !inOrder(l.states, want) {
			t.Errorf("states of the flow %v, want in order %v", l.states, want)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		t.Parallel()
		g, _ := restartGateway(t, "  deadline: 3s\n  retry_interval: 1s\n")
		if s := g.boot(t); s != "A" {
			t.Fatalf("first boot: %s", s)
		}
		bundle := g.bundle(t, "2.0.0", testImage(4<<20))
		var l restartLog
		d, s := l.run(t, g, api.StateIdle)
		if out, code := g.install(t, bundle); code != 0 {
			t.Fatalf("install: %s", out)
		}
		l.waitState(t, s, api.StateInstalled, d)
		l.waitState(t, s, api.StateRebooting, d)
		kill(t, d, s)
		if b := g.boot(t); b != "B" {
			t.Fatalf("boot after the install: %s", b)
		}
		d, s = l.run(t, g, api.StateAssessing) // no "healthy" file: the required check fails
		ev := l.waitState(t, s, api.StateRolledBack, d)
		if ev.Slot != "B" || ev.Kind != "assessment-failed" || !strings.Contains(ev.Error, "app-data") {
			t.Errorf("rolled-back event %+v: want slot B, kind assessment-failed, naming the check", ev)
		}
		l.waitState(t, s, api.StateRebooting, d)
		kill(t, d, s) // killed in rebooting: the reboot into A
		if b := g.boot(t); b != "A" {
			t.Fatalf("boot after the rollback: %s", b)
		}
		d, s = l.run(t, g, api.StateRolledBack)
		g.waitState(t, "rolled back", func(s api.Status) bool { return strings.Contains(s.Message, "rolled back") })
		kill(t, d, s) // killed in rolled-back
		d, s = l.run(t, g, api.StateRolledBack)
		st := statusOf(t, g.Socket)
		if st.Release != nil && st.Release.Pending != "" {
			t.Errorf("release still pending after the rollback: %+v", st.Release)
		}
		if b := slot(st, "B"); b.State != "bad" || !strings.Contains(b.Note, "rolled back") {
			t.Errorf("slot B after the rollback: %+v", b)
		}
		kill(t, d, s)
		want := []string{api.StateIdle, api.StateDownloading, api.StateInstalling, api.StateInstalled, api.StateRebooting,
			api.StateAssessing, api.StateRolledBack, api.StateRebooting, api.StateRolledBack}
		t.Logf("states: %v; restored at each start: %v", l.states, l.firsts)
		if !inOrder(l.states, want) {
			t.Errorf("states of the flow %v, want in order %v", l.states, want)
		}
	})
}
