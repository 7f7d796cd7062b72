package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests run the env verbs next to Debian's fw_printenv / fw_setenv
// (libubootenv-tool 0.3.2) on the same environment and compare.

func envFixture(t *testing.T, redundant bool) (cfg, lock string) {
	t.Helper()
	for _, tool := range []string{"mkenvimage", "fw_printenv", "fw_setenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (run scripts/test-deps.sh)", tool)
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	os.WriteFile(in, []byte("bootcmd=run distro_bootcmd\nBOOT_ORDER=A B\nBOOT_A_LEFT=3\nempty=\n"), 0o644)
	img := filepath.Join(dir, "env.img")
	args := []string{"-s", "0x4000", "-o", img, in}
	if redundant {
		args = append([]string{"-r"}, args...)
	}
	if out, err := exec.Command("mkenvimage", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkenvimage: %v %s", err, out)
	}
	if redundant {
		b, _ := os.ReadFile(img)
		os.WriteFile(img, append(b, b...), 0o644)
	}
	cfg = filepath.Join(dir, "fw_env.config")
	text := fmt.Sprintf("%s 0x0 0x4000\n", img)
	if redundant {
		text += fmt.Sprintf("%s 0x4000 0x4000\n", img)
	}
	os.WriteFile(cfg, []byte(text), 0o644)
	return cfg, filepath.Join(dir, "lock")
}

func otagwEnv(t *testing.T, verb string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	f := envPrint
	if verb == "set" {
		f = envSet
	}
	code := f(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func fw(t *testing.T, tool string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func TestEnvPrintMatchesFwPrintenv(t *testing.T) {
	for _, red := range []bool{false, true} {
		cfg, lock := envFixture(t, red)
		for _, args := range [][]string{
			{},
			{"BOOT_ORDER"},
			{"-n", "BOOT_ORDER"},
			{"BOOT_ORDER", "-n"}, // flags after operands, as getopt allows
			{"missing"},          // 0.3.2: "missing=" and exit 0
			{"-n", "missing", "BOOT_A_LEFT"},
			{"empty", "bootcmd"},
		} {
			want, wantCode := fw(t, "fw_printenv", append([]string{"-c", cfg}, args...)...)
			got, errs, code := otagwEnv(t, "print", append([]string{"-c", cfg, "--lock", lock}, args...)...)
			if got != want || code != wantCode {
				t.Errorf("redundant=%v args %q: otagw %q (exit %d, %s), fw_printenv %q (exit %d)", red, args, got, code, errs, want, wantCode)
			}
		}
	}
}

func TestEnvSetMatchesFwSetenv(t *testing.T) {
	for _, red := range []bool{false, true} {
		cfgA, lockA := envFixture(t, red) // written by otagw
		cfgB, _ := envFixture(t, red)     // written by fw_setenv
		script := filepath.Join(t.TempDir(), "script")
		os.WriteFile(script, []byte("# install\nBOOT_ORDER=B A\nBOOT_B_LEFT=3\nempty=\nignored line\nx=a=b c\n"), 0o644)
		for _, args := range [][]string{
			{"foo", "bar"},
			{"foo", "bar baz"},
			{"a", "1", "b", "2", "foo"}, // pairs; a trailing name deletes
			{"nothere"},                 // delete of a missing variable: no write
			{"-s", script},
		} {
			_, errs, code := otagwEnv(t, "set", append([]string{"-c", cfgA, "--lock", lockA}, args...)...)
			_, wantCode := fw(t, "fw_setenv", append([]string{"-c", cfgB}, args...)...)
			if code != wantCode {
				t.Fatalf("args %q: otagw exit %d (%s), fw_setenv exit %d", args, code, errs, wantCode)
			}
			if !red && !strings.Contains(errs, "not power-safe") {
				t.Errorf("single copy: no power-safety warning in %q", errs)
			}
			// fw_printenv sees the same environment in both.
			a, _ := fw(t, "fw_printenv", "-c", cfgA)
			b, _ := fw(t, "fw_printenv", "-c", cfgB)
			if a != b {
				t.Fatalf("redundant=%v after %q:\notagw-written:\n%s\nfw_setenv-written:\n%s", red, args, a, b)
			}
		}
		// stdin script
		r, w, _ := os.Pipe()
		w.WriteString("fromstdin=1\n")
		w.Close()
		old := os.Stdin
		os.Stdin = r
		_, errs, code := otagwEnv(t, "set", "-c", cfgA, "--lock", lockA, "-s", "-")
		os.Stdin = old
		if code != 0 {
			t.Fatalf("-s -: exit %d %s", code, errs)
		}
		if out, _ := fw(t, "fw_printenv", "-c", cfgA, "fromstdin"); out != "fromstdin=1\n" {
			t.Fatalf("fw_printenv after -s -: %q", out)
		}
	}
}

func TestEnvErrors(t *testing.T) {
	cfg, lock := envFixture(t, true)
	if _, errs, code := otagwEnv(t, "set", "-c", cfg, "--lock", lock, "bad=name", "1"); code != 1 || !strings.Contains(errs, `illegal character '=' in variable name "bad=name"`) {
		t.Errorf("bad name: exit %d %q", code, errs)
	}
	if _, _, code := otagwEnv(t, "print", "--bogus"); code != 2 {
		t.Errorf("usage error: exit %d", code)
	}
	if _, errs, code := otagwEnv(t, "print", "-c", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errs, "none") {
		t.Errorf("missing config: exit %d %q", code, errs)
	}
	// Corrupt both copies: print and set fail, nothing is written, until -f.
	img := strings.Fields(mustRead(t, cfg))[0]
	garbage := bytes.Repeat([]byte{0xA5}, 0x8000)
	os.WriteFile(img, garbage, 0o644)
	if _, errs, code := otagwEnv(t, "print", "-c", cfg, "--lock", lock); code != 1 || !strings.Contains(errs, "bad CRC") {
		t.Errorf("corrupt print: exit %d %q", code, errs)
	}
	if _, errs, code := otagwEnv(t, "set", "-c", cfg, "--lock", lock, "a", "1"); code != 1 || !strings.Contains(errs, "nothing written") {
		t.Errorf("corrupt set: exit %d %q", code, errs)
	}
	if b, _ := os.ReadFile(img); !bytes.Equal(b, garbage) {
		t.Fatal("corrupt environment was written without -f")
	}
	def := filepath.Join(t.TempDir(), "default.env")
	os.WriteFile(def, []byte("bootdelay=2\n"), 0o644)
	if _, errs, code := otagwEnv(t, "set", "-c", cfg, "--lock", lock, "-f", def, "a", "1"); code != 0 {
		t.Fatalf("set -f: exit %d %q", code, errs)
	}
	if out, _ := fw(t, "fw_printenv", "-c", cfg); out != "a=1\nbootdelay=2\n" {
		t.Fatalf("after -f: %q", out)
	}
	if out, _, code := otagwEnv(t, "print", "-c", cfg, "--lock", lock, "--json", "a", "zz"); code != 0 || !strings.Contains(out, `"a": "1"`) || !strings.Contains(out, `"zz": null`) {
		t.Fatalf("--json: %d %q", code, out)
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
