package channel

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Options is the "channel:" configuration section.
type Options struct {
	// URL is the channel's index, e.g. https://updates.example.com/stable/index.json;
	// empty turns the polling agent off.
	URL string `yaml:"url" json:"url"`
	// Name is the channel name the index must carry (its directory name
	// as written by otagw channel publish); empty accepts any.
	Name string `yaml:"name" json:"name"`
	// Tags are this device's tags: entries with tags apply to devices
	// that have them all.
	Tags []string `yaml:"tags" json:"tags"`
	// Interval between polls; each wait is Interval plus a random part of
	// Jitter, so a fleet does not poll in step.
	Interval time.Duration `yaml:"interval" json:"interval"`
	Jitter   time.Duration `yaml:"jitter" json:"jitter"`
	// Backoff is the wait after a failed poll; it doubles with each
	// further failure up to MaxBackoff.
	Backoff    time.Duration `yaml:"backoff" json:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff" json:"max_backoff"`
	// Retry is how soon postponed work (a precondition not met, a closed
	// download window) is tried again.
	Retry time.Duration `yaml:"retry" json:"retry"`
	// Timeout bounds one index request.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// CAFile is a PEM bundle of CAs to trust instead of the system roots;
	// CertFile and KeyFile an optional TLS client certificate. The proxy
	// comes from HTTPS_PROXY / NO_PROXY in the environment. Bundles
	// download through rootfs.source, whose ca_file, cert_file and
	// key_file default to these.
	CAFile   string `yaml:"ca_file" json:"ca_file"`
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// AllowHTTP permits a plain http:// URL (development; the index is
	// signed either way, but TLS hides what a device fetches).
	AllowHTTP bool `yaml:"allow_http" json:"allow_http"`
	// ConfigHealthDeadline is how long health checks must pass after a
	// configuration from the channel is applied; a failure within it
	// restores the previous file.
	ConfigHealthDeadline time.Duration `yaml:"config_health_deadline" json:"config_health_deadline"`
}

// DefaultOptions: off; hourly with ten minutes of jitter when on.
func DefaultOptions() Options {
	return Options{Interval: time.Hour, Jitter: 10 * time.Minute, Backoff: time.Minute, MaxBackoff: 6 * time.Hour,
		Retry: 5 * time.Minute, Timeout: 30 * time.Second, ConfigHealthDeadline: 2 * time.Minute}
}

// fieldError names the key a problem is about (config maps it to a line).
type fieldError struct {
	field string
	err   error
}

func (e fieldError) Error() string { return e.err.Error() }
func (e fieldError) Field() string { return e.field }
func (e fieldError) Unwrap() error { return e.err }

func ferr(field, format string, a ...any) error {
	return fieldError{field, fmt.Errorf(format, a...)}
}

// Validate checks the section; each error names its key.
func (o Options) Validate() error {
	var errs []error
	if o.URL != "" {
		u, err := url.Parse(o.URL)
		switch {
		case err != nil:
			errs = append(errs, ferr("url", "%v", err))
		case u.Scheme == "https":
		case u.Scheme == "http" && o.AllowHTTP:
		case u.Scheme == "http":
			errs = append(errs, ferr("url", "%q is plain http; use https, or set allow_http for development", o.URL))
		default:
			errs = append(errs, ferr("url", "%q: want an https:// URL", o.URL))
		}
		if err == nil && u.Host == "" {
			errs = append(errs, ferr("url", "%q has no host", o.URL))
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
		min time.Duration
	}{{"interval", o.Interval, time.Second}, {"backoff", o.Backoff, time.Second}, {"max_backoff", o.MaxBackoff, time.Second},
		{"retry", o.Retry, time.Second}, {"timeout", o.Timeout, time.Second}, {"config_health_deadline", o.ConfigHealthDeadline, time.Second}} {
		if d.v < d.min {
			errs = append(errs, ferr(d.key, "%v: want at least %v", d.v, d.min))
		}
	}
	if o.Jitter < 0 {
		errs = append(errs, ferr("jitter", "%v: must be 0 or more", o.Jitter))
	}
	if o.MaxBackoff < o.Backoff {
		errs = append(errs, ferr("max_backoff", "%v is below backoff %v", o.MaxBackoff, o.Backoff))
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		errs = append(errs, ferr("cert_file", "cert_file and key_file go together"))
	}
	for i, t := range o.Tags {
		if t == "" {
			errs = append(errs, ferr(fmt.Sprintf("tags[%d]", i), "empty"))
		}
	}
	return errors.Join(errs...)
}
