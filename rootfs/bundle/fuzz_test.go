package bundle

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/otagw/otagw/internal/sign"
)

// FuzzParseManifest: no input panics, and what parses re-encodes to a
// manifest that parses to the same thing.
func FuzzParseManifest(f *testing.F) {
	_, h, _ := testBundle(f, testImage(5*4096+3), nil)
	f.Add(h.Raw)
	_, hc, _ := testBundle(f, testImage(200<<10), func(o *CreateOptions) { o.Chunking, o.ChunkSize = ChunkingCDC, 64<<10 })
	f.Add(hc.Raw)
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`{"format":1,"compatible":"a","version":"1.0.0","created":"2026-01-01T00:00:00Z","payloads":[{"name":"r","target":"rootfs","size":1,"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","chunk_size":4096,"offset":0,"stored_size":1,"chunks":[{"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","offset":0,"size":1}]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		re, err := MarshalManifest(m)
		if err != nil {
			t.Fatalf("a parsed manifest does not re-encode: %v", err)
		}
		m2, err := ParseManifest(re)
		if err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
		re2, _ := MarshalManifest(m2)
		if !bytes.Equal(re, re2) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzReadBundle: the streaming reader never panics, never reports success
// for bytes that differ from a bundle the key signed, and bounds its memory
// (a manifest or frame cannot make it allocate past the format's limits).
func FuzzReadBundle(f *testing.F) {
	path, h, pub := testBundle(f, testImage(2*4096+5), nil) // small: the fuzzer minimizes what it finds
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:HeaderSize+int(h.Header.ManifestLen)])
	f.Add(append(bytes.Clone(good), 0))
	f.Add([]byte(Magic))
	kr := sign.NewKeyring(pub)
	f.Fuzz(func(t *testing.T, b []byte) {
		// Unverified: parse and check whatever is there.
		Verify(context.Background(), bytes.NewReader(b), nil, 1, nil)
		// Verified: only the signed bundle itself may pass.
		if _, err := Verify(context.Background(), bytes.NewReader(b), kr, 1, nil); err == nil && !bytes.Equal(b, good) {
			t.Fatalf("a %d-byte input that is not the signed bundle verified", len(b))
		}
	})
}
