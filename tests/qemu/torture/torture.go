// Package torture cuts the power of a QEMU gateway at random moments and
// checks, after every cut, that it comes back as promised.
//
// The guest (Debian's kernel, tests/qemu/guestinit as /init, the agent in
// tests/qemu/torture/agent) has four virtio disks: slot A, slot B, the
// redundant U-Boot environment (fw_env.config: two 16 KiB copies on
// /dev/vdc) and the ext4 state disk (/dev/vdd, the daemon's state_dir and
// config). The disks are served over NBD by this package (Disk), each with
// a volatile write cache: a write reaches the durable image only on a
// flush, with FUA, or by eviction from a full cache. A cut kills QEMU with
// SIGKILL (everything in the guest's page cache is lost) and keeps, drops
// or tears (a random subset of 512-byte sectors kept) each cached write.
//
// A cut comes either after a random time or at the k-th write to the
// environment, state or slot disk (so that short windows like an env save
// are hit). After each cut the host reads the env with fw_printenv and
// with otagw's codec and compares them, checks the state filesystem with
// e2fsck, and boots again; the agent runs the boot chain and reports, and
// the host checks: the booted slot holds a complete verified release, the
// daemon reaches READY, no committed release or applied config is
// forgotten, the minimum version never goes backwards.
package torture

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/otagw/otagw/abboot/ubootenv"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/tests/qemu/qemutest"
	"github.com/otagw/otagw/tests/qemu/torture/image"
	"github.com/u-root/u-root/pkg/cpio"
)

// BrokenEnv is the environment variable that selects the deliberately
// broken variant for the harness's own test: "single-env" gives the guest
// a fw_env.config with one copy only, so every env save overwrites the
// only copy in place. It is read by this test harness only.
const BrokenEnv = "OTAGW_TORTURE_BROKEN"

// Config is one torture run.
type Config struct {
	Cuts int    // power cuts
	Seed uint64 // master seed; cut i uses rand.NewPCG(Seed, i)
	Dir  string // scratch directory (disk images, initramfs)
	// Modes limits the cut triggers ("time", "env", "state", "slot");
	// empty means all.
	Modes []string
	// MaxDelay bounds the time trigger; default 20s.
	MaxDelay time.Duration
	// StopOnFailure ends the run at the first failed cut; otherwise the
	// gateway is reset to its factory state and the run goes on.
	StopOnFailure bool
	// Until, when set, ends the run after the cut in progress at that
	// time (the report gives the real number of cuts).
	Until time.Time
	// TearAll tears every cached write at a cut (the worst cache); by
	// default half are kept, 30% dropped and 20% torn.
	TearAll bool
	// EnvTearUnit is the environment disk's TearUnit (default: 512-byte
	// sectors); 16 models an env on raw flash left partly programmed.
	EnvTearUnit int
	// Workers is the number of gateways tortured side by side (default
	// 1), each a QEMU guest with its own disks, snapshot and ledger;
	// cut i runs on gateway i mod Workers, so a seed replays the same
	// cuts only with the same Workers. TCG guests spend part of their
	// time asleep (timers, polls), so more workers than cores still add
	// cuts per minute.
	Workers int
	Logf    func(format string, args ...any)
}

// Stats is what a run saw.
type Stats struct {
	Cuts, Bricks, Failures     int
	CheckedBoots               int // boots that reached the daemon's status
	Resumes                    int // interrupted installs the daemon resumed
	NotBootable                int // slots reported "not bootable" after a cut
	Quarantined                int // state files moved aside (status warnings)
	Commits, Installs, Configs int // acknowledged operations (all boots)
	CleanReboots               int
	Phases                     map[string]int // what the agent was doing at the cut
	InFlight                   map[string]int // disks with unflushed writes at the cut
	Triggers                   map[string]int
	Kept, Dropped, Torn        int // cached writes at the cuts
	FailureSeeds               []string
	Errors                     []string

	inflightOutside map[string]int
}

// Moments are the counts of the kinds of moment the issue names.
func (s *Stats) Moments() map[string]int {
	return map[string]int{
		"install":      s.Phases["install"] + s.InFlightOnly("slot"),
		"env write":    s.InFlight["env"],
		"state write":  s.InFlight["state"],
		"commit":       s.Phases["commit"],
		"config apply": s.Phases["config"],
	}
}

// InFlightOnly counts cuts with writes in flight to disk outside the
// install phase (the daemon resuming an install at start).
func (s *Stats) InFlightOnly(disk string) int { return s.inflightOutside[disk] }

type ledger struct {
	committed, min string
	config         int
}

