// Package api is the daemon's local API: HTTP and JSON over a unix socket,
// with the caller's identity taken from the socket's peer credentials
// (SO_PEERCRED), never from anything the caller says.
//
// Daemon side:
//
//	srv := api.NewServer(api.Access{ReadGIDs: []int{rg}, AdminGIDs: []int{ag}}, log)
//	srv.Read("GET /v1/status", statusHandler)       // root, read group, admin group
//	srv.Write("POST /v1/install", installHandler)    // root and admin group only
//	ln, _ := api.Listen("/run/otagw/otagw.sock", gid) // mode 0660, group gid
//	go srv.Serve(ln)                                  // + ACL for the read and admin groups
//
// CLI side, the typed client (client.go), one method per route:
//
//	c := api.NewClient("/run/otagw/otagw.sock")
//	st, err := c.Status(ctx) // errors.Is(err, api.ErrNotRunning) when nobody listens
//	err = c.Events(ctx, nil, func(ev api.Event) error { ... }) // GET /v1/events
//
// Long operations (install, MCU flash) and the event stream answer with
// line-delimited JSON, one api.Event per line.
//
// # Who can connect
//
// The socket file is root-owned, mode 0660, its group the configured
// socket group (by default the read group). Serve adds a POSIX ACL entry
// "group:GID:rw-" for every read and admin group that is not the file's
// group (and SetAccess updates it on reload), so that a user only in the
// admin group can connect, as can one only in the read group, and nobody
// else: other users get EACCES from the kernel. On a file system without
// POSIX ACLs (EOPNOTSUPP) the socket falls back to mode 0666 and the
// daemon logs a warning: then everyone can connect and authorisation rests
// on SO_PEERCRED alone, which answers 403 to users outside both groups on
// every route. Listen creates a missing socket directory 0755 whatever the
// umask; Serve logs a warning naming any directory above the socket that a
// configured group cannot search.
//
// # Passing files
//
// A client never asks the daemon (root) to open a path: it opens the file
// itself, with its own credentials, and passes the open descriptor with
// SCM_RIGHTS along with the request (Client.WithFile). The server reads
// every connection with recvmsg, keeps what was passed, and a handler
// takes it with PassedFile; descriptors nobody claimed are closed when the
// handler returns or the connection closes. In an InstallRequest such a
// source reads "fd:PATH" (FDSource), PATH only naming it in messages.
package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Errors the client returns, matched from HTTP status codes.
var (
	ErrNotRunning   = errors.New("the otagw daemon is not running")
	ErrDenied       = errors.New("permission denied")            // 403
	ErrBusy         = errors.New("busy")                         // 409
	ErrPrecondition = errors.New("precondition failed")          // 412
	ErrNotFound     = errors.New("not found")                    // 404
	ErrBadRequest   = errors.New("bad request")                  // 400
	ErrServer       = errors.New("the daemon reported an error") // 500
)

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"` // a machine-readable error name, e.g. "downgrade"
}

// Peer is who is on the other end of a connection.
type Peer struct {
	PID, UID, GID int
	Groups        []int // supplementary groups, from /proc/PID/status
}

type peerKey struct{}

// PeerFrom returns the peer of a request served by a Server.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// Access says who may call what.
type Access struct {
	ReadGIDs  []int // may call Read routes
	AdminGIDs []int // may call Read and Write routes
}

func (a Access) allowed(p Peer, write bool) bool {
	if p.UID == 0 {
		return true
	}
	in := func(list []int) bool {
		for _, g := range list {
			if g < 0 {
				continue
			}
			if p.GID == g {
				return true
			}
			for _, pg := range p.Groups {
				if pg == g {
					return true
				}
			}
		}
		return false
	}
	if in(a.AdminGIDs) {
		return true
	}
	return !write && in(a.ReadGIDs)
}

// Server routes API requests and enforces Access.
type Server struct {
	mux  *http.ServeMux
	log  *zap.Logger
	srv  *http.Server
	mu   sync.Mutex
	acc  Access
	sock string // the socket file served, for SetAccess to update its ACL
}

// NewServer returns a server with no routes.
func NewServer(access Access, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{mux: http.NewServeMux(), acc: access, log: log}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if fc, ok := c.(*fdConn); ok {
				ctx = context.WithValue(ctx, connKey{}, fc)
			}
			if p, err := peerOf(c); err == nil {
				return context.WithValue(ctx, peerKey{}, p)
			}
			return ctx
		},
	}
	return s
}

// SetAccess replaces the access rules (on config reload) and the socket's
// ACL with them.
func (s *Server) SetAccess(a Access) {
	s.mu.Lock()
	s.acc = a
	sock := s.sock
	s.mu.Unlock()
	s.shareSocket(sock)
}

func (s *Server) getAccess() Access {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acc
}

// Read registers a route that root and both groups may call.
func (s *Server) Read(pattern string, h http.HandlerFunc) { s.handle(pattern, false, h) }

// Write registers a route that only root and the admin group may call.
func (s *Server) Write(pattern string, h http.HandlerFunc) { s.handle(pattern, true, h) }

