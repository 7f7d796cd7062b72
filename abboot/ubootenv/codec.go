package ubootenv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// Header sizes: CRC32, plus the flags byte in a redundant copy.
const (
	HeaderSingle    = 4
	HeaderRedundant = 5
)

// Pad is the byte that fills the data area after the terminating "\0\0".
// mkenvimage pads with 0xFF (erased flash) by default and otagw does the
// same, so an image otagw writes is byte-identical to mkenvimage's for the
// same variables. (libubootenv 0.3.2 leaves uninitialised heap bytes there;
// U-Boot's saveenv writes 0x00. Readers ignore the padding, the CRC covers it.)
const Pad = 0xFF

// Env is a set of variables. Encode writes them sorted by name, as U-Boot's
// env export and libubootenv do.
type Env map[string]string

// Names returns the variable names in byte order.
func (e Env) Names() []string {
	n := make([]string, 0, len(e))
	for k := range e {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Clone returns a copy of e.
func (e Env) Clone() Env {
	c := make(Env, len(e))
	for k, v := range e {
		c[k] = v
	}
	return c
}

// Equal reports whether e and o hold the same variables.
func (e Env) Equal(o Env) bool {
	if len(e) != len(o) {
		return false
	}
	for k, v := range e {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// CheckName reports whether name can be stored: not empty, no '=', no NUL.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrBadName)
	}
	if i := strings.IndexAny(name, "=\x00"); i >= 0 {
		return fmt.Errorf("%w: %q contains %q", ErrBadName, name, name[i])
	}
	return nil
}

// CheckValue reports whether value can be stored (no NUL byte).
func CheckValue(name, value string) error {
	if strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: value of %q contains a NUL byte", ErrBadValue, name)
	}
	return nil
}

// DataSize is the size of the name=value area of one copy.
func DataSize(size int64, redundant bool) int64 {
	if redundant {
		return size - HeaderRedundant
	}
	return size - HeaderSingle
}

// ParseData parses a data area: "name=value\0" entries ended by an empty
// entry ("\0"); bytes after it are padding and ignored. It is stricter than
// libubootenv (which skips entries without '=' and lets a later duplicate
// win): those, an empty name and a missing terminator are errors.
func ParseData(data []byte) (Env, error) {
	env := Env{}
	pos := 0
	for {
		if pos >= len(data) {
			return nil, fmt.Errorf("%w: no terminating empty entry (\\0\\0) within %d bytes", ErrFormat, len(data))
		}
		end := bytes.IndexByte(data[pos:], 0)
		if end < 0 {
			return nil, fmt.Errorf("%w: entry at data offset %d is not NUL-terminated within the environment size", ErrFormat, pos)
		}
		if end == 0 {
			return env, nil
		}
		entry := data[pos : pos+end]
		eq := bytes.IndexByte(entry, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: entry at data offset %d (%q) has no '='", ErrFormat, pos, clip(entry))
		}
		if eq == 0 {
			return nil, fmt.Errorf("%w: entry at data offset %d (%q) has an empty name", ErrFormat, pos, clip(entry))
		}
		name, value := string(entry[:eq]), string(entry[eq+1:])
		if _, dup := env[name]; dup {
			return nil, fmt.Errorf("%w: %q at data offset %d", ErrDuplicate, name, pos)
		}
		env[name] = value
		pos += end + 1
	}
}

func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// EncodedLen is the number of data bytes env needs, terminator included.
func EncodedLen(env Env) int64 {
	n := int64(1)
	for k, v := range env {
		n += int64(len(k) + len(v) + 2)
	}
	return n
}

// encodeData writes env sorted into data and pads the rest with Pad.
func encodeData(env Env, data []byte) error {
	for _, k := range env.Names() {
		if err := CheckName(k); err != nil {
			return err
		}
		if err := CheckValue(k, env[k]); err != nil {
			return err
		}
	}
	if need := EncodedLen(env); need > int64(len(data)) {
		return fmt.Errorf("%w: variables need %d bytes, the data area holds %d", ErrTooLarge, need, len(data))
	}
	p := 0
	for _, k := range env.Names() {
		p += copy(data[p:], k)
		data[p] = '='
		p++
		p += copy(data[p:], env[k])
		data[p] = 0
		p++
	}
	data[p] = 0
	p++
	for i := p; i < len(data); i++ {
		data[i] = Pad
	}
	return nil
}

// EncodeImage returns one copy of size bytes: CRC32 (little-endian) over the
// data area, the flags byte when redundant, the sorted variables, padding.
func EncodeImage(env Env, size int64, redundant bool, flags byte) ([]byte, error) {
	hdr := int64(HeaderSingle)
	if redundant {
		hdr = HeaderRedundant
	}
	if size <= hdr {
		return nil, fmt.Errorf("%w: size %d", ErrTooLarge, size)
	}
	img := make([]byte, size)
	if err := encodeData(env, img[hdr:]); err != nil {
		return nil, err
	}
	if redundant {
		img[4] = flags
	}
	binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[hdr:]))
	return img, nil
}

