package systemd_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/watchdog/internal/systemd"
)

// script writes a stand-in systemctl that logs its arguments and answers
// as given.
func script(t *testing.T, body string) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "systemctl")
	log = filepath.Join(dir, "log")
	// Written by cp, not by this process: a parallel test's fork could
	// otherwise hold our write descriptor and make exec fail (ETXTBSY).
	src := path + ".src"
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho \"$@\" >>"+log+"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", src, path).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func TestSystemctl(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, log := script(t, `case "$1" in
is-active) [ "$2" = up.service ] && { echo active; exit 0; }; echo failed; exit 3;;
start) [ "$2" = ok.target ] && exit 0; echo "Failed to start $2: Unit $2 not found." >&2; exit 5;;
reboot) echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2; exit 1;;
esac`)
	s := systemd.Systemctl{Path: p}
	if st, err := s.ActiveState(ctx, "up.service"); err != nil || st != "active" {
		t.Errorf("ActiveState(up) = %q, %v", st, err)
	}
	if st, err := s.ActiveState(ctx, "down.service"); err != nil || st != "failed" {
		t.Errorf("ActiveState(down) = %q, %v; want failed (exit 3 still prints the state)", st, err)
	}
	if err := s.StartUnit(ctx, "ok.target"); err != nil {
		t.Errorf("StartUnit(ok) = %v", err)
	}
	if err := s.StartUnit(ctx, "nope.target"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("StartUnit(nope) = %v", err)
	}
	if err := s.Reboot(ctx); !errors.Is(err, systemd.ErrNoSystemd) {
		t.Errorf("Reboot = %v; want ErrNoSystemd", err)
	}
	b, _ := os.ReadFile(log)
	want := "is-active up.service\nis-active down.service\nstart ok.target\nstart nope.target\nreboot\n"
	if string(b) != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", b, want)
	}
}

func TestSystemctlNoAnswer(t *testing.T) {
	t.Parallel()
	p, _ := script(t, `echo "Failed to connect to bus: Host is down" >&2; exit 1`)
	_, err := systemd.Systemctl{Path: p}.ActiveState(context.Background(), "x.service")
	if !errors.Is(err, systemd.ErrNoSystemd) || !strings.Contains(err.Error(), "Host is down") {
		t.Errorf("ActiveState = %v; want ErrNoSystemd with systemctl's words", err)
	}
}

// Without systemd as PID 1 (this machine, CI) the D-Bus manager is compiled
// but not selected; connecting fails with an error, never a hang.
func TestDetect(t *testing.T) {
	t.Parallel()
	m := systemd.Detect()
	switch m.(type) {
	case systemd.DBus:
		if !systemd.Booted() {
			t.Error("Detect chose D-Bus without /run/systemd/system")
		}
	case systemd.Systemctl:
		if systemd.Booted() {
			t.Error("Detect chose systemctl with systemd as PID 1")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := (systemd.DBus{}).ActiveState(ctx, "x.service"); err == nil {
			t.Error("D-Bus ActiveState succeeded without systemd")
		}
	}
}