// Run runs the torture and returns its statistics; the error is about the
// harness itself (a tool missing, QEMU not starting).
func Run(ctx context.Context, cfg Config) (*Stats, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 20 * time.Second
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = []string{"time", "time", "env", "state", "slot"}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	for _, tool := range []string{"qemu-system-x86_64", "fw_printenv", "mkfs.ext4", "e2fsck", "go", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("torture needs %s (scripts/test-deps.sh installs it): %w", tool, err)
		}
	}
	cfg.Logf("torture: %d cuts on %d gateway(s), master seed %d (cut i uses PCG(%d, i) on gateway i mod %d), disks in %s",
		cfg.Cuts, cfg.Workers, cfg.Seed, cfg.Seed, cfg.Workers, cfg.Dir)
	if cfg.Workers == 1 {
		return runWorker(ctx, cfg, 0)
	}
	// Fetched once, before the gateways look for it in the cache.
	cache, err := qemutest.CacheDir()
	if err != nil {
		return nil, err
	}
	if _, err := qemutest.FetchKernel(cache, cfg.Logf); err != nil {
		return nil, fmt.Errorf("fetch Debian's kernel: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		st  *Stats
		err error
	}
	results := make([]result, cfg.Workers)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wcfg := cfg
		wcfg.Dir = filepath.Join(cfg.Dir, fmt.Sprintf("gw%d", w))
		if err := os.MkdirAll(wcfg.Dir, 0o755); err != nil {
			return nil, err
		}
		wcfg.Logf = func(format string, args ...any) {
			cfg.Logf(fmt.Sprintf("gw%d ", w)+format, args...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := runWorker(ctx, wcfg, w)
			if err != nil {
				cancel() // a broken harness ends the run
			}
			results[w] = result{st, err}
		}()
	}
	wg.Wait()
	total := &Stats{}
	total.init()
	var errs []error
	for _, r := range results {
		if r.st != nil {
			total.add(r.st)
		}
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			errs = append(errs, r.err)
		}
	}
	return total, errors.Join(errs...)
}

// add sums o into s (the figures of several gateways).
func (s *Stats) add(o *Stats) {
	s.Cuts += o.Cuts
	s.Bricks += o.Bricks
	s.Failures += o.Failures
	s.CheckedBoots += o.CheckedBoots
	s.Resumes += o.Resumes
	s.NotBootable += o.NotBootable
	s.Quarantined += o.Quarantined
	s.Commits += o.Commits
	s.Installs += o.Installs
	s.Configs += o.Configs
	s.CleanReboots += o.CleanReboots
	s.Kept += o.Kept
	s.Dropped += o.Dropped
	s.Torn += o.Torn
	for _, m := range []struct{ to, from map[string]int }{
		{s.Phases, o.Phases}, {s.InFlight, o.InFlight}, {s.Triggers, o.Triggers}, {s.inflightOutside, o.inflightOutside},
	} {
		for k, v := range m.from {
			m.to[k] += v
		}
	}
	s.FailureSeeds = append(s.FailureSeeds, o.FailureSeeds...)
	s.Errors = append(s.Errors, o.Errors...)
}

// runWorker tortures gateway w: cuts w, w+Workers, w+2*Workers, ...
func runWorker(ctx context.Context, cfg Config, w int) (*Stats, error) {
	h, err := newHarness(cfg)
	if err != nil {
		return nil, err
	}
	defer h.close()
	if err := h.snapshot(ctx); err != nil {
		return nil, err
	}
	st := h.stats
	var led ledger
	for i := w; i < cfg.Cuts; i += cfg.Workers {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if !cfg.Until.IsZero() && time.Now().After(cfg.Until) {
			cfg.Logf("torture: stopping before cut %d of %d: the time given (%s) is up", i, cfg.Cuts, cfg.Until.Format(time.RFC3339))
			break
		}
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		res, err := h.boot(ctx, rng, i, false)
		if err != nil {
			return st, err
		}
		bad := h.judge(res, &led)
		post := h.afterCut(res)
		bad = append(bad, post...)
		st.Cuts++
		cfg.Logf("cut %d seed %d/%d: %s", i, cfg.Seed, i, res.summary())
		if os.Getenv("OTAGW_TORTURE_VERBOSE") != "" {
			cfg.Logf("agent lines of cut %d:\n  %s", i, strings.Join(res.lines, "\n  "))
		}
		if len(bad) > 0 {
			h.fail(cfg, i, res, bad)
			if cfg.StopOnFailure {
				return st, nil
			}
			if err := h.factory(); err != nil {
				return st, err
			}
			led = ledger{}
		}
	}
	// One more boot checks the last cut.
	last := cfg.Cuts + w
	res, err := h.boot(ctx, rand.New(rand.NewPCG(cfg.Seed, uint64(last))), last, true)
	if err != nil {
		return st, err
	}
	if bad := h.judge(res, &led); len(bad) > 0 {
		h.fail(cfg, last, res, bad)
	}
	return st, nil
}

