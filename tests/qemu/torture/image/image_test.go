package image

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	img := Build(Version(7))
	if v, err := Check(bytes.NewReader(img)); err != nil || v != "1.0.7" {
		t.Fatalf("complete image: %q %v", v, err)
	}
	half := append([]byte(nil), img...)
	copy(half[Size/2:], make([]byte, Size/2))
	if _, err := Check(bytes.NewReader(half)); err == nil || !strings.Contains(err.Error(), "half-written") {
		t.Fatalf("half-written image: %v", err)
	}
	if _, err := Check(bytes.NewReader(make([]byte, Size))); err == nil {
		t.Fatal("an empty slot passed")
	}
	if Patch("1.0.12") != 12 || Patch("2.0.1") != -1 || Patch("1.0.x") != -1 {
		t.Fatal("Patch")
	}
}

// FuzzCheck: whatever a slot holds, Check answers without crashing and
// never calls a slot complete unless it is exactly a release image.
func FuzzCheck(f *testing.F) {
	f.Add([]byte("OTAGW-TORTURE-IMAGE 1.0.3\n"))
	f.Add([]byte("OTAGW-TORTURE-IMAGE 1.0.-1\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		b := make([]byte, Size)
		copy(b, head)
		v, err := Check(bytes.NewReader(b))
		if err == nil && !bytes.Equal(b, Build(v)) {
			t.Fatalf("Check passed a slot that is not release %s", v)
		}
	})
}
