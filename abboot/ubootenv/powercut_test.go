package ubootenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var errPowerCut = errors.New("power cut")

// cutSys passes everything to OSSys but lets only budget bytes of writes
// reach the device; the write that crosses the budget is cut short there,
// and everything after it (including fsync) fails, as after a power loss.
type cutSys struct {
	OSSys
	mu     sync.Mutex
	budget int
}

func (c *cutSys) Open(path string, write bool) (File, error) {
	f, err := c.OSSys.Open(path, write)
	if err != nil || !write {
		return f, err
	}
	return &cutFile{File: f, sys: c}, nil
}

type cutFile struct {
	File
	sys *cutSys
}

func (f *cutFile) WriteAt(p []byte, off int64) (int, error) {
	f.sys.mu.Lock()
	defer f.sys.mu.Unlock()
	if f.sys.budget >= len(p) {
		f.sys.budget -= len(p)
		return f.File.WriteAt(p, off)
	}
	n, _ := f.File.WriteAt(p[:f.sys.budget], off)
	f.sys.budget = 0
	return n, errPowerCut
}

func (f *cutFile) Sync() error {
	f.sys.mu.Lock()
	defer f.sys.mu.Unlock()
	if f.sys.budget == 0 {
		return errPowerCut
	}
	return f.File.Sync()
}

// TestPowerCut cuts an update of a redundant environment after every
// possible number of written bytes (every byte for a 512-byte env, every
// 512-byte boundary plus odd offsets for 8 KiB) and checks that otagw and
// fw_printenv then both read the complete old or the complete new
// environment, never anything else.
func TestPowerCut(t *testing.T) {
	needTool(t, "mkenvimage")
	needTool(t, "fw_printenv")
	for _, tc := range []struct {
		size int64
		step int
	}{{0x200, 1}, {0x2000, 512}} {
		t.Run(fmt.Sprintf("size=0x%x/step=%d", tc.size, tc.step), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			old := Env{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "x": "old"}
			new := Env{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "x": "new value that is longer"}
			dir := t.TempDir()
			cfgPath, imgPath, _ := setup(t, dir, layout{tc.size, 0x200, true}, old)
			pristine, err := os.ReadFile(imgPath)
			if err != nil {
				t.Fatal(err)
			}
			// Start from a state where copy 1 is current, so the cut write
			// goes to copy 0 on some runs: write once more without a cut.
			for _, startCopy := range []int{0, 1} {
				if err := os.WriteFile(imgPath, pristine, 0o644); err != nil {
					t.Fatal(err)
				}
				if startCopy == 1 {
					if err := openStore(t, cfgPath).Write(ctx, old); err != nil {
						t.Fatal(err)
					}
				}
				base, err := os.ReadFile(imgPath)
				if err != nil {
					t.Fatal(err)
				}
				cuts := []int{}
				for n := 0; n <= int(tc.size); n += tc.step {
					cuts = append(cuts, n)
				}
				if tc.step > 1 {
					cuts = append(cuts, 1, 3, 4, 5, 6, 513, int(tc.size)-1)
				}
				sawOld, sawNew := false, false
				for _, n := range cuts {
					if err := os.WriteFile(imgPath, base, 0o644); err != nil {
						t.Fatal(err)
					}
					cfg, err := LoadConfig(cfgPath)
					if err != nil {
						t.Fatal(err)
					}
					sys := &cutSys{budget: n}
					opts := DefaultOptions()
					opts.LockFile = filepath.Join(dir, "lock")
					opts.Sys = sys
					st, err := Open(cfg, opts)
					if err != nil {
						t.Fatal(err)
					}
					werr := st.Write(ctx, new)
					if n < int(tc.size) && werr == nil {
						t.Fatalf("cut at %d: write reported success", n)
					}
					got, err := openStore(t, cfgPath).Read(ctx)
					if err != nil {
						t.Fatalf("start copy %d, cut after %d bytes: read: %v", startCopy, n, err)
					}
					switch {
					case got.Env.Equal(old):
						sawOld = true
					case got.Env.Equal(new):
						sawNew = true
					default:
						t.Fatalf("cut after %d bytes: third state %v", n, got.Env)
					}
					if diff := cmp.Diff(got.Env, fwPrintenv(t, cfgPath)); diff != "" {
						t.Fatalf("cut after %d bytes: fw_printenv disagrees (-otagw +fw_printenv):\n%s", n, diff)
					}
					if n == int(tc.size) && !got.Env.Equal(new) {
						t.Fatalf("complete write did not take effect")
					}
				}
				if !sawOld || !sawNew {
					t.Fatalf("start copy %d: old seen %v, new seen %v", startCopy, sawOld, sawNew)
				}
			}
		})
	}
}

// TestSingleCopyNotPowerSafe documents why the CLI warns: a cut in the
// middle of a single-copy write leaves no valid environment.
func TestSingleCopyNotPowerSafe(t *testing.T) {
	needTool(t, "mkenvimage")
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	cfgPath, _, _ := setup(t, dir, layout{0x200, 0, false}, Env{"a": string(bytesOf('o', 300))})
	cfg, _ := LoadConfig(cfgPath)
	opts := DefaultOptions()
	opts.NoLock = true
	opts.Sys = &cutSys{budget: 100}
	st, err := Open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, Env{"a": "2"}); !errors.Is(err, errPowerCut) {
		t.Fatalf("write err = %v", err)
	}
	if _, err := openStore(t, cfgPath).Read(ctx); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("read after cut single copy: %v, want ErrNoValidCopy", err)
	}
}
