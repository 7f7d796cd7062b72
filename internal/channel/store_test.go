package channel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateStoreKeepsTheMark: the accepted sequence survives a reopen
// (a daemon restart); a state file altered on disk is not trusted: it is
// moved aside with a warning and the mark starts over.
func TestStateStoreKeepsTheMark(t *testing.T) {
	dir := t.TempDir()
	path, key := filepath.Join(dir, "channel-state"), filepath.Join(dir, "device.key")
	s, warn, err := OpenStateStore(path, key)
	if err != nil || warn != "" {
		t.Fatalf("open: %v %q", err, warn)
	}
	if err := s.Save(&Record{Mark: Mark{Sequence: 9, Digest: "ab"}, MCU: []string{"cd"}}); err != nil {
		t.Fatal(err)
	}
	s2, warn, err := OpenStateStore(path, key)
	if err != nil || warn != "" {
		t.Fatalf("reopen: %v %q", err, warn)
	}
	var r Record
	if err := s2.Load(&r); err != nil || r.Mark.Sequence != 9 || r.Mark.Digest != "ab" || len(r.MCU) != 1 {
		t.Fatalf("reloaded %+v, %v", r, err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 1 // e.g. someone lowering the sequence to replay an old index
	os.WriteFile(path, b, 0o600)
	s3, warn, err := OpenStateStore(path, key)
	if err != nil || !strings.Contains(warn, "integrity") {
		t.Fatalf("tampered: %v, warning %q", err, warn)
	}
	var r3 Record
	s3.Load(&r3)
	if r3.Mark.Sequence != 0 {
		t.Errorf("tampered state trusted: %+v", r3)
	}
}
