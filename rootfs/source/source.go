// Package source opens update bundles by location: a local file path, an
// http(s):// URL, or a file a client handed over already open. Every source
// reads from any offset, so an install can resume at a chunk; the HTTP
// source also resumes by itself, with a Range request, when a connection
// drops or stalls mid-body.
//
//	o := source.DefaultOptions()
//	o.IdleTimeout = 60 * time.Second // no byte for this long: reconnect
//	o.SpeedLimit, o.SpeedTime = 1024, 2*time.Minute // slower than 1 KiB/s over 2 min: reconnect
//	src, err := source.New("https://updates.example/gw-1.2.0.otab", o)
//	rc, err := src.Open(ctx, off) // bytes from off to the end
//	defer rc.Close()
//
//	src, err := source.NewDescriptor(f, "/home/op/gw-1.2.0.otab") // f from SCM_RIGHTS
//	defer src.Close()                                             // closes f
//
// A stalled HTTP body (IdleTimeout or SpeedLimit/SpeedTime hit) or a server
// that does not answer with headers within Timeout is a transient failure:
// the reader reconnects from where it was, within Retries failures in a row
// without progress, then fails with an error that wraps both ErrRetries and
// ErrStalled. Cancelling the context passed to Open ends a blocked read at
// once.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/otagw/otagw/internal/tlsclient"
)

var (
	// ErrChanged: the object behind the source changed between requests.
	ErrChanged = errors.New("source changed while reading")
	// ErrRetries: the source kept failing after the configured retries.
	ErrRetries = errors.New("source failed after retries")
	// ErrStalled: the last failure before giving up was a stall: no byte
	// for IdleTimeout, a rate below SpeedLimit over SpeedTime, or no
	// response headers within Timeout. Errors wrapping it also wrap
	// ErrRetries, and name the URL, the offset and the limit hit.
	ErrStalled = errors.New("source stalled")
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

// Ranger is a Source that can also yield a bounded range, so a reader that
// needs only some of the bytes (a delta install) asks for no more: over
// HTTP a Range request that names its end.
type Ranger interface {
	Source
	// OpenRange returns the bytes from off up to end (exclusive).
	OpenRange(ctx context.Context, off, end int64) (io.ReadCloser, error)
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
	// IdleTimeout: a body read that waits this long without a byte fails
	// as a stall (and the reader reconnects). 0 disables it.
	IdleTimeout time.Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// SpeedLimit and SpeedTime (curl's --speed-limit, --speed-time): a
	// connection whose body arrives slower than SpeedLimit bytes/s on
	// average over SpeedTime fails as a stall. 0 in either disables it.
	// Only time spent waiting for the network counts, never time the
	// caller spends between reads (writing to a slow slot, say). A
	// connection that ends slower than SpeedLimit on average is not
	// progress: it counts toward Retries even though it delivered bytes.
	SpeedLimit int64         `yaml:"speed_limit" json:"speed_limit"`
	SpeedTime  time.Duration `yaml:"speed_time" json:"speed_time"`
	// Sleep waits (injected for tests); nil waits on a timer or ctx.
	Sleep func(ctx context.Context, d time.Duration) error `yaml:"-" json:"-"`
	// Client overrides the HTTP client (tests); nil builds one from the above.
	Client *http.Client `yaml:"-" json:"-"`
}

// DefaultOptions are the defaults.
//
// IdleTimeout 60s: a gateway's cellular uplink can pause for tens of
// seconds (handover, RRC re-establishment, TCP retransmission backoff after
// a loss burst reaches 30s and more), so a shorter limit would reconnect on
// links that recover by themselves; a minute without a single byte is a
// dead path (a NAT or proxy that dropped the flow without a reset).
//
// SpeedLimit 1024 B/s over SpeedTime 120s: 1 KiB/s is far below any link
// an update can use (a 100 MiB bundle would take 28 hours), so a
// connection that slow for two minutes is a wedged server or middlebox
// trickling bytes, which the idle timeout alone never catches; two minutes
// averages over bursts and slow starts. Either way the reader reconnects
// and resumes with a Range request, so a false alarm costs one request.
func DefaultOptions() Options {
	return Options{Retries: 5, RetryDelay: time.Second, Timeout: 30 * time.Second,
		IdleTimeout: 60 * time.Second, SpeedLimit: 1024, SpeedTime: 120 * time.Second}
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Retries < 0 {
		return fmt.Errorf("source retries %d: must be >= 0", o.Retries)
	}
	if o.RetryDelay < 0 || o.Timeout < 0 {
		return errors.New("source retry_delay and timeout must be >= 0")
	}
	if o.IdleTimeout < 0 {
		return fmt.Errorf("source idle_timeout %s: must be >= 0 (0 disables it)", o.IdleTimeout)
	}
	if o.SpeedLimit < 0 {
		return fmt.Errorf("source speed_limit %d: must be >= 0 bytes/s (0 disables it)", o.SpeedLimit)
	}
	if o.SpeedTime < 0 {
		return fmt.Errorf("source speed_time %s: must be >= 0 (0 disables the speed limit)", o.SpeedTime)
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

// OpenRange implements Ranger.
func (f *File) OpenRange(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	if end < off {
		return nil, fmt.Errorf("%s: range %d-%d", f.Path, off, end)
	}
	rc, err := f.Open(ctx, off)
	if err != nil {
		return nil, err
	}
	return limited{io.LimitReader(rc, end-off), rc}, nil
}

type limited struct {
	io.Reader
	io.Closer
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
	tr, err := tlsclient.Transport(tlsclient.Files{
		CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile,
		CAField: "source ca_file", CertField: "source client certificate",
	})
	if err != nil {
		return nil, err
	}
	// The request's own timer (httpReader.request) bounds the wait for
	// headers at Timeout and reports it as a stall; the transport's limit
	// is only a backstop, later, so that the two never race under load.
	tr.ResponseHeaderTimeout = 2 * o.Timeout
	return &http.Client{Transport: tr}, nil
}
