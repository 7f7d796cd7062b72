package health_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/watchdog/health"
	"github.com/otagw/otagw/watchdog/internal/systemd"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func no() *bool { b := false; return &b }

// fakeSystemctl writes a stand-in for systemctl that knows a few units;
// the real systemctl on a machine without systemd as PID 1 is tested too.
func fakeSystemctl(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "systemctl")
	script := `#!/bin/sh
[ "$1" = is-active ] || exit 2
case "$2" in
mosquitto.service) echo active; exit 0;;
broken.service) echo failed; exit 3;;
*) echo inactive; exit 3;;
esac
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A parallel test's fork may still hold our write descriptor until its
	// exec: running the script then fails with ETXTBSY. Wait until it runs.
	for i := 0; i < 200; i++ {
		if err := exec.Command(p, "is-active", "probe").Run(); !errors.Is(err, syscall.ETXTBSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func newChecker(t *testing.T) *health.Checker {
	c := health.New(health.DefaultOptions(), nil)
	c.Units = systemd.Systemctl{Path: fakeSystemctl(t)}
	up := filepath.Join(t.TempDir(), "uptime")
	if err := os.WriteFile(up, []byte("100.50 180.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.UptimePath = up
	return c
}

func TestChecks(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // subtests are parallel: they run after this function returns
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(200)
		case "/nocontent":
			w.WriteHeader(204)
		case "/down":
			w.WriteHeader(503)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/slow":
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)

	existing := filepath.Join(t.TempDir(), "mounted")
	if err := os.WriteFile(existing, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		check  health.Check
		ok     bool
		detail string
		errHas string
		errIs  error
	}{
		{check: health.Check{Unit: "mosquitto.service"}, ok: true, detail: "active"},
		{check: health.Check{Unit: "broken.service"}, detail: "failed", errHas: "broken.service is failed", errIs: health.ErrCheckFailed},
		{check: health.Check{Unit: "absent.service"}, detail: "inactive", errIs: health.ErrCheckFailed},
		{check: health.Check{Command: []string{"true"}}, ok: true, detail: "exit 0"},
		{check: health.Check{Command: []string{"false"}}, detail: "exit 1", errHas: "exited 1, want one of [0]", errIs: health.ErrCheckFailed},
		{check: health.Check{Command: []string{"false"}, ExitCodes: []int{1}}, ok: true, detail: "exit 1"},
		{check: health.Check{Command: []string{"sh", "-c", "echo modem missing >&2; exit 4"}}, detail: "exit 4", errHas: "modem missing"},
		{check: health.Check{Command: []string{"sleep", "10"}, Timeout: 200 * time.Millisecond}, errIs: context.DeadlineExceeded},
		{check: health.Check{Command: []string{"/nonexistent/otagw-check"}}, errIs: os.ErrNotExist},
		{check: health.Check{TCP: ln.Addr().String()}, ok: true, detail: "connected"},
		{check: health.Check{TCP: closedAddr}, errHas: "connection refused"},
		{check: health.Check{HTTP: srv.URL + "/ok"}, ok: true, detail: "HTTP 200"},
		{check: health.Check{HTTP: srv.URL + "/nocontent", Status: []int{204}}, ok: true, detail: "HTTP 204"},
		{check: health.Check{HTTP: srv.URL + "/ok", Status: []int{204}}, detail: "HTTP 200", errIs: health.ErrCheckFailed},
		{check: health.Check{HTTP: srv.URL + "/down"}, detail: "HTTP 503", errHas: "answered 503, want 2xx"},
		{check: health.Check{HTTP: srv.URL + "/moved"}, detail: "HTTP 302", errIs: health.ErrCheckFailed},
		{check: health.Check{HTTP: srv.URL + "/slow", Timeout: 200 * time.Millisecond}, errIs: context.DeadlineExceeded},
		{check: health.Check{File: existing}, ok: true},
		{check: health.Check{File: existing + ".not"}, errIs: os.ErrNotExist},
		{check: health.Check{Uptime: time.Minute}, ok: true, detail: "up 1m41s"},
		{check: health.Check{Uptime: 2 * time.Minute}, detail: "up 1m41s", errHas: "less than 2m0s", errIs: health.ErrCheckFailed},
	} {
		c := tc.check
		c.Name = c.Kind()
		t.Run(c.Kind(), func(t *testing.T) {
			t.Parallel()
			chk := newChecker(t)
			res := chk.RunOne(ctx(t), c)
			if res.OK != tc.ok {
				t.Errorf("%+v: OK = %v (error %q); want %v", c, res.OK, res.Error, tc.ok)
			}
			if tc.detail != "" && res.Detail != tc.detail {
				t.Errorf("%+v: Detail = %q; want %q", c, res.Detail, tc.detail)
			}
			if tc.errHas != "" && !strings.Contains(res.Error, tc.errHas) {
				t.Errorf("%+v: Error = %q; want it to contain %q", c, res.Error, tc.errHas)
			}
			if res.Kind != c.Kind() || !res.Required || res.Name != c.Name {
				t.Errorf("result header %+v", res)
			}
			if tc.errIs != nil {
				// The result keeps the text; check the error kind through a direct run.
				rep := chk.RunChecks(ctx(t), []health.Check{c})
				if err := rep.Err(); !errors.Is(err, health.ErrCheckFailed) {
					t.Errorf("Report.Err() = %v; want ErrCheckFailed", err)
				}
				if !strings.Contains(res.Error, errText(tc.errIs)) {
					t.Errorf("%+v: Error = %q; want it to mention %q", c, res.Error, errText(tc.errIs))
				}
			}
		})
	}
}

func errText(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such file or directory"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	}
	return err.Error()
}

// On this machine systemd is not PID 1: Detect picks systemctl, and the
// real systemctl cannot answer, which fails the check (never passes it).
func TestUnitCheckWithoutSystemd(t *testing.T) {
	t.Parallel()
	if systemd.Booted() {
		t.Skip("systemd is PID 1 here; this test covers the fallback")
	}
	if _, ok := systemd.Detect().(systemd.Systemctl); !ok {
		t.Fatalf("Detect() = %T without /run/systemd/system; want Systemctl", systemd.Detect())
	}
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Fatalf("systemctl missing (scripts/test-deps.sh installs systemd): %v", err)
	}
	c := health.New(health.DefaultOptions(), nil)
	res := c.RunOne(ctx(t), health.Check{Name: "ssh", Unit: "ssh.service"})
	if res.OK {
		t.Fatalf("unit check passed without systemd: %+v", res)
	}
	t.Logf("fallback answer: %s", res.Error)
}

type stuckUnits struct{}

func (stuckUnits) ActiveState(context.Context, string) (string, error) {
	select {} // ignores its context, as a wedged bus call might
}

func TestCheckIgnoringContextStillTimesOut(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	c.Units = stuckUnits{}
	res := c.RunOne(ctx(t), health.Check{Name: "wedged", Unit: "x.service", Timeout: 100 * time.Millisecond})
	if res.OK || !strings.Contains(res.Error, "no answer within 100ms") {
		t.Fatalf("result %+v; want a timeout", res)
	}
}

func TestRunReport(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	c.Options.Checks = []health.Check{
		{Name: "broker", Unit: "mosquitto.service"},
		{Name: "optional-fails", Command: []string{"false"}, Required: no()},
		{Name: "required-fails", Unit: "broken.service"},
		{Name: "settled", Uptime: time.Second},
	}
	rep := c.Run(ctx(t))
	if rep.OK {
		t.Fatal("report OK with a failing required check")
	}
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "broker,optional-fails,required-fails,settled" {
		t.Errorf("results in order %s", got)
	}
	failed := rep.Failed()
	if len(failed) != 1 || failed[0].Name != "required-fails" {
		t.Errorf("Failed() = %+v; want only required-fails", failed)
	}
	err := rep.Err()
	if !errors.Is(err, health.ErrCheckFailed) || !strings.Contains(err.Error(), "required-fails (unit)") || strings.Contains(err.Error(), "optional") {
		t.Errorf("Err() = %v", err)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(rep); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"ok":false`, `"name":"broker"`, `"kind":"unit"`, `"required":false`, `"duration_ns":`, `"detail":"active"`} {
		if !strings.Contains(buf.String(), key) {
			t.Errorf("JSON lacks %s: %s", key, buf.String())
		}
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ok    broker", "warn  optional-fails", "FAIL  required-fails", "UNHEALTHY: 1 required check(s) failed"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("WriteText lacks %q:\n%s", want, text.String())
		}
	}

	c.Options.Checks = c.Options.Checks[:2]
	if rep := c.Run(ctx(t)); !rep.OK || rep.Err() != nil {
		t.Errorf("only an optional failure: OK=%v Err=%v", rep.OK, rep.Err())
	}
}

