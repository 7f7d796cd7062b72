package ubootenv

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// flashSim is a Sys for one MTD device that behaves like flash: erase sets
// an eraseblock to 0xFF, a write can only clear bits (a write that would set
// a bit fails, so a missing erase is caught), bad NAND blocks refuse erase.
type flashSim struct {
	typ       uint8
	erase     int64
	mem       []byte
	bad       map[int64]bool
	budget    int // bytes that may still be written; <0 = unlimited
	erases    int
	writeErrs []error
}

func newFlash(typ uint8, erase int64, blocks int) *flashSim {
	f := &flashSim{typ: typ, erase: erase, mem: make([]byte, erase*int64(blocks)), bad: map[int64]bool{}, budget: -1}
	for i := range f.mem {
		f.mem[i] = 0xFF
	}
	return f
}

func (f *flashSim) Stat(path string) (DeviceInfo, error) {
	return DeviceInfo{Kind: KindMTD, Size: int64(len(f.mem)), MTDType: f.typ, EraseSize: f.erase}, nil
}
func (f *flashSim) Open(path string, write bool) (File, error) { return simFile{f}, nil }
func (f *flashSim) Erase(_ File, off, length int64) error {
	if off%f.erase != 0 || length%f.erase != 0 {
		return fmt.Errorf("unaligned erase 0x%x+0x%x", off, length)
	}
	if f.bad[off/f.erase] {
		return errors.New("erase of bad block")
	}
	if f.budget == 0 {
		return errPowerCut
	}
	f.erases++
	for i := off; i < off+length; i++ {
		f.mem[i] = 0xFF
	}
	return nil
}
func (f *flashSim) IsBad(_ File, off int64) (bool, error) { return f.bad[off/f.erase], nil }

type simFile struct{ f *flashSim }

func (s simFile) ReadAt(p []byte, off int64) (int, error) { return copy(p, s.f.mem[off:]), nil }
func (s simFile) WriteAt(p []byte, off int64) (int, error) {
	for i, b := range p {
		if s.f.budget == 0 {
			return i, errPowerCut
		}
		if s.f.budget > 0 {
			s.f.budget--
		}
		cur := s.f.mem[off+int64(i)]
		if cur&b != b {
			err := fmt.Errorf("write 0x%02x over 0x%02x at 0x%x without erase", b, cur, off+int64(i))
			s.f.writeErrs = append(s.f.writeErrs, err)
			return i, err
		}
		s.f.mem[off+int64(i)] = cur & b
	}
	return len(p), nil
}
func (s simFile) Sync() error {
	if s.f.budget == 0 {
		return errPowerCut
	}
	return nil
}
func (s simFile) Close() error { return nil }

func simStore(t *testing.T, sim *flashSim, cfgText string) *Store {
	t.Helper()
	cfg, err := ParseConfig("fw_env.config", []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.NoLock = true
	opts.Sys = sim
	st, err := Open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMTDNORBooleanFlags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sim := newFlash(MTDNORFlash, 0x10000, 4)
	st := simStore(t, sim, "/dev/mtd0 0x10000 0x2000\n/dev/mtd0 0x20000 0x2000\n")
	if st.Mode() != FlagsBoolean {
		t.Fatalf("NOR mode = %v", st.Mode())
	}
	if err := st.Reset(ctx, Env{"n": "0"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := st.Update(ctx, func(e Env) error { e["n"] = fmt.Sprint(i); return nil }); err != nil {
			t.Fatal(err)
		}
		snap, err := st.Read(ctx)
		if err != nil || snap.Env["n"] != fmt.Sprint(i) {
			t.Fatalf("write %d: %v %v", i, snap, err)
		}
		cur, old := snap.Current, 1-snap.Current
		if snap.Copies[cur].Flags != 1 || snap.Copies[old].Flags != 0 {
			t.Fatalf("write %d: flags current=%d old=%d, want 1 and 0", i, snap.Copies[cur].Flags, snap.Copies[old].Flags)
		}
	}
	if len(sim.writeErrs) > 0 || sim.erases == 0 {
		t.Fatalf("write errors %v, erases %d", sim.writeErrs, sim.erases)
	}
	// Bytes outside the two sectors were never touched.
	for i := 0; i < 0x10000; i++ {
		if sim.mem[i] != 0xFF {
			t.Fatalf("sector 0 touched at 0x%x", i)
		}
	}
}

func TestMTDNANDSkipsBadBlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sim := newFlash(MTDNANDFlash, 0x4000, 8)
	sim.bad[0] = true // first block of copy 0 is bad: the copy lives in block 1
	st := simStore(t, sim, "/dev/mtd2 0x0 0x4000 0x4000 2\n/dev/mtd2 0x8000 0x4000 0x4000 2\n")
	if st.Mode() != FlagsIncremental {
		t.Fatalf("NAND mode = %v", st.Mode())
	}
	for i := 0; i < 4; i++ {
		if err := st.Reset(ctx, Env{"n": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		snap, err := st.Read(ctx)
		if err != nil || snap.Env["n"] != fmt.Sprint(i) {
			t.Fatalf("write %d: %+v %v", i, snap, err)
		}
	}
	if len(sim.writeErrs) > 0 {
		t.Fatal(sim.writeErrs)
	}
	// Copy 0 ended up in block 1 (0x4000), block 0 untouched.
	if _, _, err := DecodeImage(sim.mem[0x4000:0x8000], true); err != nil {
		t.Fatalf("copy 0 not at the spare block: %v", err)
	}
	for i := 0; i < 0x4000; i++ {
		if sim.mem[i] != 0xFF {
			t.Fatalf("bad block written at 0x%x", i)
		}
	}
	sim.bad[1] = true
	if err := st.Reset(ctx, Env{"n": "y"}); !errors.Is(err, ErrShort) {
		t.Fatalf("both blocks of copy 0 bad: err = %v, want ErrShort", err)
	}
}

// TestMTDNORPowerCut cuts a NOR update at every 64th byte, including the
// single-byte "obsolete" flag write at the end.
func TestMTDNORPowerCut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, new := Env{"v": "old"}, Env{"v": "new"}
	const cfg = "/dev/mtd0 0x0 0x1000\n/dev/mtd0 0x1000 0x1000\n"
	for n := 0; n <= 0x1000+1; n += 64 {
		if n == 0x1000 {
			n = 0x1000 // the new copy complete, flag of the old one not yet written
		}
		sim := newFlash(MTDNORFlash, 0x1000, 2)
		st := simStore(t, sim, cfg)
		if err := st.Reset(ctx, old); err != nil {
			t.Fatal(err)
		}
		sim.budget = n
		_ = st.Update(ctx, func(e Env) error { e["v"] = "new"; return nil })
		sim.budget = -1
		snap, err := st.Read(ctx)
		if err != nil {
			t.Fatalf("cut %d: %v", n, err)
		}
		if !snap.Env.Equal(old) && !snap.Env.Equal(new) {
			t.Fatalf("cut %d: third state %v", n, snap.Env)
		}
		if len(sim.writeErrs) > 0 {
			t.Fatal(sim.writeErrs)
		}
	}
}
