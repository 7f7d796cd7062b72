package config

import (
	"encoding/json"
	"errors"
	"gopkg.in/yaml.v3"
	"strings"
	"testing"
)

func TestDefaultsAndOverride(t *testing.T) {
	t.Parallel()
	c, err := Parse("x.yaml", []byte("daemon:\n  socket: /run/test/x.sock\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Daemon.Socket != "/run/test/x.sock" || c.Daemon.StateDir != "/var/lib/otagw" || c.Daemon.KeyFile != "/var/lib/otagw/device.key" {
		t.Errorf("Parse = %+v", c.Daemon)
	}
	if _, err := Parse("empty.yaml", nil); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestErrorsNamePlaceAndPath(t *testing.T) {
	t.Parallel()
	in := `daemon:
  socket: relative.sock
  sockett: /x
  log_level: loud
  state_dir: [a, b]
  socket: /again
`
	_, err := Parse("/etc/otagw/otagw.yaml", []byte(in))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse error = %v, want *Error", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"/etc/otagw/otagw.yaml:3:3: daemon.sockett: unknown key (known here:",
		"/etc/otagw/otagw.yaml:5:14: daemon.state_dir: want a single value (a string), got a list",
		"/etc/otagw/otagw.yaml:6:3: daemon.socket: duplicate key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q; got:\n%s", want, msg)
		}
	}
	// Validation errors appear once decoding is clean, with the key's place.
	_, err = Parse("c.yaml", []byte("daemon:\n  socket: relative.sock\n  log_level: loud\n"))
	for _, want := range []string{
		`c.yaml:2:3: daemon.socket: must be an absolute path, got "relative.sock"`,
		`c.yaml:3:3: daemon.log_level: must be debug, info, warn or error, got "loud"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q; got:\n%v", want, err)
		}
	}
	_, err = Parse("s.yaml", []byte("daemon:\n  socket: [\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "s.yaml:") {
		t.Errorf("syntax error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("daemon:\n  socket: /run/x.sock\n  log_level: debug\n"))
	f.Add([]byte("daemon: [1, 2]\n"))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Add([]byte("daemon:\n  state_dir: !!binary aGVsbG8=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

// TestEffectiveConfigEncodes: `otagw config show` prints every section as
// YAML and JSON (a func field without json:"-" once broke it).
func TestEffectiveConfigEncodes(t *testing.T) {
	t.Parallel()
	c := Default()
	if _, err := json.Marshal(c); err != nil {
		t.Errorf("JSON: %v", err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	// What config show prints must load again.
	if _, err := Parse("shown.yaml", b); err != nil {
		t.Errorf("config show output does not load back: %v", err)
	}
}

// TestChannelAndPreconditionErrors: the channel: and preconditions:
// sections report each bad key at its line.
func TestChannelAndPreconditionErrors(t *testing.T) {
	_, err := Parse("otagw.yaml", []byte("channel:\n  url: http://updates.example/stable/index.json\n  interval: 0s\npreconditions:\n  min_battery: 200\nmaintenance:\n  download: sometimes\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`otagw.yaml:2:3: channel.url: "http://updates.example/stable/index.json" is plain http`,
		`otagw.yaml:3:3: channel.interval: 0s: want at least 1s`,
		`otagw.yaml:5:3: preconditions.min_battery: 200: want a percentage 0..100`,
		`maintenance: download: "sometimes": want anytime or window`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors:\n%v\nwant a line with %q", err, want)
		}
	}
	if _, err := Parse("ok.yaml", []byte("channel:\n  url: https://updates.example/stable/index.json\n  tags: [pilot]\npreconditions:\n  min_battery: 30\n")); err != nil {
		t.Errorf("valid channel section refused: %v", err)
	}
}