func (h *harness) fail(cfg Config, i int, res *bootResult, bad []string) {
	st := h.stats
	brick := false
	for _, b := range bad {
		if strings.HasPrefix(b, "BRICK") {
			brick = true
		}
	}
	if brick {
		st.Bricks++
	} else {
		st.Failures++
	}
	// The check of cut i-1 happens during boot i.
	seed := fmt.Sprintf("%d/%d", cfg.Seed, i)
	st.FailureSeeds = append(st.FailureSeeds, seed)
	for _, b := range bad {
		st.Errors = append(st.Errors, fmt.Sprintf("cut %d (seed %s): %s", i, seed, b))
		cfg.Logf("FAILURE cut %d seed %s: %s", i, seed, b)
	}
	cfg.Logf("guest console of boot %d (last lines):\n%s", i, lastLines(res.console, 50))
}

type harness struct {
	cfg    Config
	dir    string
	kernel *qemutest.Kernel
	initrd string
	disks  []*Disk // slot A, slot B, env, state
	socks  []string
	stats  *Stats
	otagw  string
	snap   string // the booted machine, saved at the agent's snapshot point
	hostFW string // fw_env.config naming the host copy of the env disk
	envImg string
	broken string
	accel  string
}

const (
	slotSize  = 4 << 20
	envSize   = 1 << 20
	stateSize = 16 << 20
	envCopy   = 0x4000
)

func (s *Stats) init() {
	s.Phases, s.InFlight, s.Triggers = map[string]int{}, map[string]int{}, map[string]int{}
	s.inflightOutside = map[string]int{}
}

func newHarness(cfg Config) (*harness, error) {
	h := &harness{cfg: cfg, dir: cfg.Dir, stats: &Stats{}, broken: os.Getenv(BrokenEnv)}
	h.stats.init()
	if h.broken != "" && h.broken != "single-env" {
		return nil, fmt.Errorf("%s=%q: the only broken variant is single-env", BrokenEnv, h.broken)
	}
	cache, err := qemutest.CacheDir()
	if err != nil {
		return nil, err
	}
	if h.kernel, err = qemutest.FetchKernel(cache, cfg.Logf); err != nil {
		return nil, fmt.Errorf("fetch Debian's kernel: %w", err)
	}
	// KVM cannot boot Debian's stock kernel on these machines (TESTING.md).
	h.accel = "tcg"
	if err := h.build(); err != nil {
		return nil, err
	}
	names := []string{"slotA", "slotB", "env", "state"}
	sizes := []int64{slotSize, slotSize, envSize, stateSize}
	for i, n := range names {
		d := NewDisk(n, sizes[i])
		d.CacheBytes = 2 << 20
		if n == "env" {
			d.TearUnit = cfg.EnvTearUnit
		}
		sock := filepath.Join(h.dir, n+".sock")
		if err := d.Serve(sock); err != nil {
			return nil, err
		}
		h.disks = append(h.disks, d)
		h.socks = append(h.socks, sock)
	}
	return h, h.factory()
}

func (h *harness) close() {
	for _, d := range h.disks {
		d.Close()
	}
}

