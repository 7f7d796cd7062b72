package channel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
)

// keys makes n in-memory signers.
func keys(t testing.TB, n int) ([]sign.Signer, []ed25519.PublicKey) {
	t.Helper()
	var ss []sign.Signer
	var ps []ed25519.PublicKey
	for i := 0; i < n; i++ {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, sign.NewSigner(priv))
		ps = append(ps, pub)
	}
	return ss, ps
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fileOf(url string, data []byte, version string) *File {
	sum := sha256.Sum256(data)
	return &File{URL: url, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Version: version}
}

// testIndex is an index for compatible "gw-a" with a bundle, one MCU
// package and a config document, served under /stable/.
func testIndex(seq uint64, expires time.Time) *Index {
	return &Index{Format: Format, Channel: "stable", Sequence: seq, Issued: t0, Expires: expires,
		Entries: []Entry{{Compatible: "gw-a",
			Bundle: fileOf("files/bundle", []byte("bundle"), "1.1.0"),
			MCU:    []File{*fileOf("files/mcu", []byte("mcu"), "2.0.0")},
			Config: fileOf("files/config", []byte("config"), "")}}}
}

func signed(t testing.TB, idx *Index, ss ...sign.Signer) []byte {
	t.Helper()
	b, err := Sign(idx, ss...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countingServer serves files by path and counts every request.
type countingServer struct {
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	srv   *httptest.Server
}

func newCountingServer(t testing.TB) *countingServer {
	c := &countingServer{files: map[string][]byte{}, hits: map[string]int{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.hits[r.URL.Path]++
		data, ok := c.files[r.URL.Path]
		c.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, strings.NewReader(string(data)))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *countingServer) put(path string, data []byte) {
	c.mu.Lock()
	c.files[path] = data
	c.mu.Unlock()
}

// others counts requests for anything but the index.
func (c *countingServer) others() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for p, n := range c.hits {
		if !strings.HasSuffix(p, "/"+IndexFile) {
			m[p] = n
		}
	}
	return m
}

// recordingFlow is a test double for the daemon's Flow: it records every
// call and answers from its fields.
type recordingFlow struct {
	mu                 sync.Mutex
	committed, pending string
	closed             map[string]error
	calls              []string
	installErr         error
	postponed          []string
	configs            [][]byte
	reports            []Report
	onInstall          func(url string)
}

func (f *recordingFlow) Release() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed, f.pending
}

func (f *recordingFlow) Allowed(kind string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed[kind]
}

func (f *recordingFlow) Install(ctx context.Context, url string, file File) error {
	f.mu.Lock()
	f.calls = append(f.calls, "install "+url)
	err, cb := f.installErr, f.onInstall
	f.mu.Unlock()
	if cb != nil {
		cb(url)
	}
	return err
}

func (f *recordingFlow) FlashMCU(ctx context.Context, pkgs []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "flash "+strings.Join(pkgs, " "))
	p := f.postponed
	return p, nil
}

func (f *recordingFlow) ApplyConfig(ctx context.Context, data []byte, file File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "config "+string(data))
	f.configs = append(f.configs, data)
	return nil
}

func (f *recordingFlow) Report(r Report) {
	f.mu.Lock()
	f.reports = append(f.reports, r)
	f.mu.Unlock()
}

func (f *recordingFlow) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// memStore keeps the Record in memory (the HMAC file has its own tests).
type memStore struct {
	mu sync.Mutex
	r  Record
}

func (m *memStore) Load(r *Record) error { m.mu.Lock(); *r = m.r; m.mu.Unlock(); return nil }
func (m *memStore) Save(r *Record) error { m.mu.Lock(); m.r = *r; m.mu.Unlock(); return nil }
