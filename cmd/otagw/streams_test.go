package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// serveStream answers route with events in the api.Event shape, as the
// daemon's install and MCU flash streams do, and records the request.
func serveStream(t *testing.T, route string, events []api.Event) (sock string, body chan []byte) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "otagw.sock")
	body = make(chan []byte, 1)
	srv := api.NewServer(api.Access{}, nil)
	srv.Write(route, func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		body <- b.Bytes()
		sw := api.NewStreamWriter(w)
		for _, ev := range events {
			sw.Send(ev)
		}
	})
	ln, err := api.Listen(sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return sock, body
}

func run(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := dispatch(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestInstallStream(t *testing.T) {
	evs := []api.Event{
		{Seq: 4, Time: t0, Type: api.EventProgress, State: api.StateInstalling, Slot: "B", Chunk: 0, Chunks: 2, Done: 1 << 20, Total: 2 << 20, Rate: 1 << 20},
		{Seq: 5, Time: t0, Type: api.EventProgress, State: api.StateInstalling, Slot: "B", Chunk: 1, Chunks: 2, Done: 2 << 20, Total: 2 << 20, Rate: 1 << 20},
		{Seq: 6, Time: t0, Type: api.EventDone, State: api.StateInstalled, Release: "1.4.0", Slot: "B"},
	}
	sock, body := serveStream(t, "POST /v1/install", evs)
	out, errOut, code := run("install", "--now", "https://updates.example/gw.otab", "--socket", sock)
	if code != 0 || out != "installed release 1.4.0 into slot B; it boots next (reboot to activate)\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if errOut != "B: chunk 1/2, 1/2 MiB, 1.0 MiB/s, ETA 1s\nB: chunk 2/2, 2/2 MiB, 1.0 MiB/s, ETA 0s\n" {
		t.Errorf("progress: %q", errOut)
	}
	var req api.InstallRequest
	if json.Unmarshal(<-body, &req) != nil || req != (api.InstallRequest{Source: "https://updates.example/gw.otab", Now: true}) {
		t.Errorf("request: %+v", req)
	}

	// --json: the events, one per line; a file is passed as a descriptor
	bundle := filepath.Join(t.TempDir(), "gw.otab")
	os.WriteFile(bundle, []byte("bundle"), 0o644)
	sock, body = serveStream(t, "POST /v1/install", evs)
	out, _, code = run("install", "--json", bundle, "--socket", sock)
	var want bytes.Buffer
	for _, ev := range evs {
		writeEvent(&want, ev)
	}
	if code != 0 || out != want.String() {
		t.Errorf("--json: exit %d:\n%s\nwant:\n%s", code, out, want.String())
	}
	if json.Unmarshal(<-body, &req) != nil || req.Source != api.FDSource(bundle) {
		t.Errorf("request for a file: %+v", req)
	}

	// an install that fails says its kind
	sock, _ = serveStream(t, "POST /v1/install", []api.Event{{Type: api.EventError, Kind: "downgrade-refused", Error: "1.3.0 is below the minimum 1.4.0"}})
	_, errOut, code = run("install", "https://updates.example/old.otab", "--socket", sock)
	if code != 1 || errOut != "otagw install: downgrade-refused: 1.3.0 is below the minimum 1.4.0\n" {
		t.Errorf("refused: exit %d, %q", code, errOut)
	}
	// the daemon stops first
	sock, _ = serveStream(t, "POST /v1/install", evs[:1])
	_, errOut, code = run("install", "https://updates.example/gw.otab", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "stopped before the install ended") {
		t.Errorf("cut: exit %d, %q", code, errOut)
	}
}

func TestMCUFlashStream(t *testing.T) {
	evs := []api.Event{
		{Type: api.EventDevice, State: api.StateFlashing, Device: "pump", Bus: "can0", Phase: "write"},
		{Type: api.EventProgress, State: api.StateFlashing, Device: "pump", Phase: "write", Done: 16 << 10, Total: 32 << 10},
		{Type: api.EventDevice, State: api.StateFlashing, Device: "pump", Bus: "can0", Result: "success"},
		{Type: api.EventDevice, State: api.StateFlashing, Device: "door", Bus: "can0", Result: "postponed", Message: "precondition not met"},
		{Type: api.EventDone, State: api.StateFlashing, Devices: []api.DeviceResult{
			{Device: "pump", Bus: "can0", Result: "success", From: "1.1.0", Version: "1.2.0", Retries: 1},
			{Device: "door", Bus: "can0", Result: "postponed", Reason: "precondition not met"}}},
	}
	pkg := filepath.Join(t.TempDir(), "fw.otamcu")
	os.WriteFile(pkg, []byte("package"), 0o644)
	sock, body := serveStream(t, "POST /v1/mcu/flash", evs)
	out, errOut, code := run("mcu", "flash", "--all", pkg, "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantOut := "DEVICE  BUS   RESULT     FROM   VERSION  RETRIES  REASON\n" +
		"pump    can0  success    1.1.0  1.2.0    1        \n" +
		"door    can0  postponed  -      -        0        precondition not met\n"
	if out != wantOut {
		t.Errorf("table:\n%q\nwant:\n%q", out, wantOut)
	}
	wantErr := "pump         write\npump         write 16384/32768 bytes\npump         success\ndoor         postponed: precondition not met\n"
	if errOut != wantErr {
		t.Errorf("progress:\n%q\nwant:\n%q", errOut, wantErr)
	}
	var req api.MCUFlashRequest
	if json.Unmarshal(<-body, &req) != nil || !req.All || req.Package != api.FDSource(pkg) {
		t.Errorf("request: %+v", req)
	}
	// a failed device fails the command
	evs[len(evs)-1].Devices[1].Result = "failed"
	sock, _ = serveStream(t, "POST /v1/mcu/flash", evs)
	if _, _, code := run("mcu", "flash", "door", pkg, "--socket", sock); code != 1 {
		t.Errorf("a failed device: exit %d, want 1", code)
	}
}
