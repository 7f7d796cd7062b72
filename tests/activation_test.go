package tests

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSocketActivation passes a listening socket as fd 3 with LISTEN_FDS,
// as systemd does for otagw.socket: the daemon must serve on it, and leave
// the socket file alone when it stops.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	sock := filepath.Join(dir, "activated.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the dup in f stays open and listening
	cfg := writeConfig(t, dir, "", "")
	ns := newNotifySocket(t, dir)
	// LISTEN_PID must be the daemon's pid: the shell's $$ survives exec.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=otagw.sock exec "$0" daemon --config "$1"`, otagwBin, cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.Path)
	cmd.ExtraFiles = []*os.File{f}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("daemon output:\n%s", out.String())
		}
	}()
	ns.wait(t, "READY", "1", 30*time.Second)
	st := statusOf(t, sock)
	if st.State != "idle" {
		t.Errorf("status via activated socket: %+v", st)
	}
	// The configured socket path was not created.
	if _, err := os.Stat(filepath.Join(dir, "otagw.sock")); !os.IsNotExist(err) {
		t.Errorf("daemon created its own socket despite activation")
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no exit")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("activated socket file removed by the daemon: %v", err)
	}
}
