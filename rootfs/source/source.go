// Package source opens update bundles by location: a local file path or an
// http(s):// URL. Every source reads from any offset, so an install can
// resume at a chunk; the HTTP source also resumes by itself, with a Range
// request, when a connection drops mid-body.
//
//	src, err := source.New("https://updates.example/gw-1.2.0.otab", source.DefaultOptions())
//	rc, err := src.Open(ctx, off) // bytes from off to the end
//	defer rc.Close()
package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

var (
	// ErrChanged: the object behind the source changed between requests.
	ErrChanged = errors.New("source changed while reading")
	// ErrRetries: the source kept failing after the configured retries.
	ErrRetries = errors.New("source failed after retries")
)

// Source yields a bundle's bytes from any offset.
type Source interface {
	// Open returns the bytes from off to the end.
	Open(ctx context.Context, off int64) (io.ReadCloser, error)
	// Size is the total size when known (after an Open), else -1.
	Size() int64
	// String names the source for messages and checkpoints.
	String() string
}

// Options configure HTTP(S) sources.
type Options struct {
	// CAFile is a PEM bundle of CAs to trust instead of the system roots.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are an optional TLS client certificate.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// Retries is how many times in a row a failing request or a dropped
	// body is retried without progress before giving up.
	Retries int `yaml:"retries" json:"retries"`
	// RetryDelay is the wait before the first retry; it doubles each time.
	RetryDelay time.Duration `yaml:"retry_delay" json:"retry_delay"`
	// Timeout bounds connecting and waiting for response headers.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Sleep waits (injected for tests); nil waits on a timer or ctx.
	Sleep func(ctx context.Context, d time.Duration) error `yaml:"-" json:"-"`
	// Client overrides the HTTP client (tests); nil builds one from the above.
	Client *http.Client `yaml:"-" json:"-"`
}

// DefaultOptions are the defaults.
func DefaultOptions() Options {
	return Options{Retries: 5, RetryDelay: time.Second, Timeout: 30 * time.Second}
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Retries < 0 {
		return fmt.Errorf("source retries %d: must be >= 0", o.Retries)
	}
	if o.RetryDelay < 0 || o.Timeout < 0 {
		return errors.New("source retry_delay and timeout must be >= 0")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("source cert_file and key_file go together")
	}
	return nil
}

// New returns the source for loc: an http:// or https:// URL, or a file path.
func New(loc string, o Options) (Source, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return newHTTP(loc, o)
	}
	if strings.Contains(loc, "://") {
		return nil, fmt.Errorf("source %q: unsupported scheme (want a path, http:// or https://)", loc)
	}
	return &File{Path: loc, size: -1}, nil
}

// File is a bundle in the local file system.
type File struct {
	Path string
	size int64
}

// Open implements Source.
func (f *File) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, err
	}
	if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() {
		f.size = st.Size()
	}
	if off > 0 {
		if _, err := fh.Seek(off, io.SeekStart); err != nil {
			fh.Close()
			return nil, fmt.Errorf("%s: seek to %d: %w", f.Path, off, err)
		}
	}
	return fh, nil
}

// Size implements Source.
func (f *File) Size() int64 { return f.size }

func (f *File) String() string { return f.Path }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func httpClient(o Options) (*http.Client, error) {
	if o.Client != nil {
		return o.Client, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("source ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("source ca_file %s: no PEM certificates", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("source client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ResponseHeaderTimeout = o.Timeout
	tr.DisableCompression = true // Range offsets are in the bundle's own bytes
	return &http.Client{Transport: tr}, nil
}
