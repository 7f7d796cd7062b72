package mcupkg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/sign/signtest"
)

func newKey(t testing.TB) (sign.Signer, *sign.Keyring) {
	s, pub := signtest.Key(t)
	return s, sign.NewKeyring(pub)
}

func testPackage(t testing.TB, s sign.Signer) []byte {
	data, err := Create(Manifest{Target: Target{Family: "F1", ProductID: 0x410, HWRevs: []string{"B"}}, Version: "1.2.3+7"},
		[]Segment{{Addr: 0x08000000, Data: bytes.Repeat([]byte{1, 2, 3}, 100)}, {Addr: 0x08001000, Data: []byte{9, 9, 9, 9}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRoundTrip(t *testing.T) {
	s, kr := newKey(t)
	data := testPackage(t, s)
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(kr, 1); err != nil {
		t.Fatal(err)
	}
	m := p.Manifest
	if m.Target.ProductID != 0x410 || m.Version != "1.2.3+7" || m.LoadAddress != 0x08000000 || len(p.Segments) != 2 || p.Segments[1].Addr != 0x08001000 {
		t.Fatalf("manifest = %+v", m)
	}
	_, other := newKey(t)
	if err := p.Verify(other, 1); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("Verify with a foreign keyring = %v; want ErrUnsigned", err)
	}
}

func TestTampered(t *testing.T) {
	s, kr := newKey(t)
	data := testPackage(t, s)
	// flip the last image byte: the hashes catch it
	img := append([]byte(nil), data...)
	img[len(img)-1] ^= 1
	if _, err := Parse(img); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Parse(image byte flipped) = %v; want ErrIntegrity", err)
	}
	// change the manifest's version: the signature catches it
	man := bytes.Replace(data, []byte(`"version":"1.2.3+7"`), []byte(`"version":"9.2.3+7"`), 1)
	p, err := Parse(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(kr, 1); !errors.Is(err, ErrUnsigned) || !errors.Is(err, sign.ErrSignature) {
		t.Fatalf("Verify(manifest altered) = %v; want ErrUnsigned wrapping sign.ErrSignature", err)
	}
	if _, err := Parse(data[:20]); !errors.Is(err, ErrFormat) {
		t.Fatalf("Parse(truncated) = %v; want ErrFormat", err)
	}
}

func TestVersion(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"1.2.3", "1.2.3+0", 0}, {"1.2.3", "1.10.0", -1}, {"2.0", "1.9.9+9", 1}, {"1.0.0+2", "1.0.0+1", 1}} {
		a, _ := ParseVersion(tt.a)
		b, _ := ParseVersion(tt.b)
		if got := a.Compare(b); got != tt.want {
			t.Errorf("%s vs %s = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
	for _, bad := range []string{"", "1.2.3.4", "256.0.0", "1.x", "1.0+a"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
	v, _ := ParseVersion("3.1.400+99")
	got, ok := ParseMCUbootHeader(MCUbootHeader(v))
	if !ok || got != v {
		t.Fatalf("MCUboot header round trip = %v, %v", got, ok)
	}
	if _, ok := ParseMCUbootHeader(bytes.Repeat([]byte{0xFF}, 32)); ok {
		t.Fatal("erased flash parsed as a header")
	}
}

const hexSample = `:020000040800F2
:10000000000102030405060708090A0B0C0D0E0F78
:0400100010111213A6
:020000040801F1
:02000000AABB99
:04000005080000ED02
:00000001FF
`

func TestParseHex(t *testing.T) {
	segs, err := ParseHex(strings.NewReader(hexSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || segs[0].Addr != 0x08000000 || len(segs[0].Data) != 20 || segs[0].Data[19] != 0x13 || segs[1].Addr != 0x08010000 || !bytes.Equal(segs[1].Data, []byte{0xAA, 0xBB}) {
		t.Fatalf("segments = %+v", segs)
	}
	for _, bad := range []string{
		":10000000000102030405060708090A0B0C0D0E0F77\n:00000001FF\n", // checksum
		":0400100010111213A6\n", // no EOF
		"garbage\n",
	} {
		if _, err := ParseHex(strings.NewReader(bad)); !errors.Is(err, ErrInput) {
			t.Errorf("ParseHex(%q) = %v; want ErrInput", bad, err)
		}
	}
}

// elf32 builds a little-endian ARM ELF32 executable with PT_LOAD segments
// at the given physical addresses (virtual addresses differ, as for .data).
func elf32(segs []Segment, bss uint32) []byte {
	const ehsize, phsize = 52, 32
	n := len(segs)
	off := uint32(ehsize + phsize*n)
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(uint16(2))          // ET_EXEC
	w(uint16(40))         // EM_ARM
	w(uint32(1))          // version
	w(segs[0].Addr + 1)   // entry (thumb)
	w(uint32(ehsize))     // phoff
	w(uint32(0))          // shoff
	w(uint32(0x05000200)) // flags
	w(uint16(ehsize))
	w(uint16(phsize))
	w(uint16(n))
	w(uint16(40)) // shentsize
	w(uint16(0))
	w(uint16(0))
	for i, s := range segs {
		w(uint32(1)) // PT_LOAD
		w(off)
		w(0x20000000 + uint32(i)*0x1000) // vaddr (RAM) differs from paddr
		w(s.Addr)
		w(uint32(len(s.Data)))
		w(uint32(len(s.Data)) + bss)
		w(uint32(5))
		w(uint32(4))
		off += uint32(len(s.Data))
	}
	for _, s := range segs {
		b.Write(s.Data)
	}
	return b.Bytes()
}

func TestParseELF(t *testing.T) {
	in := []Segment{{Addr: 0x08000000, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, {Addr: 0x08000008, Data: []byte{9, 10}}, {Addr: 0x08004000, Data: []byte{0xEE}}}
	segs, entry, err := ParseELF(bytes.NewReader(elf32(in, 64)))
	if err != nil {
		t.Fatal(err)
	}
	if entry != 0x08000001 || len(segs) != 2 || len(segs[0].Data) != 10 || segs[1].Addr != 0x08004000 {
		t.Fatalf("ParseELF = %+v entry 0x%x", segs, entry)
	}
	got, err := LoadInput("fw.axf", elf32(in, 0), 0, false)
	if err != nil || len(got) != 2 {
		t.Fatalf("LoadInput(elf) = %v, %v", got, err)
	}
	if _, err := LoadInput("fw.bin", []byte{1}, 0, false); err == nil {
		t.Fatal("raw binary without an address accepted")
	}
}

func FuzzParse(f *testing.F) {
	s, _ := newKey(f)
	f.Add(testPackage(f, s))
	f.Add([]byte(Magic + "\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		n := 0
		for _, s := range p.Segments {
			n += len(s.Data)
		}
		if n != p.Manifest.ImageSize {
			t.Fatalf("segments hold %d bytes, manifest says %d", n, p.Manifest.ImageSize)
		}
	})
}

func FuzzParseHex(f *testing.F) {
	f.Add([]byte(hexSample))
	f.Add([]byte(":00000001FF\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		segs, err := ParseHex(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i := 1; i < len(segs); i++ {
			if uint64(segs[i-1].Addr)+uint64(len(segs[i-1].Data)) >= uint64(segs[i].Addr) {
				t.Fatalf("segments not sorted and disjoint: %+v", segs)
			}
		}
	})
}

// FuzzParseELF: firmware inputs come from build servers and people; a
// malformed ELF must give an error, never a panic or overlapping segments.
func FuzzParseELF(f *testing.F) {
	f.Add(elf32([]Segment{{Addr: 0x08000000, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}}, 16))
	f.Add(elf32([]Segment{{Addr: 0x08000000, Data: []byte{1, 2}}, {Addr: 0x08001000, Data: []byte{3}}}, 0))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		segs, err := LoadInput("fw.elf", data, 0, false)
		if err != nil {
			return
		}
		for i := 1; i < len(segs); i++ {
			if uint64(segs[i-1].Addr)+uint64(len(segs[i-1].Data)) > uint64(segs[i].Addr) {
				t.Fatalf("segments overlap: %+v", segs)
			}
		}
	})
}