// CopyInfo describes one raw copy as read from its device.
type CopyInfo struct {
	CRCStored   uint32
	CRCComputed uint32
	Flags       byte // redundant only
}

// Valid reports whether the stored CRC matches the data.
func (c CopyInfo) Valid() bool { return c.CRCStored == c.CRCComputed }

// inspect reads the header of a raw copy.
func inspect(img []byte, redundant bool) CopyInfo {
	hdr := HeaderSingle
	if redundant {
		hdr = HeaderRedundant
	}
	var ci CopyInfo
	if len(img) <= hdr {
		ci.CRCComputed = ^ci.CRCStored
		return ci
	}
	ci.CRCStored = binary.LittleEndian.Uint32(img)
	ci.CRCComputed = crc32.ChecksumIEEE(img[hdr:])
	if redundant {
		ci.Flags = img[4]
	}
	return ci
}

// DecodeImage checks the CRC of one copy and parses its data.
func DecodeImage(img []byte, redundant bool) (Env, CopyInfo, error) {
	ci := inspect(img, redundant)
	if !ci.Valid() {
		return nil, ci, fmt.Errorf("%w: stored 0x%08x, computed 0x%08x", ErrNoValidCopy, ci.CRCStored, ci.CRCComputed)
	}
	hdr := HeaderSingle
	if redundant {
		hdr = HeaderRedundant
	}
	env, err := ParseData(img[hdr:])
	return env, ci, err
}

// FlagMode is how the flags byte of a redundant environment marks the
// current copy.
type FlagMode int

const (
	// FlagsIncremental: a counter, the new copy gets current+1 (files, block
	// devices, NAND).
	FlagsIncremental FlagMode = iota
	// FlagsBoolean: NOR flash; the new copy gets 1 (active), then the old
	// copy's flags byte is overwritten with 0 (obsolete) without an erase.
	FlagsBoolean
)

// Choose picks the current copy of a redundant environment the way
// libubootenv 0.3.2 (and U-Boot's env_import_redund) do. ok is false when
// neither copy has a valid CRC.
func Choose(valid [2]bool, flags [2]byte, mode FlagMode) (current int, ok bool) {
	switch {
	case valid[0] && !valid[1]:
		return 0, true
	case !valid[0] && valid[1]:
		return 1, true
	case !valid[0] && !valid[1]:
		return 0, false
	}
	current = 0
	if flags[1] > flags[0] {
		current = 1
	}
	switch mode {
	case FlagsBoolean:
		if flags[1] == 0xFF {
			current = 1
		} else if flags[0] == 0xFF {
			current = 0
		}
	case FlagsIncremental:
		if flags[0] == 0xFF && flags[1] == 0 {
			current = 1
		} else if flags[1] == 0xFF && flags[0] == 0 {
			current = 0
		}
	}
	return current, true
}
