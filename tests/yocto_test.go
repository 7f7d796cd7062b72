package tests

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/gomods"
	"gopkg.in/yaml.v3"
)

// The layer, and where its recipes live, relative to the repository root.
const (
	layerDir    = "yocto/meta-otagw"
	recipeFile  = layerDir + "/recipes-otagw/otagw/otagw_git.bb"
	goModsInc   = layerDir + "/recipes-otagw/otagw/otagw-go-mods.inc"
	licensesInc = layerDir + "/recipes-otagw/otagw/otagw-licenses.inc"
	bspDir      = layerDir + "/recipes-bsp/u-boot"
	// bitbake refuses to run as root; as root the tests run it as this user.
	yoctoUser = "otagw-yocto"
)

// repoRoot is the top of the otagw tree (tests/ is one level down).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readRepo(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recipeVar returns the value a recipe file assigns NAME with "=" (the
// file's own text, before bitbake: for the checks that need no parse).
func recipeVar(t *testing.T, text []byte, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*\??=\s*"([^"]*)"`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("%s: no %s = \"...\"", recipeFile, name)
	}
	return string(m[1])
}

// TestYoctoGoModsUpToDate fails when go.sum changed and otagw-go-mods.inc
// was not regenerated (go run ./scripts/yocto-gomods).
func TestYoctoGoModsUpToDate(t *testing.T) {
	want, err := gomods.Inc(repoRoot(t))
	if err != nil {
		t.Fatalf("generating %s: %v", goModsInc, err)
	}
	if have := readRepo(t, goModsInc); !bytes.Equal(have, want) {
		t.Errorf("%s is out of date with go.mod/go.sum: run `go run ./scripts/yocto-gomods` and commit it", goModsInc)
	}
	lic, err := gomods.LicenseInc(repoRoot(t))
	if err != nil {
		t.Fatalf("generating %s: %v", licensesInc, err)
	}
	if have := readRepo(t, licensesInc); !bytes.Equal(have, lic) {
		t.Errorf("%s is out of date with the modules linked into otagw: run `go run ./scripts/yocto-gomods` and commit it", licensesInc)
	}
}

// TestYoctoVersion: the recipe's PV is the project's version (the VERSION
// file), which scripts/deb.sh also falls back to between tags.
func TestYoctoVersion(t *testing.T) {
	version := strings.TrimSpace(string(readRepo(t, "VERSION")))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(version) {
		t.Fatalf("VERSION = %q, want MAJOR.MINOR.PATCH", version)
	}
	pv := recipeVar(t, readRepo(t, recipeFile), "PV")
	if want := version + "+git"; pv != want {
		t.Errorf("%s: PV = %q, want %q (VERSION says %s)", recipeFile, pv, want, version)
	}
	if deb := readRepo(t, "scripts/deb.sh"); !bytes.Contains(deb, []byte("cat VERSION")) {
		t.Errorf("scripts/deb.sh does not take its untagged version from the VERSION file")
	}
}

// TestYoctoLicense: one license, Apache-2.0, named the same in the LICENSE
// file, the Debian copyright, the recipe (with the LICENSE file's md5) and
// the README.
func TestYoctoLicense(t *testing.T) {
	lic := readRepo(t, "LICENSE")
	if !bytes.Contains(lic, []byte("Apache License")) || !bytes.Contains(lic, []byte("Version 2.0, January 2004")) {
		t.Fatal("LICENSE is not the Apache License 2.0")
	}
	if !regexp.MustCompile(`(?m)^License: Apache-2.0$`).Match(readRepo(t, "packaging/debian/copyright")) {
		t.Error("packaging/debian/copyright: no License: Apache-2.0")
	}
	recipe := readRepo(t, recipeFile)
	if got := recipeVar(t, recipe, "LICENSE"); got != "Apache-2.0 & ${GO_MOD_LICENSES}" {
		t.Errorf("%s: LICENSE = %q, want otagw's Apache-2.0 & ${GO_MOD_LICENSES} (the linked modules')", recipeFile, got)
	}
	sum := md5.Sum(lic)
	want := "file://src/${GO_IMPORT}/LICENSE;md5=" + hex.EncodeToString(sum[:])
	if got := recipeVar(t, recipe, "LIC_FILES_CHKSUM"); got != want {
		t.Errorf("%s: LIC_FILES_CHKSUM = %q, want %q", recipeFile, got, want)
	}
	if !bytes.Contains(readRepo(t, "README.md"), []byte("Apache-2.0")) {
		t.Error("README.md does not name the license (Apache-2.0)")
	}
}

