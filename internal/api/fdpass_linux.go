package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// FDSourcePrefix starts InstallRequest.Source when the client passed the
// bundle as an open file descriptor: "fd:" then the path as the client
// named it, for messages only. The daemon reads the passed descriptor
// (PassedFile), never that path.
const FDSourcePrefix = "fd:"

// FDSource is the Source of an install whose file the client passes.
func FDSource(name string) string { return FDSourcePrefix + name }

// IsFDSource reports whether src names a passed file, and its name.
func IsFDSource(src string) (name string, ok bool) {
	if strings.HasPrefix(src, FDSourcePrefix) {
		return src[len(FDSourcePrefix):], true
	}
	return "", false
}

// ErrNoFile: the request came without a passed file descriptor.
var ErrNoFile = errors.New("no file descriptor was passed with this request")

// maxPassedFDs bounds the descriptors kept per connection; the rest are
// closed on arrival.
const maxPassedFDs = 4

// fdListener hands out fdConns.
type fdListener struct{ net.Listener }

func (l fdListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if uc, ok := c.(*net.UnixConn); ok {
		return &fdConn{UnixConn: uc}, nil
	}
	return c, nil
}

// fdConn reads with recvmsg and keeps the descriptors passed with
// SCM_RIGHTS until a handler claims them or the request ends.
type fdConn struct {
	*net.UnixConn
	mu  sync.Mutex
	fds []int
}

func (c *fdConn) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4*maxPassedFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(p, oob)
	if oobn > 0 {
		c.collect(oob[:oobn], flags&unix.MSG_CTRUNC != 0)
	}
	return n, err
}

func (c *fdConn) collect(oob []byte, truncated bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if truncated || len(c.fds) >= maxPassedFDs {
				unix.Close(fd)
				continue
			}
			unix.CloseOnExec(fd)
			c.fds = append(c.fds, fd)
		}
	}
}

// take removes and returns the first pending descriptor.
func (c *fdConn) take() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fds) == 0 {
		return -1, false
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return fd, true
}

// drop closes the descriptors no handler claimed.
func (c *fdConn) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
}

func (c *fdConn) Close() error {
	c.drop()
	return c.UnixConn.Close()
}

type connKey struct{}

// PassedFile takes ownership of the file descriptor the client passed
// with this request (Client.WithFile): the caller must Close it. The file
// is opened with the client's credentials, so reading it gives the daemon
// nothing the client could not read. It fails with ErrNoFile when none was
// passed. Descriptors a handler does not claim are closed when it returns.
func PassedFile(r *http.Request) (*os.File, error) {
	c, ok := r.Context().Value(connKey{}).(*fdConn)
	if !ok {
		return nil, ErrNoFile
	}
	fd, ok := c.take()
	if !ok {
		return nil, ErrNoFile
	}
	name := "passed-fd-" + strconv.Itoa(fd)
	if n, err := url.PathUnescape(r.Header.Get(fileNameHeader)); err == nil && n != "" {
		name = n
	}
	return os.NewFile(uintptr(fd), name), nil
}

// fileNameHeader carries the passed file's name as the client named it
// (path-escaped), for os.File.Name in messages.
const fileNameHeader = "X-Otagw-Passed-File"

// WithFile returns a client whose requests pass f (an open file, read by
// the daemon through PassedFile) over the unix socket with SCM_RIGHTS,
// along with the first bytes of each request. f stays the caller's.
func (c *Client) WithFile(f *os.File) *Client { return c.WithFiles(f) }

// WithFiles passes several files with each request (at most 4); the
// handler claims them in order with PassedFile.
func (c *Client) WithFiles(fs ...*os.File) *Client {
	path := c.Socket
	return &Client{Socket: path, file: fs[0], hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, err
			}
			return &rightsConn{UnixConn: conn.(*net.UnixConn), fs: fs}, nil
		},
		DisableKeepAlives: true,
	}}}
}

// rightsConn sends the files' descriptors with its first write.
type rightsConn struct {
	*net.UnixConn
	fs   []*os.File
	sent bool
}

// withFDs calls f with the raw descriptors of fs, each held by Control.
func withFDs(fs []*os.File, fds []int, f func([]int)) error {
	if len(fs) == 0 {
		f(fds)
		return nil
	}
	raw, err := fs[0].SyscallConn()
	if err != nil {
		return fmt.Errorf("pass %s: %w", fs[0].Name(), err)
	}
	var inner error
	if err := raw.Control(func(fd uintptr) { inner = withFDs(fs[1:], append(fds, int(fd)), f) }); err != nil {
		return fmt.Errorf("pass %s: %w", fs[0].Name(), err)
	}
	return inner
}

func (c *rightsConn) Write(p []byte) (int, error) {
	if c.sent || len(p) == 0 {
		return c.UnixConn.Write(p)
	}
	c.sent = true
	var n int
	var werr error
	if err := withFDs(c.fs, nil, func(fds []int) {
		n, _, werr = c.WriteMsgUnix(p, unix.UnixRights(fds...), nil)
	}); err != nil {
		return 0, err
	}
	if werr != nil {
		return n, werr
	}
	if n < len(p) {
		m, err := c.UnixConn.Write(p[n:])
		return n + m, err
	}
	return n, nil
}
