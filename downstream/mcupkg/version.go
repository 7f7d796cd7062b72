package mcupkg

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Version is an MCU firmware version in MCUboot's shape:
// major.minor.revision+build.
type Version struct {
	Major, Minor uint8
	Revision     uint16
	Build        uint32
}

// ParseVersion parses "1.2.3", "1.2.3+4", "1.2" or "v1.2.3".
func ParseVersion(s string) (Version, error) {
	var v Version
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	main, build, hasBuild := strings.Cut(t, "+")
	parts := strings.Split(main, ".")
	if t == "" || len(parts) > 3 {
		return v, fmt.Errorf("version %q: want MAJOR.MINOR.REVISION[+BUILD]", s)
	}
	lim := []int{8, 8, 16}
	var n [3]uint64
	for i, p := range parts {
		x, err := strconv.ParseUint(p, 10, lim[i])
		if err != nil {
			return v, fmt.Errorf("version %q: %w", s, err)
		}
		n[i] = x
	}
	v.Major, v.Minor, v.Revision = uint8(n[0]), uint8(n[1]), uint16(n[2])
	if hasBuild {
		b, err := strconv.ParseUint(build, 10, 32)
		if err != nil {
			return v, fmt.Errorf("version %q build: %w", s, err)
		}
		v.Build = uint32(b)
	}
	return v, nil
}

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Revision)
	if v.Build != 0 {
		s += fmt.Sprintf("+%d", v.Build)
	}
	return s
}

// Compare returns -1, 0 or 1; the build number counts last.
func (v Version) Compare(w Version) int {
	a := []uint64{uint64(v.Major), uint64(v.Minor), uint64(v.Revision), uint64(v.Build)}
	b := []uint64{uint64(w.Major), uint64(w.Minor), uint64(w.Revision), uint64(w.Build)}
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// MCUbootMagic starts an MCUboot image header (little-endian).
const MCUbootMagic = 0x96f3b83d

// HeaderSize is how many bytes ParseMCUbootHeader needs.
const HeaderSize = 32

// ParseMCUbootHeader reads the version from an MCUboot image header:
// magic u32 at 0, version at 20 (major u8, minor u8, revision u16, build u32),
// all little-endian. ok is false when the magic is absent (erased or foreign flash).
func ParseMCUbootHeader(p []byte) (Version, bool) {
	if len(p) < 28 || binary.LittleEndian.Uint32(p) != MCUbootMagic {
		return Version{}, false
	}
	return Version{Major: p[20], Minor: p[21], Revision: binary.LittleEndian.Uint16(p[22:]), Build: binary.LittleEndian.Uint32(p[24:])}, true
}

// MCUbootHeader builds a minimal MCUboot image header carrying v (for
// tests and simulators).
func MCUbootHeader(v Version) []byte {
	p := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint32(p, MCUbootMagic)
	binary.LittleEndian.PutUint16(p[8:], HeaderSize) // hdr_size
	p[20], p[21] = v.Major, v.Minor
	binary.LittleEndian.PutUint16(p[22:], v.Revision)
	binary.LittleEndian.PutUint32(p[24:], v.Build)
	return p
}
