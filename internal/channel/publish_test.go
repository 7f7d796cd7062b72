package channel

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"bytes"
	"fmt"

	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
)

// testArtifacts builds a real bundle and MCU package signed with s.
func testArtifacts(t *testing.T, s sign.Signer, compatible, version string) (bundlePath, mcuPath string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	os.WriteFile(img, []byte(strings.Repeat("rootfs image ", 5000)), 0o644)
	bundlePath = filepath.Join(dir, "release.otab")
	if _, err := bundle.Create(context.Background(), bundlePath, bundle.CreateOptions{Compatible: compatible, Version: version,
		Signers: []sign.Signer{s}, Payloads: []bundle.PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: img}}}); err != nil {
		t.Fatal(err)
	}
	pkg, err := mcupkg.Create(mcupkg.Manifest{Target: mcupkg.Target{Family: "F1", ProductID: 0x410}, Version: "3.1.0", LoadAddress: 0x08000000},
		[]mcupkg.Segment{{Addr: 0x08000000, Data: []byte(strings.Repeat("\x01\x02", 512))}}, s)
	if err != nil {
		t.Fatal(err)
	}
	mcuPath = filepath.Join(dir, "sensor.otmcu")
	os.WriteFile(mcuPath, pkg, 0o644)
	return bundlePath, mcuPath
}

// TestPublishServedByStaticServer: otagw channel publish writes a
// directory that a plain file server serves as-is; a device accepts it,
// a second publish raises the sequence and keeps the other entries, and
// an unchanged index costs a 304.
func TestPublishServedByStaticServer(t *testing.T) {
	ss, ps := keys(t, 1)
	web := t.TempDir()
	bp, mp := testArtifacts(t, ss[0], "gw-a", "1.1.0")
	cfg := filepath.Join(t.TempDir(), "otagw.yaml")
	os.WriteFile(cfg, []byte("daemon:\n  log_level: debug\n"), 0o644)
	now := time.Now()
	idx, err := Publish(PublishOptions{Dir: web, Channel: "stable", Compatible: "gw-a", Bundle: bp, MCU: []string{mp}, Config: cfg,
		Expires: 24 * time.Hour, Signers: ss, Now: now, Check: inspect("gw-a")})
	if err != nil {
		t.Fatal(err)
	}
	if idx.Sequence != 1 || idx.Entries[0].Bundle.Version != "1.1.0" || idx.Entries[0].MCU[0].Version != "3.1.0" {
		t.Fatalf("index = %+v", idx)
	}
	if _, err := Publish(PublishOptions{Dir: web, Channel: "stable", Compatible: "gw-b", Bundle: bp,
		Expires: time.Hour, Signers: ss, Now: now, Check: inspect("gw-b")}); err == nil || !strings.Contains(err.Error(), `"gw-a"`) {
		t.Errorf("a bundle for gw-a published as gw-b: %v", err)
	}
	if _, err := Publish(PublishOptions{Dir: web, Channel: "stable", Compatible: "gw-b", Config: cfg, Tags: []string{"pilot"},
		Expires: time.Hour, Signers: ss, Now: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(PublishOptions{Dir: web, Channel: "stable", Compatible: "gw-b", Config: cfg, Sequence: 2,
		Expires: time.Hour, Signers: ss, Now: now}); err == nil {
		t.Error("--sequence 2 accepted after sequence 2 was published")
	}

	var notModified atomic.Int32
	fs := http.FileServer(http.Dir(web))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		fs.ServeHTTP(rec, r)
		if rec.code == http.StatusNotModified {
			notModified.Add(1)
		}
	}))
	defer srv.Close()
	flow := &recordingFlow{committed: "1.1.0"}
	o := DefaultOptions()
	o.URL, o.AllowHTTP, o.Name = srv.URL+"/stable/index.json", true, "stable"
	a, err := NewAgent(AgentOptions{Options: o, Store: &memStore{}, Flow: flow, Dir: t.TempDir(),
		Policy: func() (Policy, error) {
			return Policy{Keyring: sign.NewKeyring(ps...), Threshold: 1, Compatible: "gw-a"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := a.Report(); r.Sequence != 2 {
		t.Errorf("sequence = %d, want 2 (two publishes)", r.Sequence)
	}
	calls := flow.callList()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "config daemon:") || !strings.HasPrefix(calls[1], "flash ") {
		t.Fatalf("calls = %q, want the config, then the MCU package (release 1.1.0 is committed)", calls)
	}
	pkg, err := os.ReadFile(strings.TrimPrefix(calls[1], "flash "))
	if err != nil {
		// the agent removes a package once flashed; the bytes were checked by sha256
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	} else if len(pkg) == 0 {
		t.Error("empty package")
	}
	if err := a.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if notModified.Load() != 1 {
		t.Errorf("304 answers = %d, want 1 for the unchanged index", notModified.Load())
	}
	if n := len(flow.callList()); n != 2 {
		t.Errorf("work repeated for an unchanged index: %q", flow.callList())
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(c int) { s.code = c; s.ResponseWriter.WriteHeader(c) }

// inspect is what otagw channel publish passes as Check (cmd/otagw), for
// the two kinds this test publishes with a version.
func inspect(compatible string) func(kind, name string, data []byte) (string, error) {
	return func(kind, name string, data []byte) (string, error) {
		switch kind {
		case "bundle":
			h, err := bundle.ReadHead(bytes.NewReader(data), nil, 0)
			if err != nil {
				return "", err
			}
			if h.Manifest.Compatible != compatible {
				return "", fmt.Errorf("%s: the bundle is for compatible %q, not %q", name, h.Manifest.Compatible, compatible)
			}
			return h.Manifest.Version, nil
		case "mcu":
			p, err := mcupkg.Parse(data)
			if err != nil {
				return "", err
			}
			return p.Manifest.Version, nil
		}
		return "", nil
	}
}

// TestPublishTwiceInOneSecondChangesValidators: two publishes in the same
// second give the index different modification seconds, so a static
// server's Last-Modified/ETag changes and no gateway gets a 304 for it.
func TestPublishTwiceInOneSecondChangesValidators(t *testing.T) {
	ss, _ := keys(t, 1)
	web := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "otagw.yaml")
	os.WriteFile(cfg, []byte("daemon:\n  log_level: debug\n"), 0o644)
	var mods []int64
	for i := 0; i < 3; i++ {
		if _, err := Publish(PublishOptions{Dir: web, Channel: "stable", Compatible: "gw-a", Config: cfg,
			Expires: time.Hour, Signers: ss}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(web, "stable", IndexFile))
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, st.ModTime().Unix())
	}
	if !(mods[0] < mods[1] && mods[1] < mods[2]) {
		t.Errorf("index modification seconds %v, want strictly increasing", mods)
	}
}