// build makes the binaries, keys, MCU package, configs and the initramfs.
func (h *harness) build() error {
	root, err := qemutest.ModuleRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(h.dir, "bin")
	os.MkdirAll(bin, 0o755)
	h.otagw = filepath.Join(bin, "otagw")
	for _, b := range []struct{ out, pkg string }{
		{h.otagw, "./cmd/otagw"}, {filepath.Join(bin, "agent"), "./tests/qemu/torture/agent"}, {filepath.Join(bin, "init"), "./tests/qemu/guestinit"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	etc := filepath.Join(h.dir, "etc")
	os.MkdirAll(etc, 0o755)
	if out, err := exec.Command(h.otagw, "keygen", "--out", filepath.Join(etc, "keys")).CombinedOutput(); err != nil {
		return fmt.Errorf("otagw keygen: %w: %s", err, out)
	}
	fw := make([]byte, 16<<10)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(fw)
	os.WriteFile(filepath.Join(etc, "fw.bin"), fw, 0o644)
	if out, err := exec.Command(h.otagw, "mcu", "package", "create", "--key", filepath.Join(etc, "keys", "signing.key"),
		"--target", "F1", "--product-id", "0x410", "--version", "1.0.0", "--address", "0x08000000",
		filepath.Join(etc, "fw.bin"), "-o", filepath.Join(etc, "motor-ctl.otagwpkg")).CombinedOutput(); err != nil {
		return fmt.Errorf("otagw mcu package create: %w: %s", err, out)
	}
	fwcfg := "/dev/vdc 0x0000 0x4000\n/dev/vdc 0x4000 0x4000\n"
	if h.broken == "single-env" {
		fwcfg = "/dev/vdc 0x0000 0x4000\n"
	}
	h.envImg = filepath.Join(h.dir, "env.img")
	h.hostFW = filepath.Join(h.dir, "fw_env.config")
	hostcfg := strings.ReplaceAll(fwcfg, "/dev/vdc", h.envImg)
	if err := os.WriteFile(h.hostFW, []byte(hostcfg), 0o644); err != nil {
		return err
	}
	pub, err := os.ReadFile(filepath.Join(etc, "keys", "signing.pub"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(etc, "keys", "signing.key"))
	if err != nil {
		return err
	}
	pkg, err := os.ReadFile(filepath.Join(etc, "motor-ctl.otagwpkg"))
	if err != nil {
		return err
	}
	return h.initramfs(map[string][]byte{
		"etc/torture/otagw.yaml":         []byte(guestConfig),
		"etc/torture/fw_env.config":      []byte(fwcfg),
		"etc/torture/keys/signing.pub":   pub,
		"etc/torture/signing.key":        key,
		"etc/torture/motor-ctl.otagwpkg": pkg,
	})
}

// guestConfig is the gateway's otagw.yaml; the agent copies it to the
// state disk and applies edited copies of it (otagw config apply).
const guestConfig = `# torture-config 0
daemon:
  socket: /tmp/otagw.sock
  state_dir: /state/otagw
  read_group: "0"
  admin_group: "0"
  reboot_command: [/torture-agent, reboot-request]
  uptime_file: /tmp/uptime
boot:
  backend: uboot
  fw_env_config: /etc/torture/fw_env.config
  lock_file: /tmp/fw_env.lock
  cmdline: /tmp/cmdline
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: /dev/vda, bootname: A}
    - {name: rootfs.1, class: rootfs, device: /dev/vdb, bootname: B}
  checkpoint_bytes: 1048576
update:
  keyring: /etc/torture/keys
  compatible: otagw-torture
  resume_backoff: 1s
watchdog:
  enabled: false
health:
  checks:
    - {name: release-healthy, file: /tmp/healthy}
assessment:
  deadline: 4s
  retry_interval: 1s
  committed_unit: ""
downstream:
  buses:
    - {name: uart1, transport: uart, port: /tmp/mcu-tty, parity: none, reset: manual}
  devices:
    - {name: motor-ctl, bus: uart1, protocol: stm32-rom, family: F1, product_id: 0x410}
  backoff: 100ms
`

// guestPlan is guestinit's /otagw-qemu.json.
type guestPlan struct {
	Modules []guestModule `json:"modules"`
	Args    []string      `json:"args"`
	Env     []string      `json:"env"`
}

type guestModule struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Params string `json:"params"`
}

func (h *harness) initramfs(files map[string][]byte) error {
	mods, err := h.kernel.Modules("crc32c_generic", "ext4")
	if err != nil {
		return err
	}
	// The disk drivers load after the snapshot point (the agent loads them).
	vmods, err := h.kernel.Modules("virtio_pci", "virtio_blk")
	if err != nil {
		return err
	}
	var vlist []string
	p := guestPlan{Args: []string{"/torture-agent"}, Env: []string{qemutest.GuestEnv + "=1"}}
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755), cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755), cpio.Directory("sys", 0o755), cpio.Directory("tmp", 0o1777),
		cpio.Directory("modules", 0o755), cpio.Directory("bin", 0o755), cpio.Directory("etc", 0o755),
		cpio.Directory("etc/torture", 0o755), cpio.Directory("etc/torture/keys", 0o755), cpio.Directory("state", 0o755),
	}
	for i, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("modules/%02d-%s.ko", i, m.Name)
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
		p.Modules = append(p.Modules, guestModule{Name: m.Name, Path: "/" + name})
	}
	for i, m := range vmods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("modules/v%02d-%s.ko", i, m.Name)
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
		vlist = append(vlist, "/"+name)
	}
	files["etc/torture/modules"] = []byte(strings.Join(vlist, "\n") + "\n")
	bin := filepath.Join(h.dir, "bin")
	for src, name := range map[string]string{"init": "init", "agent": "torture-agent", "otagw": "bin/otagw"} {
		data, err := os.ReadFile(filepath.Join(bin, src))
		if err != nil {
			return err
		}
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o755}))
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		recs = append(recs, cpio.StaticRecord(files[n], cpio.Info{Name: n, Mode: cpio.S_IFREG | 0o600}))
	}
	pj, _ := json.Marshal(p)
	recs = append(recs, cpio.StaticRecord(pj, cpio.Info{Name: "otagw-qemu.json", Mode: cpio.S_IFREG | 0o644}))
	h.initrd = filepath.Join(h.dir, "initramfs.cpio")
	f, err := os.Create(h.initrd)
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(f)
	if err := cpio.WriteRecords(w, recs); err != nil {
		f.Close()
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// factory puts the gateway in its factory state: release 1.0.0 in slot
// A, slot B empty, the env booting A, an empty ext4 state disk.
func (h *harness) factory() error {
	a := make([]byte, slotSize)
	copy(a, image.Build(image.Version(0)))
	if err := h.disks[0].Load(a); err != nil {
		return err
	}
	if err := h.disks[1].Load(make([]byte, slotSize)); err != nil {
		return err
	}
	if err := os.WriteFile(h.envImg, make([]byte, envSize), 0o644); err != nil {
		return err
	}
	def := filepath.Join(h.dir, "default-env.txt")
	os.WriteFile(def, []byte("BOOT_ORDER=A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n"), 0o644)
	if out, err := exec.Command(h.otagw, "env", "set", "-c", h.hostFW, "--lock", filepath.Join(h.dir, "fw_env.lock"),
		"-f", def, "otagw_torture", "1").CombinedOutput(); err != nil {
		return fmt.Errorf("otagw env set (factory env): %w: %s", err, out)
	}
	if err := h.disks[2].LoadFile(h.envImg); err != nil {
		return err
	}
	st := filepath.Join(h.dir, "state.img")
	os.Remove(st)
	if err := os.WriteFile(st, nil, 0o644); err != nil {
		return err
	}
	os.Truncate(st, stateSize)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "nodiscard", st).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", st, err, out)
	}
	return h.disks[3].LoadFile(st)
}

