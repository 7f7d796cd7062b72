package ubootenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkUpdate is one full atomic update of a redundant 16 KiB file
// environment per iteration: lock, read both copies, encode, write the
// inactive copy, fsync. scripts/bench-abboot.sh runs it with -benchtime=1000x.
func BenchmarkUpdate(b *testing.B) {
	dir := b.TempDir()
	img := filepath.Join(dir, "env.img")
	if err := os.WriteFile(img, make([]byte, 0x8000), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := ParseConfig("bench", []byte(fmt.Sprintf("%s 0x0 0x4000\n%s 0x4000 0x4000\n", img, img)))
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions()
	opts.LockFile = filepath.Join(dir, "lock")
	st, err := Open(cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Reset(ctx, Env{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "n": "0"}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := st.Update(ctx, func(e Env) error { e["n"] = strconv.Itoa(i + 1); return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
