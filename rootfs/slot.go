package rootfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Slot is a configured slot with its device resolved.
type Slot struct {
	SlotConfig
	Path  string // resolved device or file path
	Block bool   // a block device (else a regular file)
	Rdev  uint64 // block device number
	Size  int64  // bytes
}

// pick returns the slot of class to write: target by name when given, else
// the one slot of the class whose bootname is not booted.
func (o Options) pick(class, booted, target string) (SlotConfig, error) {
	var cands []SlotConfig
	for _, s := range o.Slots {
		if s.Class != class {
			continue
		}
		if target != "" {
			if s.Name == target {
				return s, nil
			}
			continue
		}
		if s.Bootname != booted {
			cands = append(cands, s)
		}
	}
	switch {
	case target != "":
		return SlotConfig{}, fmt.Errorf("slot %q of class %q: %w", target, class, ErrNoSlot)
	case len(cands) == 0:
		return SlotConfig{}, fmt.Errorf("class %q (booted %q): %w to write", class, booted, ErrNoSlot)
	case len(cands) > 1:
		return SlotConfig{}, fmt.Errorf("class %q has %d slots besides the booted one (%q): name the target", class, len(cands), booted)
	}
	return cands[0], nil
}

// booted returns the slot of class whose bootname is booted, if any.
func (o Options) booted(class, booted string) (SlotConfig, bool) {
	for _, s := range o.Slots {
		if s.Class == class && booted != "" && s.Bootname == booted {
			return s, true
		}
	}
	return SlotConfig{}, false
}

// ResolveDevice turns PARTUUID=, LABEL= or a path into a path.
func ResolveDevice(dev string) (string, error) {
	for _, k := range []struct{ prefix, dir string }{{"PARTUUID=", "by-partuuid"}, {"LABEL=", "by-label"}} {
		v, ok := strings.CutPrefix(dev, k.prefix)
		if !ok {
			continue
		}
		if v == "" {
			return "", fmt.Errorf("device %q: empty value", dev)
		}
		cand := filepath.Join("/dev/disk", k.dir, v)
		if k.prefix == "PARTUUID=" {
			cand = filepath.Join("/dev/disk", k.dir, strings.ToLower(v))
		}
		if p, err := filepath.EvalSymlinks(cand); err == nil {
			return p, nil
		}
		// No udev links (containers, early boot): ask blkid.
		out, err := exec.Command("blkid", "-l", "-o", "device", "-t", dev).Output()
		if p := strings.TrimSpace(string(out)); err == nil && p != "" {
			return p, nil
		}
		return "", fmt.Errorf("device %q: not found in /dev/disk/%s nor by blkid", dev, k.dir)
	}
	if !filepath.IsAbs(dev) {
		return "", fmt.Errorf("device %q: want an absolute path, PARTUUID= or LABEL=", dev)
	}
	p, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return "", fmt.Errorf("device %q: %w", dev, err)
	}
	return p, nil
}

// resolve stats a slot's device.
func resolve(c SlotConfig) (*Slot, error) {
	p, err := ResolveDevice(c.Device)
	if err != nil {
		return nil, &IOError{Slot: c.Name, Device: c.Device, Op: "resolve", Err: err}
	}
	s := &Slot{SlotConfig: c, Path: p}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, &IOError{Slot: c.Name, Device: p, Op: "stat", Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		s.Block, s.Rdev = true, st.Rdev
		f, err := os.Open(p)
		if err != nil {
			return nil, &IOError{Slot: c.Name, Device: p, Op: "open", Err: err}
		}
		s.Size, err = f.Seek(0, io.SeekEnd)
		f.Close()
		if err != nil {
			return nil, &IOError{Slot: c.Name, Device: p, Op: "size", Err: err}
		}
	case unix.S_IFREG:
		s.Size = st.Size
	default:
		return nil, &IOError{Slot: c.Name, Device: p, Op: "stat", Err: errors.New("neither a block device nor a regular file")}
	}
	return s, nil
}

func devString(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// devFamily is a block device and every device that sits on it or in it:
// its partitions and the holders (device-mapper) above either.
func devFamily(rdev uint64) map[string]bool {
	set := map[string]bool{}
	var walk func(sysdir string, depth int)
	walk = func(sysdir string, depth int) {
		b, err := os.ReadFile(filepath.Join(sysdir, "dev"))
		if err != nil || depth > 8 {
			return
		}
		d := strings.TrimSpace(string(b))
		if set[d] {
			return
		}
		set[d] = true
		ents, _ := os.ReadDir(sysdir)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(sysdir, e.Name(), "partition")); err == nil {
				walk(filepath.Join(sysdir, e.Name()), depth+1)
			}
		}
		hs, _ := os.ReadDir(filepath.Join(sysdir, "holders"))
		for _, h := range hs {
			walk(filepath.Join(sysdir, "holders", h.Name()), depth+1)
		}
	}
	walk(filepath.Join("/sys/dev/block", devString(rdev)), 0)
	set[devString(rdev)] = true // even without sysfs, the device itself
	return set
}

// loopsBacking lists the loop devices whose backing file is path.
func loopsBacking(path string) []uint64 {
	var out []uint64
	ms, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil || strings.TrimSpace(string(b)) != path {
			continue
		}
		d, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(m)), "dev"))
		if err != nil {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(d)), "%d:%d", &maj, &min); err == nil {
			out = append(out, unix.Mkdev(maj, min))
		}
	}
	return out
}

// checkNotMounted returns ErrSlotBusy when the slot, a partition or holder
// of it, or a loop device backed by it is mounted.
func checkNotMounted(s *Slot) error {
	fam := map[string]bool{}
	if s.Block {
		fam = devFamily(s.Rdev)
	}
	for _, l := range loopsBacking(s.Path) {
		for d := range devFamily(l) {
			fam[d] = true
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return &IOError{Slot: s.Name, Device: s.Path, Op: "read mountinfo", Err: err}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		src := ""
		for i, x := range fields {
			if x == "-" && i+2 < len(fields) {
				src = fields[i+2]
			}
		}
		if fam[fields[2]] || src == s.Path {
			return fmt.Errorf("slot %s (%s): device %s mounted on %s: %w", s.Name, s.Path, fields[2], fields[4], ErrSlotBusy)
		}
	}
	return sc.Err()
}
