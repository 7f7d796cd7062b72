// Package qemutest runs a Go package's tests inside a QEMU guest that boots
// Debian's generic kernel (linux-image-amd64, fetched with apt-get download
// and unpacked with dpkg-deb -x, never installed) in software emulation, so
// that tests reach real kernel drivers this machine lacks: the i6300esb and
// softdog watchdogs, vcan, and so on.
//
//	res := qemutest.Run(t, qemutest.Config{
//		TestPkg: "./watchdog",            // built with go test -c, CGO_ENABLED=0
//		TestRun: "^TestReal",
//		Modules: []string{"i6300esb"},     // loaded with their dependencies by the guest's init
//		QEMUArgs: []string{"-device", "i6300esb"},
//	})
//	// every guest test shows up as a subtest of t; res.ExitCode, res.Output
//
// The guest's /init (tests/qemu/guestinit) mounts /dev, /proc, /sys, /tmp,
// loads the modules with finit_module, runs the test binary with -test.v and
// OTAGW_QEMU_GUEST=1 in its environment, prints "OTAGW-QEMU-EXIT <code>"
// and powers off. The kernel is cached (see CacheDir); a run costs a few
// seconds of boot plus the tests.
package qemutest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// GuestEnv is set to "1" in the guest test binary's environment.
const GuestEnv = "OTAGW_QEMU_GUEST"

// Config says what to run in the guest.
type Config struct {
	// TestPkg is the package whose tests run in the guest, as `go test`
	// takes it, relative to the module root ("./watchdog").
	TestPkg string
	// TestRun is the -test.run pattern.
	TestRun string
	// TestArgs are more test binary flags ("-test.count=2").
	TestArgs []string
	// Modules are kernel modules to load, dependencies are added.
	Modules []string
	// ModuleParams are module parameters by module name ("soft_noboot=1").
	ModuleParams map[string]string
	// QEMUArgs are extra qemu-system-x86_64 arguments ("-device", "i6300esb").
	QEMUArgs []string
	// Machine is the QEMU machine type; default "pc".
	Machine string
	// Memory is the guest RAM; default "512M".
	Memory string
	// Env is added to the guest test binary's environment.
	Env []string
	// MaxBoots is how many times the guest may boot; more than 1 lets a
	// test reset the machine (a watchdog firing) and check the next boot.
	// Default 1, which also runs QEMU with -no-reboot.
	MaxBoots int
	// Boots, when set, is exactly how many times the guest must boot (a
	// reset test that never reset fails); it also sets MaxBoots. A guest
	// test that resets the machine should check t.Failed() first: go test
	// prints subtest results only when the top-level test ends, so the
	// FAIL of a subtest before a reset never reaches the console.
	Boots int
	// ExpectSkips names the guest tests (full names, "TestX/sub") that are
	// expected to skip, each with the reason. Any other SKIP inside the
	// guest fails the host test, and so does a listed test that did not
	// skip: a guest test must not quietly pass by skipping.
	ExpectSkips map[string]string
	// Binaries are more Go programs for the initramfs: guest path (absolute,
	// "/bin/otagw") to the package to build ("./cmd/otagw"), static.
	Binaries map[string]string
	// Timeout bounds the whole guest run; default 3 minutes.
	Timeout time.Duration
	// Files are host files copied into the initramfs (see Binaries).
	Files []File
}

// Result is what came back from the guest.
type Result struct {
	ExitCode int
	Boots    int
	Output   string // the whole serial console
	Tests    []*TestResult
}

// TestResult is one guest test (or subtest) as `go test -v` reported it.
type TestResult struct {
	Name   string // full name, "TestReal/i6300esb"
	Status string // "PASS", "FAIL", "SKIP", or "" when it never finished
	Output []string
	Boot   int // 1 for the first boot
}

