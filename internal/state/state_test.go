package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type demo struct {
	MinVersion string `json:"min_version"`
	Counter    int    `json:"counter"`
}

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Path: filepath.Join(dir, "state"), KeyFile: filepath.Join(dir, "device.key"), Schema: 1,
		Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTripAndKeyMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Save(&demo{MinVersion: "1.2.3", Counter: 7}); err != nil {
		t.Fatal(err)
	}
	var got demo
	res, err := open(t, dir).Load(&got)
	if err != nil || !res.Found || res.Tampered {
		t.Fatalf("Load = %+v, %v", res, err)
	}
	if got != (demo{"1.2.3", 7}) {
		t.Errorf("Load = %+v", got)
	}
	st, _ := os.Stat(filepath.Join(dir, "device.key"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("dir has %d entries, want state and key", len(ents))
	}
}

// TestTamper flips every byte, truncates at every length and deletes the
// key: each must be detected, moved aside, and leave the defaults in place.
func TestTamper(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Save(&demo{MinVersion: "9.9.9", Counter: 1}); err != nil {
		t.Fatal(err)
	}
	path := s.Path()
	good, _ := os.ReadFile(path)

	check := func(name string, st *Store, wantErr error) {
		t.Helper()
		def := demo{MinVersion: "default"}
		res, err := st.Load(&def)
		if err != nil {
			t.Fatalf("%s: Load error %v", name, err)
		}
		if !res.Tampered || res.Found || !errors.Is(res.Reason, wantErr) {
			t.Fatalf("%s: Load = %+v, want tampered with %v", name, res, wantErr)
		}
		if def.MinVersion != "default" {
			t.Fatalf("%s: untrusted content reached the value: %+v", name, def)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: bad file still in place", name)
		}
		if _, err := os.Stat(res.MovedTo); err != nil {
			t.Fatalf("%s: moved-aside file: %v", name, err)
		}
		os.Remove(res.MovedTo)
	}
	for i := range good {
		for _, bit := range []byte{0x01, 0x80} {
			bad := append([]byte(nil), good...)
			bad[i] ^= bit
			os.WriteFile(path, bad, 0o600)
			check("flip", s, ErrTampered)
		}
	}
	for n := 0; n < len(good); n++ {
		os.WriteFile(path, good[:n], 0o600)
		check("truncate", s, ErrTampered)
	}
	os.WriteFile(path, append(append([]byte(nil), good...), 0), 0o600)
	check("extend", s, ErrTampered)

	// Delete the key: a new one is made, the old file no longer verifies.
	os.WriteFile(path, good, 0o600)
	os.Remove(filepath.Join(dir, "device.key"))
	s2 := open(t, dir)
	check("key deleted", s2, ErrTampered)
	// And the store works again afterwards.
	if err := s2.Save(&demo{Counter: 2}); err != nil {
		t.Fatal(err)
	}
	var d demo
	if res, _ := s2.Load(&d); !res.Found || d.Counter != 2 {
		t.Fatalf("after recovery: %+v %+v", res, d)
	}
}

func TestSchemaMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	s.Save(&demo{Counter: 3})
	s2, _ := Open(Options{Path: s.Path(), KeyFile: filepath.Join(dir, "device.key"), Schema: 2})
	var d demo
	res, err := s2.Load(&d)
	if err != nil || !errors.Is(res.Reason, ErrSchema) {
		t.Fatalf("Load = %+v, %v; want ErrSchema", res, err)
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	s, _ := Open(Options{Path: filepath.Join(dir, "state"), KeyFile: filepath.Join(dir, "k"), Schema: 1})
	s.Save(&demo{MinVersion: "1"})
	good, _ := os.ReadFile(s.Path())
	f.Add(good)
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Only our own write passes the HMAC; anything else must fail,
		// without a panic.
		if _, err := s.open(data); err == nil && string(data) != string(good) {
			t.Fatalf("accepted forged data %q", data)
		}
	})
}