// TestYoctoSRCREV: the pinned commit is in this repository and builds what
// the recipe says: its LICENSE has the recipe's md5, it has every file
// do_install takes, and its go.sum is the one otagw-go-mods.inc was made
// from.
func TestYoctoSRCREV(t *testing.T) {
	repo := repoRoot(t)
	rev := recipeVar(t, readRepo(t, recipeFile), "SRCREV")
	show := func(path string) []byte {
		t.Helper()
		out, err := exec.Command("git", "-C", repo, "show", rev+":"+path).Output()
		if err != nil {
			t.Fatalf("git show %s:%s (SRCREV of %s): %v; a shallow clone may lack the commit: git fetch --unshallow", rev, path, recipeFile, err)
		}
		return out
	}
	if !bytes.Equal(show("LICENSE"), readRepo(t, "LICENSE")) {
		t.Errorf("LICENSE at SRCREV %s differs from the tree's (LIC_FILES_CHKSUM is the tree's)", rev)
	}
	if !bytes.Equal(show("go.sum"), readRepo(t, "go.sum")) {
		t.Errorf("go.sum changed since SRCREV %s: commit, regenerate %s, and point SRCREV at a commit with this go.sum", rev, goModsInc)
	}
	for _, f := range []string{"configs/otagw.yaml", "packaging/systemd/otagw.service", "packaging/systemd/otagw-committed.target", "cmd/otagw/main.go"} {
		show(f)
	}
}

// TestYoctoBSPFiles: the BSP recipes' files are the copies of the sources
// the Debian package and the tests use.
func TestYoctoBSPFiles(t *testing.T) {
	pairs := map[string]string{bspDir + "/files/boot.cmd": "abboot/bootscript/boot.cmd"}
	matches, _ := filepath.Glob(filepath.Join(repoRoot(t), "packaging/uboot/fw_env.config.*"))
	if len(matches) == 0 {
		t.Fatal("no packaging/uboot/fw_env.config.*")
	}
	for _, m := range matches {
		pairs[bspDir+"/files/"+filepath.Base(m)] = "packaging/uboot/" + filepath.Base(m)
	}
	for copy, src := range pairs {
		if !bytes.Equal(readRepo(t, copy), readRepo(t, src)) {
			t.Errorf("%s differs from %s: cp %s %s", copy, src, src, copy)
		}
	}
}

// poky finds the poky tree to parse with: OTAGW_POKY (a checkout of your
// own), else the walnascar snapshot in ../shared/yocto/ beside the
// repository, unpacked once into a cache outside the repository
// ($OTAGW_YOCTO_CACHE, else $TMPDIR/otagw-yocto) and kept between runs.
func poky(t *testing.T) (pokyDir, cache string) {
	t.Helper()
	cache = os.Getenv("OTAGW_YOCTO_CACHE")
	if cache == "" {
		cache = filepath.Join(os.TempDir(), "otagw-yocto")
	}
	if dir := os.Getenv("OTAGW_POKY"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "oe-init-build-env")); err != nil {
			t.Fatalf("OTAGW_POKY=%s: not a poky tree: %v", dir, err)
		}
		return dir, cache
	}
	shared := filepath.Join(repoRoot(t), "..", "shared", "yocto")
	tarballs, _ := filepath.Glob(filepath.Join(shared, "poky-walnascar-*.tar.xz"))
	if len(tarballs) == 0 {
		if os.Getenv("OTAGW_YOCTO") == "skip" {
			t.Skipf("OTAGW_YOCTO=skip: no %s/poky-walnascar-*.tar.xz and no OTAGW_POKY", shared)
		}
		t.Fatalf("no poky to parse the layer with: neither %s/poky-walnascar-*.tar.xz (the snapshot beside the repository) nor OTAGW_POKY=DIR (a poky walnascar checkout); OTAGW_YOCTO=skip skips these tests where neither can exist", shared)
	}
	name := strings.TrimSuffix(filepath.Base(tarballs[0]), ".tar.xz")
	dir := filepath.Join(cache, name)
	mkdirUser(t, cache)
	unlock := lockFile(t, filepath.Join(cache, name+".lock"))
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return filepath.Join(dir, "poky"), cache
	}
	t0 := time.Now()
	os.RemoveAll(dir)
	mkdirUser(t, dir)
	f, err := os.Open(tarballs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Unpacked as the user bitbake runs as, from a tarball root reads.
	cmd := asYoctoUser(t, "tar -xJf - -C "+shellQuote(dir)+" && touch "+shellQuote(filepath.Join(dir, ".complete")))
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarballs[0], err, out)
	}
	t.Logf("unpacked %s into %s in %v", filepath.Base(tarballs[0]), dir, time.Since(t0).Round(time.Millisecond))
	return filepath.Join(dir, "poky"), cache
}