// bootResult is one power-on of the guest, up to the cut.
type bootResult struct {
	console  string
	trigger  string
	phase    string
	inFlight []string
	cut      CutStats
	exited   bool // the guest powered off by itself (the agent gave up)
	// firstLine is how long QEMU took to reach the agent; ran is the
	// whole power-on.
	firstLine, ran time.Duration
	powerOffs      int // clean power-offs before the cut
	hung           bool
	lines          []string // TORTURE- lines
}

func (r *bootResult) summary() string {
	s := fmt.Sprintf("trigger %s, phase %s, in flight %v, cache kept %d dropped %d torn %d", r.trigger, r.phase, r.inFlight, r.cut.Kept, r.cut.Dropped, r.cut.Torn)
	if r.exited {
		s += ", guest stopped by itself"
	}
	s += fmt.Sprintf(", %d clean power-offs before", r.powerOffs)
	s += fmt.Sprintf(" (agent after %v, power on for %v)", r.firstLine.Round(100*time.Millisecond), r.ran.Round(100*time.Millisecond))
	return s
}

// qemuArgs are the machine's arguments: the kernel, the initramfs and the
// four disks over NBD, a monitor socket for the snapshot.
func (h *harness) qemuArgs(monitor string) []string {
	args := []string{
		"-accel", h.accel, "-machine", "pc", "-m", "384M", "-smp", "1",
		"-display", "none", "-serial", "stdio", "-monitor", "unix:" + monitor + ",server=on,wait=off",
		"-no-user-config", "-no-reboot", "-kernel", h.kernel.Vmlinuz, "-initrd", h.initrd,
		"-append", "console=ttyS0 quiet panic=-1",
	}
	for j, s := range h.socks {
		node := fmt.Sprintf("d%d", j)
		args = append(args, "-blockdev", fmt.Sprintf("driver=nbd,node-name=%s,server.type=unix,server.path=%s", node, s),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,write-cache=on", node))
	}
	return args
}

// monitor sends one command to QEMU's human monitor and returns its answer.
func monitor(path, command string) (string, error) {
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("qemu monitor %s: %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	readPrompt := func() (string, error) {
		var b []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(b, []byte("(qemu) ")) {
			n, err := c.Read(buf)
			if err != nil {
				return string(b), err
			}
			b = append(b, buf[:n]...)
		}
		return string(b), nil
	}
	if _, err := readPrompt(); err != nil {
		return "", fmt.Errorf("qemu monitor %s: %w", path, err)
	}
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	out, err := readPrompt()
	if err != nil {
		return out, fmt.Errorf("qemu monitor %q: %w", command, err)
	}
	return out, nil
}

// snapshot boots the machine once up to the agent's snapshot point and
// saves it (a live migration to a file): every power-on restores it.
// Nothing of the disks is in it, since no disk driver was loaded yet.
func (h *harness) snapshot(ctx context.Context) error {
	h.snap = filepath.Join(h.dir, "booted.snap")
	mon := filepath.Join(h.dir, "template.mon")
	qctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(qctx, "qemu-system-x86_64", h.qemuArgs(mon)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu-system-x86_64: %w", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	t0 := time.Now()
	sc := bufio.NewScanner(out)
	var console strings.Builder
	found := false
	for sc.Scan() {
		console.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "TORTURE-SNAPSHOT-POINT") {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("the template boot never reached the snapshot point (%s):\n%s", bytes.TrimSpace(stderr.Bytes()), lastLines(console.String(), 30))
	}
	go io.Copy(io.Discard, out)
	if _, err := monitor(mon, fmt.Sprintf("migrate \"exec:cat > %s\"", h.snap)); err != nil {
		return err
	}
	for {
		st, err := monitor(mon, "info migrate")
		if err != nil {
			return err
		}
		if strings.Contains(st, "Migration status: completed") {
			break
		}
		if strings.Contains(st, "Migration status: failed") {
			return fmt.Errorf("qemu: saving the booted machine failed: %s", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.cfg.Logf("torture: booted machine saved in %v (%s)", time.Since(t0).Round(100*time.Millisecond), h.snap)
	return nil
}

// powerOn restores the booted machine, tells the agent to go, and feeds
// the console to onLine until QEMU ends. It returns the console.
// cut says whether the power was cut meanwhile: a cut while the machine
// is being restored, before the agent printed anything, is a cut like any
// other and not an error.
func (h *harness) powerOn(ctx context.Context, n int, started func(*exec.Cmd), onLine func(string), cut func() bool) (string, error) {
	mon := filepath.Join(h.dir, fmt.Sprintf("power%d.mon", n%2))
	os.Remove(mon)
	args := append(h.qemuArgs(mon), "-incoming", "exec:cat "+h.snap)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start qemu-system-x86_64: %w", err)
	}
	started(cmd)
	go func() {
		defer in.Close()
		for i := 0; i < 600; i++ {
			st, err := monitor(mon, "info status")
			if err != nil {
				return
			}
			if strings.Contains(st, "VM status: running") {
				io.WriteString(in, "GO\n")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var buf strings.Builder
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		buf.WriteString(line)
		buf.WriteByte('\n')
		onLine(line)
	}
	io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if !strings.Contains(buf.String(), "TORTURE-") && ctx.Err() == nil && !cut() {
		return buf.String(), fmt.Errorf("qemu-system-x86_64 stopped before the agent ran (%v): %s\n%s", werr, bytes.TrimSpace(stderr.Bytes()), lastLines(buf.String(), 30))
	}
	return buf.String(), nil
}

// boot powers the guest on (again after every clean power-off) until the
// cut. With final, the cut comes right after the daemon's status (the
// run's last check).
func (h *harness) boot(ctx context.Context, rng *rand.Rand, i int, final bool) (*bootResult, error) {
	res := &bootResult{}
	t0 := time.Now()
	mode := h.cfg.Modes[rng.IntN(len(h.cfg.Modes))]
	delay := time.Duration(rng.Int64N(int64(h.cfg.MaxDelay)))
	var kth int
	target := -1
	switch mode {
	case "env":
		target, kth = 2, 1+rng.IntN(6)
	case "state":
		target, kth = 3, 1+rng.IntN(40)
	case "slot":
		target, kth = 0, 1+rng.IntN(40) // either slot: counted together
	}
	if final {
		mode = "final"
	}
	rctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var cur *exec.Cmd
	cutDone, started := false, false
	writes := 0
	var timer *time.Timer
	doCut := func(why string) {
		mu.Lock()
		defer mu.Unlock()
		if cutDone {
			return
		}
		cutDone = true
		res.trigger = why
		for _, d := range h.disks {
			d.freeze()
		}
		if cur != nil && cur.Process != nil {
			cur.Process.Signal(syscall.SIGKILL)
		}
	}
	for j, d := range h.disks {
		d.Reset()
		j := j
		d.OnWrite = func(d *Disk) {
			mu.Lock()
			hit := false
			if started && target >= 0 && (j == target || (target == 0 && j == 1)) {
				writes++
				hit = writes == kth
			}
			mu.Unlock()
			if hit {
				doCut(fmt.Sprintf("%s write #%d", mode, kth))
			}
		}
	}
	var console strings.Builder
	for n := 0; ; n++ {
		poweroff := false
		out, err := h.powerOn(rctx, n, func(c *exec.Cmd) {
			mu.Lock()
			cur = c
			mu.Unlock()
		}, func(line string) {
			t, ok := strings.CutPrefix(line, "TORTURE-")
			if !ok {
				return
			}
			mu.Lock()
			if !cutDone {
				res.lines = append(res.lines, t)
				if p, ok := strings.CutPrefix(t, "PHASE "); ok {
					res.phase = p
				}
				if t == "POWEROFF" {
					poweroff = true
				}
			}
			first := !started && t != "SNAPSHOT-POINT"
			if first {
				started = true
				res.firstLine = time.Since(t0)
			}
			mu.Unlock()
			if first && !final {
				if mode == "time" {
					timer = time.AfterFunc(delay, func() { doCut(fmt.Sprintf("time %v", delay.Round(time.Millisecond))) })
				} else {
					// A write trigger that never fires falls back to time.
					timer = time.AfterFunc(h.cfg.MaxDelay*3, func() { doCut("time (write trigger did not fire)") })
				}
			}
			if final && strings.HasPrefix(t, "STATUS ") {
				doCut("final check")
			}
		}, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return cutDone
		})
		console.WriteString(out)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		done := cutDone
		if !done && poweroff {
			// A clean power-off: the kernel flushed the disks before.
			res.powerOffs++
			for _, d := range h.disks {
				d.powerOff()
			}
		}
		mu.Unlock()
		if done || !poweroff {
			break
		}
	}
	res.ran = time.Since(t0)
	if timer != nil {
		timer.Stop()
	}
	mu.Lock()
	if !cutDone {
		cutDone = true
		res.exited = rctx.Err() == nil
		res.hung = rctx.Err() != nil
		res.trigger = "none"
		if res.hung {
			res.trigger = "guest hung (8 min)"
		}
		for _, d := range h.disks {
			d.freeze()
		}
	}
	mu.Unlock()
	res.console = console.String()
	// The cut: the disks' caches lose what the power took.
	for j, d := range h.disks {
		if n, _ := d.Pending(); n > 0 {
			name := d.Name
			if j < 2 {
				name = "slot"
			}
			res.inFlight = append(res.inFlight, name)
		}
		keep, drop := 0.5, 0.3
		if h.cfg.TearAll {
			keep, drop = 0, 0
		}
		c := d.Cut(rng, keep, drop)
		res.cut.Kept += c.Kept
		res.cut.Dropped += c.Dropped
		res.cut.Torn += c.Torn
	}
	if !final {
		st := h.stats
		st.Triggers[mode]++
		st.Phases[res.phase]++
		for _, f := range res.inFlight {
			st.InFlight[f]++
			if f == "slot" && res.phase != "install" {
				st.inflightOutside[f]++
			}
		}
		st.Kept += res.cut.Kept
		st.Dropped += res.cut.Dropped
		st.Torn += res.cut.Torn
	}
	return res, nil
}

// judge checks what the agent reported during a boot against the ledger
// and updates the ledger with what was acknowledged.
func (h *harness) judge(res *bootResult, led *ledger) []string {
	st := h.stats
	var bad []string
	for _, l := range res.lines {
		kind, rest, _ := strings.Cut(l, " ")
		switch kind {
		case "BRICK":
			bad = append(bad, "BRICK "+rest)
		case "FAIL":
			bad = append(bad, "FAIL "+rest)
		case "CONFIG":
			n, _ := strconv.Atoi(rest)
			if n < led.config {
				bad = append(bad, fmt.Sprintf("config apply %d was acknowledged, the state disk has %d", led.config, n))
			}
			led.config = max(led.config, n)
		case "RESUME":
			st.Resumes++
		case "STATUS":
			st.CheckedBoots++
			var s api.Status
			if err := json.Unmarshal([]byte(rest), &s); err != nil {
				bad = append(bad, "FAIL status json: "+err.Error())
				continue
			}
			for _, w := range s.Warnings {
				if strings.Contains(w, "state") {
					st.Quarantined++
				}
			}
			for _, sl := range s.Slots {
				if strings.Contains(sl.Note, "not bootable") {
					st.NotBootable++
				}
			}
			var rel api.Release
			if s.Release != nil {
				rel = *s.Release
			}
			if led.committed != "" && image.Patch(rel.Committed) < image.Patch(led.committed) {
				bad = append(bad, fmt.Sprintf("committed release %s forgotten: status says %q (warnings %q)", led.committed, rel.Committed, s.Warnings))
			}
			if led.min != "" && image.Patch(rel.MinVersion) < image.Patch(led.min) {
				bad = append(bad, fmt.Sprintf("minimum version went backwards: %s before, %q now (warnings %q)", led.min, rel.MinVersion, s.Warnings))
			}
			if image.Patch(rel.MinVersion) > image.Patch(led.min) {
				led.min = rel.MinVersion
			}
			if image.Patch(rel.Committed) > image.Patch(led.committed) {
				led.committed = rel.Committed
			}
		case "DONE":
			what, arg, _ := strings.Cut(rest, " ")
			switch what {
			case "commit":
				st.Commits++
				v, m, _ := strings.Cut(arg, " min=")
				if image.Patch(v) > image.Patch(led.committed) {
					led.committed = v
				}
				if image.Patch(m) > image.Patch(led.min) {
					led.min = m
				}
			case "config":
				st.Configs++
				n, _ := strconv.Atoi(arg)
				led.config = max(led.config, n)
			case "install":
				st.Installs++
			case "reboot-begin":
				st.CleanReboots++
			}
		}
	}
	if res.hung {
		bad = append(bad, "BRICK the guest hung for 8 minutes")
	}
	if res.exited && len(bad) == 0 {
		bad = append(bad, "FAIL the agent stopped by itself:\n"+lastLines(res.console, 20))
	}
	return bad
}

// afterCut checks the durable disks on the host: the env as fw_printenv
// and as otagw's codec read it, and the state filesystem with e2fsck.
func (h *harness) afterCut(res *bootResult) []string {
	var bad []string
	if err := h.disks[2].SaveFile(h.envImg); err != nil {
		return []string{"FAIL save env image: " + err.Error()}
	}
	fw, ferr := exec.Command("fw_printenv", "-c", h.hostFW).Output()
	ec, err := ubootenv.LoadConfig(h.hostFW)
	if err != nil {
		return []string{"FAIL " + err.Error()}
	}
	o := ubootenv.DefaultOptions()
	o.LockFile = filepath.Join(h.dir, "fw_env.lock")
	s, err := ubootenv.Open(ec, o)
	if err != nil {
		return []string{"FAIL " + err.Error()}
	}
	snap, oerr := s.Read(context.Background())
	switch {
	case ferr != nil && oerr != nil:
		bad = append(bad, fmt.Sprintf("BRICK env: no valid copy (fw_printenv: %v; otagw: %v)", ferr, oerr))
	case ferr != nil || oerr != nil:
		bad = append(bad, fmt.Sprintf("FAIL env: fw_printenv and otagw disagree on validity (fw_printenv: %v; otagw: %v)", ferr, oerr))
	default:
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(fw)), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				got[k] = v
			}
		}
		var diff []string
		for k, v := range snap.Env {
			if got[k] != v {
				diff = append(diff, fmt.Sprintf("%s: otagw %q fw_printenv %q", k, v, got[k]))
			}
		}
		for k, v := range got {
			if _, ok := snap.Env[k]; !ok {
				diff = append(diff, fmt.Sprintf("%s: otagw unset, fw_printenv %q", k, v))
			}
		}
		if len(diff) > 0 {
			sort.Strings(diff)
			bad = append(bad, "FAIL env: fw_printenv and otagw disagree: "+strings.Join(diff, "; "))
		}
	}
	img := filepath.Join(h.dir, "state-check.img")
	if err := h.disks[3].SaveFile(img); err != nil {
		return append(bad, "FAIL save state image: "+err.Error())
	}
	out, err := exec.Command("e2fsck", "-f", "-y", img).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 4 {
		bad = append(bad, fmt.Sprintf("FAIL state filesystem: e2fsck exit %d: %s", ee.ExitCode(), lastLines(string(out), 8)))
	} else if err != nil && !errors.As(err, &ee) {
		bad = append(bad, "FAIL e2fsck: "+err.Error())
	}
	os.Remove(img)
	return bad
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Report prints a run's figures, one line each, in a form
// docs/reliability.md quotes.
func Report(logf func(string, ...any), s *Stats) {
	logf("TORTURE-REPORT cuts=%d bricks=%d failures=%d checked_boots=%d resumes=%d not_bootable=%d quarantined=%d",
		s.Cuts, s.Bricks, s.Failures, s.CheckedBoots, s.Resumes, s.NotBootable, s.Quarantined)
	logf("TORTURE-REPORT acknowledged: installs=%d commits=%d config_applies=%d clean_reboots=%d", s.Installs, s.Commits, s.Configs, s.CleanReboots)
	logf("TORTURE-REPORT moments: %s", kv(s.Moments()))
	logf("TORTURE-REPORT phase at the cut: %s", kv(s.Phases))
	logf("TORTURE-REPORT unflushed writes at the cut on: %s", kv(s.InFlight))
	logf("TORTURE-REPORT triggers: %s", kv(s.Triggers))
	logf("TORTURE-REPORT cached writes at the cuts: kept=%d dropped=%d torn=%d", s.Kept, s.Dropped, s.Torn)
	logf("TORTURE-REPORT failing seeds: %v", s.FailureSeeds)
	for _, e := range s.Errors {
		logf("TORTURE-REPORT error: %s", e)
	}
}

func kv(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		name := k
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(&b, "%s=%d", name, m[k])
	}
	return b.String()
}
