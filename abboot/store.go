package abboot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/otagw/otagw/internal/state"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/otagw/otagw/abboot/ubootenv"
)

// ubootStore keeps the variables in the U-Boot environment.
type ubootStore struct{ st *ubootenv.Store }

func openUBoot(o Options) (*ubootStore, error) {
	cfg, err := ubootenv.LoadConfig(o.FWEnvConfig)
	if err != nil {
		return nil, err
	}
	eo := ubootenv.DefaultOptions()
	eo.LockFile = o.LockFile
	eo.NoLock = o.LockFile == ""
	st, err := ubootenv.Open(cfg, eo)
	if err != nil {
		return nil, err
	}
	return &ubootStore{st: st}, nil
}

func (u *ubootStore) read(ctx context.Context) (map[string]string, error) {
	snap, err := u.st.Read(ctx)
	if err != nil {
		return nil, err
	}
	return snap.Env, nil
}

func (u *ubootStore) update(ctx context.Context, fn func(map[string]string) error) error {
	return u.st.Update(ctx, func(e ubootenv.Env) error { return fn(e) })
}

// ErrFileFormat: the file backend's text file is malformed.
var ErrFileFormat = errors.New("malformed boot environment file")

// fileStore keeps the variables in a "name=value" text file, replaced
// atomically (temp file, fsync, rename, directory fsync). A missing file
// reads as empty, which boot.cmd's defaults then fill.
type fileStore struct {
	path string
	mu   sync.Mutex
}

// ReadEnvFile parses the file backend's format: name=value lines, '#'
// comments and blank lines skipped.
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s:%d: %w: want name=value", path, n, ErrFileFormat)
		}
		if _, dup := env[k]; dup {
			return nil, fmt.Errorf("%s:%d: %w: %q twice", path, n, ErrFileFormat, k)
		}
		env[k] = v
	}
	return env, sc.Err()
}

// WriteEnvFile replaces path atomically with env.
func WriteEnvFile(path string, env map[string]string) error {
	keys := make([]string, 0, len(env))
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return fmt.Errorf("%s: %w: cannot store %q", path, ErrFileFormat, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	return state.WriteFileAtomic(path, b.Bytes(), 0o600)
}

func (f *fileStore) read(ctx context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return ReadEnvFile(f.path)
}

func (f *fileStore) update(ctx context.Context, fn func(map[string]string) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	unlock, err := flockPath(ctx, f.path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	env, err := ReadEnvFile(f.path)
	if err != nil {
		return err
	}
	if err := fn(env); err != nil {
		return err
	}
	return WriteEnvFile(f.path, env)
}