const exampleYAML = `
default_timeout: 5s
checks:
  - name: broker
    unit: mosquitto.service
  - name: modem
    command: [/usr/bin/mmcli, -L]
    exit_codes: [0]
    timeout: 20s
  - name: broker-port
    tcp: 127.0.0.1:1883
  - name: api
    http: http://127.0.0.1:8080/healthz
    status: [200, 204]
  - name: data
    file: /data/.mounted
  - name: settled
    uptime: 2m
    required: false
`

func TestOptionsYAMLAndValidate(t *testing.T) {
	t.Parallel()
	var o health.Options
	dec := yaml.NewDecoder(strings.NewReader(exampleYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&o); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("Validate(example) = %v", err)
	}
	if o.DefaultTimeout != 5*time.Second || o.Checks[1].Timeout != 20*time.Second || o.Checks[5].Uptime != 2*time.Minute {
		t.Errorf("durations decoded wrong: %+v", o)
	}
	if o.Checks[5].IsRequired() || !o.Checks[0].IsRequired() {
		t.Errorf("required defaults wrong")
	}
	if err := health.DefaultOptions().Validate(); err != nil {
		t.Errorf("DefaultOptions().Validate() = %v", err)
	}

	for _, tc := range []struct {
		name  string
		check health.Check
		want  string
	}{
		{"no name", health.Check{Unit: "a.service"}, "name is empty"},
		{"no kind", health.Check{Name: "x"}, "exactly one of"},
		{"two kinds", health.Check{Name: "x", Unit: "a.service", File: "/a"}, "exactly one of"},
		{"bad tcp", health.Check{Name: "x", TCP: "localhost"}, "not host:port"},
		{"bad url", health.Check{Name: "x", HTTP: "ftp://h/"}, "not an http(s) URL"},
		{"bad status", health.Check{Name: "x", HTTP: "http://h/", Status: []int{42}}, "not an HTTP status"},
		{"exit code range", health.Check{Name: "x", Command: []string{"true"}, ExitCodes: []int{256}}, "outside 0..255"},
		{"exit codes on tcp", health.Check{Name: "x", TCP: "h:1", ExitCodes: []int{0}}, "only applies to command"},
		{"relative file", health.Check{Name: "x", File: "data"}, "not an absolute path"},
		{"negative timeout", health.Check{Name: "x", File: "/a", Timeout: -1}, "negative"},
		{"unit with slash", health.Check{Name: "x", Unit: "a/b"}, "not a unit name"},
	} {
		err := health.Options{Checks: []health.Check{tc.check}}.Validate()
		if !errors.Is(err, health.ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v; want ErrInvalidOptions mentioning %q", tc.name, err, tc.want)
		}
	}
	dup := health.Options{Checks: []health.Check{{Name: "a", File: "/a"}, {Name: "a", File: "/b"}}}
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("duplicate names: %v", err)
	}
}

func TestParseUptime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1215.86 2200.16\n", 1215*time.Second + 860*time.Millisecond, true},
		{"7 1", 7 * time.Second, true},
		{"0.5", 500 * time.Millisecond, true},
		{"", 0, false},
		{"abc 1", 0, false},
		{"-3.2 1", 0, false},
		{"3.x", 0, false},
	} {
		got, err := health.ParseUptime([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseUptime(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseUptime(f *testing.F) {
	f.Add([]byte("1215.86 2200.16\n"))
	f.Add([]byte("4294967295.999999999999 0"))
	f.Add([]byte(".5"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := health.ParseUptime(b)
		if err == nil && d < 0 {
			t.Fatalf("ParseUptime(%q) = %v", b, d)
		}
	})
}
