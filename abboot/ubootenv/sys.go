package ubootenv

import "io"

// Kind is what a device path turned out to be.
type Kind int

// Device kinds.
const (
	KindFile  Kind = iota // regular file
	KindBlock             // block device (eMMC, SD, loop)
	KindMTD               // MTD character device (/dev/mtdN)
)

func (k Kind) String() string {
	switch k {
	case KindBlock:
		return "block device"
	case KindMTD:
		return "MTD device"
	}
	return "file"
}

// MTD flash types as reported by MEMGETINFO (linux/mtd/mtd-abi.h).
const (
	MTDNORFlash  = 3
	MTDNANDFlash = 4
)

// DeviceInfo is what Sys.Stat reports about a device path.
type DeviceInfo struct {
	Kind      Kind
	Size      int64 // bytes (file length, block device size, MTD size)
	MTDType   uint8 // KindMTD only
	EraseSize int64 // KindMTD only
}

// File is an open environment device.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// Sys is the seam to the operating system: the real one (the default) uses
// files, block devices and the MTD ioctls; tests put a flash simulator or a
// writer that fails after N bytes (a power cut) here.
type Sys interface {
	Stat(path string) (DeviceInfo, error)
	Open(path string, write bool) (File, error)
	// Erase erases [off, off+length) of an MTD device (MEMERASE).
	Erase(f File, off, length int64) error
	// IsBad reports whether the NAND eraseblock at off is bad (MEMGETBADBLOCK).
	IsBad(f File, off int64) (bool, error)
}
