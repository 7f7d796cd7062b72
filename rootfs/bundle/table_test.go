package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/otagw/otagw/internal/sign"
)

// signedBundle builds a bundle and returns its bytes with the signer, so
// that a test can sign altered manifests.
func signedBundle(t *testing.T, img []byte, mod func(*CreateOptions)) ([]byte, *Head, sign.Signer, *sign.Keyring) {
	t.Helper()
	s, pub := testSigner(t)
	path, h, _ := testBundle(t, img, func(o *CreateOptions) {
		o.Signers = []sign.Signer{s}
		if mod != nil {
			mod(o)
		}
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, h, s, sign.NewKeyring(pub)
}

// resigned is the bundle good (head h) with manifest bytes raw, signed by
// s, and the header's JSON length set to jsonLen.
func resigned(t *testing.T, good []byte, h *Head, s sign.Signer, raw []byte, jsonLen int) []byte {
	t.Helper()
	sig, err := sign.SignDigest(s, sign.ContextBundle, sha256.Sum256(raw))
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := json.Marshal(SigBlock{Signatures: []sign.Signature{sig}})
	hdr := Header{Version: h.Header.Version, ManifestLen: uint32(len(raw)), SigLen: uint32(len(sb)), JSONLen: uint32(jsonLen)}
	hb, _ := hdr.MarshalBinary()
	out := append(append(append(hb, raw...), sb...), good[h.DataOffset():]...)
	return out
}

// TestFormats: both formats, fixed and cdc chunking, write and read back
// to the same manifest; format 2's manifest is the JSON object (its length
// in the header) and 40 bytes a chunk; ParseManifest of the signed bytes
// re-encodes to them.
func TestFormats(t *testing.T) {
	img := testImage(600<<10 + 123)
	var tables [2]map[string]*Manifest
	for fi, format := range []int{FormatV1, FormatV2} {
		tables[fi] = map[string]*Manifest{}
		for _, chunking := range []string{"", ChunkingCDC} {
			name := fmt.Sprintf("format%d/%s", format, map[string]string{"": "fixed", ChunkingCDC: "cdc"}[chunking])
			t.Run(name, func(t *testing.T) {
				good, h, _, kr := signedBundle(t, img, func(o *CreateOptions) {
					o.Format, o.Chunking, o.ChunkSize = format, chunking, 64<<10
				})
				got, err := Verify(context.Background(), bytes.NewReader(good), kr, 1, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got.Header.Version != uint16(format) || got.Manifest.Format != format || !bytes.Equal(got.Raw, h.Raw) {
					t.Fatalf("header version %d, manifest format %d, raw equal %v", got.Header.Version, got.Manifest.Format, bytes.Equal(got.Raw, h.Raw))
				}
				p := &got.Manifest.Payloads[0]
				if p.PlainOffset(len(p.Chunks)) != int64(len(img)) || (chunking == "" && len(p.Chunks) != 10) {
					t.Fatalf("%d chunks covering %d bytes", len(p.Chunks), p.PlainOffset(len(p.Chunks)))
				}
				for i, c := range p.Chunks {
					if c != h.Manifest.Payloads[0].Chunks[i] {
						t.Fatalf("chunk %d read back as %+v, written as %+v", i, c, h.Manifest.Payloads[0].Chunks[i])
					}
				}
				j := int(got.Header.JSONLen)
				switch format {
				case FormatV1:
					if j != 0 || !json.Valid(got.Raw) {
						t.Fatalf("format 1: JSON length %d in the header, manifest valid JSON %v", j, json.Valid(got.Raw))
					}
				case FormatV2:
					if j == 0 || len(got.Raw)-j != TableEntrySize*len(p.Chunks) || !json.Valid(got.Raw[:j]) ||
						!bytes.Contains(got.Raw[:j], []byte(fmt.Sprintf(`"chunk_count":%d}`, len(p.Chunks)))) ||
						bytes.Contains(got.Raw[:j], []byte(`"chunks"`)) {
						t.Fatalf("format 2: JSON %d bytes of %d for %d chunks: %s", j, len(got.Raw), len(p.Chunks), got.Raw[:j])
					}
				}
				m, err := ParseManifest(got.Raw)
				if err != nil {
					t.Fatal(err)
				}
				re, err := MarshalManifest(m)
				if err != nil || !bytes.Equal(re, got.Raw) {
					t.Fatalf("re-encoded manifest differs (%v)", err)
				}
				tables[fi][name[len("formatN/"):]] = got.Manifest
			})
		}
	}
	// The same image makes the same chunks in either format.
	for k, m1 := range tables[0] {
		m2 := tables[1][k]
		if m2 == nil {
			continue
		}
		for i, c := range m1.Payloads[0].Chunks {
			if c != m2.Payloads[0].Chunks[i] {
				t.Errorf("%s chunk %d: format 1 %+v, format 2 %+v", k, i, c, m2.Payloads[0].Chunks[i])
			}
		}
	}
}

// TestTableRejects: every corruption of format 2's table, signed by the
// trusted key so that only the format stands between it and use, is
// refused with ErrFormat naming what is wrong; an unsigned change is a
// signature failure.
func TestTableRejects(t *testing.T) {
	img := testImage(10 * 4096)
	good, h, s, kr := signedBundle(t, img, nil) // fixed 4 KiB chunks, half raw, half zstd
	cgood, ch, cs, ckr := signedBundle(t, testImage(300<<10), func(o *CreateOptions) { o.Chunking, o.ChunkSize = ChunkingCDC, 64<<10 })
	if h.Header.Version != FormatV2 || ch.Header.Version != FormatV2 {
		t.Fatalf("Create wrote format %d", h.Header.Version)
	}
	p := h.Manifest.Payloads[0]
	zi, ri := -1, -1 // a zstd chunk and a raw one
	for i, c := range p.Chunks[:len(p.Chunks)-1] {
		if c.Zstd && zi < 0 {
			zi = i
		}
		if !c.Zstd && ri < 0 {
			ri = i
		}
	}
	if zi < 0 || ri < 0 {
		t.Fatalf("test image made no raw and zstd chunks: %+v", p.Chunks)
	}
	j := int(h.Header.JSONLen)
	entry := func(raw []byte, i int) []byte { return raw[j+i*TableEntrySize : j+(i+1)*TableEntrySize] }
	edit := func(f func(raw []byte) []byte) []byte { return f(bytes.Clone(h.Raw)) }
	setWord := func(raw []byte, i, at int, f func(uint32) uint32) []byte {
		e := entry(raw, i)
		binary.BigEndian.PutUint32(e[at:], f(binary.BigEndian.Uint32(e[at:])))
		return raw
	}
	jsonEdit := func(raw []byte, jl int, old, new string) ([]byte, int) {
		js := strings.Replace(string(raw[:jl]), old, new, 1)
		if js == string(raw[:jl]) {
			t.Fatalf("%q not in %s", old, raw[:jl])
		}
		return append([]byte(js), raw[jl:]...), len(js)
	}
	n := len(p.Chunks)
	cn := len(ch.Manifest.Payloads[0].Chunks)
	countJSON := func(k int) string { return fmt.Sprintf(`"chunk_count":%d`, k) }
	type tc struct {
		good []byte
		h    *Head
		s    sign.Signer
		kr   *sign.Keyring
		raw  []byte
		j    int
		want string // in the error
	}
	fixed := func(raw []byte, want string) tc { return tc{good, h, s, kr, raw, j, want} }
	cases := map[string]tc{
		"table short by an entry": fixed(h.Raw[:len(h.Raw)-TableEntrySize], "chunk table"),
		"table short by a byte":   fixed(h.Raw[:len(h.Raw)-1], "chunk table"),
		"table long by an entry":  fixed(append(bytes.Clone(h.Raw), make([]byte, TableEntrySize)...), "chunk table"),
		"table long by a byte":    fixed(append(bytes.Clone(h.Raw), 0), "chunk table"),
		"zstd bit cleared": fixed(edit(func(r []byte) []byte {
			return setWord(r, zi, 36, func(w uint32) uint32 { return w &^ tableZstd })
		}), fmt.Sprintf("chunk %d: stored size", zi)),
		"plain size wrong": fixed(edit(func(r []byte) []byte {
			return setWord(r, 3, 36, func(w uint32) uint32 { return w - 1 })
		}), "chunk 3: plain size 4095"),
		"last plain size wrong": fixed(edit(func(r []byte) []byte {
			return setWord(r, n-1, 36, func(w uint32) uint32 { return w + 1 })
		}), fmt.Sprintf("chunk %d: plain size", n-1)),
		"plain size on its own": fixed(edit(func(r []byte) []byte {
			return setWord(r, ri, 36, func(w uint32) uint32 { return 0 })
		}), fmt.Sprintf("chunk %d: plain size 0", ri)),
		"zstd frame beyond maxFrame": fixed(edit(func(r []byte) []byte {
			return setWord(r, zi, 32, func(uint32) uint32 { return uint32(maxFrame(4096) + 1) })
		}), fmt.Sprintf("chunk %d: zstd frame size %d", zi, maxFrame(4096)+1)),
		"zstd frame too small": fixed(edit(func(r []byte) []byte {
			return setWord(r, zi, 32, func(uint32) uint32 { return 8 })
		}), fmt.Sprintf("chunk %d: zstd frame size 8", zi)),
		"raw stored size wrong": fixed(edit(func(r []byte) []byte {
			return setWord(r, ri, 32, func(w uint32) uint32 { return w + 1 })
		}), fmt.Sprintf("chunk %d: stored size 4097", ri)),
		"stored_size not the sum": fixed(edit(func(r []byte) []byte {
			return setWord(r, n-1, 32, func(w uint32) uint32 { return w - 1 })
		}), "stored_size"),
	}
	add := func(name string, c tc, old, new string) {
		c.raw, c.j = jsonEdit(c.raw, c.j, old, new)
		cases[name] = c
	}
	add("chunk_count one more", fixed(h.Raw, fmt.Sprintf("chunk_count %d, size %d needs %d", n+1, len(img), n)), countJSON(n), countJSON(n+1))
	add("chunk_count with its table", fixed(append(bytes.Clone(h.Raw), make([]byte, TableEntrySize)...), "chunk_count"), countJSON(n), countJSON(n+1))
	add("chunk_count missing", fixed(h.Raw, "chunk_count missing"), ","+countJSON(n), "")
	add("chunk_count negative", fixed(h.Raw, "chunk_count"), countJSON(n), countJSON(-1))
	add("chunks in format 2", fixed(h.Raw, "chunks in format 2"), countJSON(n), countJSON(n)+`,"chunks":[]`)
	add("format 1 in a format 2 header", fixed(h.Raw, "format 1"), `"format":2`, `"format":1`)
	cdc := tc{cgood, ch, cs, ckr, ch.Raw, int(ch.Header.JSONLen), ""}
	cdc.want = "chunk table"
	add("cdc chunk_count one less", cdc, countJSON(cn), countJSON(cn-1))
	cdc.want = "chunk_count 1099511627776"
	add("cdc chunk_count beyond size", cdc, countJSON(cn), countJSON(1<<40))
	cdc.want = "needs 5..307200 chunks"
	add("cdc chunk_count below size/chunk_size", cdc, countJSON(cn), countJSON(4))
	cdc.want = fmt.Sprintf("chunk %d: plain size 0", cn-1)
	cdc.raw = bytes.Clone(ch.Raw)
	binary.BigEndian.PutUint32(cdc.raw[len(cdc.raw)-4:], tableZstd)
	cases["cdc plain size 0"] = cdc

	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b := resigned(t, c.good, c.h, c.s, c.raw, c.j)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ReadHeadStream(bytes.NewReader(b), c.kr, 1, nil)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ReadHeadStream = %v, want ErrFormat naming %q", err, c.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("refusing it allocated %d bytes", alloc)
			}
			if _, err := ParseManifest(c.raw); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseManifest = %v, want ErrFormat naming %q", err, c.want)
			}
			if _, err := Verify(context.Background(), bytes.NewReader(b), c.kr, 1, nil); !errors.Is(err, ErrFormat) {
				t.Errorf("Verify = %v, want ErrFormat", err)
			}
		})
	}

	// The header's JSON length must be where the JSON object ends.
	for _, jl := range []int{j - 1, j + 1, 0, len(h.Raw)} {
		b := resigned(t, good, h, s, h.Raw, jl)
		if _, err := ReadHeadStream(bytes.NewReader(b), kr, 1, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("JSON length %d (the object has %d): %v, want ErrFormat", jl, j, err)
		}
	}
	// A format-2 manifest behind a format-1 header, and the reverse.
	b := bytes.Clone(good)
	binary.BigEndian.PutUint16(b[8:], FormatV1)
	binary.BigEndian.PutUint32(b[20:], 0)
	if _, err := ReadHeadStream(bytes.NewReader(b), kr, 1, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("format-2 manifest, format-1 header: %v", err)
	}
	g1, h1, s1, kr1 := signedBundle(t, img, func(o *CreateOptions) { o.Format = FormatV1 })
	b = resigned(t, g1, h1, s1, h1.Raw, len(h1.Raw)-1)
	binary.BigEndian.PutUint16(b[8:], FormatV2)
	if _, err := ReadHeadStream(bytes.NewReader(b), kr1, 1, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("format-1 manifest, format-2 header: %v", err)
	}

	// The zstd bit set on a raw chunk passes the table (a raw chunk's
	// size is a possible frame size) and fails as that chunk is decoded.
	b = resigned(t, good, h, s, edit(func(r []byte) []byte {
		return setWord(r, ri, 36, func(w uint32) uint32 { return w | tableZstd })
	}), j)
	var ce *ChunkError
	if _, err := Verify(context.Background(), bytes.NewReader(b), kr, 1, nil); !errors.As(err, &ce) || ce.Index != ri {
		t.Errorf("zstd bit on raw chunk %d: %v, want that chunk's ChunkError", ri, err)
	}

	// The signature covers the table: any flipped table byte, unsigned, is ErrSignature.
	for _, off := range []int{j, j + 33, j + 36, len(h.Raw) - 1} {
		b := bytes.Clone(good)
		b[HeaderSize+off] ^= 0x80
		if _, err := Verify(context.Background(), bytes.NewReader(b), kr, 1, nil); !errors.Is(err, ErrSignature) {
			t.Errorf("table byte %d flipped: %v, want ErrSignature", off-j, err)
		}
	}
}

// TestTableEntriesBound: a table of more than MaxTableEntries entries is
// refused before anything is allocated for it, even when its length and
// the payload's size agree with the count.
func TestTableEntriesBound(t *testing.T) {
	for _, n := range []int64{MaxTableEntries, MaxTableEntries + 1} {
		m := &Manifest{Payloads: []Payload{{Name: "rootfs", Chunking: ChunkingCDC, ChunkSize: 256 << 10, Size: n * 16 << 10}}}
		err := tableEntries(m, []int64{n}, n*TableEntrySize)
		if n <= MaxTableEntries && err != nil {
			t.Errorf("%d entries: %v", n, err)
		}
		if n > MaxTableEntries && (err == nil || !strings.Contains(err.Error(), "at most")) {
			t.Errorf("%d entries: got %v, want a refusal naming the bound", n, err)
		}
	}
}
