package ubootenv

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChoose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		valid  [2]bool
		flags  [2]byte
		mode   FlagMode
		want   int
		wantOK bool
	}{
		{"only 0 valid", [2]bool{true, false}, [2]byte{1, 9}, FlagsIncremental, 0, true},
		{"only 1 valid", [2]bool{false, true}, [2]byte{9, 1}, FlagsIncremental, 1, true},
		{"none valid", [2]bool{}, [2]byte{1, 2}, FlagsIncremental, 0, false},
		{"higher counter wins", [2]bool{true, true}, [2]byte{3, 4}, FlagsIncremental, 1, true},
		{"higher counter wins 0", [2]bool{true, true}, [2]byte{7, 4}, FlagsIncremental, 0, true},
		{"equal counters take 0", [2]bool{true, true}, [2]byte{5, 5}, FlagsIncremental, 0, true},
		{"wrap 0xff then 0x00", [2]bool{true, true}, [2]byte{0xFF, 0x00}, FlagsIncremental, 1, true},
		{"wrap 0x00 then 0xff", [2]bool{true, true}, [2]byte{0x00, 0xFF}, FlagsIncremental, 0, true},
		{"0xfe vs 0xff no wrap", [2]bool{true, true}, [2]byte{0xFE, 0xFF}, FlagsIncremental, 1, true},
		{"bool active vs obsolete", [2]bool{true, true}, [2]byte{0, 1}, FlagsBoolean, 1, true},
		{"bool obsolete vs active", [2]bool{true, true}, [2]byte{1, 0}, FlagsBoolean, 0, true},
		{"bool 0xff copy 1 counts as current", [2]bool{true, true}, [2]byte{1, 0xFF}, FlagsBoolean, 1, true},
		{"bool 0xff copy 0 counts as current", [2]bool{true, true}, [2]byte{0xFF, 1}, FlagsBoolean, 0, true},
		{"bool both 0xff takes 1", [2]bool{true, true}, [2]byte{0xFF, 0xFF}, FlagsBoolean, 1, true},
	}
	for _, tt := range tests {
		got, ok := Choose(tt.valid, tt.flags, tt.mode)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: Choose(%v, %v) = %d, %v; want %d, %v", tt.name, tt.valid, tt.flags, got, ok, tt.want, tt.wantOK)
		}
	}
}

