package mcupkg

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// ErrInput: an input image (HEX, ELF) is malformed.
var ErrInput = errors.New("bad firmware input")

// ParseHex parses Intel HEX (record types 00 data, 01 EOF, 02 extended
// segment address, 03 start segment address, 04 extended linear address,
// 05 start linear address) into address-sorted, merged segments.
func ParseHex(r io.Reader) ([]Segment, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024), 1024)
	var base uint32
	var segs []Segment
	line := 0
	eof := false
	total := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		if eof {
			return nil, fmt.Errorf("%w: line %d: data after the EOF record", ErrInput, line)
		}
		if t[0] != ':' {
			return nil, fmt.Errorf("%w: line %d: no ':'", ErrInput, line)
		}
		b, err := hex.DecodeString(t[1:])
		if err != nil || len(b) < 5 || len(b) != int(b[0])+5 {
			return nil, fmt.Errorf("%w: line %d: malformed record", ErrInput, line)
		}
		var sum byte
		for _, x := range b {
			sum += x
		}
		if sum != 0 {
			return nil, fmt.Errorf("%w: line %d: checksum", ErrInput, line)
		}
		n, off, typ, data := int(b[0]), uint32(b[1])<<8|uint32(b[2]), b[3], b[4:4+int(b[0])]
		switch typ {
		case 0:
			addr := base + off
			if uint64(addr)+uint64(n) > 1<<32 {
				return nil, fmt.Errorf("%w: line %d: record wraps the address space", ErrInput, line)
			}
			total += n
			if total > MaxImage {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrInput, MaxImage)
			}
			if k := len(segs) - 1; k >= 0 && segs[k].Addr+uint32(len(segs[k].Data)) == addr {
				segs[k].Data = append(segs[k].Data, data...)
			} else if n > 0 {
				segs = append(segs, Segment{Addr: addr, Data: append([]byte(nil), data...)})
			}
		case 1:
			eof = true
		case 2:
			if n != 2 {
				return nil, fmt.Errorf("%w: line %d: type 02 length %d", ErrInput, line, n)
			}
			base = (uint32(data[0])<<8 | uint32(data[1])) << 4
		case 4:
			if n != 2 {
				return nil, fmt.Errorf("%w: line %d: type 04 length %d", ErrInput, line, n)
			}
			base = (uint32(data[0])<<8 | uint32(data[1])) << 16
		case 3, 5:
			// start address: Go uses the manifest's load address instead
		default:
			return nil, fmt.Errorf("%w: line %d: record type %02x", ErrInput, line, typ)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrInput, line+1, err)
	}
	if !eof {
		return nil, fmt.Errorf("%w: no EOF record", ErrInput)
	}
	return mergeSegments(segs)
}

// mergeSegments sorts segments, joins adjacent ones and rejects overlaps.
func mergeSegments(segs []Segment) ([]Segment, error) {
	segs = sortSegments(segs)
	var out []Segment
	for _, s := range segs {
		if k := len(out) - 1; k >= 0 {
			end := uint64(out[k].Addr) + uint64(len(out[k].Data))
			if uint64(s.Addr) < end {
				return nil, fmt.Errorf("%w: data at 0x%08x overlaps data ending at 0x%08x", ErrInput, s.Addr, end)
			}
			if uint64(s.Addr) == end {
				out[k].Data = append(out[k].Data, s.Data...)
				continue
			}
		}
		out = append(out, Segment{Addr: s.Addr, Data: append([]byte(nil), s.Data...)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no data", ErrInput)
	}
	return out, nil
}

// ParseELF returns the file contents of an ELF's PT_LOAD segments at their
// physical (load) addresses; the .bss part (memsz beyond filesz) is not
// flashed. The entry is the ELF entry point.
func ParseELF(r io.ReaderAt) (segs []Segment, entry uint64, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		if p.Paddr+p.Filesz > 1<<32 || p.Filesz > MaxImage {
			return nil, 0, fmt.Errorf("%w: segment at 0x%x size %d does not fit 32-bit flash", ErrInput, p.Paddr, p.Filesz)
		}
		d := make([]byte, p.Filesz)
		if _, err := p.ReadAt(d, 0); err != nil {
			return nil, 0, fmt.Errorf("%w: segment at 0x%x: %v", ErrInput, p.Paddr, err)
		}
		segs = append(segs, Segment{Addr: uint32(p.Paddr), Data: d})
	}
	segs, err = mergeSegments(segs)
	return segs, f.Entry, err
}

// LoadInput reads a firmware input by its extension: .hex/.ihex, .elf/.axf
// (or ELF magic), anything else as raw binary at addr (which must be set).
func LoadInput(name string, data []byte, addr uint32, haveAddr bool) ([]Segment, error) {
	ext := strings.ToLower(filepath.Ext(name))
	switch {
	case ext == ".hex" || ext == ".ihex" || ext == ".ihx":
		return ParseHex(bytes.NewReader(data))
	case ext == ".elf" || ext == ".axf" || bytes.HasPrefix(data, []byte("\x7fELF")):
		s, _, err := ParseELF(bytes.NewReader(data))
		return s, err
	}
	if !haveAddr {
		return nil, fmt.Errorf("%s: a raw binary needs --address", name)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s: %w: empty", name, ErrInput)
	}
	return []Segment{{Addr: addr, Data: data}}, nil
}
