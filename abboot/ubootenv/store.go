package ubootenv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultLockFile is the lock libubootenv's fw_printenv/fw_setenv take.
const DefaultLockFile = "/var/lock/fw_printenv.lock"

// Options tune a Store. The zero value is not valid; start from
// DefaultOptions.
type Options struct {
	// LockFile serialises writers with flock(2); keep libubootenv's default so
	// that otagw and fw_setenv exclude each other. otagw creates it (or
	// tightens it to) mode 0600, root-owned: an unprivileged user cannot
	// open it, so cannot hold the lock; fw_setenv/fw_printenv run as root
	// still share it. Readers never wait for it (see Store.Read).
	LockFile string `yaml:"lock_file" json:"lock_file"`
	// NoLock skips the lock file (tests, read-only media).
	NoLock bool `yaml:"no_lock" json:"no_lock"`
	// Sys is the OS seam; nil means OSSys{}.
	Sys Sys `yaml:"-" json:"-"`
}

// DefaultOptions returns the libubootenv-compatible defaults.
func DefaultOptions() Options { return Options{LockFile: DefaultLockFile} }

// Validate checks o.
func (o Options) Validate() error {
	if !o.NoLock && o.LockFile == "" {
		return errors.New("ubootenv: lock_file is empty (set no_lock to run without a lock)")
	}
	return nil
}

// copyDev is one copy of the environment, resolved against its device.
type copyDev struct {
	Device
	info   DeviceInfo
	offset int64 // resolved, >= 0
}

func (d copyDev) String() string { return fmt.Sprintf("%s@0x%x", d.Path, d.offset) }

// Store is an environment on its device(s). Its methods are safe for
// concurrent use; across processes the lock file serialises them.
type Store struct {
	cfg  Config
	opts Options
	sys  Sys
	devs []copyDev
	mode FlagMode
	mu   sync.Mutex
}

// Open resolves cfg's devices (kind, size, negative offsets, MTD erase
// size) and returns a Store. It reads no environment data yet.
func Open(cfg Config, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Devices) < 1 || len(cfg.Devices) > 2 {
		return nil, fmt.Errorf("%s: %w: %d device lines, want 1 or 2", cfg.File, ErrConfig, len(cfg.Devices))
	}
	s := &Store{cfg: cfg, opts: opts, sys: opts.Sys}
	if s.sys == nil {
		s.sys = OSSys{}
	}
	for _, d := range cfg.Devices {
		where := fmt.Sprintf("%s:%d: %s", cfg.File, d.Line, d.Path)
		info, err := s.sys.Stat(d.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		cd := copyDev{Device: d, info: info, offset: d.Offset}
		if d.Offset < 0 {
			if info.Kind != KindBlock {
				return nil, fmt.Errorf("%s: %w: negative offset %d is only allowed on a block device, this is a %v", where, ErrConfig, d.Offset, info.Kind)
			}
			cd.offset = info.Size + d.Offset
			if cd.offset < 0 {
				return nil, fmt.Errorf("%s: %w: offset %d lies before the start of the %d-byte device", where, ErrConfig, d.Offset, info.Size)
			}
		}
		if info.Kind == KindMTD {
			if info.MTDType != MTDNORFlash && info.MTDType != MTDNANDFlash {
				return nil, fmt.Errorf("%s: MTD type %d is %w (only NOR and NAND flash)", where, info.MTDType, ErrNotSupported)
			}
			if cd.SectorSize == 0 {
				cd.SectorSize = info.EraseSize
			}
			if cd.SectorSize <= 0 {
				return nil, fmt.Errorf("%s: %w: no sector (erase) size", where, ErrConfig)
			}
		}
		if info.Kind != KindFile && cd.offset+d.EnvSize > info.Size {
			return nil, fmt.Errorf("%s: %w: 0x%x+0x%x is beyond the device end (0x%x)", where, ErrShort, cd.offset, d.EnvSize, info.Size)
		}
		s.devs = append(s.devs, cd)
	}
	if len(s.devs) == 2 {
		a, b := s.devs[0].info, s.devs[1].info
		if a.Kind != b.Kind || a.MTDType != b.MTDType {
			return nil, fmt.Errorf("%s: %w: the two copies are on different kinds of device (%v, %v)", cfg.File, ErrConfig, a.Kind, b.Kind)
		}
		if a.Kind == KindMTD && a.MTDType == MTDNORFlash {
			s.mode = FlagsBoolean
		}
	}
	return s, nil
}

// Config returns the configuration the store was opened with.
func (s *Store) Config() Config { return s.cfg }

// Redundant reports whether the environment has two copies.
func (s *Store) Redundant() bool { return len(s.devs) == 2 }

// Mode reports how the flags byte is used (redundant only).
func (s *Store) Mode() FlagMode { return s.mode }

