package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requestHelper is the test binary run as another uid (TestMain): one raw
// API call, OTAGW_E2E_REQUEST="METHOD PATH" with body OTAGW_E2E_BODY on
// OTAGW_E2E_SOCKET. It prints "EACCES" when the kernel refuses the
// connection, else the HTTP status code, a newline and the body.
func requestHelper() int {
	sock := os.Getenv("OTAGW_E2E_SOCKET")
	method, path, _ := strings.Cut(os.Getenv("OTAGW_E2E_REQUEST"), " ")
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, _ := http.NewRequest(method, "http://otagw"+path, strings.NewReader(os.Getenv("OTAGW_E2E_BODY")))
	resp, err := hc.Do(req)
	if errors.Is(err, syscall.EACCES) {
		fmt.Println("EACCES")
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "application/x-ndjson" {
		// A stream (GET /v1/events) does not end: its first line is the answer.
		line, _ := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
		fmt.Printf("%d\n%s", resp.StatusCode, line)
		return 0
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("%d\n%s", resp.StatusCode, b)
	return 0
}

var (
	helperOnce sync.Once
	helperPath string
)

// rawCall makes one API call as uid with groups (uid 0: as root) and
// returns the status code, 0 when the connection was refused (EACCES).
func rawCall(t *testing.T, sock string, uid uint32, groups []uint32, route, body string) (int, string) {
	t.Helper()
	helperOnce.Do(func() {
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			return
		}
		p := filepath.Join(filepath.Dir(otagwBin), "e2e-request")
		if os.WriteFile(p, b, 0o755) == nil {
			helperPath = p
		}
	})
	if helperPath == "" {
		t.Fatal("cannot copy the test binary for credential-switched calls")
	}
	var out []byte
	var err error
	var stderr strings.Builder
	// ETXTBSY: a child that another test forked while the copy above was
	// still open for writing holds that descriptor until its own exec;
	// the exec of the copy succeeds once it has.
	for try := 0; ; try++ {
		cmd := exec.Command(helperPath, "-test.run=^$")
		cmd.Env = []string{"OTAGW_E2E_SOCKET=" + sock, "OTAGW_E2E_REQUEST=" + route, "OTAGW_E2E_BODY=" + body}
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534, Groups: groups}}
		}
		stderr.Reset()
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if !errors.Is(err, syscall.ETXTBSY) || try == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s as uid %d %v: %v: %s", route, uid, groups, err, stderr.String())
	}
	first, rest, _ := strings.Cut(string(out), "\n")
	if first == "EACCES" {
		return 0, ""
	}
	code, err := strconv.Atoi(first)
	if err != nil {
		t.Fatalf("%s: helper said %q", route, out)
	}
	return code, rest
}

