package channel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otagw/otagw/internal/sign"
)

// TestRunBacksOffThenPollsOnInterval: failed polls wait backoff doubling
// up to the cap; a good poll waits the interval plus at most the jitter.
func TestRunBacksOffThenPollsOnInterval(t *testing.T) {
	ss, ps := keys(t, 1)
	var fails atomic.Int32
	fails.Store(4)
	good := signed(t, &Index{Format: Format, Channel: "stable", Sequence: 1, Issued: t0, Expires: t0.Add(48 * time.Hour),
		Entries: []Entry{{Compatible: "gw-a", Config: fileOf("files/config", []byte("config"), "")}}}, ss[0])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, IndexFile) && fails.Add(-1) >= 0 {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		if strings.HasSuffix(r.URL.Path, IndexFile) {
			w.Write(good)
			return
		}
		w.Write([]byte("config"))
	}))
	defer srv.Close()
	clock := clockwork.NewFakeClockAt(t0.Add(time.Hour))
	o := DefaultOptions()
	o.URL, o.AllowHTTP = srv.URL+"/stable/"+IndexFile, true
	o.Backoff, o.MaxBackoff, o.Interval, o.Jitter = time.Minute, 3*time.Minute, time.Hour, 10*time.Minute
	flow := &recordingFlow{}
	a, err := NewAgent(AgentOptions{Options: o, Store: &memStore{}, Flow: flow, Dir: t.TempDir(), Clock: clock,
		Policy: func() (Policy, error) {
			return Policy{Keyring: sign.NewKeyring(ps...), Threshold: 1, Compatible: "gw-a"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute, 3 * time.Minute} {
		clock.BlockUntilContext(ctx, 1)
		r := a.Report()
		if got := r.NextPoll.Sub(clock.Now()); got != want || r.Failures != i+1 || r.State != "error" {
			t.Fatalf("after failure %d: wait %v, failures %d, state %q; want %v", i+1, got, r.Failures, r.State, want)
		}
		clock.Advance(want)
	}
	clock.BlockUntilContext(ctx, 1)
	r := a.Report()
	if got := r.NextPoll.Sub(clock.Now()); got < time.Hour || got > time.Hour+10*time.Minute || r.Failures != 0 || r.State != "idle" {
		t.Fatalf("after a good poll: wait %v, report %+v; want 1h..1h10m", got, r)
	}
	if c := flow.callList(); len(c) != 1 || c[0] != "config config" {
		t.Errorf("calls = %q", c)
	}
}

// TestClientCertificate: a server that requires a client certificate
// gets the configured one, over TLS verified with the configured CA; an
// agent without the certificate is refused by the server.
func TestClientCertificate(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, ip bool, usage x509.ExtKeyUsage) (certFile, keyFile string, pair tls.Certificate) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tm := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		if ip {
			tm.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, _ := x509.CreateCertificate(rand.Reader, tm, ca, &k.PublicKey, caKey)
		kd, _ := x509.MarshalECPrivateKey(k)
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		kp := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
		os.WriteFile(certFile, cp, 0o644)
		os.WriteFile(keyFile, kp, 0o600)
		pair, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, pair
	}
	_, _, srvPair := leaf("server", true, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey, _ := leaf("gateway-42", false, x509.ExtKeyUsageClientAuth)
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	var who atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		w.Write([]byte("{}"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	o := DefaultOptions()
	o.URL, o.CAFile, o.CertFile, o.KeyFile = srv.URL+"/stable/index.json", caFile, cliCert, cliKey
	hc, err := HTTPClient(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewClient(o.URL, hc).Fetch(context.Background()); err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	if who.Load() != "gateway-42" {
		t.Errorf("server saw %v", who.Load())
	}
	o.CertFile, o.KeyFile = "", ""
	hc, _ = HTTPClient(o)
	if _, _, err := NewClient(o.URL, hc).Fetch(context.Background()); err == nil {
		t.Error("a server requiring a client certificate answered a client without one")
	}
	o.CAFile = ""
	hc, _ = HTTPClient(o)
	if _, _, err := NewClient(o.URL, hc).Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a server from an unknown CA: %v", err)
	}
}
