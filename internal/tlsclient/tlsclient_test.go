package tlsclient

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorsNameTheField: a missing CA file, a CA file without PEM and a
// missing client key pair each fail with the configured field's name.
func TestErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		f    Files
		want string
	}{
		{Files{CAFile: missing, CAField: "x.ca_file"}, "x.ca_file: "},
		{Files{CAFile: notPEM, CAField: "x.ca_file"}, "x.ca_file " + notPEM + ": no PEM certificates"},
		{Files{CertFile: missing, KeyFile: missing, CertField: "x.cert_file/key_file"}, "x.cert_file/key_file: "},
	} {
		_, err := Transport(tc.f)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Transport(%+v) = %v, want an error starting %q", tc.f, err, tc.want)
		}
	}
	if _, err := Transport(Files{CAFile: missing, CAField: "x"}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v, want it to wrap fs.ErrNotExist", err)
	}
}

// TestDefaults: without files the transport uses the system roots, TLS
// 1.2 at least and no transparent decompression.
func TestDefaults(t *testing.T) {
	tr, err := Transport(Files{})
	if err != nil {
		t.Fatal(err)
	}
	if tc := tr.TLSClientConfig; tc == nil || tc.RootCAs != nil || tc.MinVersion < 0x0303 || len(tc.Certificates) != 0 {
		t.Errorf("TLS config %+v", tr.TLSClientConfig)
	}
	if !tr.DisableCompression || tr.Proxy == nil {
		t.Errorf("DisableCompression=%v, proxy set=%v", tr.DisableCompression, tr.Proxy != nil)
	}
}
