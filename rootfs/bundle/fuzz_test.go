package bundle

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/otagw/otagw/internal/sign"
)

// FuzzParseManifest: no input panics, and what parses re-encodes to a
// manifest that parses to the same thing. Seeds of both formats.
func FuzzParseManifest(f *testing.F) {
	for _, format := range []int{FormatV1, FormatV2} {
		_, h, _ := testBundle(f, testImage(5*4096+3), func(o *CreateOptions) { o.Format = format })
		f.Add(h.Raw)
		_, hc, _ := testBundle(f, testImage(200<<10), func(o *CreateOptions) {
			o.Chunking, o.ChunkSize, o.Format = ChunkingCDC, 64<<10, format
		})
		f.Add(hc.Raw)
		f.Add(hc.Raw[:len(hc.Raw)-1])
	}
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`{"format":2,"compatible":"a","version":"1.0.0","created":"2026-01-01T00:00:00Z","payloads":[{"name":"r","target":"rootfs","size":1,"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","chunk_size":4096,"offset":0,"stored_size":1,"chunk_count":1}]}` +
		"0123456789abcdef0123456789abcdef\x00\x00\x00\x01\x00\x00\x00\x01"))
	f.Add([]byte(`{"format":2,"payloads":[{"chunk_count":99999999999}]}`))
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
// Seeds: a format-2 and a format-1 bundle, both signed by the key.
func FuzzReadBundle(f *testing.F) {
	s, pub := testSigner(f)
	var goods [][]byte
	for _, format := range []int{FormatV2, FormatV1} {
		path, h, _ := testBundle(f, testImage(2*4096+5), func(o *CreateOptions) { // small: the fuzzer minimizes what it finds
			o.Format, o.Signers = format, []sign.Signer{s}
		})
		good, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		goods = append(goods, good)
		f.Add(good)
		f.Add(good[:len(good)-1])
		f.Add(good[:HeaderSize+int(h.Header.ManifestLen)])
		f.Add(append(bytes.Clone(good), 0))
		if format == FormatV2 {
			b := bytes.Clone(good)
			b[23]++ // the JSON length
			f.Add(b)
			b = bytes.Clone(good)
			b[HeaderSize+int(h.Header.ManifestLen)-1] ^= 1 // the table's last byte
			f.Add(b)
		}
	}
	f.Add([]byte(Magic))
	kr := sign.NewKeyring(pub)
	f.Fuzz(func(t *testing.T, b []byte) {
		// Unverified: parse and check whatever is there.
		Verify(context.Background(), bytes.NewReader(b), nil, 1, nil)
		// Verified: only a signed bundle itself may pass.
		if _, err := Verify(context.Background(), bytes.NewReader(b), kr, 1, nil); err == nil && !bytes.Equal(b, goods[0]) && !bytes.Equal(b, goods[1]) {
			t.Fatalf("a %d-byte input that is not a signed bundle verified", len(b))
		}
	})
}
