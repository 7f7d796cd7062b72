package ubootenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultConfigPath is where fw_printenv looks for its configuration.
const DefaultConfigPath = "/etc/fw_env.config"

// Device is one line of fw_env.config: where one copy of the environment is.
type Device struct {
	Path        string // device node or plain file
	Offset      int64  // byte offset; negative counts from the end of a block device
	EnvSize     int64  // size of one copy, header included
	SectorSize  int64  // erase size; 0 = ask the MTD device
	Sectors     int64  // sectors available to this copy (NAND bad-block skipping); 0 = 1
	DisableLock int64  // sixth column, accepted for compatibility, unused
	Line        int    // line number in the config file
}

// Config is a parsed fw_env.config: one device (single copy) or two (redundant).
type Config struct {
	File    string // name used in error messages
	Devices []Device
}

// Redundant reports whether the config names two copies.
func (c Config) Redundant() bool { return len(c.Devices) == 2 }

// Size is the size of one environment copy including its header.
func (c Config) Size() int64 {
	if len(c.Devices) == 0 {
		return 0
	}
	return c.Devices[0].EnvSize
}

// LoadConfig reads and parses a fw_env.config file.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses the legacy fw_env.config format used by libubootenv:
//
//	# device  offset  env-size  [sector-size  [sectors  [disable-lock]]]
//	/dev/mmcblk0  0x400000  0x4000
//	/dev/mmcblk0  0x404000  0x4000
//
// The offset is read like C's strtoll with base 0 (0x hex, leading 0 octal,
// otherwise decimal, optional sign); the sizes are hexadecimal with or
// without 0x, as libubootenv's sscanf("%zx") reads them. Blank lines and
// lines starting with '#' are skipped. Unlike libubootenv, a line that does
// not parse is an error naming file:line instead of being skipped silently.
func ParseConfig(name string, data []byte) (Config, error) {
	cfg := Config{File: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		trim := strings.TrimSpace(text)
		if trim == "" || strings.HasPrefix(trim, "#") {
			continue
		}
		if trim == "---" || strings.HasSuffix(strings.Fields(trim)[0], ":") {
			return Config{}, fmt.Errorf("%s:%d: %w: YAML fw_env.config (namespaces) is %w; use the legacy one-line-per-copy format", name, line, ErrConfig, ErrNotSupported)
		}
		if len(cfg.Devices) == 2 {
			return Config{}, fmt.Errorf("%s:%d: %w: more than two device lines (at most two copies)", name, line, ErrConfig)
		}
		dev, err := parseDeviceLine(trim)
		if err != nil {
			return Config{}, fmt.Errorf("%s:%d: %w: %w", name, line, ErrConfig, err)
		}
		dev.Line = line
		cfg.Devices = append(cfg.Devices, dev)
	}
	if err := sc.Err(); err != nil {
		return Config{}, fmt.Errorf("%s:%d: %w: %w", name, line+1, ErrConfig, err)
	}
	if len(cfg.Devices) == 0 {
		return Config{}, fmt.Errorf("%s: %w: no device line", name, ErrConfig)
	}
	if cfg.Redundant() {
		a, b := cfg.Devices[0], cfg.Devices[1]
		if a.EnvSize != b.EnvSize {
			return Config{}, fmt.Errorf("%s:%d: %w: env size 0x%x differs from line %d (0x%x); both copies must have the same size", name, b.Line, ErrConfig, b.EnvSize, a.Line, a.EnvSize)
		}
		if a.Path == b.Path && a.Offset >= 0 && b.Offset >= 0 && a.Offset < b.Offset+b.EnvSize && b.Offset < a.Offset+a.EnvSize {
			return Config{}, fmt.Errorf("%s:%d: %w: copy at 0x%x overlaps the copy of line %d at 0x%x (size 0x%x)", name, b.Line, ErrConfig, b.Offset, a.Line, a.Offset, a.EnvSize)
		}
	}
	return cfg, nil
}

func parseDeviceLine(line string) (Device, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return Device{}, fmt.Errorf("want 'device offset env-size [sector-size [sectors]]', got %d field(s)", len(f))
	}
	if len(f) > 6 {
		return Device{}, fmt.Errorf("too many fields (%d, at most 6)", len(f))
	}
	var d Device
	d.Path = f[0]
	if strings.HasPrefix(d.Path, "/dev/ubi") || (strings.HasPrefix(d.Path, "/dev/mtd") && strings.Contains(d.Path, ":")) {
		return Device{}, fmt.Errorf("device %s: UBI volumes are %w", d.Path, ErrNotSupported)
	}
	off, err := parseCInt(f[1])
	if err != nil {
		return Device{}, fmt.Errorf("offset %q: not a number (use 0x... for hex)", f[1])
	}
	d.Offset = off
	nums := []*int64{&d.EnvSize, &d.SectorSize, &d.Sectors}
	names := []string{"env size", "sector size", "sector count"}
	for i, s := range f[2:min(len(f), 5)] {
		v, err := parseHex(s)
		if err != nil {
			return Device{}, fmt.Errorf("%s %q: %v", names[i], s, err)
		}
		*nums[i] = v
	}
	if len(f) == 6 {
		v, err := strconv.ParseInt(f[5], 10, 64)
		if err != nil {
			return Device{}, fmt.Errorf("disable-lock %q: not a decimal number", f[5])
		}
		d.DisableLock = v
	}
	if d.EnvSize <= 5 {
		return Device{}, fmt.Errorf("env size 0x%x too small", d.EnvSize)
	}
	if d.EnvSize > 1<<30 {
		return Device{}, fmt.Errorf("env size 0x%x too large", d.EnvSize)
	}
	if d.SectorSize < 0 || d.SectorSize > 1<<30 || d.Sectors < 0 || d.Sectors > 1<<20 {
		return Device{}, fmt.Errorf("sector size 0x%x / count 0x%x out of range", d.SectorSize, d.Sectors)
	}
	return d, nil
}

// parseHex reads a hexadecimal number with optional 0x prefix, like "%zx".
func parseHex(s string) (int64, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if t == "" {
		return 0, fmt.Errorf("not a hexadecimal number")
	}
	v, err := strconv.ParseUint(t, 16, 63)
	if err != nil {
		return 0, fmt.Errorf("not a hexadecimal number")
	}
	return int64(v), nil
}

// parseCInt reads a signed integer like strtoll(s, NULL, 0): 0x hex, a
// leading 0 octal, otherwise decimal; the whole field must be a number.
func parseCInt(s string) (int64, error) {
	neg := false
	t := s
	if strings.HasPrefix(t, "-") || strings.HasPrefix(t, "+") {
		neg = t[0] == '-'
		t = t[1:]
	}
	base := 10
	switch {
	case strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X"):
		base, t = 16, t[2:]
	case len(t) > 1 && t[0] == '0':
		base, t = 8, t[1:]
	}
	if t == "" || strings.ContainsAny(t, "_+-") {
		return 0, fmt.Errorf("not a number")
	}
	v, err := strconv.ParseInt(t, base, 64)
	if err != nil {
		return 0, err
	}
	if neg {
		v = -v
	}
	return v, nil
}
