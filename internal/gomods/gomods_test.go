package gomods

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	sum := "example.com/A v1.0.0 h1:zip=\nexample.com/A v1.0.0/go.mod h1:mod=\nexample.com/b v0.1.0/go.mod h1:bmod=\n"
	mods, err := Parse([]byte(sum))
	if err != nil {
		t.Fatal(err)
	}
	want := []Module{
		{Path: "example.com/A", Version: "v1.0.0", Sum: "h1:zip="},
		{Path: "example.com/b", Version: "v0.1.0", ModOnly: true, Sum: "h1:bmod="},
	}
	if len(mods) != len(want) {
		t.Fatalf("Parse = %+v; want %+v", mods, want)
	}
	for i := range want {
		if mods[i] != want[i] {
			t.Errorf("Parse[%d] = %+v; want %+v", i, mods[i], want[i])
		}
	}
	if _, err := Parse([]byte("example.com/a v1.0.0\n")); err == nil {
		t.Error("Parse of a line without hash: no error")
	}
}

func TestEscape(t *testing.T) {
	t.Parallel()
	if got := Escape("github.com/BurntSushi/toml"); got != "github.com/!burnt!sushi/toml" {
		t.Errorf("Escape = %q", got)
	}
}

// TestChecksum: a module zip in a fake module cache gets its sha256, and a
// zip that does not match its go.sum hash is refused.
func TestChecksum(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("example.com/m@v1.0.0/go.mod")
	w.Write([]byte("module example.com/m\n"))
	zw.Close()
	cache := t.TempDir()
	m := Module{Path: "example.com/m", Version: "v1.0.0"}
	os.MkdirAll(filepath.Dir(CacheFile(cache, m)), 0o755)
	os.WriteFile(CacheFile(cache, m), buf.Bytes(), 0o644)
	m.Sum = hash1([]hashedFile{{"example.com/m@v1.0.0/go.mod", sha256.Sum256([]byte("module example.com/m\n"))}})
	mods := []Module{m}
	if err := Checksum(mods, cache); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(buf.Bytes())
	if mods[0].SHA256 != hex.EncodeToString(want[:]) {
		t.Errorf("SHA256 = %s; want %x", mods[0].SHA256, want)
	}
	if !strings.Contains(string(Format(mods)), "gomod://example.com/m;version=v1.0.0;sha256sum="+mods[0].SHA256) {
		t.Errorf("Format:\n%s", Format(mods))
	}
	mods[0].Sum = "h1:other="
	if err := Checksum(mods, cache); err == nil || !strings.Contains(err.Error(), "go.sum says") {
		t.Errorf("Checksum of a zip that does not match go.sum: %v", err)
	}
}
