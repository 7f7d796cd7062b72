package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// gateway is a simulated gateway for end-to-end tests: file slots, a file
// boot environment, a kernel command line, keys and a daemon config.
type gateway struct {
	Dir, Config, Socket, Env, Cmdline, Keys string
	SlotA, SlotB                            string
	// Backend is the boot backend: "file" (Env is a text file) or "uboot"
	// (Env is a redundant U-Boot environment image, two 16 KiB copies,
	// described by FWEnvConfig as fw_printenv reads it).
	Backend, FWEnvConfig, EnvLock string
}

func newGateway(t *testing.T, slotSize int64, extra string) *gateway {
	t.Helper()
	return newGatewayIn(t, testDir(t), slotSize, extra, "")
}

func newGatewayIn(t *testing.T, dir string, slotSize int64, extra, extraDaemon string) *gateway {
	t.Helper()
	return newGatewayBackend(t, dir, slotSize, extra, extraDaemon, "file")
}

// newGatewayBackend is newGatewayIn on the given boot backend.
func newGatewayBackend(t *testing.T, dir string, slotSize int64, extra, extraDaemon, backend string) *gateway {
	t.Helper()
	g := &gateway{Dir: dir, Socket: filepath.Join(dir, "otagw.sock"), Env: filepath.Join(dir, "bootenv.txt"),
		Cmdline: filepath.Join(dir, "cmdline"), Keys: filepath.Join(dir, "keys"),
		SlotA: filepath.Join(dir, "A.img"), SlotB: filepath.Join(dir, "B.img"), Backend: backend}
	for _, s := range []string{g.SlotA, g.SlotB} {
		if err := os.WriteFile(s, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(s, slotSize)
	}
	os.WriteFile(g.Cmdline, []byte("console=ttyS0 rauc.slot=A rootwait\n"), 0o644)
	if _, e, code := otagw(t, nil, "keygen", "--out", g.Keys); code != 0 {
		t.Fatalf("keygen: %s", e)
	}
	bootSection := fmt.Sprintf("boot:\n  backend: file\n  file: %s\n  cmdline: %s\n", g.Env, g.Cmdline)
	if backend == "uboot" {
		g.Env = filepath.Join(dir, "uboot.env")
		g.FWEnvConfig = filepath.Join(dir, "fw_env.config")
		g.EnvLock = filepath.Join(dir, "fw_env.lock")
		os.WriteFile(g.Env, nil, 0o644)
		os.Truncate(g.Env, 32<<10)
		os.WriteFile(g.FWEnvConfig, []byte(fmt.Sprintf("%s 0x0000 0x4000\n%s 0x4000 0x4000\n", g.Env, g.Env)), 0o644)
		defaults := filepath.Join(dir, "default-env.txt")
		os.WriteFile(defaults, []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
		if _, e, code := otagw(t, nil, "env", "set", "-c", g.FWEnvConfig, "--lock", g.EnvLock, "-f", defaults, "otagw_test", "1"); code != 0 {
			t.Fatalf("env set -f: %s", e)
		}
		bootSection = fmt.Sprintf("boot:\n  backend: uboot\n  fw_env_config: %s\n  lock_file: %s\n  cmdline: %s\n",
			g.FWEnvConfig, g.EnvLock, g.Cmdline)
	} else if backend != "file" {
		t.Fatalf("unknown boot backend %q", backend)
	}
	g.Config = writeConfig(t, dir, extraDaemon, fmt.Sprintf(`%srootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: %s, bootname: A}
    - {name: rootfs.1, class: rootfs, device: %s, bootname: B}
  checkpoint_bytes: 1048576
update:
  keyring: %s
  compatible: otagw-test-gw
%s`, bootSection, g.SlotA, g.SlotB, g.Keys, extra))
	return g
}

// bundle builds a signed bundle of image with the CLI.
func (g *gateway) bundle(t *testing.T, version string, image []byte, args ...string) string {
	t.Helper()
	img := filepath.Join(g.Dir, "image-"+version)
	os.WriteFile(img, image, 0o644)
	out := filepath.Join(g.Dir, "bundle-"+version+".otagw")
	a := append([]string{"bundle", "create", "--key", filepath.Join(g.Keys, "signing.key"), "--compatible", "otagw-test-gw",
		"--version", version, "--chunk-size", "262144"}, args...)
	a = append(a, "rootfs="+img, "-o", out)
	if _, e, code := otagw(t, nil, a...); code != 0 {
		t.Fatalf("bundle create: %s", e)
	}
	return out
}

// env reads the boot environment: the text file of the file backend, or,
// on the uboot backend, the U-Boot environment as U-Boot's own tool
// (libubootenv's fw_printenv) reads it through fw_env.config.
func (g *gateway) env(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	if g.Backend == "uboot" {
		out, err := exec.Command("fw_printenv", "-c", g.FWEnvConfig).CombinedOutput()
		if err != nil {
			t.Fatalf("fw_printenv -c %s (Debian package libubootenv-tool): %v\n%s", g.FWEnvConfig, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				m[k] = v
			}
		}
		return m
	}
	b, err := os.ReadFile(g.Env)
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// testImage is half random, half compressible.
func testImage(n int) []byte {
	b := make([]byte, n)
	rand.Read(b[:n/2])
	for i := n / 2; i < n; i++ {
		b[i] = byte(i / 4096)
	}
	return b
}

// flakyServer serves one file over HTTP on 127.0.0.1 with Range support,
// at a bounded rate, and drops some connections mid-body.
func flakyServer(t *testing.T, path string, bytesPerSec int) (string, *atomic.Int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var reqs atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := reqs.Add(1)
		start := int64(0)
		if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
			s, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
			start, _ = strconv.ParseInt(s, 10, 64)
			if start >= int64(len(data)) {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)-int(start)))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusOK)
		}
		body := data[start:]
		drop := -1
		if n%3 == 0 && len(body) > 1 { // every third request dies mid-body
			drop = 1 + mrand.IntN(len(body)-1)
		}
		const piece = 64 << 10
		for off := 0; off < len(body); off += piece {
			end := min(off+piece, len(body))
			if drop >= 0 && end > drop {
				w.Write(body[off:drop])
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
					}
				}
				return
			}
			if _, err := w.Write(body[off:end]); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			time.Sleep(time.Duration(piece) * time.Second / time.Duration(bytesPerSec))
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/bundle.otagw", &reqs
}