// asYoctoUser runs a bash script as the user bitbake runs as: the user
// otagw-yocto (created when missing) for root, else the caller.
func asYoctoUser(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	if os.Getuid() != 0 {
		return exec.Command("bash", "-c", script)
	}
	if err := exec.Command("id", yoctoUser).Run(); err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/bash", yoctoUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", yoctoUser, err, out)
		}
	}
	return exec.Command("su", yoctoUser, "-s", "/bin/bash", "-c", script)
}

func mkdirUser(t *testing.T, dir string) {
	t.Helper()
	if out, err := asYoctoUser(t, "mkdir -p "+shellQuote(dir)).CombinedOutput(); err != nil {
		t.Fatalf("mkdir %s: %v %s", dir, err, out)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// lockFile serializes the test runs that share one cache directory.
func lockFile(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}

// syncLayer copies the layer where the bitbake user can read it, writing
// only files whose content changed, so bitbake's parse cache (keyed by
// mtimes) stays valid between runs.
func syncLayer(t *testing.T, dst string) {
	t.Helper()
	src := filepath.Join(repoRoot(t), layerDir)
	want := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want[rel] = true
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(out); err == nil && bytes.Equal(old, b) {
			return nil
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying the layer: %v", err)
	}
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(dst, p); err == nil && !want[rel] {
			os.RemoveAll(p)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if os.Getuid() == 0 {
		exec.Command("chown", "-R", yoctoUser, dst).Run()
	}
}

// bitbakeEnv parses the layer offline and returns `bitbake -e RECIPE`'s
// variables for each recipe.
func bitbakeEnv(t *testing.T, recipes ...string) map[string]map[string]string {
	t.Helper()
	pokyDir, cache := poky(t)
	// One build directory per checkout (its parse cache stays warm).
	sum := md5.Sum([]byte(repoRoot(t) + "\x00" + pokyDir))
	top := filepath.Join(cache, "build-"+hex.EncodeToString(sum[:6]))
	mkdirUser(t, top)
	unlock := lockFile(t, filepath.Join(cache, "build-"+hex.EncodeToString(sum[:6])+".lock"))
	defer unlock()
	syncLayer(t, filepath.Join(top, "meta-otagw"))
	layers := []string{filepath.Join(pokyDir, "meta"), filepath.Join(pokyDir, "meta-poky"), filepath.Join(top, "meta-otagw")}
	conf := fmt.Sprintf(`# written by tests/yocto_test.go
POKY_BBLAYERS_CONF_VERSION = "2"
BBPATH = "${TOPDIR}"
BBFILES ?= ""
BBLAYERS = "%s"
`, strings.Join(layers, " "))
	script := fmt.Sprintf(`set -e
export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8
cd %s
. ./oe-init-build-env %s >/dev/null
printf '%%s' %s >conf/bblayers.conf
grep -q '^BB_NO_NETWORK' conf/local.conf || echo 'BB_NO_NETWORK = "1"' >>conf/local.conf
# One bitbake server for the three commands (it reads the parse cache once).
grep -q '^BB_SERVER_TIMEOUT' conf/local.conf || echo 'BB_SERVER_TIMEOUT = "15"' >>conf/local.conf
`, shellQuote(pokyDir), shellQuote(filepath.Join(top, "build")), shellQuote(conf))
	for _, r := range recipes {
		script += fmt.Sprintf("echo '### %s'; bitbake -e %s || { echo '### failed: bitbake -e %s'; exit 1; }\n", r, r, r)
	}
	t0 := time.Now()
	out, err := asYoctoUser(t, script).CombinedOutput()
	if err != nil {
		t.Fatalf("bitbake as %s: %v\n%s", yoctoUser, err, lastLines(out, 60))
	}
	t.Logf("bitbake -e %s: %v", strings.Join(recipes, ", "), time.Since(t0).Round(100*time.Millisecond))
	envs := map[string]map[string]string{}
	var cur map[string]string
	line := regexp.MustCompile(`^(?:export )?([A-Za-z0-9_:${}./+-]+)="(.*)"$`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "### "); ok {
			cur = map[string]string{}
			envs[name] = cur
			continue
		}
		if m := line.FindStringSubmatch(sc.Text()); m != nil && cur != nil {
			cur[m[1]] = m[2]
		}
	}
	for _, r := range recipes {
		if len(envs[r]) < 100 {
			t.Fatalf("bitbake -e %s printed %d variables:\n%s", r, len(envs[r]), lastLines(out, 40))
		}
	}
	return envs
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestYoctoLayerParse parses the layer with real bitbake, offline
// (BB_NO_NETWORK), and checks the variables that decide what a build
// fetches and ships.
func TestYoctoLayerParse(t *testing.T) {
	envs := bitbakeEnv(t, "otagw", "otagw-boot-script", "otagw-fw-env")
	repo := repoRoot(t)
	get := func(recipe, name string) string {
		v, ok := envs[recipe][name]
		if !ok {
			t.Errorf("bitbake -e %s: %s is not set", recipe, name)
		}
		return v
	}
	words := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, w := range strings.Fields(s) {
			m[w] = true
		}
		return m
	}

	// otagw: the source, every Go module, nothing else.
	srcURI := strings.Fields(get("otagw", "SRC_URI"))
	if len(srcURI) == 0 || !strings.HasPrefix(srcURI[0], "git://github.com/otagw/otagw.git;protocol=https;branch=main;destsuffix=git/src/github.com/otagw/otagw/") {
		t.Errorf("otagw SRC_URI starts %q, want the otagw git repository", srcURI)
	}
	mods, err := gomods.Parse(readRepo(t, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := map[string]bool{}
	for _, u := range srcURI[1:] {
		if !strings.HasPrefix(u, "gomod://") || !strings.Contains(u, ";sha256sum=") {
			t.Errorf("otagw SRC_URI: %q is neither the source nor a checksummed gomod:// module", u)
			continue
		}
		path, rest, _ := strings.Cut(strings.TrimPrefix(u, "gomod://"), ";version=")
		ver, _, _ := strings.Cut(rest, ";")
		gomod[path+"@"+ver] = true
	}
	for _, m := range mods {
		if !gomod[m.Path+"@"+m.Version] {
			t.Errorf("otagw SRC_URI has no gomod:// entry for %s@%s (go.sum lists it)", m.Path, m.Version)
		}
	}
	if len(gomod) != len(mods) {
		t.Errorf("otagw SRC_URI: %d gomod:// modules, go.sum lists %d", len(gomod), len(mods))
	}
	if got := get("otagw", "GOPROXY"); got != "off" {
		t.Errorf("otagw GOPROXY = %q, want off (the Go command must not reach the network in do_compile)", got)
	}
	if get("otagw", "BB_NO_NETWORK") != "1" {
		t.Error("the parse did not run with BB_NO_NETWORK = 1")
	}
	for _, f := range []string{"conf/layer.conf", "recipes-otagw/otagw/otagw_git.bb", "recipes-otagw/otagw/otagw-go-mods.inc"} {
		if b := readRepo(t, layerDir+"/"+f); bytes.Contains(b, []byte("[network]")) {
			t.Errorf("%s/%s gives a task network access", layerDir, f)
		}
	}
	if got, want := get("otagw", "LICENSE"), "Apache-2.0 & "+get("otagw", "GO_MOD_LICENSES"); got != want || !strings.Contains(got, "MIT") {
		t.Errorf("otagw LICENSE = %q, want %q (otagw's own, then the linked modules')", got, want)
	}
	chk := strings.Fields(get("otagw", "LIC_FILES_CHKSUM"))
	if len(chk) < 2 || !strings.HasPrefix(chk[0], "file://src/github.com/otagw/otagw/LICENSE;md5=") {
		t.Errorf("otagw LIC_FILES_CHKSUM = %q, want otagw's LICENSE first", chk)
	}
	for _, c := range chk[1:] {
		if !strings.HasPrefix(c, "file://pkg/mod/") || !strings.Contains(c, ";md5=") {
			t.Errorf("otagw LIC_FILES_CHKSUM: %q is not a module license file in the module cache", c)
		}
	}
	version := strings.TrimSpace(string(readRepo(t, "VERSION")))
	if pv := get("otagw", "PV"); strings.TrimSuffix(pv, "+git") != version {
		t.Errorf("otagw PV = %q, the project's VERSION is %s", pv, version)
	}
	inherits := get("otagw", "BBINCLUDED")
	for _, c := range []string{"go-mod.bbclass", "systemd.bbclass", "useradd.bbclass"} {
		if !strings.Contains(inherits, "/"+c) {
			t.Errorf("otagw does not inherit %s", c)
		}
	}

	// Every unit otagw ships is installed and packaged; the service is enabled.
	if got := get("otagw", "SYSTEMD_SERVICE:otagw"); got != "otagw.service" {
		t.Errorf("SYSTEMD_SERVICE:otagw = %q, want otagw.service", got)
	}
	unitdir := get("otagw", "systemd_system_unitdir")
	files := words(get("otagw", "FILES:otagw"))
	units, _ := filepath.Glob(filepath.Join(repo, "packaging/systemd/*"))
	if len(units) < 2 {
		t.Fatalf("packaging/systemd has %d units", len(units))
	}
	install := readRepo(t, recipeFile)
	for _, u := range units {
		name := filepath.Base(u)
		if !files[unitdir+"/"+name] {
			t.Errorf("FILES:otagw lacks %s/%s", unitdir, name)
		}
		if !bytes.Contains(install, []byte("packaging/systemd/"+name)) {
			t.Errorf("%s does not install packaging/systemd/%s", recipeFile, name)
		}
	}
	if !files[get("otagw", "sysconfdir")] && !files["/etc"] {
		t.Errorf("FILES:otagw does not ship /etc")
	}
	if got := get("otagw", "CONFFILES:otagw"); !words(got)["/etc/otagw/otagw.yaml"] {
		t.Errorf("CONFFILES:otagw = %q, want /etc/otagw/otagw.yaml", got)
	}
	if got := get("otagw", "GROUPADD_PARAM:otagw"); got != "--system otagw; --system otagw-admin" {
		t.Errorf("GROUPADD_PARAM:otagw = %q, want the groups otagw and otagw-admin", got)
	}
	if !words(get("otagw", "USERADD_PACKAGES"))["otagw"] {
		t.Error("USERADD_PACKAGES lacks otagw")
	}
	for _, v := range []string{"RDEPENDS:otagw", "RRECOMMENDS:otagw"} {
		for _, bad := range []string{"libubootenv", "u-boot-fw-utils"} {
			if strings.Contains(envs["otagw"][v], bad) {
				t.Errorf("%s = %q: otagw has its own U-Boot env codec, it needs no %s", v, envs["otagw"][v], bad)
			}
		}
	}

	// The BSP recipes.
	if got := get("otagw-boot-script", "SRC_URI"); got != "file://boot.cmd" {
		t.Errorf("otagw-boot-script SRC_URI = %q", got)
	}
	if got := get("otagw-boot-script", "FILES:otagw-boot-script"); got != "/boot/boot.scr" {
		t.Errorf("FILES:otagw-boot-script = %q", got)
	}
	if got := get("otagw-boot-script", "LICENSE"); got != "MIT" {
		t.Errorf("otagw-boot-script LICENSE = %q", got)
	}
	if got := get("otagw-fw-env", "SRC_URI"); got != "file://fw_env.config.emmc" {
		t.Errorf("otagw-fw-env SRC_URI = %q", got)
	}
	if got := get("otagw-fw-env", "FILES:otagw-fw-env"); got != "/etc/fw_env.config" {
		t.Errorf("FILES:otagw-fw-env = %q", got)
	}
	if got := get("otagw-fw-env", "CONFFILES:otagw-fw-env"); got != "/etc/fw_env.config" {
		t.Errorf("CONFFILES:otagw-fw-env = %q", got)
	}
	if got := get("otagw-fw-env", "LICENSE"); got != "MIT" {
		t.Errorf("otagw-fw-env LICENSE = %q", got)
	}
	for _, r := range []string{"otagw-boot-script", "otagw-fw-env"} {
		if s, w := get(r, "S"), get(r, "WORKDIR"); s == w {
			t.Errorf("%s: S = WORKDIR (%s), which walnascar refuses", r, s)
		}
	}
}

// TestYoctoExampleBuild: the kas file is valid YAML naming the layer, the
// poky release the layer is tested with and the three recipes; the wic
// kickstart has two rootfs partitions of the same size, clear of the
// environment fw_env.config.emmc places before the first partition.
func TestYoctoExampleBuild(t *testing.T) {
	var kas struct {
		Header          struct{ Version int }
		Machine         string
		Repos           map[string]map[string]any
		LocalConfHeader map[string]string `yaml:"local_conf_header"`
	}
	if err := yaml.Unmarshal(readRepo(t, layerDir+"/kas/otagw-example.yml"), &kas); err != nil {
		t.Fatalf("kas file: %v", err)
	}
	if kas.Header.Version == 0 || kas.Machine == "" || kas.Repos["poky"]["branch"] != "walnascar" {
		t.Errorf("kas file: header %d, machine %q, poky %v", kas.Header.Version, kas.Machine, kas.Repos["poky"])
	}
	if _, ok := kas.Repos["meta-otagw"]["layers"].(map[string]any)[layerDir]; !ok {
		t.Errorf("kas file does not add %s", layerDir)
	}
	conf := kas.LocalConfHeader["otagw"]
	for _, want := range []string{"otagw otagw-boot-script otagw-fw-env", `WKS_FILE = "otagw-ab-emmc.wks"`, "fw_env.config.emmc"} {
		if !strings.Contains(conf, want) {
			t.Errorf("kas local_conf_header lacks %q", want)
		}
	}
	wks := string(readRepo(t, layerDir+"/wic/otagw-ab-emmc.wks"))
	var rootfs []string
	for _, line := range strings.Split(wks, "\n") {
		if strings.HasPrefix(line, "part ") && strings.Contains(line, "--source rootfs") {
			rootfs = append(rootfs, regexp.MustCompile(`--fixed-size \S+`).FindString(line))
		}
	}
	if len(rootfs) != 2 || rootfs[0] == "" || rootfs[0] != rootfs[1] {
		t.Errorf("wks: rootfs partitions %q, want two of one fixed size", rootfs)
	}
	// fw_env.config.emmc: copies at 0x400000 and 0x404000, 0x4000 each: the
	// first partition must start at or after 0x408000 (--align is in KiB).
	m := regexp.MustCompile(`(?m)^part \S+ .*--align (\d+)`).FindStringSubmatch(wks)
	if m == nil {
		t.Fatal("wks: first partition has no --align")
	}
	var kib int
	fmt.Sscan(m[1], &kib)
	if kib*1024 < 0x408000 {
		t.Errorf("wks: the first partition starts at %d KiB, inside the U-Boot environment (ends at 0x408000)", kib)
	}
}