func rawImage(data string, size int, redundant bool, flags byte) []byte {
	hdr := HeaderSingle
	if redundant {
		hdr = HeaderRedundant
	}
	img := make([]byte, size)
	for i := range img {
		img[i] = 0xFF
	}
	copy(img[hdr:], data)
	if redundant {
		img[4] = flags
	}
	binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[hdr:]))
	return img
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	env := Env{"bootcmd": "run a; run b", "BOOT_ORDER": "A B", "empty": "", "x": "1=2"}
	for _, red := range []bool{false, true} {
		img, err := EncodeImage(env, 0x100, red, 7)
		if err != nil {
			t.Fatal(err)
		}
		want := rawImage("BOOT_ORDER=A B\x00bootcmd=run a; run b\x00empty=\x00x=1=2\x00\x00", 0x100, red, 7)
		if diff := cmp.Diff(want, img); diff != "" {
			t.Errorf("redundant=%v image (-want +got):\n%s", red, diff)
		}
		got, ci, err := DecodeImage(img, red)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(env) || (red && ci.Flags != 7) {
			t.Errorf("DecodeImage = %v flags %d", got, ci.Flags)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	bad := rawImage("a=1\x00\x00", 64, false, 0)
	bad[10] ^= 1
	tests := []struct {
		name string
		img  []byte
		err  error
	}{
		{"garbage", []byte("this is not an environment at all, really"), ErrNoValidCopy},
		{"wrong crc", bad, ErrNoValidCopy},
		{"duplicate", rawImage("a=1\x00b=2\x00a=3\x00\x00", 64, false, 0), ErrDuplicate},
		{"no equals", rawImage("a=1\x00junk\x00\x00", 64, false, 0), ErrFormat},
		{"empty name", rawImage("=x\x00\x00", 64, false, 0), ErrFormat},
		{"no terminator", rawImage("a=0123456789012345678901234567890123456789012345678901234567", 64, false, 0), ErrFormat},
		{"missing final empty entry", rawImage("a=01234567890123456789012345678901234567890123456789012345\x00", 64, false, 0), ErrFormat},
	}
	for _, tt := range tests {
		if _, _, err := DecodeImage(tt.img, false); !errors.Is(err, tt.err) {
			t.Errorf("%s: DecodeImage err = %v; want %v", tt.name, err, tt.err)
		}
	}
	// A terminated env followed by junk padding is fine.
	img := rawImage("a=1\x00\x00junk", 64, false, 0)
	if env, _, err := DecodeImage(img, false); err != nil || env["a"] != "1" {
		t.Errorf("padding junk: %v %v", env, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  Env
		err  error
	}{
		{"name with =", Env{"a=b": "1"}, ErrBadName},
		{"empty name", Env{"": "1"}, ErrBadName},
		{"nul in name", Env{"a\x00": "1"}, ErrBadName},
		{"nul in value", Env{"a": "x\x00y"}, ErrBadValue},
		{"oversize", Env{"big": string(bytesOf(1, 60))}, ErrTooLarge},
	}
	for _, tt := range tests {
		if _, err := EncodeImage(tt.env, 64, true, 0); !errors.Is(err, tt.err) {
			t.Errorf("%s: EncodeImage err = %v; want %v", tt.name, err, tt.err)
		}
	}
	// Exactly full: 4 header + 1 flags + "a=<n bytes>\0" + "\0".
	if _, err := EncodeImage(Env{"a": string(make([]byte, 64-5-4)) + ""}, 64, true, 0); err == nil {
		t.Errorf("value with NULs accepted")
	}
	full := Env{"a": string(bytesOf('v', 64-5-4))}
	if _, err := EncodeImage(full, 64, true, 0); err != nil {
		t.Errorf("exactly full env rejected: %v", err)
	}
	full["a"] += "v"
	if _, err := EncodeImage(full, 64, true, 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one byte too many: %v", err)
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func FuzzDecodeImage(f *testing.F) {
	f.Add(rawImage("a=1\x00b=2\x00\x00", 64, false, 0), false)
	f.Add(rawImage("BOOT_ORDER=A B\x00BOOT_A_LEFT=3\x00\x00", 64, true, 3), true)
	f.Add([]byte{1, 2, 3}, true)
	f.Add(rawImage("a=1\x00a=2\x00\x00", 64, false, 0), false)
	f.Fuzz(func(t *testing.T, img []byte, red bool) {
		if len(img) > 1<<16 {
			return
		}
		env, _, err := DecodeImage(img, red)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to an image that decodes to the same.
		out, err := EncodeImage(env, int64(len(img)), red, 1)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, _, err := DecodeImage(out, red)
		if err != nil || !back.Equal(env) {
			t.Fatalf("round trip: %v %v vs %v", err, back, env)
		}
	})
}

func TestParseScript(t *testing.T) {
	t.Parallel()
	in := "# comment\nfoo=\nnew val=x y\nspace after \nbar\nq=1=2\r\nwin=1\r\n\nlast=no newline"
	got, err := ParseScript("s", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{Name: "foo", Delete: true, Line: 2},
		{Name: "new val", Value: "x y", Line: 3},
		{Name: "q", Value: "1=2", Line: 6},
		{Name: "win", Value: "1", Line: 7},
		{Name: "last", Value: "no newline", Line: 9},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ParseScript (-want +got):\n%s", diff)
	}
	if _, err := ParseScript("s", strings.NewReader("ok=1\n=empty\n")); !errors.Is(err, ErrBadName) || !strings.Contains(err.Error(), "s:2") {
		t.Fatalf("empty name: %v", err)
	}
}

func FuzzParseScript(f *testing.F) {
	f.Add("# c\nfoo=\nnew val=x y\nbar\nq=1=2\r\n")
	f.Add("=x\n")
	f.Fuzz(func(t *testing.T, in string) {
		changes, err := ParseScript("fuzz", strings.NewReader(in))
		if err != nil {
			return
		}
		env := Env{}
		Apply(env, changes)
		for k, v := range env {
			if CheckName(k) != nil || CheckValue(k, v) != nil {
				t.Fatalf("accepted %q=%q", k, v)
			}
		}
	})
}