// TestInstallKill9Resume kills the daemon with SIGKILL at 20 random points
// of an install from a flaky local HTTP server. After each kill the boot
// environment may name the new slot only if that slot already holds the
// verified image; restarts resume; the end is a correct, bootable slot or a
// slot reported not bootable, never a switched boot to unverified data.
func TestInstallKill9Resume(t *testing.T) {
	t.Parallel()
	// At 4 MiB/s a run between kills gets through about a checkpoint
	// (1 MiB), so the 20 kills land all over the install.
	const size = 16 << 20
	g := newGateway(t, 32<<20, "")
	image := testImage(size)
	b := g.bundle(t, "2.0.0", image)
	url, reqs := flakyServer(t, b, 4<<20)
	var logs strings.Builder

	checkInvariant := func(when string) {
		t.Helper()
		order := strings.Fields(g.env(t)["BOOT_ORDER"])
		if len(order) > 0 && order[0] == "B" {
			got, _ := os.ReadFile(g.SlotB)
			if !bytes.Equal(got[:size], image) {
				t.Fatalf("%s: boot switched to slot B, whose content is not the verified image", when)
			}
		}
	}

	cli := func() *exec.Cmd {
		c := exec.Command(otagwBin, "install", "--json", "--socket", g.Socket, url)
		c.Stdout, c.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
		c.Start()
		return c
	}
	kills := 0
	for i := 0; i < 20; i++ {
		ns := newNotifySocket(t, t.TempDir())
		d := startDaemon(t, g.Config, "NOTIFY_SOCKET="+ns.Path)
		ns.wait(t, "READY", "1", 30*time.Second)
		var c *exec.Cmd
		if i == 0 {
			// The first kill lands once the install writes (a kill while
			// the head is read leaves nothing to resume: see
			// TestKillAtEveryPersistencePoint for that point).
			c = cli()
			g.waitState(t, "installing", func(s api.Status) bool { return s.State == "installing" })
		}
		time.Sleep(time.Duration(100+mrand.IntN(400)) * time.Millisecond)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		logs.WriteString(d.out.String())
		kills++
		if c != nil {
			c.Wait()
		}
		checkInvariant(fmt.Sprintf("after kill %d", i+1))
	}
	// The last start runs to the end.
	ns := newNotifySocket(t, t.TempDir())
	d := startDaemon(t, g.Config, "NOTIFY_SOCKET="+ns.Path)
	ns.wait(t, "READY", "1", 30*time.Second)
	deadline := time.Now().Add(2 * time.Minute)
	var final string
	for time.Now().Before(deadline) {
		st := statusOf(t, g.Socket)
		if st.State != "installing" {
			final = st.State
			for _, s := range st.Slots {
				if s.Bootname == "B" {
					t.Logf("after %d kills, %d HTTP requests: state %s, slot B: %+v", kills, reqs.Load(), st.State, s)
					if st.State == "installed" && (s.Version != "2.0.0" || !s.Primary) {
						t.Errorf("installed but slot B is %+v", s)
					}
					if st.State != "installed" && (!strings.Contains(s.Note, "not bootable") || s.Primary) {
						t.Errorf("not installed, yet slot B is not reported not bootable: %+v (%s)", s, st.Message)
					}
				}
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.stop(t)
	checkInvariant("at the end")
	if final != "installed" {
		t.Fatalf("the install did not finish after resumes: state %q\n%s", final, d.out.String())
	}
	got, _ := os.ReadFile(g.SlotB)
	if !bytes.Equal(got[:size], image) {
		t.Fatal("slot B differs from the image")
	}
	logs.WriteString(d.out.String())
	if n := strings.Count(logs.String(), "interrupted install found: resuming"); n == 0 {
		t.Errorf("no start resumed an interrupted install")
	} else {
		t.Logf("%d starts resumed from a checkpoint", n)
	}
}

// TestInstallRefusedLeavesBootAlone: through the daemon, a bundle refused
// on its manifest leaves the boot environment byte for byte as it was; a
// bundle with a bad chunk leaves the booted slot primary and the target
// out of the boot order, reported not bootable, with the kind named.
func TestInstallRefusedLeavesBootAlone(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 16<<20, "")
	os.WriteFile(g.Env, []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
	b := g.bundle(t, "2.0.0", testImage(4<<20))
	good, _ := os.ReadFile(b)
	d := g.start(t)

	envBefore, _ := os.ReadFile(g.Env)
	manifestFlip := append([]byte(nil), good...)
	manifestFlip[100] ^= 0x04 // inside the signed manifest
	p := filepath.Join(g.Dir, "manifest-flip.otagw")
	os.WriteFile(p, manifestFlip, 0o644)
	_, e, code := otagw(t, nil, "install", "--socket", g.Socket, p)
	if code == 0 {
		t.Fatal("a bundle with a flipped manifest bit was installed")
	}
	if envAfter, _ := os.ReadFile(g.Env); !bytes.Equal(envBefore, envAfter) {
		t.Errorf("refused bundle changed the boot environment:\n%s\n->\n%s\n(%s)", envBefore, envAfter, e)
	}
	if st := statusOf(t, g.Socket); st.LastError == nil || st.LastError.Kind == "" {
		t.Errorf("status does not name the refusal: %+v", st.LastError)
	}

	chunkFlip := append([]byte(nil), good...)
	chunkFlip[len(chunkFlip)-1000] ^= 0x01 // in the last payload chunk
	p = filepath.Join(g.Dir, "chunk-flip.otagw")
	os.WriteFile(p, chunkFlip, 0o644)
	_, e, code = otagw(t, nil, "install", "--socket", g.Socket, p)
	if code == 0 || !strings.Contains(e, "hash-mismatch") {
		t.Fatalf("bad chunk: exit %d: %s", code, e)
	}
	st := statusOf(t, g.Socket)
	a, bs := slot(st, "A"), slot(st, "B")
	if !a.Primary || !a.Booted || bs.Primary || bs.State != "bad" || !strings.Contains(bs.Note, "not bootable") {
		t.Errorf("after a bad chunk: A %+v, B %+v", a, bs)
	}
	if st.LastError == nil || st.LastError.Kind != "hash-mismatch" {
		t.Errorf("last error: %+v", st.LastError)
	}
	d.stop(t)
}

// TestInstallResumeManual: with update.resume: manual an interrupted
// install is reported not bootable at the next start, and `otagw install
// --resume` continues it from its checkpoint to a correct slot.
func TestInstallResumeManual(t *testing.T) {
	t.Parallel()
	const size = 12 << 20
	g := newGateway(t, 16<<20, "")
	cfg, _ := os.ReadFile(g.Config)
	os.WriteFile(g.Config, bytes.Replace(cfg, []byte("update:\n"), []byte("update:\n  resume: manual\n"), 1), 0o644)
	image := testImage(size)
	url, _ := flakyServer(t, g.bundle(t, "2.0.0", image), 4<<20)

	d := g.start(t)
	c := exec.Command(otagwBin, "install", "--socket", g.Socket, url)
	c.Start()
	// Kill once at least one checkpoint is persisted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st := statusOf(t, g.Socket); st.State == "installing" && strings.Contains(st.Message, "installing") {
			time.Sleep(1500 * time.Millisecond)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("install never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	c.Wait()

	d = g.start(t)
	st := statusOf(t, g.Socket)
	if b := slot(st, "B"); !strings.Contains(b.Note, "not bootable") || b.Primary {
		t.Fatalf("after the kill with resume: manual, slot B = %+v (%s)", b, st.Message)
	}
	out, e, code := otagw(t, nil, "install", "--resume", "--json", "--socket", g.Socket)
	if code != 0 {
		t.Fatalf("install --resume: exit %d\n%s\n%s", code, out, e)
	}
	if !strings.Contains(d.out.String(), "resuming at chunk") || strings.Contains(d.out.String(), "resuming at chunk 0 ") {
		t.Errorf("the resume did not start from a checkpoint:\n%s", d.out.String())
	}
	got, _ := os.ReadFile(g.SlotB)
	if !bytes.Equal(got[:size], image) {
		t.Error("slot B differs from the image after the resume")
	}
	if st := statusOf(t, g.Socket); st.State != "installed" || !slot(st, "B").Primary {
		t.Errorf("after the resume: %s, B %+v", st.State, slot(st, "B"))
	}
	d.stop(t)
}
