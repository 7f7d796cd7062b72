package tests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// otagwBin is the binary under test, built once by TestMain.
var otagwBin string

func TestMain(m *testing.M) {
	if os.Getenv("OTAGW_E2E_REQUEST") != "" { // a raw API call as another uid (access_test.go)
		os.Exit(requestHelper())
	}
	dir, err := os.MkdirTemp("", "otagw-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests run the CLI as other uids too
	otagwBin = filepath.Join(dir, "otagw")
	// OTAGW_E2E_RACE=1 builds the binary with the race detector (needs cgo).
	// The faultpoints tag lets a test kill the daemon at a named
	// persistence point ($OTAGW_FAULT, see internal/fault); without that
	// variable the binary behaves as shipped.
	args := []string{"build", "-tags", "faultpoints", "-o", otagwBin}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("OTAGW_E2E_RACE") == "1" {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	build := exec.Command("go", append(args, "github.com/otagw/otagw/cmd/otagw")...)
	build.Env = env
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building otagw: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// notifySocket is a unixgram socket standing in for systemd's.
type notifySocket struct {
	Path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	ch   chan notifyMsg
}

type notifyMsg struct {
	At   time.Time
	Vars map[string]string
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	p := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{Path: p, conn: c, ch: make(chan notifyMsg, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.ch)
				return
			}
			m := notifyMsg{At: time.Now(), Vars: map[string]string{}}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.Vars[k] = v
				}
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, m)
			n.mu.Unlock()
			n.ch <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// wait returns the first message with key=value (value "" = any), or fails.
func (n *notifySocket) wait(t *testing.T, key, value string, timeout time.Duration) notifyMsg {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.ch:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s=%s", key, value)
			}
			if v, has := m.Vars[key]; has && (value == "" || v == value) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s=%s on NOTIFY_SOCKET within %v", key, value, timeout)
		}
	}
}

// daemonProc is a running `otagw daemon`.
type daemonProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan error
	Socket string
	Config string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testDir makes a temp dir that other uids can traverse.
func testDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// writeConfig writes a minimal daemon config in dir plus extra YAML.
func writeConfig(t *testing.T, dir, extraDaemon, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "otagw.yaml")
	// Never the machine's own watchdog or reboot: a test that armed
	// /dev/watchdog and was killed would reset the machine.
	if !strings.Contains(extraDaemon, "reboot_command") {
		extraDaemon += "  reboot_command: [/bin/false]\n"
	}
	cfg := fmt.Sprintf("daemon:\n  socket: %s\n  state_dir: %s\n%swatchdog:\n  enabled: false\n%s",
		filepath.Join(dir, "otagw.sock"), filepath.Join(dir, "state"), extraDaemon, extra)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func startDaemon(t *testing.T, cfgPath string, env ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(otagwBin, "daemon", "--config", cfgPath, "--log-format", "console")
	cmd.Env = append(os.Environ(), env...)
	d := &daemonProc{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1), Config: cfgPath}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.done
		}
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in the daemon (OTAGW_E2E_RACE=1)")
		}
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.out.String())
		}
	})
	return d
}

// stop sends SIGTERM and returns the exit error and how long it took.
func (d *daemonProc) stop(t *testing.T) (error, time.Duration) {
	t.Helper()
	t0 := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		return err, time.Since(t0)
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		t.Fatalf("daemon did not exit within 30 s of SIGTERM")
	}
	return nil, 0
}

// otagw runs the CLI and returns its stdout, stderr and exit code.
func otagw(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, otagwBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("otagw %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// startReady starts the daemon with a NOTIFY_SOCKET of its own and waits
// for READY=1.
func startReady(t *testing.T, cfgPath string, env ...string) *daemonProc {
	t.Helper()
	ns := newNotifySocket(t, t.TempDir())
	d := startDaemon(t, cfgPath, append(env, "NOTIFY_SOCKET="+ns.Path)...)
	ns.wait(t, "READY", "1", 30*time.Second)
	return d
}
