package source

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var payload = bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB

func noSleep(ctx context.Context, d time.Duration) error { return ctx.Err() }

func readAll(t *testing.T, s Source, off int64) ([]byte, error) {
	t.Helper()
	rc, err := s.Open(context.Background(), off)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b")
	os.WriteFile(p, payload, 0o644)
	s, err := New(p, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, s, 1000)
	if err != nil || !bytes.Equal(got, payload[1000:]) || s.Size() != int64(len(payload)) {
		t.Fatalf("file from 1000: %v, %d bytes, size %d", err, len(got), s.Size())
	}
	if _, err := New("ftp://x/y", DefaultOptions()); err == nil {
		t.Fatal("ftp:// accepted")
	}
}

// flaky serves payload with Range support and cuts each body after cut bytes.
func flaky(cut int64, etag *atomic.Value) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", etag.Load().(string))
		http.ServeContent(&cutter{ResponseWriter: w, left: cut}, r, "b", time.Time{}, bytes.NewReader(payload))
	})
}

type cutter struct {
	http.ResponseWriter
	left int64
}

func (c *cutter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		c.ResponseWriter.Write(p[:c.left])
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

func TestHTTPResumesAndDetectsChange(t *testing.T) {
	var etag atomic.Value
	etag.Store(`"a"`)
	srv := httptest.NewServer(flaky(100<<10, &etag))
	defer srv.Close()
	o := DefaultOptions()
	o.Sleep = noSleep
	s, err := New(srv.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, s, 0)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read through drops: %v, %d bytes", err, len(got))
	}
	got, err = readAll(t, s, 300000)
	if err != nil || !bytes.Equal(got, payload[300000:]) {
		t.Fatalf("read from an offset: %v, %d bytes", err, len(got))
	}

	// The object changes between two requests: If-Range makes the server
	// send the whole new object with 200, which must not be spliced in.
	rc, err := s.Open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 50<<10)); err != nil {
		t.Fatal(err)
	}
	etag.Store(`"b"`)
	_, err = io.ReadAll(rc)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("changed object: %v, want ErrChanged", err)
	}
}

func TestHTTPStatus(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		default:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	o := DefaultOptions()
	o.Sleep, o.Retries = noSleep, 2
	s, _ := New(srv.URL+"/missing", o)
	if _, err := readAll(t, s, 0); err == nil || !strings.Contains(err.Error(), "404") || n.Load() != 1 {
		t.Fatalf("404: %v after %d requests; want one request", err, n.Load())
	}
	n.Store(0)
	s, _ = New(srv.URL+"/busy", o)
	if _, err := readAll(t, s, 0); !errors.Is(err, ErrRetries) || n.Load() != 3 {
		t.Fatalf("503: %v after %d requests; want ErrRetries after 3", err, n.Load())
	}
}

func TestHTTPSWithCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(payload))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	s, _ := New(srv.URL, DefaultOptions()) // system roots do not know the test CA
	if _, err := readAll(t, s, 0); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: %v", err)
	}
	o := DefaultOptions()
	o.CAFile = ca
	s, err := New(srv.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, s, 4096)
	if err != nil || !bytes.Equal(got, payload[4096:]) {
		t.Fatalf("https with CA: %v, %d bytes", err, len(got))
	}
	o.CertFile = ca
	if _, err := New(srv.URL, o); err == nil {
		t.Fatal("cert_file without key_file accepted")
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/1000", 100, 1000, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */1000", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"bytes x-1/2", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(c.in)
		if ok != c.ok || ok && (s != c.start || tot != c.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", c.in, s, tot, ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 100-199/1000", "bytes 0-0/*", "bytes */5", "bytes -1--2/-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || total < -1) {
			t.Fatalf("parseContentRange(%q) = %d, %d: negative position accepted", s, start, total)
		}
	})
}

func TestHTTPSClientCertificate(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(payload))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	// A self-signed client certificate.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw-0001"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	o := DefaultOptions()
	o.CAFile = ca
	s, _ := New(srv.URL, o)
	if _, err := readAll(t, s, 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("without a client certificate: %v, want 403", err)
	}
	o.CertFile, o.KeyFile = certFile, keyFile
	s, err = New(srv.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, s, 0); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("with a client certificate: %v, %d bytes", err, len(got))
	}
}
