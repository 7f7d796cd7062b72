package ubootenv

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OSSys is the real Sys: plain files, block devices and MTD character
// devices through MEMGETINFO / MEMERASE / MEMGETBADBLOCK.
type OSSys struct {
	// SysfsRoot is where /sys/class/block lives ("" = "/sys"); eMMC boot
	// partitions have their force_ro cleared around a write, as libubootenv does.
	SysfsRoot string
}

var _ Sys = OSSys{}

// Stat reports the kind and size of path.
func (s OSSys) Stat(path string) (DeviceInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return DeviceInfo{}, err
	}
	switch {
	case fi.Mode().IsRegular():
		return DeviceInfo{Kind: KindFile, Size: fi.Size()}, nil
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		f, err := os.Open(path)
		if err != nil {
			return DeviceInfo{}, err
		}
		defer f.Close()
		size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil {
			return DeviceInfo{}, fmt.Errorf("BLKGETSIZE64 %s: %w", path, err)
		}
		return DeviceInfo{Kind: KindBlock, Size: int64(size)}, nil
	case fi.Mode()&os.ModeCharDevice != 0 && strings.HasPrefix(filepath.Base(path), "mtd"):
		f, err := os.Open(path)
		if err != nil {
			return DeviceInfo{}, err
		}
		defer f.Close()
		var info unix.MtdInfo
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.MEMGETINFO, uintptr(unsafe.Pointer(&info))); e != 0 {
			return DeviceInfo{}, fmt.Errorf("MEMGETINFO %s: %w", path, e)
		}
		return DeviceInfo{Kind: KindMTD, Size: int64(info.Size), MTDType: info.Type, EraseSize: int64(info.Erasesize)}, nil
	}
	return DeviceInfo{}, fmt.Errorf("%s: %w: neither a file, a block device nor an MTD device (mode %v)", path, ErrNotSupported, fi.Mode())
}

type osFile struct {
	*os.File
	forceRO string // sysfs force_ro file to set back to 1 on Close
}

func (f *osFile) Close() error {
	err := f.File.Close()
	if f.forceRO != "" {
		_ = os.WriteFile(f.forceRO, []byte("1"), 0)
	}
	return err
}

var emmcBoot = regexp.MustCompile(`^mmcblk[0-9]+boot[0-9]+$`)

// Open opens path for reading, or for reading and writing.
func (s OSSys) Open(path string, write bool) (File, error) {
	if !write {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return &osFile{File: f}, nil
	}
	of := &osFile{}
	if base := filepath.Base(path); strings.HasPrefix(path, "/dev/") && emmcBoot.MatchString(base) {
		root := s.SysfsRoot
		if root == "" {
			root = "/sys"
		}
		ro := filepath.Join(root, "class/block", base, "force_ro")
		if err := unix.Access(ro, unix.W_OK); err == nil {
			if err := os.WriteFile(ro, []byte("0"), 0); err != nil {
				return nil, fmt.Errorf("clear %s: %w", ro, err)
			}
			of.forceRO = ro
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if of.forceRO != "" {
			_ = os.WriteFile(of.forceRO, []byte("1"), 0)
		}
		return nil, err
	}
	of.File = f
	return of, nil
}

func fdOf(f File) (uintptr, error) {
	o, ok := f.(*osFile)
	if !ok {
		return 0, fmt.Errorf("%w: MTD ioctl on a non-OS file", ErrNotSupported)
	}
	return o.Fd(), nil
}

// Erase runs MEMERASE on [off, off+length).
func (s OSSys) Erase(f File, off, length int64) error {
	fd, err := fdOf(f)
	if err != nil {
		return err
	}
	ei := unix.EraseInfo{Start: uint32(off), Length: uint32(length)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.MEMERASE, uintptr(unsafe.Pointer(&ei))); e != 0 {
		return fmt.Errorf("MEMERASE 0x%x+0x%x: %w", off, length, e)
	}
	return nil
}

// IsBad runs MEMGETBADBLOCK for the eraseblock at off.
func (s OSSys) IsBad(f File, off int64) (bool, error) {
	fd, err := fdOf(f)
	if err != nil {
		return false, err
	}
	o := off
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.MEMGETBADBLOCK, uintptr(unsafe.Pointer(&o)))
	if e != 0 {
		return false, fmt.Errorf("MEMGETBADBLOCK 0x%x: %w", off, e)
	}
	return r > 0, nil
}
