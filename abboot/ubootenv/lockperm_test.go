package ubootenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain doubles as a lock helper process:
//
//	OTAGW_ENV_TEST_TRY=PATH   open PATH as libubootenv does and flock it: exit 0, 13 on EACCES
//	OTAGW_ENV_TEST_HOLD=PATH  flock PATH exclusively, print "locked", hold it until stdin closes
func TestMain(m *testing.M) {
	if p := os.Getenv("OTAGW_ENV_TEST_TRY"); p != "" {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o666)
		if errors.Is(err, unix.EACCES) {
			os.Exit(13)
		}
		if err == nil {
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if p := os.Getenv("OTAGW_ENV_TEST_HOLD"); p != "" {
		fd, err := unix.Open(p, unix.O_WRONLY, 0)
		if err == nil {
			err = unix.Flock(fd, unix.LOCK_EX)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("locked")
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperBin copies the test binary where uid 65534 may run it.
func helperBin(t *testing.T) string {
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "otagw-env-helper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "helper")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileEnv is a redundant environment in a plain file, written by Reset,
// with its lock file in a directory that everyone may search and write
// (like /var/lock).
func fileEnv(t *testing.T, red bool) (*Store, string, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "otagw-env-lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o1777)
	img := filepath.Join(dir, "uboot.env")
	os.WriteFile(img, nil, 0o644)
	cfg := fmt.Sprintf("%s 0x0 0x2000\n", img)
	if red {
		cfg += fmt.Sprintf("%s 0x2000 0x2000\n", img)
	}
	cfgPath := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	st := openStore(t, cfgPath)
	if err := st.Reset(context.Background(), Env{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	return st, filepath.Join(dir, "lock"), img
}

// TestLockFileNotForUsers: the lock file is 0600 root-owned, also when an
// unprivileged user created it 0644 first, so such a user cannot open it
// and so cannot hold the lock (stalling status, failing installs).
func TestLockFileNotForUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch credentials")
	}
	helper := helperBin(t)
	try := func(path string) int {
		cmd := exec.Command(helper, "-test.run=^$")
		cmd.Env = []string{"OTAGW_ENV_TEST_TRY=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		return 0
	}
	check := func(what, lock string) {
		t.Helper()
		fi, err := os.Stat(lock)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || st.Uid != 0 {
			t.Errorf("%s: lock file mode %v uid %d, want 0600 root", what, fi.Mode(), st.Uid)
		}
		if code := try(lock); code != 13 {
			t.Errorf("%s: uid 65534 opening the lock file: exit %d, want EACCES", what, code)
		}
	}
	st, lock, _ := fileEnv(t, true)
	check("created by the store", lock)

	// A user got there first (0644, theirs): the next write takes it back.
	os.Remove(lock)
	if code := try(lock); code != 0 {
		t.Fatalf("the user could not even create the lock file (exit %d)", code)
	}
	if fi, _ := os.Stat(lock); fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("setup: lock not created by uid 65534")
	}
	if err := st.Update(context.Background(), func(e Env) error { e["b"] = "2"; return nil }); err != nil {
		t.Fatal(err)
	}
	check("pre-created by a user", lock)

	// Worse: the user created it and holds its flock open for ever. The
	// store must neither wait for that lock nor fail: the inode the user
	// holds is replaced, not just re-moded.
	os.Remove(lock)
	if code := try(lock); code != 0 {
		t.Fatalf("the user could not create the lock file (exit %d)", code)
	}
	hold := exec.Command(helper, "-test.run=^$")
	hold.Env = []string{"OTAGW_ENV_TEST_HOLD=" + lock}
	hold.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, _ := hold.StdinPipe()
	out, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); hold.Wait() }()
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != "locked\n" {
		t.Fatalf("the user's process did not take the lock: %q %v", l, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.Update(ctx, func(e Env) error { e["c"] = "3"; return nil }); err != nil {
		t.Fatalf("a write while a user holds a lock file they created: %v", err)
	}
	check("held by a user", lock)
}

// TestReadDoesNotWaitForWriter: while another process holds the lock a
// Read returns at once (a copy torn by that writer is re-read until its
// CRC holds), and a write fails when its context ends, naming the lock.
func TestReadDoesNotWaitForWriter(t *testing.T) {
	st, lock, img := fileEnv(t, false)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{"OTAGW_ENV_TEST_HOLD=" + lock}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if l, _ := bufio.NewReader(stdout).ReadString('\n'); l != "locked\n" {
		t.Fatalf("helper did not take the lock: %q", l)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	snap, err := st.Read(ctx)
	if err != nil || snap.Env["a"] != "1" {
		t.Fatalf("Read while locked: %v %v", snap, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Read took %v while another process held the lock", d)
	}

	// The "writer" is half-way: the only copy fails its CRC for a moment.
	good, _ := os.ReadFile(img)
	bad := append([]byte(nil), good...)
	bad[10] ^= 0xff
	overwrite := func(b []byte) { // in place, as a writer does (no truncation)
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err == nil {
			f.WriteAt(b, 0)
			f.Close()
		}
	}
	overwrite(bad)
	fixed := make(chan struct{})
	go func() { time.Sleep(30 * time.Millisecond); overwrite(good); close(fixed) }()
	if snap, err := st.Read(ctx); err != nil || snap.Env["a"] != "1" {
		t.Errorf("Read during a write: %v %v", snap, err)
	}
	// Torn for good: a bounded wait, then the CRC error, saying why.
	<-fixed
	overwrite(bad)
	start = time.Now()
	if _, err := st.Read(ctx); !errors.Is(err, ErrNoValidCopy) || !strings.Contains(err.Error(), lock) {
		t.Errorf("Read of a corrupt env while locked: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Read of a corrupt env took %v", d)
	}
	overwrite(good)

	wctx, wcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer wcancel()
	start = time.Now()
	err = st.Update(wctx, func(e Env) error { e["b"] = "2"; return nil })
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), lock) {
		t.Errorf("Update while locked: %v, want ErrLocked naming %s", err, lock)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("Update gave up after %v, want its context's 200ms", d)
	}
}
