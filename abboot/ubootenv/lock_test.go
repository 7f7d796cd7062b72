package ubootenv

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestConcurrentWriters runs read-modify-write increments from several
// independent Stores (separate lock file descriptors, as separate processes
// have); the lock file must serialise them so that no increment is lost.
func TestConcurrentWriters(t *testing.T) {
	needTool(t, "mkenvimage")
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	cfgPath, _, _ := setup(t, dir, layout{0x2000, 0, true}, Env{"n": "0"})
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		st := openStore(t, cfgPath)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := st.Update(ctx, func(e Env) error {
					n, err := strconv.Atoi(e["n"])
					e["n"] = strconv.Itoa(n + 1)
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	snap, err := openStore(t, cfgPath).Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Env["n"] != strconv.Itoa(workers*each) {
		t.Fatalf("n = %s, want %d (lost updates)", snap.Env["n"], workers*each)
	}
}

func TestLockContextEnds(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
}