// Snapshot is the environment as read, and where it came from.
type Snapshot struct {
	Env       Env
	Redundant bool
	Current   int        // index of the copy the Env came from
	Copies    []CopyInfo // per copy: CRCs and flags
	Devices   []string   // per copy: "path@0xoffset"
}

// Read returns the current environment. With no valid copy it fails with
// ErrNoValidCopy; nothing is written.
//
// Read never waits for the lock file: it takes a shared lock if it is free
// and otherwise (a writer holds it, or the lock file cannot be opened)
// reads without it. A copy caught half-written fails its CRC: the other
// copy is used, or the read is retried a few times (readRetries, about a
// quarter of a second in all) before ErrNoValidCopy.
func (s *Store) Read(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.NoLock {
		snap, _, err := s.readLocked()
		return snap, err
	}
	lockErr := errLockBusy
	if unlock, err := tryLockShared(s.opts.LockFile); err == nil {
		defer unlock()
		snap, _, err := s.readLocked()
		return snap, err
	} else {
		lockErr = err
	}
	var snap *Snapshot
	var err error
	delay := 5 * time.Millisecond
	for i := 0; ; i++ {
		snap, _, err = s.readLocked()
		if err == nil || !errors.Is(err, ErrNoValidCopy) || i == readRetries {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return snap, fmt.Errorf("%w (read without %s: %v)", err, s.opts.LockFile, lockErr)
		case <-t.C:
		}
		delay *= 2
	}
	if err != nil {
		err = fmt.Errorf("%w (read without %s: %v)", err, s.opts.LockFile, lockErr)
	}
	return snap, err
}

// readRetries is how often Read re-reads a copy that fails its CRC while
// it cannot take the lock (5, 10, 20, 40, 80 ms apart).
const readRetries = 5

// Write replaces the whole environment with env in one write (see the
// package doc for power safety). It fails with ErrNoValidCopy if the device
// holds no valid copy: use Reset to start from scratch on purpose.
func (s *Store) Write(ctx context.Context, env Env) error {
	return s.Update(ctx, func(e Env) error {
		for k := range e {
			delete(e, k)
		}
		for k, v := range env {
			e[k] = v
		}
		return nil
	})
}

// Update reads the environment, lets fn change it and writes the result as
// one copy, all under the lock. If fn returns an error or changes nothing,
// nothing is written.
func (s *Store) Update(ctx context.Context, fn func(Env) error) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	snap, st, err := s.readLocked()
	if err != nil {
		return err
	}
	env := snap.Env.Clone()
	if err := fn(env); err != nil {
		return err
	}
	if env.Equal(snap.Env) {
		return nil
	}
	return s.writeLocked(env, st)
}

// Reset writes env whatever the device holds, also when no copy is valid
// (or, for a plain file, when the file is too short or empty). It is the
// explicit "start from this (default) environment" operation.
func (s *Store) Reset(ctx context.Context, env Env) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	_, st, err := s.readLockedShort(true)
	if err != nil && !errors.Is(err, ErrNoValidCopy) && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrDuplicate) {
		return err
	}
	return s.writeLocked(env, st)
}

// lock takes the lock file for a write, waiting until ctx ends.
func (s *Store) lock(ctx context.Context) (func(), error) {
	s.mu.Lock()
	if s.opts.NoLock {
		return s.mu.Unlock, nil
	}
	unlock, err := lockFile(ctx, s.opts.LockFile)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return func() { unlock(); s.mu.Unlock() }, nil
}

// state is what a write needs to know about the copies on the device.
type state struct {
	current int
	flags   [2]byte
}

func (s *Store) readLocked() (*Snapshot, state, error) { return s.readLockedShort(false) }

// readLockedShort reads both copies; with allowShort a plain file that ends
// before a copy does reads as an invalid copy (Reset of a new, empty file).
func (s *Store) readLockedShort(allowShort bool) (*Snapshot, state, error) {
	red := s.Redundant()
	snap := &Snapshot{Redundant: red}
	var imgs [2][]byte
	var valid [2]bool
	var st state
	for i := range s.devs {
		img, err := s.readCopy(i)
		if err != nil && allowShort && errors.Is(err, ErrShort) && s.devs[i].info.Kind == KindFile {
			img, err = make([]byte, s.devs[i].EnvSize), nil
		}
		if err != nil {
			return nil, st, err
		}
		imgs[i] = img
		ci := inspect(img, red)
		snap.Copies = append(snap.Copies, ci)
		snap.Devices = append(snap.Devices, s.devs[i].String())
		valid[i] = ci.Valid()
		st.flags[i] = ci.Flags
	}
	cur, ok := 0, valid[0]
	if red {
		cur, ok = Choose(valid, st.flags, s.mode)
	}
	st.current = cur
	snap.Current = cur
	if !ok {
		msg := ""
		for i, ci := range snap.Copies {
			msg += fmt.Sprintf("; copy %d %s: stored CRC 0x%08x, computed 0x%08x", i, snap.Devices[i], ci.CRCStored, ci.CRCComputed)
		}
		return snap, st, fmt.Errorf("%s: %w%s", s.cfg.File, ErrNoValidCopy, msg)
	}
	hdr := HeaderSingle
	if red {
		hdr = HeaderRedundant
	}
	env, err := ParseData(imgs[cur][hdr:])
	if err != nil {
		return snap, st, fmt.Errorf("%s: copy %d %s: %w", s.cfg.File, cur, s.devs[cur], err)
	}
	snap.Env = env
	return snap, st, nil
}

