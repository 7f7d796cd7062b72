package source

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDescriptor reads a passed file from several offsets through one
// descriptor, also after the path is gone, and refuses a non-regular one.
func TestDescriptor(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b")
	os.WriteFile(p, payload, 0o600)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDescriptor(f, p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	os.Remove(p) // the daemon never needs the path
	for _, off := range []int64{0, 1000, int64(len(payload))} {
		got, err := readAll(t, d, off)
		if err != nil || !bytes.Equal(got, payload[off:]) {
			t.Fatalf("from %d: %v, %d bytes", off, err, len(got))
		}
	}
	if d.Size() != int64(len(payload)) || d.String() != "fd:"+p {
		t.Errorf("size %d, name %q", d.Size(), d.String())
	}
	if _, err := d.Open(t.Context(), int64(len(payload))+1); err == nil {
		t.Error("offset past the end accepted")
	}
	r, w, _ := os.Pipe()
	defer w.Close()
	if _, err := NewDescriptor(r, "pipe"); err == nil {
		t.Error("a pipe accepted")
	}
	r.Close()
}
