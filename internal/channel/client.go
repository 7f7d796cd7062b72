package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/otagw/otagw/internal/tlsclient"
)

// Client fetches a channel index over HTTP(S), conditionally: it keeps the
// ETag and Last-Modified of the last answer and sends If-None-Match and
// If-Modified-Since, so an unchanged index costs one 304.
type Client struct {
	URL     string
	hc      *http.Client
	etag    string
	lastMod string
	// the validators of the last 200, kept by Commit
	nextEtag, nextMod string
	// Requests counts the index requests sent.
	Requests int
}

// HTTPClient builds the HTTP client the options describe: the configured
// CA (else the system roots), an optional client certificate, the proxy
// from the environment.
func HTTPClient(o Options) (*http.Client, error) {
	tr, err := tlsclient.Transport(tlsclient.Files{
		CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile,
		CAField: "channel.ca_file", CertField: "channel.cert_file/key_file",
	})
	if err != nil {
		return nil, err
	}
	tr.ResponseHeaderTimeout = o.Timeout
	return &http.Client{Transport: tr, Timeout: o.Timeout}, nil
}

// NewClient fetches url with hc.
func NewClient(url string, hc *http.Client) *Client { return &Client{URL: url, hc: hc} }

// ErrHTTP: the server answered an index request with an error status.
var ErrHTTP = errors.New("channel server error")

// Fetch gets the index. notModified means the server said it is the one
// fetched last (304); data is then nil.
func (c *Client) Fetch(ctx context.Context) (data []byte, notModified bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return nil, false, fmt.Errorf("channel %s: %w", c.URL, err)
	}
	if c.etag != "" {
		req.Header.Set("If-None-Match", c.etag)
	}
	if c.lastMod != "" {
		req.Header.Set("If-Modified-Since", c.lastMod)
	}
	c.Requests++
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("channel %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("channel %s: %w: %s", c.URL, ErrHTTP, resp.Status)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, MaxIndexSize+1))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, fmt.Errorf("channel %s: %w: the body ended after %d bytes", c.URL, ErrTruncated, len(data))
		}
		return nil, false, fmt.Errorf("channel %s: %w", c.URL, err)
	}
	if resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength {
		return nil, false, fmt.Errorf("channel %s: %w: %d of %d bytes", c.URL, ErrTruncated, len(data), resp.ContentLength)
	}
	c.nextEtag, c.nextMod = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return data, false, nil
}

// Commit keeps the validators of the last answer for the next request.
// Called only once the index it came with was accepted, so a refused index
// is fetched whole again (and refused again, loudly) instead of vanishing
// behind a 304.
func (c *Client) Commit() { c.etag, c.lastMod = c.nextEtag, c.nextMod }
