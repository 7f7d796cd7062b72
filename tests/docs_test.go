package tests

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestPackageDocs: every package says what it is in a doc comment.
func TestPackageDocs(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-json=ImportPath,Doc,Name", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct{ ImportPath, Doc, Name string }
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}