func (s *Server) handle(pattern string, write bool, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*fdConn); ok {
			defer c.drop() // descriptors passed with this request that h did not take
		}
		p, ok := PeerFrom(r.Context())
		if !ok || !s.getAccess().allowed(p, write) {
			s.log.Warn("API call denied",
				zap.String("route", pattern), zap.Int("uid", p.UID), zap.Int("gid", p.GID),
				zap.Int("pid", p.PID), zap.Bool("write", write), zap.Bool("credentials_known", ok))
			WriteError(w, http.StatusForbidden, "denied",
				fmt.Sprintf("uid %d may not call %s (allowed: root and the configured %s group)", p.UID, pattern, map[bool]string{false: "read or admin", true: "admin"}[write]))
			return
		}
		h(w, r)
	})
}

// Serve answers on ln until Shutdown. If ln is a unix socket with a file
// (from Listen or from socket activation), it first lets the read and
// admin groups connect to it (see the package doc).
func (s *Server) Serve(ln net.Listener) error {
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		s.mu.Lock()
		s.sock = a.Name
		s.mu.Unlock()
		s.shareSocket(a.Name)
	}
	err := s.srv.Serve(fdListener{ln})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for open requests up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// WriteJSON answers 200 with v.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError answers with an Error body.
func WriteError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(Error{Error: msg, Kind: kind})
}

// Listen creates the unix socket at path with mode 0660 and group gid
// (gid < 0: leave the group alone). A stale socket file from a crashed
// daemon is replaced; a live one is an error.
func Listen(path string, gid int) (net.Listener, error) {
	dir := dirOf(path)
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("API socket %s: %w", path, err)
	}
	if os.IsNotExist(statErr) {
		// Searchable by both groups whatever the umask (UMask=0027 in the unit).
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, fmt.Errorf("API socket %s: %w", path, err)
		}
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("API socket %s: another daemon is listening there", path)
	}
	os.Remove(path)
	// Create it with no permissions for others from the first moment.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("API socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("API socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("API socket %s: chown to gid %d: %w", path, gid, err)
		}
	}
	return ln, nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// peerOf reads SO_PEERCRED and the peer's supplementary groups.
func peerOf(c net.Conn) (Peer, error) {
	if fc, ok := c.(*fdConn); ok {
		c = fc.UnixConn
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, cerr
	}
	p := Peer{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}
	p.Groups = procGroups(p.PID)
	return p, nil
}

// procGroups reads the "Groups:" line of /proc/PID/status. If the process
// is gone, the peer keeps only its primary group.
func procGroups(pid int) []int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Groups:") {
			continue
		}
		var gs []int
		for _, f := range strings.Fields(line[len("Groups:"):]) {
			if g, err := strconv.Atoi(f); err == nil {
				gs = append(gs, g)
			}
		}
		return gs
	}
	return nil
}

// Client talks to the daemon.
type Client struct {
	Socket string
	hc     *http.Client
	file   *os.File // passed with each request (WithFile)
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// Get calls a read route and decodes the answer into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// Post calls a write route with in as the JSON body.
func (c *Client) Post(ctx context.Context, path string, in, out any) error {
	return c.do(ctx, http.MethodPost, path, in, out)
}

// PostRaw calls a write route with a body that is not JSON (a YAML
// config file, say).
func (c *Client) PostRaw(ctx context.Context, path, contentType string, body []byte, out any) error {
	return c.do(ctx, http.MethodPost, path, rawBody{contentType, body}, out)
}

type rawBody struct {
	contentType string
	data        []byte
}

func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	contentType := "application/json"
	if rb, ok := in.(rawBody); ok {
		body, contentType = bytes.NewReader(rb.data), rb.contentType
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://otagw"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.file != nil {
		req.Header.Set(fileNameHeader, url.PathEscape(c.file.Name()))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no one listens on %s); start it with: systemctl start otagw", ErrNotRunning, c.Socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("%w: cannot open %s (ask to be added to the otagw group, or use sudo)", ErrDenied, c.Socket)
		}
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, &StatusError{Code: resp.StatusCode, Kind: e.Kind, Msg: e.Error}
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", path, err)
	}
	return nil
}

// Stream calls a route that answers with line-delimited JSON and hands
// each line to fn until the daemon ends the stream.
func (c *Client) Stream(ctx context.Context, method, path string, in any, fn func(json.RawMessage) error) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(append(json.RawMessage(nil), line...)); err != nil {
			return err
		}
	}
	return sc.Err()
}

// StatusError is a non-2xx answer; errors.Is matches the Err* sentinels.
type StatusError struct {
	Code int
	Kind string
	Msg  string
}

func (e *StatusError) Error() string { return e.Msg }

// Is maps HTTP codes to the sentinels.
func (e *StatusError) Is(target error) bool {
	switch e.Code {
	case http.StatusForbidden:
		return target == ErrDenied
	case http.StatusConflict:
		return target == ErrBusy
	case http.StatusPreconditionFailed:
		return target == ErrPrecondition
	case http.StatusNotFound:
		return target == ErrNotFound
	case http.StatusBadRequest:
		return target == ErrBadRequest
	}
	return e.Code >= 500 && target == ErrServer
}

// StreamWriter writes line-delimited JSON events and flushes each.
type StreamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// NewStreamWriter starts a 200 answer of line-delimited JSON.
func NewStreamWriter(w http.ResponseWriter) *StreamWriter {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &StreamWriter{w: w, rc: http.NewResponseController(w)}
}

// Send writes one event.
func (s *StreamWriter) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.w.Write(append(b, '\n')); err != nil {
		return err
	}
	return s.rc.Flush()
}
