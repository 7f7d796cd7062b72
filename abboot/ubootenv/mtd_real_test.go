package ubootenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// findMTD returns /dev/mtdN of the first MTD device whose sysfs type is typ
// ("nand", "nor", "ram", ...), or "".
func findMTD(typ string) string {
	dirs, _ := filepath.Glob("/sys/class/mtd/mtd*")
	for _, d := range dirs {
		base := filepath.Base(d)
		if strings.HasSuffix(base, "ro") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "type"))
		if err == nil && strings.TrimSpace(string(b)) == typ {
			return "/dev/" + base
		}
	}
	return ""
}

// TestRealMTDNAND runs the store on a real Linux MTD NAND device through the
// MEMGETINFO / MEMERASE / MEMGETBADBLOCK ioctls: in CI the kernel's nandsim
// inside the QEMU guest of tests/qemu (loaded with badblocks=0, so eraseblock
// 0 is bad and copy 0 must move to its spare block). OTAGW_MTD_DEVICE names
// another device. Without one it skips: this kernel has no MTD.
//
// OTAGW_MTD_BAD_BLOCK0=1 (set by tests/qemu, which made eraseblock 0 bad)
// demands the move: block 0 must read as bad and copy 0 must be found in
// block 1, not merely wherever the device allowed.
func TestRealMTDNAND(t *testing.T) {
	dev := os.Getenv("OTAGW_MTD_DEVICE")
	if dev == "" {
		dev = findMTD("nand")
	}
	if dev == "" {
		t.Skip("no MTD NAND device here; runs in the QEMU guest (tests/qemu, nandsim)")
	}
	info, err := OSSys{}.Stat(dev)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != KindMTD || info.MTDType != MTDNANDFlash || info.EraseSize <= 0 || info.Size < 4*info.EraseSize {
		t.Fatalf("MEMGETINFO %s: %+v", dev, info)
	}
	es := info.EraseSize
	cfg, err := ParseConfig("fw_env.config", []byte(fmt.Sprintf("%s 0x0 0x%x 0x%x 2\n%s 0x%x 0x%x 0x%x 2\n", dev, es, es, dev, 2*es, es, es)))
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.LockFile = filepath.Join(t.TempDir(), "lock")
	st, err := Open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Reset(ctx, Env{"n": "0", "BOOT_ORDER": "A B"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if err := st.Update(ctx, func(e Env) error { e["n"] = fmt.Sprint(i); return nil }); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		snap, err := st.Read(ctx)
		if err != nil || snap.Env["n"] != fmt.Sprint(i) {
			t.Fatalf("read after update %d: %v %v", i, snap, err)
		}
	}
	// Where did copy 0 land? With eraseblock 0 bad, in block 1.
	f, err := OSSys{}.Open(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bad0, err := OSSys{}.IsBad(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := os.Getenv("OTAGW_MTD_BAD_BLOCK0") == "1"; want && !bad0 {
		t.Fatalf("%s: eraseblock 0 is not bad (MEMGETBADBLOCK), but the harness made it bad (nandsim badblocks=0): the bad-block move is not exercised", dev)
	}
	at := int64(0)
	if bad0 {
		at = es
	}
	raw := make([]byte, es)
	if _, err := f.ReadAt(raw, at); err != nil {
		t.Fatal(err)
	}
	env, _, err := DecodeImage(raw, true)
	if err != nil {
		t.Fatalf("copy 0 not at 0x%x (block 0 bad: %v): %v", at, bad0, err)
	}
	// The copy found there is one the store wrote (its last or the one
	// before), not stale bytes.
	if n := env["n"]; n != "6" && n != "5" {
		t.Fatalf("copy 0 at 0x%x holds n=%q; want 6 or 5 (the two last writes alternate between the copies)", at, n)
	}
	t.Logf("%s: NAND, erase size 0x%x, block 0 bad: %v", dev, es, bad0)
}

// TestRealMTDRAMRejected checks that an MTD type libubootenv refuses (a RAM
// MTD from the kernel's mtdram) is refused with ErrNotSupported.
func TestRealMTDRAMRejected(t *testing.T) {
	dev := findMTD("ram")
	if dev == "" {
		t.Skip("no RAM MTD device here; runs in the QEMU guest (tests/qemu, mtdram)")
	}
	cfg, err := ParseConfig("fw_env.config", []byte(dev+" 0x0 0x1000\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.NoLock = true
	if _, err := Open(cfg, opts); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Open(%s) = %v, want ErrNotSupported", dev, err)
	}
}
