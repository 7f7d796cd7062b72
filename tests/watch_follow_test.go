package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"syscall"
	"testing"

	"github.com/otagw/otagw/internal/api"
)

// followWatch follows the daemon's events the way an operator does, with
// `otagw watch --json [args]`: each line of its output is one api.Event,
// in the order the daemon published them. The channel closes when the
// stream ends (the daemon stopped: watch exits 1) or after stop (SIGTERM:
// watch exits 0); stop runs at the end of the test too.
// The restart test (restart_test.go) reads the whole flow through it.
func followWatch(t *testing.T, sock string, args ...string) (chan api.Event, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, otagwBin, append([]string{"watch", "--json", "--socket", sock}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("otagw watch: %v", err)
	}
	ch := make(chan api.Event, 100000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var ev api.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = api.Event{Type: "undecodable", Message: sc.Text()}
			}
			ch <- ev
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() && stderr.String() != "" {
			t.Logf("otagw watch --json --socket %s: %s", sock, stderr.String())
		}
	})
	return ch, cancel
}
