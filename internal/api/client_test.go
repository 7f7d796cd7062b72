package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// serveAPI serves routes on a unix socket for the client to call.
func serveAPI(t *testing.T, routes map[string]http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "otagw.sock")
	srv := NewServer(Access{}, nil)
	for p, h := range routes {
		srv.Write(p, h)
	}
	ln, err := Listen(sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return NewClient(sock)
}

func TestClientInstallStream(t *testing.T) {
	// The race detector does not see the socket between the test and the
	// handler as an ordering, so the handler's lines are behind a mutex.
	var mu sync.Mutex
	var lines []Event
	setLines := func(l []Event) { mu.Lock(); lines = l; mu.Unlock() }
	c := serveAPI(t, map[string]http.HandlerFunc{
		"POST /v1/install": func(w http.ResponseWriter, r *http.Request) {
			var req InstallRequest
			json.NewDecoder(r.Body).Decode(&req)
			f, err := PassedFile(r)
			if err != nil {
				WriteError(w, http.StatusBadRequest, "no-file", err.Error())
				return
			}
			f.Close()
			sw := NewStreamWriter(w)
			mu.Lock()
			l := lines
			mu.Unlock()
			for _, ev := range l {
				sw.Send(ev)
			}
		},
	})
	bundle, err := os.Open("client.go")
	if err != nil {
		t.Fatal(err)
	}
	defer bundle.Close()
	install := func() ([]Event, Event, error) {
		var seen []Event
		end, err := c.Install(context.Background(), InstallRequest{Source: FDSource("client.go")}, bundle, func(ev Event) error {
			seen = append(seen, ev)
			return nil
		})
		return seen, end, err
	}

	prog := Event{Seq: 1, Type: EventProgress, Slot: "B", Done: 10, Total: 20}
	done := Event{Seq: 2, Type: EventDone, Release: "1.4.0", Slot: "B"}
	setLines([]Event{prog, done, {Seq: 3, Type: EventProgress}})
	seen, end, err := install()
	if err != nil || !reflect.DeepEqual(seen, []Event{prog, done}) || !reflect.DeepEqual(end, done) {
		t.Errorf("done: %v, seen %+v, end %+v", err, seen, end)
	}

	fail := Event{Seq: 2, Type: EventError, Kind: "downgrade-refused", Error: "1.3.0 is below the minimum 1.4.0"}
	setLines([]Event{prog, fail})
	_, end, err = install()
	var fe *FailedError
	if !errors.As(err, &fe) || fe.Kind != "downgrade-refused" || end.Kind != "downgrade-refused" {
		t.Errorf("error event: %v (%T), end %+v", err, err, end)
	}

	setLines([]Event{prog})
	if _, _, err = install(); !errors.Is(err, ErrStreamCut) {
		t.Errorf("no end event: %v, want ErrStreamCut", err)
	}

	// without the file the route answers 400, and the kind stays
	_, err = c.Install(context.Background(), InstallRequest{Source: "x"}, nil, nil)
	var se *StatusError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &se) || se.Kind != "no-file" {
		t.Errorf("no file passed: %v", err)
	}
}

func TestClientBusyKeepsKind(t *testing.T) {
	c := serveAPI(t, map[string]http.HandlerFunc{
		"POST /v1/mark-good": func(w http.ResponseWriter, r *http.Request) {
			WriteError(w, http.StatusConflict, "install-running", "an install is running")
		},
		"POST /v1/rollback": func(w http.ResponseWriter, r *http.Request) {
			var req SlotRequest
			json.NewDecoder(r.Body).Decode(&req)
			WriteJSON(w, SlotRequest{Slot: "A", Reboot: req.Reboot})
		},
	})
	_, err := c.MarkGood(context.Background())
	var se *StatusError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &se) || se.Kind != "install-running" || err.Error() != "an install is running" {
		t.Errorf("mark-good: %v", err)
	}
	out, err := c.Rollback(context.Background(), SlotRequest{Reboot: true})
	if err != nil || out != (SlotRequest{Slot: "A", Reboot: true}) {
		t.Errorf("rollback: %+v %v", out, err)
	}
}

// FuzzDecodeEvent: any line from the socket decodes or is refused, and an
// event that decodes survives a round trip.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-12-02T14:03:07Z","type":"state","state":"installing","from":"idle"}`))
	f.Add([]byte(`{"type":"event","event":{"device":"pump","kind":"done","state":"success"}}`))
	f.Add([]byte(`{"type":"done","results":[{"device":"a","state":"failed"}],"version":"1"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := DecodeEvent(line)
		if err != nil {
			return
		}
		if ev.Type == "" {
			t.Fatalf("%q: decoded without a type", line)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeEvent(b)
		if err != nil || again.Type != ev.Type || again.Seq != ev.Seq || len(again.Devices) != len(ev.Devices) {
			t.Fatalf("round trip of %q: %+v %v, was %+v", line, again, err, ev)
		}
	})
}
