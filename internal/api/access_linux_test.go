package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain doubles as a dialer run with other credentials: with
// OTAGW_API_TEST_DIAL set it connects to that socket and exits 0 on
// success, 13 on EACCES, 1 otherwise.
func TestMain(m *testing.M) {
	if sock := os.Getenv("OTAGW_API_TEST_DIAL"); sock != "" {
		c, err := net.Dial("unix", sock)
		switch {
		case err == nil:
			c.Close()
			os.Exit(0)
		case errors.Is(err, syscall.EACCES):
			os.Exit(13)
		}
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	code := m.Run()
	if dialerPath != "" {
		os.RemoveAll(filepath.Dir(dialerPath))
	}
	os.Exit(code)
}

// dialAs connects to sock as uid 65534 with only the given groups and
// returns whether the kernel let it.
func dialAs(t *testing.T, sock string, groups ...uint32) bool {
	t.Helper()
	cmd := exec.Command(dialerBin(t), "-test.run=^$")
	cmd.Env = []string{"OTAGW_API_TEST_DIAL=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return true
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 13 {
		return false
	}
	t.Fatalf("dial as groups %v: %v: %s", groups, err, out)
	return false
}

var (
	dialerOnce sync.Once
	dialerPath string
)

// dialerBin is a copy of the test binary that uid 65534 may run (the
// build directory is private).
func dialerBin(t *testing.T) string {
	dialerOnce.Do(func() {
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "otagw-api-dialer")
		if err != nil {
			return
		}
		os.Chmod(dir, 0o755)
		p := filepath.Join(dir, "dialer")
		if os.WriteFile(p, b, 0o755) == nil {
			dialerPath = p
		}
	})
	if dialerPath == "" {
		t.Fatal("cannot copy the test binary for the credential-switched dialer")
	}
	return dialerPath
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch credentials")
	}
}

// serve starts a server on a fresh socket in a directory everyone may
// search.
func serve(t *testing.T, acc Access, sockGID int, routes func(*Server)) (*Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "otagw-api") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "api.sock")
	ln, err := Listen(sock, sockGID)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(acc, nil)
	if routes != nil {
		routes(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	// Serve sets the ACL before it accepts; wait until it answers.
	for i := 0; ; i++ {
		if err := NewClient(sock).Get(context.Background(), "/nothing", nil); errors.Is(err, ErrNotFound) {
			break
		} else if i > 200 {
			t.Fatalf("server does not answer: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s, sock
}

func TestEncodeGroupACL(t *testing.T) {
	b := encodeGroupACL([]int{4203, 4202, 4203})
	if len(b) != 4+8*6 {
		t.Fatalf("%d bytes, want header + 6 entries", len(b))
	}
	g, err := aclGroups(b)
	if err != nil || len(g) != 2 || g[4202] != 6 || g[4203] != 6 {
		t.Fatalf("groups %v, %v", g, err)
	}
}

// TestSocketAdminOnlyCanConnect: a user only in the admin group, or only
// in the read group, can connect; a user in neither cannot; the socket
// directory created by Listen is searchable despite a tight umask.
func TestSocketAdminOnlyCanConnect(t *testing.T) {
	needRoot(t)
	old := syscall.Umask(0o027)
	s, sock := serve(t, Access{ReadGIDs: []int{4302}, AdminGIDs: []int{4303}}, 4302, nil)
	syscall.Umask(old)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4302 {
		t.Fatalf("socket %v: %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(sock)); di.Mode().Perm() != 0o755 {
		t.Errorf("socket directory mode %v, want 0755", di.Mode())
	}
	raw := make([]byte, 256)
	n, err := unix.Getxattr(sock, aclXattr, raw)
	if err != nil {
		t.Fatalf("no ACL on the socket: %v", err)
	}
	if g, _ := aclGroups(raw[:n]); len(g) != 1 || g[4303] != 6 {
		t.Errorf("ACL groups %v, want only 4303:rw", g)
	}
	for _, c := range []struct {
		name   string
		groups []uint32
		want   bool
	}{
		{"admin only", []uint32{4303}, true},
		{"read only", []uint32{4302}, true},
		{"outsider", nil, false},
		{"other group", []uint32{4304}, false},
	} {
		if got := dialAs(t, sock, c.groups...); got != c.want {
			t.Errorf("%s: connected=%v, want %v", c.name, got, c.want)
		}
	}
	// A reload that moves the admin group moves the ACL entry.
	s.SetAccess(Access{ReadGIDs: []int{4302}, AdminGIDs: []int{4304}})
	if !dialAs(t, sock, 4304) || dialAs(t, sock, 4303) {
		t.Errorf("after SetAccess: the new admin group must connect, the old one not")
	}
	// Both groups the socket's own: no ACL left.
	s.SetAccess(Access{ReadGIDs: []int{4302}, AdminGIDs: []int{4302}})
	if _, err := unix.Getxattr(sock, aclXattr, raw); !errors.Is(err, unix.ENODATA) {
		t.Errorf("ACL left when no group needs it: %v", err)
	}
}

// TestSocketNoACLFallback: where ACLs are refused the socket becomes 0666
// and the server still answers 403 to outsiders.
func TestSocketNoACLFallback(t *testing.T) {
	needRoot(t)
	setxattr = func(string, string, []byte, int) error { return unix.EOPNOTSUPP }
	defer func() { setxattr = unix.Setxattr }()
	_, sock := serve(t, Access{ReadGIDs: []int{4312}, AdminGIDs: []int{4313}}, 4312, func(s *Server) {
		s.Write("POST /w", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, "ok") })
	})
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o666 {
		t.Fatalf("mode %v, want 0666 fallback", fi.Mode())
	}
	if !dialAs(t, sock) {
		t.Errorf("outsider cannot connect to the 0666 socket")
	}
}

// TestPassedFile: a file the client opened reaches the handler as an open
// descriptor; without one the handler gets ErrNoFile; a descriptor the
// handler does not take is closed.
func TestPassedFile(t *testing.T) {
	_, sock := serve(t, Access{}, -1, func(s *Server) {
		s.Write("POST /take", func(w http.ResponseWriter, r *http.Request) {
			f, err := PassedFile(r)
			if err != nil {
				WriteError(w, http.StatusBadRequest, "no-file", err.Error())
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			WriteJSON(w, map[string]string{"name": f.Name(), "data": string(b)})
		})
		s.Write("POST /ignore", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, "ok") })
	})
	path := filepath.Join(t.TempDir(), "a file\nwith newline")
	os.WriteFile(path, []byte("bundle bytes"), 0o600)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	var out map[string]string
	if err := NewClient(sock).WithFile(f).Post(ctx, "/take", InstallRequest{Source: FDSource(path)}, &out); err != nil {
		t.Fatal(err)
	}
	if out["data"] != "bundle bytes" || out["name"] != path {
		t.Errorf("handler got %q", out)
	}
	if err := NewClient(sock).Post(ctx, "/take", nil, nil); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), ErrNoFile.Error()) {
		t.Errorf("no file passed: %v", err)
	}
	if err := NewClient(sock).WithFile(f).Post(ctx, "/ignore", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := openCopies(t, path); n != 1 {
		t.Errorf("%d descriptors of the file open in this process after the requests, want 1 (the client's)", n)
	}
	if n, ok := IsFDSource(FDSource("/x")); !ok || n != "/x" {
		t.Errorf("IsFDSource round trip: %q %v", n, ok)
	}
}

func openCopies(t *testing.T, path string) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == path {
			n++
		}
	}
	return n
}