// registeredRoutes finds every srv.Read / srv.Write route in internal/,
// as "METHOD PATH" -> whether it is a write route.
func registeredRoutes(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`srv\.(Read|Write)\("([^"]+)"`)
	routes := map[string]bool{}
	err := filepath.WalkDir("../internal", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(line, "//") {
				continue
			}
			for _, m := range re.FindAllStringSubmatch(line, -1) {
				routes[m[2]] = m[1] == "Write"
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

// TestAPIAccessEveryRoute calls every API route as a user only in the
// admin group, one only in the read group, and outsiders: outsiders are
// refused by the kernel (or get 403) on everything, the reader gets
// through on reads and 403 on writes, the admin-only user gets through on
// everything (the socket's group is the read group: the admin group gets
// in by the socket's ACL). Each write is harmless: a body the handler
// rejects, or a reload of the same config.
func TestAPIAccessEveryRoute(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	g := newGatewayIn(t, dir, 1<<20, "", "  read_group: \"4212\"\n  admin_group: \"4213\"\n")
	startReady(t, g.Config)

	bogus := `{"no_such_field": 1}` // DisallowUnknownFields: 400 before anything happens
	table := map[string]struct {
		write bool
		body  string
	}{
		"GET /v1/status":          {false, ""},
		"GET /v1/health":          {false, ""},
		"GET /v1/mcu":             {false, ""},
		"GET /v1/events":          {false, ""},             // its first line: the current state
		"POST /v1/reload":         {true, ""},              // same config: 200
		"POST /v1/config":         {true, "colour: red\n"}, // invalid: 412, nothing changed
		"POST /v1/install":        {true, bogus},           // 400
		"POST /v1/install/cancel": {true, ""},              // nothing to cancel: 412
		"POST /v1/mark-good":      {true, ""},              // the test's file boot env
		"POST /v1/mark-bad":       {true, bogus},           // 400
		"POST /v1/rollback":       {true, bogus},           // 400
		"POST /v1/mcu/flash":      {true, bogus},           // 400
		"GET /v1/config/history":  {false, ""},
		"POST /v1/channel/poll":   {true, ""}, // no channel.url: 412
	}
	reg := registeredRoutes(t)
	for r, w := range reg {
		if e, ok := table[r]; !ok {
			t.Errorf("route %s is registered in internal/ but not in this test's table", r)
		} else if e.write != w {
			t.Errorf("route %s: registered as write=%v, the table says %v", r, w, e.write)
		}
	}
	for r := range table {
		if _, ok := reg[r]; !ok {
			t.Errorf("route %s is in this test's table but not registered in internal/", r)
		}
	}
	if len(reg) < 10 {
		t.Fatalf("found only %d routes in internal/: the parser is broken", len(reg))
	}

	users := []struct {
		name          string
		uid           uint32
		groups        []uint32
		reads, writes bool
	}{
		{"admin only", 65534, []uint32{4213}, true, true},
		{"read only", 65534, []uint32{4212}, true, false},
		{"outsider", 65534, nil, false, false},
		{"outsider in another group", 65534, []uint32{4214}, false, false},
		{"root", 0, nil, true, true},
	}
	routes := slices.Sorted(func(yield func(string) bool) {
		for r := range table {
			if !yield(r) {
				return
			}
		}
	})
	for _, u := range users {
		for _, r := range routes {
			e := table[r]
			code, body := rawCall(t, g.Socket, u.uid, u.groups, r, e.body)
			want := u.reads
			if e.write {
				want = u.writes
			}
			switch {
			case want && (code == 0 || code == http.StatusForbidden):
				t.Errorf("%s: %s refused (code %d): %s", u.name, r, code, body)
			case !want && code != 0 && code != http.StatusForbidden:
				t.Errorf("%s: %s answered %d, want refused (no connection or 403): %s", u.name, r, code, body)
			case u.name == "read only" && code != 0 && code != http.StatusForbidden && code/100 != 2:
				t.Errorf("%s: %s answered %d, want 2xx", u.name, r, code)
			}
		}
	}
}

// watchOpens reports every open of path from now on (inotify IN_OPEN).
func watchOpens(t *testing.T, path string) func() int {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	return func() int {
		buf := make([]byte, 4096)
		n, _ := unix.Read(fd, buf)
		if n <= 0 {
			return 0
		}
		return n / unix.SizeofInotifyEvent
	}
}

// TestInstallUnreadableFileRefusedByCLI: `otagw install FILE` by a member
// of the admin group who cannot read FILE fails in the CLI, before the
// daemon is asked, and nobody (the daemon included) opens FILE.
func TestInstallUnreadableFileRefusedByCLI(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	g := newGatewayIn(t, dir, 1<<20, "", "  read_group: \"4222\"\n  admin_group: \"4223\"\n")
	d := startReady(t, g.Config)
	secret := filepath.Join(dir, "secret.bundle")
	os.WriteFile(secret, []byte("TOP-SECRET-CONTENT"), 0o600)
	opens := watchOpens(t, secret)

	cmd := exec.Command(otagwBin, "install", secret, "--socket", g.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{4223}}}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("install of an unreadable file: %v: %s", err, out)
	}
	if want := "open " + secret + ": permission denied"; !strings.Contains(string(out), want) {
		t.Errorf("error %q does not say %q", out, want)
	}
	if strings.Contains(string(out), "TOP-SECR") {
		t.Errorf("the file's content leaked: %s", out)
	}
	time.Sleep(200 * time.Millisecond)
	if n := opens(); n != 0 {
		t.Errorf("%s was opened %d times", secret, n)
	}
	d.stop(t)
	if strings.Contains(d.out.String(), "secret.bundle") {
		t.Errorf("the daemon was asked about the file:\n%s", d.out.String())
	}
}

// TestInstallDaemonTakesOnlyPassedFiles NEEDS THE DAEMON SIDE of the
// descriptor passing (internal/daemon/install.go): the daemon refuses a
// plain path in POST /v1/install without opening it (nor echoing any of
// its bytes), and a member of the admin group installs a bundle that the
// CLI opened and passed.
func TestInstallDaemonTakesOnlyPassedFiles(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	g := newGatewayIn(t, dir, 1<<20, "", "  read_group: \"4232\"\n  admin_group: \"4233\"\n")
	d := startReady(t, g.Config)

	secret := filepath.Join(dir, "secret.bundle")
	os.WriteFile(secret, []byte(strings.Repeat("TOP-SECRET-CONTENT ", 256)), 0o600) // long enough for a "bad magic" that quotes it
	opens := watchOpens(t, secret)
	for _, u := range []struct {
		name   string
		uid    uint32
		groups []uint32
	}{{"admin", 65534, []uint32{4233}}, {"root", 0, nil}} {
		code, body := rawCall(t, g.Socket, u.uid, u.groups, "POST /v1/install", `{"source": "`+secret+`"}`)
		if code/100 != 4 || code == http.StatusForbidden {
			t.Errorf("%s: plain path in the request: %d, want a 4xx refusal: %s", u.name, code, body)
		}
		if strings.Contains(body, "TOP-SECR") {
			t.Errorf("%s: the answer shows the file's content: %s", u.name, body)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := opens(); n != 0 {
		t.Errorf("the daemon opened %s (%d opens) for a plain path in the request", secret, n)
	}

	bundle := g.bundle(t, "2.0.0", testImage(64<<10))
	os.Chmod(bundle, 0o644)
	cmd := exec.Command(otagwBin, "install", bundle, "--socket", g.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{4233}}}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install of a passed file as the admin group: %v: %s", err, out)
	}
	if st := statusOf(t, g.Socket); st.State != "installed" {
		t.Errorf("state after install %q, want installed", st.State)
	}
	d.stop(t)
}
