package qemutest

import (
	"slices"
	"strings"
	"testing"
)

func TestParseKernelDepends(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, pkg, ver string
		ok           bool
	}{
		{"linux-image-6.1.0-56-amd64 (= 6.1.192-2)", "linux-image-6.1.0-56-amd64", "6.1.192-2", true},
		{"linux-image-6.12.38+deb13-amd64 (= 6.12.38-1)\n", "linux-image-6.12.38+deb13-amd64", "6.12.38-1", true},
		{"linux-image-6.1.0-56-amd64-unsigned | linux-image-6.1.0-56-amd64", "linux-image-6.1.0-56-amd64-unsigned", "", true},
		{"initramfs-tools, linux-image-6.1.0-9-amd64", "linux-image-6.1.0-9-amd64", "", true},
		{"linux-image-amd64", "", "", false},
		{"", "", "", false},
	} {
		pkg, ver, err := parseKernelDepends(tc.in)
		if (err == nil) != tc.ok || pkg != tc.pkg || ver != tc.ver {
			t.Errorf("parseKernelDepends(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.in, pkg, ver, err, tc.pkg, tc.ver, tc.ok)
		}
	}
}

func FuzzParseKernelDepends(f *testing.F) {
	f.Add("linux-image-6.1.0-56-amd64 (= 6.1.192-2)")
	f.Add("a | linux-image-1 (= 2), b")
	f.Add("linux-image-9(")
	f.Fuzz(func(t *testing.T, s string) {
		pkg, _, err := parseKernelDepends(s)
		if err == nil && (!strings.HasPrefix(pkg, "linux-image-") || strings.ContainsAny(pkg, " ,|(")) {
			t.Fatalf("parseKernelDepends(%q) gave package %q", s, pkg)
		}
	})
}

func TestParseModinfoDepends(t *testing.T) {
	t.Parallel()
	info := []byte("license=GPL\x00depends=watchdog,pretimeout_noop\x00name=x\x00")
	if got := parseModinfoDepends(info); !slices.Equal(got, []string{"watchdog", "pretimeout_noop"}) {
		t.Errorf("got %v", got)
	}
	if got := parseModinfoDepends([]byte("depends=\x00")); got != nil {
		t.Errorf("empty depends: got %v", got)
	}
}

func FuzzParseModinfoDepends(f *testing.F) {
	f.Add([]byte("depends=a,b\x00"))
	f.Add([]byte("name=x\x00depends=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range parseModinfoDepends(b) {
			if d == "" || strings.ContainsAny(d, ",\x00") {
				t.Fatalf("bad dependency %q from %q", d, b)
			}
		}
	})
}

const transcript = `[    0.000000] Linux version 6.1.0
OTAGW-QEMU-INIT
OTAGW-QEMU-MODULE watchdog ok
=== RUN   TestA
    a_test.go:1: hello
--- PASS: TestA (0.00s)
=== RUN   TestB
=== RUN   TestB/one
    b_test.go:2: boom
--- FAIL: TestB (0.01s)
    --- FAIL: TestB/one (0.01s)
=== RUN   TestC
[    2.0] reset
OTAGW-QEMU-INIT
=== RUN   TestC
--- SKIP: TestC (0.00s)
    c_test.go:3: not here
FAIL
OTAGW-QEMU-EXIT 1
`

func TestParseTestOutput(t *testing.T) {
	t.Parallel()
	got := ParseTestOutput(transcript)
	type row struct {
		name, status string
		boot         int
		out          string
	}
	var rows []row
	for _, r := range got {
		rows = append(rows, row{r.Name, r.Status, r.Boot, strings.Join(r.Output, "|")})
	}
	want := []row{
		{"TestA", "PASS", 1, "    a_test.go:1: hello"},
		{"TestB", "FAIL", 1, ""},
		{"TestB/one", "FAIL", 1, "    b_test.go:2: boom"},
		{"TestC", "", 1, "[    2.0] reset"},
		{"TestC", "SKIP", 2, "    c_test.go:3: not here"},
	}
	if !slices.Equal(rows, want) {
		t.Errorf("ParseTestOutput:\n got %v\nwant %v", rows, want)
	}
}

func FuzzParseTestOutput(f *testing.F) {
	f.Add(transcript)
	f.Add("--- PASS: \n=== RUN \nOTAGW-QEMU-INIT\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range ParseTestOutput(s) {
			if r.Name == "" || strings.ContainsAny(r.Name, " \t\n") {
				t.Fatalf("bad test name %q", r.Name)
			}
		}
	})
}
