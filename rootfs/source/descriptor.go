package source

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Descriptor is a bundle the daemon received as an open file descriptor
// (the client opened it with its own credentials and passed it over the
// API socket), so the daemon never opens a path a caller names. It reads
// with pread, so every Open, from any offset, sees the same file.
type Descriptor struct {
	f    *os.File
	name string
	size int64
}

// NewDescriptor wraps f, which must be a regular file; name is only for
// messages and is what String returns after "fd:". The Descriptor owns f:
// Close it when the install is over.
func NewDescriptor(f *os.File, name string) (*Descriptor, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("passed file %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("passed file %s: not a regular file (%v)", name, fi.Mode().Type())
	}
	return &Descriptor{f: f, name: name, size: fi.Size()}, nil
}

// Open implements Source.
func (d *Descriptor) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	if off < 0 || off > d.size {
		return nil, fmt.Errorf("%s: offset %d outside the file's %d bytes", d, off, d.size)
	}
	return io.NopCloser(io.NewSectionReader(d.f, off, d.size-off)), nil
}

// Size implements Source.
func (d *Descriptor) Size() int64 { return d.size }

// String is "fd:" and the name the client gave.
func (d *Descriptor) String() string { return "fd:" + d.name }

// Close closes the descriptor.
func (d *Descriptor) Close() error { return d.f.Close() }