// Run builds the test binary and the initramfs, boots the guest and reports
// every guest test as a subtest of t. It fails t when the guest run fails;
// it skips only with -short outside CI (CI set), naming why.
func Run(t *testing.T, cfg Config) *Result {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("qemu guest tests need a few seconds of TCG emulation; skipped with -short outside CI")
	}
	if cfg.Boots > 0 {
		cfg.MaxBoots = cfg.Boots
	}
	if cfg.MaxBoots <= 0 {
		cfg.MaxBoots = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	for _, tool := range []string{"qemu-system-x86_64", "apt-get", "dpkg-deb", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("qemu harness needs %s (scripts/test-deps.sh installs qemu-system-x86): %v", tool, err)
		}
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	k, err := FetchKernel(cache, t.Logf)
	if err != nil {
		t.Fatalf("fetch Debian's kernel: %v", err)
	}
	fetched := time.Now()
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := BuildInitramfs(initrd, k, cfg, dir); err != nil {
		t.Fatal(err)
	}
	built := time.Now()
	res, err := Boot(k, initrd, cfg)
	boots := 0
	if res != nil {
		boots = res.Boots
	}
	t.Logf("qemu: kernel %s (%v), initramfs built in %v, guest ran %v (%d boots)",
		k.Package, fetched.Sub(start).Round(time.Millisecond), built.Sub(fetched).Round(time.Millisecond),
		time.Since(built).Round(time.Millisecond), boots)
	if res != nil {
		report(t, cfg, res)
	}
	if err != nil {
		if res != nil {
			t.Logf("guest console (last lines):\n%s", lastLines(res.Output, 60))
		}
		t.Fatalf("qemu guest: %v", err)
	}
	if err := checkBoots(cfg, res); err != nil {
		t.Fatal(err)
	}
	return res
}

// checkBoots holds a run to Config.Boots, when set.
func checkBoots(cfg Config, res *Result) error {
	if cfg.Boots > 0 && res.Boots != cfg.Boots {
		return fmt.Errorf("the guest booted %d times; the test expects exactly %d (a reset that did not happen, or one too many)", res.Boots, cfg.Boots)
	}
	return nil
}

// ModuleRoot is the directory of go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// plan is /otagw-qemu.json, read by guestinit.
type plan struct {
	Modules []planModule `json:"modules"`
	Args    []string     `json:"args"`
	Env     []string     `json:"env"`
}

type planModule struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Params string `json:"params"`
}

func goBuild(root string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// BuildInitramfs writes a newc cpio with /init, /test.bin, the modules and
// the plan; work is a scratch directory.
func BuildInitramfs(path string, k *Kernel, cfg Config, work string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	initBin := filepath.Join(work, "init")
	testBin := filepath.Join(work, "test.bin")
	if err := goBuild(root, "build", "-o", initBin, "./tests/qemu/guestinit"); err != nil {
		return err
	}
	if err := goBuild(root, "test", "-c", "-o", testBin, cfg.TestPkg); err != nil {
		return err
	}
	if _, err := os.Stat(testBin); err != nil {
		return fmt.Errorf("go test -c %s wrote no binary (no test files?): %w", cfg.TestPkg, err)
	}
	mods, err := k.Modules(cfg.Modules...)
	if err != nil {
		return err
	}
	p := plan{
		Args: append([]string{"/test.bin", "-test.v", "-test.timeout", cfg.Timeout.String()}, cfg.TestArgs...),
		Env:  append([]string{GuestEnv + "=1"}, cfg.Env...),
	}
	if cfg.TestRun != "" {
		p.Args = append(p.Args, "-test.run", cfg.TestRun)
	}
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("modules", 0o755),
	}
	for i, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("modules/%02d-%s.ko", i, m.Name)
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
		p.Modules = append(p.Modules, planModule{Name: m.Name, Path: "/" + name, Params: cfg.ModuleParams[m.Name]})
	}
	files := []struct{ src, name string }{{initBin, "init"}, {testBin, "test.bin"}}
	for i, guest := range slices.Sorted(maps.Keys(cfg.Binaries)) {
		name := strings.TrimPrefix(filepath.Clean(guest), "/")
		if !filepath.IsAbs(guest) || filepath.Dir(name) != "bin" {
			return fmt.Errorf("qemutest.Config.Binaries: guest path %q: want /bin/NAME", guest)
		}
		bin := filepath.Join(work, fmt.Sprintf("extra-%d", i))
		if err := goBuild(root, "build", "-o", bin, cfg.Binaries[guest]); err != nil {
			return err
		}
		files = append(files, struct{ src, name string }{bin, name})
	}
	for _, f := range files {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: f.name, Mode: cpio.S_IFREG | 0o755}))
	}
	fileRecs, err := fileRecords(cfg.Files)
	if err != nil {
		return err
	}
	recs = append(recs, fileRecs...)
	pj, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	recs = append(recs, cpio.StaticRecord(pj, cpio.Info{Name: "otagw-qemu.json", Mode: cpio.S_IFREG | 0o644}))

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(f)
	if err := cpio.WriteRecords(w, recs); err != nil {
		f.Close()
		return fmt.Errorf("initramfs %s: %w", path, err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		f.Close()
		return fmt.Errorf("initramfs %s: %w", path, err)
	}
	return f.Close()
}

