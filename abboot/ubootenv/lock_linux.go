package ubootenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// openLock opens (creating it if need be) the lock file and makes it
// mode 0600, owned by root when we are root, so that an unprivileged
// user cannot open it and so cannot hold the lock. libubootenv's
// fw_printenv/fw_setenv open it with O_CREAT and flock it too: run as root
// they still share it. O_NOFOLLOW and no O_TRUNC: a symlink planted in
// /var/lock must not make root truncate another file.
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, os.ErrPermission) {
		// fs.protected_regular refuses O_CREAT on someone else's file in
		// a sticky directory even to root; it exists, so open it plainly
		// and take it back below.
		f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("lock file %s: not a regular file", path)
	}
	euid := uint32(os.Geteuid())
	if euid == 0 && (st.Uid != 0 || st.Mode&0o077 != 0) {
		// Someone else created it, or others may open it: a process that
		// opened it already could hold its flock for ever, and chmod does
		// not take an open descriptor back. So root puts a new file (a new
		// inode, 0600, root's) in its place: a lock held on the old inode
		// guards nothing any more.
		f.Close()
		return replaceLock(path)
	}
	if st.Mode&0o7777 != 0o600 && st.Uid == euid {
		_ = unix.Fchmod(int(f.Fd()), 0o600)
	}
	return f, nil
}

// replaceLock renames a fresh root-owned 0600 file over path and opens it.
func replaceLock(path string) (*os.File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return nil, fmt.Errorf("lock file %s: replacing it: %w", path, err)
	}
	name := tmp.Name()
	err = tmp.Chmod(0o600)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("lock file %s: replacing it: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	return f, nil
}

// lockFile takes an exclusive flock on path, like libubootenv's
// libuboot_lock (flock LOCK_EX on the lock file). It polls with LOCK_NB so
// that ctx can end the wait; then it fails with ErrLocked naming path.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := openLock(path)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(0)
	defer t.Stop()
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: %s is held by another process (fw_setenv, another otagw?): %w", ErrLocked, path, ctx.Err())
		case <-t.C:
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// tryLockShared takes a shared flock on path without waiting: readers
// exclude writers (which take it exclusively) but not each other.
// errLockBusy when a writer holds it.
func tryLockShared(path string) (unlock func(), err error) {
	f, err := openLock(path)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errLockBusy
		}
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}, nil
}

var errLockBusy = errors.New("lock held by another process")
