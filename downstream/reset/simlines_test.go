package reset

import (
	"strings"
	"testing"
)

func TestParseSimLines(t *testing.T) {
	s, err := ParseSimLines("sim:/run/x:y.sock:3")
	if err != nil || s.Socket != "/run/x:y.sock" || s.Part != 3 {
		t.Fatalf("ParseSimLines = %+v, %v", s, err)
	}
	for _, bad := range []string{"sim:", "sim:/x", "sim::1", "sim:/x:-1", "sim:/x:a", "gpio:/x:1"} {
		if _, err := ParseSimLines(bad); err == nil {
			t.Errorf("ParseSimLines(%q) accepted", bad)
		}
	}
}

func FuzzParseSimLines(f *testing.F) {
	f.Add("sim:/run/lines.sock:0")
	f.Add("sim::")
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSimLines(spec)
		if err != nil {
			return
		}
		if !strings.HasPrefix(spec, "sim:"+s.Socket+":") || s.Part < 0 || s.Socket == "" {
			t.Fatalf("ParseSimLines(%q) = %+v", spec, s)
		}
	})
}
