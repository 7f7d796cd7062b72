package bundle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/sign/signtest"
)

func testSigner(t testing.TB) (sign.Signer, ed25519.PublicKey) {
	t.Helper()
	return signtest.Key(t)
}

func testImage(size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b[:size/2] {
		b[i] = byte(r.Uint32())
	}
	for i := size / 2; i < size; i++ {
		b[i] = "compressible "[i%13]
	}
	return b
}

func testBundle(t testing.TB, img []byte, mod func(*CreateOptions)) (string, *Head, ed25519.PublicKey) {
	t.Helper()
	s, pub := testSigner(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "img")
	if err := os.WriteFile(in, img, 0o644); err != nil {
		t.Fatal(err)
	}
	o := CreateOptions{Compatible: "acme", Version: "1.2.3", ChunkSize: 4096, Signers: []sign.Signer{s},
		Payloads: []PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: in}}}
	if mod != nil {
		mod(&o)
	}
	out := filepath.Join(dir, "b.otab")
	h, err := Create(context.Background(), out, o)
	if err != nil {
		t.Fatal(err)
	}
	return out, h, pub
}

func TestCreateVerify(t *testing.T) {
	img := testImage(10*4096 + 100)
	for _, comp := range []string{CompressAuto, CompressZstd, CompressNone} {
		t.Run(comp, func(t *testing.T) {
			path, h, pub := testBundle(t, img, func(o *CreateOptions) { o.Compress = comp })
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var last Progress
			got, err := Verify(context.Background(), f, sign.NewKeyring(pub), 1, func(p Progress) { last = p })
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			if got.Digest != h.Digest || got.Size() != st.Size() || last.Done != int64(len(img)) {
				t.Fatalf("verify: digest/size/progress mismatch: %d vs %d, %+v", got.Size(), st.Size(), last)
			}
			p := got.Manifest.Payloads[0]
			var z int
			for _, c := range p.Chunks {
				if c.Zstd {
					z++
				}
			}
			switch {
			case comp == CompressNone && z != 0, comp == CompressZstd && z != len(p.Chunks),
				comp == CompressAuto && (z == 0 || z == len(p.Chunks)):
				t.Fatalf("%s: %d of %d chunks compressed", comp, z, len(p.Chunks))
			}
		})
	}
}

func TestVerifyFailures(t *testing.T) {
	img := testImage(8 * 4096)
	path, h, pub := testBundle(t, img, nil)
	good, _ := os.ReadFile(path)
	_, other := testSigner(t)
	p := h.Manifest.Payloads[0]
	chunk3 := h.DataOffset() + p.Chunks[3].Offset + 7
	flip := func(off int64) []byte { b := bytes.Clone(good); b[off] ^= 1; return b }
	cases := []struct {
		name string
		data []byte
		kr   *sign.Keyring
		want error
	}{
		{"good", good, sign.NewKeyring(pub), nil},
		{"unsigned check", good, nil, nil},
		{"manifest", flip(HeaderSize + 10), sign.NewKeyring(pub), ErrSignature},
		{"unknown key", good, sign.NewKeyring(other), ErrUnknownKey},
		{"threshold", good, sign.NewKeyring(pub, other), nil},
		{"chunk", flip(chunk3), sign.NewKeyring(pub), ErrHashMismatch},
		{"truncated", good[:len(good)-5], sign.NewKeyring(pub), ErrTruncated},
		{"trailing", append(bytes.Clone(good), 'x'), sign.NewKeyring(pub), ErrTrailingData},
		{"version", flip(9), sign.NewKeyring(pub), ErrFormat},
		{"reserved", flip(21), sign.NewKeyring(pub), ErrFormat},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(context.Background(), bytes.NewReader(c.data), c.kr, 1, nil)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			var ce *ChunkError
			if c.want == ErrHashMismatch && (!errors.As(err, &ce) || ce.Index != 3) {
				t.Fatalf("Verify = %v, want chunk 3 named", err)
			}
		})
	}
	_, err := Verify(context.Background(), bytes.NewReader(good), sign.NewKeyring(pub, other), 2, nil)
	if !errors.Is(err, ErrThreshold) {
		t.Fatalf("threshold 2 with one signature: %v", err)
	}
}