func (s *Store) readCopy(i int) ([]byte, error) {
	d := s.devs[i]
	f, err := s.sys.Open(d.Path, false)
	if err != nil {
		return nil, fmt.Errorf("copy %d: %w", i, err)
	}
	defer f.Close()
	buf := make([]byte, d.EnvSize)
	if d.info.Kind == KindMTD && d.info.MTDType == MTDNANDFlash {
		err = s.nandWalk(f, d, func(start int64, p []byte) error {
			if _, err := f.ReadAt(p, start); err != nil {
				return err
			}
			return nil
		}, buf)
	} else {
		var n int
		n, err = f.ReadAt(buf, d.offset)
		if n == len(buf) {
			err = nil
		} else if err == nil || n < len(buf) {
			return nil, fmt.Errorf("copy %d %s: %w: read %d of 0x%x bytes", i, d, ErrShort, n, d.EnvSize)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("copy %d %s: read: %w", i, d, err)
	}
	return buf, nil
}

// nandWalk visits the sectors of a copy, skipping bad eraseblocks while the
// configured sector count allows, like libubootenv's NAND read and write.
func (s *Store) nandWalk(f File, d copyDev, fn func(start int64, p []byte) error, buf []byte) error {
	start := d.offset
	sectors := d.Sectors
	if sectors == 0 {
		sectors = 1
	}
	for p := int64(0); p < int64(len(buf)); {
		bad, err := s.sys.IsBad(f, start)
		if err != nil {
			return err
		}
		if bad {
			start += d.SectorSize
			sectors--
			if sectors > 0 {
				continue
			}
			return fmt.Errorf("%w: bad eraseblock at 0x%x and no spare sector left", ErrShort, start-d.SectorSize)
		}
		n := min(int64(len(buf))-p, d.SectorSize)
		if err := fn(start, buf[p:p+n]); err != nil {
			return err
		}
		start += d.SectorSize
		p += n
	}
	return nil
}

func (s *Store) writeLocked(env Env, st state) error {
	red := s.Redundant()
	target := 0
	var flags byte
	if red {
		target = 1 - st.current
		flags = st.flags[st.current] + 1
		if s.mode == FlagsBoolean {
			flags = 1
		}
	}
	img, err := EncodeImage(env, s.devs[target].EnvSize, red, flags)
	if err != nil {
		return fmt.Errorf("%s: %w", s.cfg.File, err)
	}
	if err := s.writeCopy(target, img); err != nil {
		return err
	}
	if red && s.mode == FlagsBoolean {
		// Mark the old copy obsolete: a 1->0 bit change needs no erase.
		d := s.devs[st.current]
		f, err := s.sys.Open(d.Path, true)
		if err != nil {
			return fmt.Errorf("copy %d %s: mark obsolete: %w", st.current, d, err)
		}
		_, err = f.WriteAt([]byte{0}, d.offset+4)
		if err == nil {
			err = syncDev(f, d)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("copy %d %s: mark obsolete: %w", st.current, d, err)
		}
	}
	return nil
}

func (s *Store) writeCopy(i int, img []byte) error {
	d := s.devs[i]
	f, err := s.sys.Open(d.Path, true)
	if err != nil {
		return fmt.Errorf("copy %d %s: %w", i, d, err)
	}
	if d.info.Kind == KindMTD {
		walk := func(start int64, p []byte) error {
			if err := s.sys.Erase(f, start, d.SectorSize); err != nil {
				return err
			}
			_, err := f.WriteAt(p, start)
			return err
		}
		if d.info.MTDType == MTDNANDFlash {
			err = s.nandWalk(f, d, walk, img)
		} else {
			for p := int64(0); p < int64(len(img)) && err == nil; p += d.SectorSize {
				err = walk(d.offset+p, img[p:min(int64(len(img)), p+d.SectorSize)])
			}
		}
	} else {
		_, err = f.WriteAt(img, d.offset)
	}
	if err == nil {
		err = syncDev(f, d)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %d %s: write: %w", i, d, err)
	}
	return nil
}

// syncDev flushes a copy to the medium. Writes to an MTD character device
// go to the flash synchronously and the driver rejects fsync (EINVAL, seen
// with nandsim), so MTD is not synced; files and block devices are.
func syncDev(f File, d copyDev) error {
	if d.info.Kind == KindMTD {
		return nil
	}
	return f.Sync()
}
