package qemutest

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelPackage is the Debian metapackage whose dependency is the kernel the
// guest boots.
const KernelPackage = "linux-image-amd64"

// Kernel is Debian's generic amd64 kernel, unpacked (not installed) in the
// cache directory.
type Kernel struct {
	Package string // the versioned package, e.g. linux-image-6.1.0-56-amd64
	Release string // the module directory name, e.g. 6.1.0-56-amd64
	Root    string // where the .deb was unpacked
	Vmlinuz string
}

// CacheDir is where kernels are fetched and unpacked: $OTAGW_QEMU_CACHE, or
// otagw/qemu under the user's cache directory ($XDG_CACHE_HOME or
// ~/.cache), or tests/qemu/cache in the checkout when neither exists.
func CacheDir() (string, error) {
	if d := os.Getenv("OTAGW_QEMU_CACHE"); d != "" {
		return d, nil
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "otagw", "qemu"), nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "tests", "qemu", "cache"), nil
}

// FetchKernel returns the kernel unpacked under cacheDir, fetching it with
// `apt-get download` and unpacking it with `dpkg-deb -x` the first time.
// It runs `apt-get update` only when fetching fails, then tries once more;
// offline, an already unpacked kernel is used. Concurrent callers (several
// test packages at once) serialise on a lock file.
func FetchKernel(cacheDir string, logf func(format string, args ...any)) (*Kernel, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu kernel cache %s: %w", cacheDir, err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("qemu kernel cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("qemu kernel cache lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)

	debs := filepath.Join(cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	k, err := fetchKernelLocked(cacheDir, debs, logf)
	if err != nil {
		// Stale package lists name a kernel the mirror no longer has (or
		// there are no lists yet): update them once and start over.
		logf("qemu: %v; running apt-get update", err)
		if out, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
			logf("qemu: apt-get update: %v: %s", uerr, lastLines(string(out), 5))
		} else {
			k, err = fetchKernelLocked(cacheDir, debs, logf)
		}
	}
	if err != nil {
		// Offline but already unpacked: use what the cache has.
		if ck, cerr := cachedKernel(cacheDir); cerr == nil {
			logf("qemu: %v; using the cached %s", err, ck.Package)
			return ck, nil
		}
		return nil, err
	}
	// Keep only the current kernel: each unpacked tree is about 400 MB.
	old, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*_*"))
	for _, o := range old {
		if o != k.Root {
			os.RemoveAll(o)
		}
	}
	return k, nil
}

func fetchKernelLocked(cacheDir, debs string, logf func(string, ...any)) (*Kernel, error) {
	// The metapackage names the current versioned kernel package.
	meta, err := download(debs, KernelPackage, logf)
	if err != nil {
		return nil, err
	}
	dep, err := exec.Command("dpkg-deb", "-f", meta, "Depends").Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb -f %s Depends: %w", meta, exitErr(err))
	}
	pkg, version, err := parseKernelDepends(string(dep))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", meta, err)
	}
	dest := filepath.Join(cacheDir, pkg+"_"+version)
	if k, err := kernelAt(dest, pkg); err == nil {
		return k, nil
	}
	spec := pkg
	if version != "" {
		spec = pkg + "=" + version
	}
	deb, err := download(debs, spec, logf)
	if err != nil {
		return nil, err
	}
	tmp := dest + ".partial"
	os.RemoveAll(tmp)
	logf("qemu: unpacking %s", filepath.Base(deb))
	if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, out)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return nil, err
	}
	// The unpacked tree is what the cache keeps; the .deb can go.
	os.Remove(deb)
	return kernelAt(dest, pkg)
}

var dependsRe = regexp.MustCompile(`^\s*(linux-image-[0-9][^\s,(|]*)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?`)

// parseKernelDepends takes the metapackage's Depends field, e.g.
// "linux-image-6.1.0-56-amd64 (= 6.1.192-2)", and returns the package and
// the exact version (may be empty).
func parseKernelDepends(dep string) (pkg, version string, err error) {
	for _, alt := range strings.FieldsFunc(dep, func(r rune) bool { return r == ',' || r == '|' }) {
		if m := dependsRe.FindStringSubmatch(alt); m != nil {
			return m[1], m[2], nil
		}
	}
	return "", "", fmt.Errorf("no linux-image-<version> package in Depends %q", strings.TrimSpace(dep))
}

// download runs `apt-get download spec` in dir and returns the .deb's path.
func download(dir, spec string, logf func(string, ...any)) (string, error) {
	name, _, _ := strings.Cut(spec, "=")
	old, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
	for _, o := range old {
		os.Remove(o)
	}
	logf("qemu: apt-get download %s", spec)
	cmd := exec.Command("apt-get", "download", "-q", spec)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", spec, err, bytes.TrimSpace(out))
	}
	got, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
	if len(got) != 1 {
		return "", fmt.Errorf("apt-get download %s: expected one %s_*.deb in %s, found %v", spec, name, dir, got)
	}
	return got[0], nil
}

func cachedKernel(cacheDir string) (*Kernel, error) {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*_*"))
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if strings.HasSuffix(d, ".partial") {
			continue
		}
		pkg, _, _ := strings.Cut(filepath.Base(d), "_")
		if k, err := kernelAt(d, pkg); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("no unpacked kernel in the cache")
}

func kernelAt(root, pkg string) (*Kernel, error) {
	vm, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vm) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", root, len(vm))
	}
	release := strings.TrimPrefix(filepath.Base(vm[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(root, "lib", "modules", release, "kernel")); err != nil {
		return nil, fmt.Errorf("%s: modules of %s: %w", root, release, err)
	}
	return &Kernel{Package: pkg, Release: release, Root: root, Vmlinuz: vm[0]}, nil
}

// Module is a kernel module file and the modules it needs first.
type Module struct {
	Name    string
	Path    string
	Depends []string
}

// Modules returns the named modules with everything they depend on, in an
// order that loads dependencies first. Names match with '-' and '_' alike.
// The dependencies come from each module's .modinfo section, so the
// unpacked (never depmod'ed) tree is enough.
func (k *Kernel) Modules(names ...string) ([]Module, error) {
	index := map[string]string{}
	base := filepath.Join(k.Root, "lib", "modules", k.Release, "kernel")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			index[normModule(n)] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules of %s: %w", k.Release, err)
	}
	var out []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = normModule(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		p, ok := index[name]
		if !ok {
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) not found in %s", name, from, k.Package)
			}
			return fmt.Errorf("module %s not found in %s", name, k.Package)
		}
		state[name] = 1
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: p, Depends: deps})
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func normModule(n string) string { return strings.ReplaceAll(n, "-", "_") }

// moduleDepends reads "depends=a,b" from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: .modinfo: %w", path, err)
	}
	return parseModinfoDepends(data), nil
}

func parseModinfoDepends(modinfo []byte) []string {
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, d)
				}
			}
			return deps
		}
	}
	return nil
}

func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
