package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestJournalPrefixesAndNoTimestamps(t *testing.T) {
	var b bytes.Buffer
	log, _, err := New(Journal, "debug", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Error("boom")
	log.Warn("careful")
	log.Info("hello")
	log.Debug("wire")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{"<3>boom", "<4>careful", "<6>hello", "<7>wire"}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines, w)
		}
	}
}

func TestBadFormatAndLevel(t *testing.T) {
	if _, _, err := New("xml", "info", nil); err == nil {
		t.Error("format xml accepted")
	}
	if _, _, err := New(JSON, "loud", nil); err == nil {
		t.Error("level loud accepted")
	}
}