var exitRe = regexp.MustCompile(`OTAGW-QEMU-EXIT (-?\d+)`)

// Boot runs QEMU until the guest powers off (or resets more than MaxBoots
// times, or the timeout passes) and parses its console.
func Boot(k *Kernel, initrd string, cfg Config) (*Result, error) {
	if cfg.MaxBoots <= 0 {
		cfg.MaxBoots = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	machine, mem := cfg.Machine, cfg.Memory
	if machine == "" {
		machine = "pc"
	}
	if mem == "" {
		mem = "512M"
	}
	args := []string{
		"-accel", "tcg", "-machine", machine, "-m", mem, "-smp", "1",
		"-nographic", "-no-user-config",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1",
	}
	if cfg.MaxBoots == 1 {
		args = append(args, "-no-reboot")
	}
	args = append(args, cfg.QEMUArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu-system-x86_64: %w", err)
	}

	res := &Result{ExitCode: -1}
	var buf strings.Builder
	var mu sync.Mutex
	var tooMany bool
	exited := make(chan struct{})
	var once sync.Once
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		mu.Lock()
		buf.WriteString(line)
		buf.WriteByte('\n')
		mu.Unlock()
		if strings.Contains(line, "OTAGW-QEMU-INIT") {
			res.Boots++
			if res.Boots > cfg.MaxBoots {
				tooMany = true
				cancel()
			}
		}
		if m := exitRe.FindStringSubmatch(line); m != nil {
			res.ExitCode, _ = strconv.Atoi(m[1])
			once.Do(func() {
				close(exited)
				// The guest powers off right away; do not wait forever.
				time.AfterFunc(15*time.Second, cancel)
			})
		}
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	res.Output = buf.String()
	res.Tests = ParseTestOutput(res.Output)

	select {
	case <-exited:
	default:
		switch {
		case tooMany:
			return res, fmt.Errorf("guest booted %d times, more than the %d allowed (a panic or an unexpected reset)", res.Boots, cfg.MaxBoots)
		case ctx.Err() != nil:
			return res, fmt.Errorf("guest did not finish within %v", cfg.Timeout)
		case res.Boots == 0:
			return res, fmt.Errorf("qemu-system-x86_64 %v before the guest's init ran: %s", werr, bytes.TrimSpace(stderr.Bytes()))
		default:
			return res, fmt.Errorf("guest stopped without an exit marker (qemu: %v %s)", werr, bytes.TrimSpace(stderr.Bytes()))
		}
	}
	return res, nil
}

var (
	runRe    = regexp.MustCompile(`^=== (?:RUN|CONT|NAME)\s+(\S+)`)
	resultRe = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
)

// ParseTestOutput reads `go test -v` lines out of a console transcript. A
// test that runs again after a reset gets a new entry with Boot+1.
func ParseTestOutput(console string) []*TestResult {
	var all []*TestResult
	byName := map[string]*TestResult{}
	boot := 0
	var cur *TestResult
	for _, line := range strings.Split(console, "\n") {
		if strings.Contains(line, "OTAGW-QEMU-INIT") {
			boot++
			byName = map[string]*TestResult{}
			cur = nil
			continue
		}
		if m := runRe.FindStringSubmatch(line); m != nil {
			r := byName[m[1]]
			if r == nil {
				r = &TestResult{Name: m[1], Boot: boot}
				byName[m[1]] = r
				all = append(all, r)
			}
			cur = r
			continue
		}
		if m := resultRe.FindStringSubmatch(line); m != nil {
			r := byName[m[2]]
			if r == nil {
				r = &TestResult{Name: m[2], Boot: boot}
				byName[m[2]] = r
				all = append(all, r)
			}
			r.Status = m[1]
			cur = r
			continue
		}
		if cur != nil && line != "" && !strings.HasPrefix(line, "OTAGW-QEMU-") &&
			line != "PASS" && line != "FAIL" {
			cur.Output = append(cur.Output, line)
		}
	}
	return all
}

// report mirrors the guest's tests as subtests of t. A SKIP inside the
// guest, on any boot, fails t unless cfg.ExpectSkips names that test; a
// FAIL on an earlier boot (before a reset) fails t too.
func report(t *testing.T, cfg Config, res *Result) {
	t.Helper()
	last := 0
	for _, r := range res.Tests {
		last = max(last, r.Boot)
	}
	skipped := map[string]bool{}
	// skip judges one guest SKIP: expected (with its reason) or an error.
	skip := func(t *testing.T, r *TestResult) (expected bool) {
		t.Helper()
		skipped[r.Name] = true
		why := skipReason(r)
		if reason, ok := cfg.ExpectSkips[r.Name]; ok {
			t.Logf("guest test %s skipped as expected (%s): %s", r.Name, reason, why)
			return true
		}
		t.Errorf("guest test %s (boot %d) skipped inside the guest: %s; a guest skip fails the host test unless qemutest.Config.ExpectSkips names it with the reason", r.Name, r.Boot, why)
		return false
	}
	children := map[string][]*TestResult{}
	var tops []*TestResult
	for _, r := range res.Tests {
		if r.Boot != last {
			// Earlier boots ended in a reset: an unfinished test is what a
			// reset looks like, but a finished one still counts.
			t.Logf("boot %d: %s %s", r.Boot, r.Name, orUnfinished(r.Status))
			switch r.Status {
			case "FAIL":
				t.Errorf("guest test %s failed on boot %d (before a reset):\n%s", r.Name, r.Boot, strings.Join(r.Output, "\n"))
			case "SKIP":
				skip(t, r)
			}
			continue
		}
		if i := strings.LastIndexByte(r.Name, '/'); i >= 0 {
			children[r.Name[:i]] = append(children[r.Name[:i]], r)
		} else {
			tops = append(tops, r)
		}
	}
	var mirror func(t *testing.T, r *TestResult)
	mirror = func(t *testing.T, r *TestResult) {
		for _, l := range r.Output {
			t.Log(l)
		}
		for _, c := range children[r.Name] {
			t.Run(c.Name[strings.LastIndexByte(c.Name, '/')+1:], func(t *testing.T) { mirror(t, c) })
		}
		switch r.Status {
		case "FAIL":
			t.Errorf("guest test %s failed", r.Name)
		case "SKIP":
			if skip(t, r) {
				t.SkipNow()
			}
		case "":
			t.Errorf("guest test %s never finished", r.Name)
		}
	}
	for _, r := range tops {
		t.Run(r.Name, func(t *testing.T) { mirror(t, r) })
	}
	if len(tops) == 0 {
		t.Errorf("the guest ran no test of %s matching %q", cfg.TestPkg, cfg.TestRun)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.ExpectSkips)) {
		if !skipped[name] {
			t.Errorf("guest test %s is listed in ExpectSkips (%s) but did not skip; remove it from the list", name, cfg.ExpectSkips[name])
		}
	}
	if res.ExitCode != 0 {
		t.Errorf("guest test binary exited with %d", res.ExitCode)
	}
}

// skipReason is the last line a skipped test logged (its t.Skip message),
// not a kernel message that reached the console after it.
func skipReason(r *TestResult) string {
	for i := len(r.Output) - 1; i >= 0; i-- {
		if logLineRe.MatchString(r.Output[i]) {
			return strings.TrimSpace(r.Output[i])
		}
	}
	for i := len(r.Output) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(r.Output[i]); l != "" {
			return l
		}
	}
	return "(no reason given)"
}

// logLineRe is a t.Log line of go test -v: "    file_test.go:12: ...".
var logLineRe = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

func orUnfinished(s string) string {
	if s == "" {
		return "(unfinished: the machine reset)"
	}
	return s
}
