// Package tlsclient builds the HTTPS transport the update source
// (rootfs/source) and the update channel (internal/channel) share: the
// configured CA (else the system roots), an optional client certificate,
// TLS 1.2 at least, the proxy from the environment and no transparent
// decompression (Range offsets are in the files' own bytes).
package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// Files names the PEM files of a TLS client and, for errors, the
// configuration fields they come from.
type Files struct {
	CAFile, CertFile, KeyFile string
	// CAField and CertField name the fields in errors, e.g.
	// "channel.ca_file" and "channel.cert_file/key_file".
	CAField, CertField string
}

// Transport returns a clone of http.DefaultTransport set up for f. The
// caller sets its own timeouts.
func Transport(f Files) (*http.Transport, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.CAField, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificates", f.CAField, f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.CertField, err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyFromEnvironment
	tr.TLSClientConfig = tc
	tr.DisableCompression = true
	return tr, nil
}
