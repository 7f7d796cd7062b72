package watchdog

import (
	"errors"
	"fmt"
	"io/fs"
	"unsafe"

	uwatchdog "github.com/u-root/u-root/pkg/watchdog"
	"golang.org/x/sys/unix"
)

// linuxFile is a watchdog device opened through u-root's pkg/watchdog. The
// ioctls that take an int are issued here, with an int32, because u-root's
// SetTimeout passes a pointer to a time.Duration.
type linuxFile struct {
	wd *uwatchdog.Watchdog
}

// OpenFile opens (and so arms) the watchdog device at path.
func OpenFile(path string) (File, error) {
	wd, err := uwatchdog.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			return nil, fmt.Errorf("watchdog %s: open: %w: %w", path, ErrNotSupported, err)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("watchdog %s: open: %w (is systemd's RuntimeWatchdogSec= or another watchdog daemon using it?): %w", path, ErrBusy, err)
		}
		return nil, fmt.Errorf("watchdog %s: open: %w", path, err)
	}
	return &linuxFile{wd: wd}, nil
}

func (l *linuxFile) Ioctl(req uint, v *int32) error {
	rc, err := l.wd.File.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	cerr := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(v)))
	})
	if cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func (l *linuxFile) Support(info *unix.WatchdogInfo) error {
	wi, err := l.wd.Support()
	if err != nil {
		return err
	}
	*info = *wi
	return nil
}

func (l *linuxFile) Write(p []byte) (int, error) { return l.wd.File.Write(p) }

func (l *linuxFile) Close() error { return l.wd.Close() }