// TestParseManifestRejects: format 1's JSON table (format 2's binary
// table: TestTableRejects).
func TestParseManifestRejects(t *testing.T) {
	_, h, _ := testBundle(t, testImage(3*4096+1), func(o *CreateOptions) {
		exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		o.Expires, o.MinVersion, o.SecurityCounter, o.Format = &exp, "1.0.0", 3, FormatV1
	})
	if _, err := ParseManifest(h.Raw); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(h.Raw, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	pl := func(m map[string]any) map[string]any { return m["payloads"].([]any)[0].(map[string]any) }
	ch := func(m map[string]any, i int) map[string]any { return pl(m)["chunks"].([]any)[i].(map[string]any) }
	cases := map[string][]byte{
		"unknown field":        edit(func(m map[string]any) { m["x"] = 1 }),
		"trailing json":        append(bytes.Clone(h.Raw), []byte(` {}`)...),
		"format":               edit(func(m map[string]any) { m["format"] = 3 }),
		"format 2 with chunks": edit(func(m map[string]any) { m["format"] = 2 }),
		"chunk_count in 1":     edit(func(m map[string]any) { pl(m)["chunk_count"] = 4 }),
		"version":              edit(func(m map[string]any) { m["version"] = "1.2" }),
		"no compatible":        edit(func(m map[string]any) { m["compatible"] = "" }),
		"no payloads":          edit(func(m map[string]any) { m["payloads"] = []any{} }),
		"chunk gap":            edit(func(m map[string]any) { ch(m, 1)["offset"] = 4097.0 }),
		"chunk count":          edit(func(m map[string]any) { pl(m)["size"] = 5 * 4096.0 }),
		"raw size":             edit(func(m map[string]any) { ch(m, 0)["size"] = 4000.0 }),
		"stored size":          edit(func(m map[string]any) { pl(m)["stored_size"] = 1.0 }),
		"chunk size":           edit(func(m map[string]any) { pl(m)["chunk_size"] = 1000.0 }),
		"bad name":             edit(func(m map[string]any) { pl(m)["name"] = "../etc" }),
		"bad hash":             edit(func(m map[string]any) { ch(m, 0)["sha256"] = "ABCD" }),
		"payload offset":       edit(func(m map[string]any) { pl(m)["offset"] = 8.0 }),
		"huge zstd frame":      edit(func(m map[string]any) { ch(m, 0)["zstd"] = true; ch(m, 0)["size"] = 1e9 }),
		"negative size":        edit(func(m map[string]any) { pl(m)["size"] = -1.0 }),
		"bad min_version":      edit(func(m map[string]any) { m["min_version"] = "x" }),
		"not json":             []byte("hello"),
		"created missing":      edit(func(m map[string]any) { delete(m, "created") }),
		"duplicate payload":    edit(func(m map[string]any) { m["payloads"] = append(m["payloads"].([]any), pl(m)) }),
		"chunk sha256 gone":    edit(func(m map[string]any) { delete(ch(m, 1), "sha256") }),
		"chunk offset gone":    edit(func(m map[string]any) { delete(ch(m, 0), "offset") }),
		"chunk size gone":      edit(func(m map[string]any) { delete(ch(m, 2), "size") }),
		"chunk size null":      edit(func(m map[string]any) { ch(m, 2)["size"] = nil }),
		"unknown in chunk":     edit(func(m map[string]any) { ch(m, 0)["x"] = 1 }),
		"unknown in payload":   edit(func(m map[string]any) { pl(m)["x"] = 1 }),
		"key in other case":    edit(func(m map[string]any) { m["Format"] = m["format"]; delete(m, "format") }),
		"chunks not a list":    edit(func(m map[string]any) { pl(m)["chunks"] = map[string]any{} }),
		"truncated":            h.Raw[:len(h.Raw)-2],
	}
	for name, b := range cases {
		if _, err := ParseManifest(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: ParseManifest = %v, want ErrFormat", name, err)
		}
	}
}

func TestSemver(t *testing.T) {
	order := []string{"0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "v1.0.1+build.5", "1.10.0", "2.0.0"}
	for i := range order {
		for j := range order {
			c, err := CompareVersions(order[i], order[j])
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if c != want {
				t.Errorf("CompareVersions(%s, %s) = %d, want %d", order[i], order[j], c, want)
			}
		}
	}
	for _, bad := range []string{"", "1", "1.2", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.x", "1.2.3+", "1..3", "1.2.3-a..b"} {
		if _, err := ParseSemver(bad); err == nil {
			t.Errorf("ParseSemver(%q) accepted", bad)
		}
	}
}

func TestCreateRefuses(t *testing.T) {
	s, _ := testSigner(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for name, o := range map[string]CreateOptions{
		"no key":      {Compatible: "a", Version: "1.0.0", Payloads: []PayloadSpec{{Name: "r", Target: "rootfs", Path: empty}}},
		"empty image": {Compatible: "a", Version: "1.0.0", Signers: []sign.Signer{s}, Payloads: []PayloadSpec{{Name: "r", Target: "rootfs", Path: empty}}},
		"bad version": {Compatible: "a", Version: "one", Signers: []sign.Signer{s}, Payloads: []PayloadSpec{{Name: "r", Target: "rootfs", Path: "/dev/zero"}}}, // refused before reading the endless input
		"compress":    {Compatible: "a", Version: "1.0.0", Compress: "lz4", Signers: []sign.Signer{s}},
		"missing":     {Compatible: "a", Version: "1.0.0", Signers: []sign.Signer{s}, Payloads: []PayloadSpec{{Name: "r", Target: "rootfs", Path: filepath.Join(dir, "nope")}}},
	} {
		if _, err := Create(context.Background(), filepath.Join(dir, "out"), o); err == nil {
			t.Errorf("%s: Create accepted", name)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Create left files behind: %v", ents)
	}
}

// TestCDC: a payload cut by content verifies, its chunks tile the payload
// with plain sizes between the bounds, the same bytes are cut the same way
// after an insertion before them, and a table whose plain sizes do not add
// up is refused.
func TestCDC(t *testing.T) {
	img := testImage(2 << 20)
	cdc := func(o *CreateOptions) { o.Chunking, o.ChunkSize = ChunkingCDC, 256<<10 }
	path, h, pub := testBundle(t, img, cdc)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Verify(context.Background(), f, sign.NewKeyring(pub), 1, nil); err != nil {
		t.Fatal(err)
	}
	p := &h.Manifest.Payloads[0]
	if p.Chunking != ChunkingCDC || p.PlainOffset(len(p.Chunks)) != int64(len(img)) {
		t.Fatalf("chunking %q, %d chunks ending at %d", p.Chunking, len(p.Chunks), p.PlainOffset(len(p.Chunks)))
	}
	sums := map[Digest]bool{}
	for i, c := range p.Chunks {
		if c.Plain > p.ChunkSize || (c.Plain < CDCMinSize && i < len(p.Chunks)-1) {
			t.Fatalf("chunk %d: %d plain bytes", i, c.Plain)
		}
		sums[c.SHA256] = true
	}
	// 1000 bytes inserted near the start: nearly every later chunk is the same.
	moved := append(append(append([]byte{}, img[:100<<10]...), make([]byte, 1000)...), img[100<<10:]...)
	_, h2, _ := testBundle(t, moved, cdc)
	same := 0
	for _, c := range h2.Manifest.Payloads[0].Chunks {
		if sums[c.SHA256] {
			same++
		}
	}
	if same < len(p.Chunks)-3 {
		t.Fatalf("after an insertion %d of %d chunks are the same", same, len(p.Chunks))
	}

	m := *h.Manifest
	m.Payloads = append([]Payload{}, m.Payloads...)
	m.Payloads[0].Chunks = append([]Chunk{}, p.Chunks...)
	m.Payloads[0].Chunks[1].Plain++
	if err := m.Validate(); !errors.Is(err, ErrFormat) {
		t.Fatalf("plain sizes adding up to size+1: %v", err)
	}
	m.Payloads[0].Chunks[1].Plain--
	m.Payloads[0].Chunking = ""
	if err := m.Validate(); !errors.Is(err, ErrFormat) {
		t.Fatalf("plain sizes in a fixed-chunk table: %v", err)
	}
}

// ReadHeadStream hands the manifest's exact bytes to its writer and keeps
// no copy; ReadHead keeps them. A manifest altered into bad JSON is a
// signature failure first (the signatures, after the manifest, are checked
// before its format is reported), a format failure without a keyring.
func TestReadHeadStream(t *testing.T) {
	path, h, pub := testBundle(t, testImage(9*4096+7), nil)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kr := sign.NewKeyring(pub)
	var raw bytes.Buffer
	hs, err := ReadHeadStream(bytes.NewReader(b), kr, 1, &raw)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Raw != nil || !bytes.Equal(raw.Bytes(), h.Raw) || hs.Digest != h.Digest {
		t.Fatalf("streamed head: Raw kept %v, raw bytes equal %v, digest equal %v", hs.Raw != nil, bytes.Equal(raw.Bytes(), h.Raw), hs.Digest == h.Digest)
	}
	if len(hs.Manifest.Payloads[0].Chunks) != 10 || hs.Manifest.Payloads[0].Chunks[9] != h.Manifest.Payloads[0].Chunks[9] {
		t.Fatalf("chunk table differs from ReadHead's")
	}
	hr, err := ReadHead(bytes.NewReader(b), kr, 1)
	if err != nil || !bytes.Equal(hr.Raw, h.Raw) {
		t.Fatalf("ReadHead: %v, Raw kept: %v", err, err == nil && bytes.Equal(hr.Raw, h.Raw))
	}

	bad := bytes.Clone(b)
	bad[HeaderSize] = '[' // the manifest's opening brace
	if _, err := ReadHeadStream(bytes.NewReader(bad), kr, 1, nil); !errors.Is(err, ErrSignature) {
		t.Errorf("bad JSON, keyring: %v, want ErrSignature", err)
	}
	if _, err := ReadHeadStream(bytes.NewReader(bad), nil, 1, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("bad JSON, no keyring: %v, want ErrFormat", err)
	}
	short := b[:HeaderSize+len(h.Raw)/2]
	if _, err := ReadHeadStream(bytes.NewReader(short), kr, 1, nil); !errors.Is(err, ErrTruncated) {
		t.Errorf("manifest cut in half: %v, want ErrTruncated", err)
	}
}
