package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
)

// The maintenance windows on the daemon's one injected clock: a whole
// daemon runs in this process (Run, its API socket, file slots, the file
// boot backend, a simulated STM32 on a pseudo-terminal) with a clockwork
// fake clock. Nothing waits for a window on the wall clock: the test moves
// the fake clock and watches the state and the event bus.

// clockNow is the fake clock's start, a Wednesday afternoon (UTC); the
// window "night" opens at 02:00 the next morning.
var clockNow = time.Date(2030, 6, 5, 15, 0, 0, 0, time.UTC)

var nightStart = time.Date(2030, 6, 6, 2, 0, 0, 0, time.UTC)

const nightWindow = `maintenance:
  windows:
    - {name: night, start: "0 2 * * *", duration: 1h}
`

// gw is one gateway's files and its in-process daemon.
type gw struct {
	t       *testing.T
	dir     string
	cfgPath string
	socket  string
	cmdline string
	keys    string
	clock   *clockwork.FakeClock
	signer  sign.Signer

	cancel context.CancelFunc
	done   chan error
	d      *Daemon
}

// newGW writes a gateway's config (two file slots A and B, the file boot
// backend booted from A, a keyring) with extra YAML appended.
func newGW(t *testing.T, extra string) *gw {
	t.Helper()
	dir := t.TempDir()
	g := &gw{t: t, dir: dir, cfgPath: filepath.Join(dir, "otagw.yaml"), socket: filepath.Join(dir, "otagw.sock"),
		cmdline: filepath.Join(dir, "cmdline"), keys: filepath.Join(dir, "keys"), clock: clockwork.NewFakeClockAt(clockNow)}
	for _, s := range []string{"A.img", "B.img"} {
		if err := os.WriteFile(filepath.Join(dir, s), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(filepath.Join(dir, s), 4<<20)
	}
	os.WriteFile(filepath.Join(dir, "bootenv.txt"), []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"), 0o644)
	g.boot("A")
	priv, _, err := sign.GenerateKey(g.keys, "signing")
	if err != nil {
		t.Fatal(err)
	}
	if g.signer, err = sign.LoadSigner(priv); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`daemon:
  socket: %s
  state_dir: %s
  reboot_command: [/bin/sh, -c, 'echo "$OTAGW_REBOOT_REASON" >> %s']
watchdog:
  enabled: false
boot:
  backend: file
  file: %s
  cmdline: %s
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: %s, bootname: A}
    - {name: rootfs.1, class: rootfs, device: %s, bootname: B}
update:
  keyring: %s
  compatible: otagw-test-gw
%s`, g.socket, filepath.Join(dir, "state"), g.rebootMarker(), filepath.Join(dir, "bootenv.txt"), g.cmdline,
		filepath.Join(dir, "A.img"), filepath.Join(dir, "B.img"), g.keys, extra)
	if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.stop)
	return g
}

func (g *gw) rebootMarker() string { return filepath.Join(g.dir, "rebooted") }

// boot says which slot the kernel command line names: the slot "booted".
func (g *gw) boot(slot string) {
	if err := os.WriteFile(g.cmdline, []byte("console=ttyS0 rauc.slot="+slot+" rootwait\n"), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

// start runs the daemon on the fake clock and waits until its API answers.
func (g *gw) start() {
	t := g.t
	t.Helper()
	cfg, err := config.Load(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{ConfigPath: g.cfgPath, Config: cfg, Clock: g.clock, Notify: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.d, g.cancel, g.done = d, cancel, make(chan error, 1)
	go func() { g.done <- d.Run(ctx) }()
	for i := 0; ; i++ {
		var st api.Status
		if err := api.NewClient(g.socket).Get(context.Background(), "/v1/status", &st); err == nil && st.State != api.StateStarting {
			return
		}
		select {
		case err := <-g.done:
			g.done <- err
			t.Fatalf("daemon ended before serving: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if i > 1500 {
			t.Fatalf("daemon API at %s does not answer", g.socket)
		}
	}
}

// stop ends the daemon as SIGTERM would.
func (g *gw) stop() {
	if g.cancel == nil {
		return
	}
	g.cancel()
	if err := <-g.done; err != nil {
		g.t.Errorf("daemon Run: %v", err)
	}
	g.cancel = nil
}

func (g *gw) status() api.Status {
	g.t.Helper()
	var st api.Status
	if err := api.NewClient(g.socket).Get(context.Background(), "/v1/status", &st); err != nil {
		g.t.Fatal(err)
	}
	return st
}

// events subscribes to the daemon's bus (what GET /v1/events streams).
func (g *gw) events() *subscriber {
	b := g.d.bus
	s, _ := b.subscribe(4096, nil)
	g.t.Cleanup(func() { b.unsubscribe(s) })
	return s
}

// waitEvent reads s until pred holds; a bound on the wall clock only
// catches a hang (no behaviour is timed).
func (g *gw) waitEvent(s *subscriber, what string, pred func(api.Event) bool) api.Event {
	g.t.Helper()
	bound := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				g.t.Fatalf("the event stream ended before %s", what)
			}
			if pred(ev) {
				return ev
			}
		case <-bound:
			g.t.Fatalf("no %s (state %s)", what, g.d.flow.State())
		}
	}
}

// waitFile waits for a file the daemon writes after an event and returns
// its contents; the bound on the wall clock only catches a hang.
func (g *gw) waitFile(path, what string) string {
	g.t.Helper()
	for i := 0; ; i++ {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		if i > 1500 {
			g.t.Fatalf("no %s (%s)", what, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noEvent: nothing on s (already published) satisfies pred.
func (g *gw) noEvent(s *subscriber, what string, pred func(api.Event) bool) {
	g.t.Helper()
	for {
		select {
		case ev := <-s.C:
			if pred(ev) {
				g.t.Fatalf("%s: %+v", what, ev)
			}
		default:
			return
		}
	}
}

func entered(state string) func(api.Event) bool {
	return func(ev api.Event) bool { return ev.Type == api.EventState && ev.State == state }
}

// mcuPackage builds a signed STM32 F1 package of version and returns its
// path and its image.
func (g *gw) mcuPackage(version string) (string, []byte) {
	g.t.Helper()
	chip, _ := chips.Lookup(0x410)
	v, _ := mcupkg.ParseVersion(version)
	img := append(mcupkg.MCUbootHeader(v), make([]byte, 6<<10)...)
	rand.New(rand.NewSource(1)).Read(img[mcupkg.HeaderSize:])
	data, err := mcupkg.Create(mcupkg.Manifest{Target: mcupkg.Target{Family: "F1", ProductID: 0x410}, Version: version},
		[]mcupkg.Segment{{Addr: chip.FlashStart, Data: img}}, g.signer)
	if err != nil {
		g.t.Fatal(err)
	}
	p := filepath.Join(g.dir, "fw-"+version+".otagwpkg")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		g.t.Fatal(err)
	}
	return p, img
}

// bundleURL builds a signed bundle of a rootfs image (and the MCU
// packages, if any) and serves it on 127.0.0.1.
func (g *gw) bundleURL(version string, mcu ...string) string {
	g.t.Helper()
	img := filepath.Join(g.dir, "rootfs-"+version)
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(2)).Read(data)
	os.WriteFile(img, data, 0o644)
	specs := []bundle.PayloadSpec{{Name: "rootfs", Target: "rootfs", Path: img}}
	for i, p := range mcu {
		specs = append(specs, bundle.PayloadSpec{Name: fmt.Sprintf("stm32-%d", i), Target: "mcu", Path: p})
	}
	out := filepath.Join(g.dir, "bundle-"+version+".otagw")
	if _, err := bundle.Create(context.Background(), out, bundle.CreateOptions{Compatible: "otagw-test-gw", Version: version,
		Created: clockNow.Add(-time.Hour), ChunkSize: 256 << 10, Signers: []sign.Signer{g.signer}, Payloads: specs}); err != nil {
		g.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(g.dir))}
	go srv.Serve(ln)
	g.t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/" + filepath.Base(out)
}

// streamPost reads a streamed answer to its end: an error event is an error.
func streamPost(c *api.Client, path string, in any) error {
	var failed error
	err := c.Stream(context.Background(), http.MethodPost, path, in, func(raw json.RawMessage) error {
		var ev api.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			return err
		}
		if ev.Type == api.EventError {
			failed = fmt.Errorf("%s: %s", ev.Kind, ev.Error)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return failed
}

// install posts an install of url and reads its answer to the end.
func (g *gw) install(url string) error {
	return streamPost(api.NewClient(g.socket), "/v1/install", api.InstallRequest{Source: url})
}

// stm32 serves a simulated STM32 F1 on a pseudo-terminal.
func stm32(t *testing.T) (*stm32sim.Sim, string) {
	t.Helper()
	chip, _ := chips.Lookup(0x410)
	sim := stm32sim.New(chip, stm32sim.Options{Seed: 1})
	ctx, cancel := context.WithCancel(context.Background())
	p, err := stm32sim.ServePTY(ctx, sim)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); p.Close() })
	return sim, p.Path
}

func fleetYAML(port string) string {
	return fmt.Sprintf(`downstream:
  buses:
    - {name: uart1, protocol: stm32-uart, port: %s, parity: none, reset: manual}
  devices:
    - {name: pump, bus: uart1, family: F1, product_id: 0x410}
  backoff: 10ms
`, port)
}

// TestFlashRefusedOutsideWindow: with flash: window, an operator's MCU
// flash outside every window is refused with an error naming the next
// window and when it opens, and nothing reaches the device; inside the
// window (the fake clock moved there) the same request flashes it.
func TestFlashRefusedOutsideWindow(t *testing.T) {
	sim, port := stm32(t)
	g := newGW(t, nightWindow+"  flash: window\n"+fleetYAML(port))
	g.start()
	pkg, img := g.mcuPackage("1.2.0")
	flash := func() error {
		f, err := os.Open(pkg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return streamPost(api.NewClient(g.socket).WithFile(f), "/v1/mcu/flash", api.MCUFlashRequest{Package: api.FDSource(pkg), All: true})
	}
	err := flash()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusPreconditionFailed || se.Kind != "outside-maintenance-window" {
		t.Fatalf("flash outside the window: %v, want 412 outside-maintenance-window", err)
	}
	if want := nightStart.Format(time.RFC3339); !strings.Contains(err.Error(), `"night"`) || !strings.Contains(err.Error(), want) {
		t.Errorf("refusal %q does not name the window \"night\" and its start %s", err, want)
	}
	if m := g.status().Maintenance; m == nil || m.FlashAt != nil {
		t.Errorf("a refused flash is queued: status maintenance %+v", m)
	}
	if r := g.status().MCUs; len(r) != 1 || r[0].Result != "" {
		t.Errorf("a refused flash left a device record: %+v", r)
	}
	if bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Errorf("a refused flash wrote the device")
	}
	g.clock.Advance(nightStart.Sub(g.clock.Now()))
	if err := flash(); err != nil {
		t.Fatalf("flash inside the window: %v", err)
	}
	if !bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Errorf("the device's flash is not the image after a flash in the window")
	}
	if r := g.status().MCUs; len(r) != 1 || r[0].Result != "success" || r[0].Version != "1.2.0" {
		t.Errorf("device record after the flash in the window: %+v", r)
	}
}

// TestRebootAtNextWindow: with reboot: window, an install outside the
// window leaves the release installed with its reboot dated at the next
// window's start (status reboot_at), also after a restart; nothing reboots
// while the fake clock is short of it, and the reboot command runs once it
// gets there.
func TestRebootAtNextWindow(t *testing.T) {
	g := newGW(t, nightWindow+"  reboot: window\n")
	g.start()
	evs := g.events()
	if err := g.install(g.bundleURL("2.0.0")); err != nil {
		t.Fatalf("install: %v", err)
	}
	g.waitEvent(evs, "installed", entered(api.StateInstalled))
	st := g.status()
	if m := st.Maintenance; m == nil || m.RebootAt == nil || !m.RebootAt.Equal(nightStart) || m.Open || m.Window != "night" {
		t.Fatalf("status maintenance %+v, want the reboot at %v", st.Maintenance, nightStart)
	}
	if st.State != api.StateInstalled {
		t.Fatalf("state %s after the install, want installed", st.State)
	}
	// A restart before the window: the reboot is dated there again.
	g.stop()
	g.start()
	evs = g.events()
	if m := g.status().Maintenance; m == nil || m.RebootAt == nil || !m.RebootAt.Equal(nightStart) {
		t.Fatalf("after a restart: status maintenance %+v, want the reboot at %v", m, nightStart)
	}
	// One second short of the window: the reboot job has not run.
	g.clock.Advance(nightStart.Add(-time.Second).Sub(g.clock.Now()))
	if _, err := os.Stat(g.rebootMarker()); err == nil {
		t.Fatalf("rebooted before the window opened")
	}
	g.noEvent(evs, "a reboot before the window", entered(api.StateRebooting))
	if st := g.status(); st.State != api.StateInstalled || st.Maintenance.RebootAt == nil {
		t.Fatalf("before the window: state %s, maintenance %+v", st.State, st.Maintenance)
	}
	g.clock.Advance(time.Second)
	ev := g.waitEvent(evs, "the reboot at the window's start", entered(api.StateRebooting))
	if !ev.Time.Equal(nightStart) || !strings.Contains(ev.Message, `maintenance window "night"`) || !strings.Contains(ev.Message, "2.0.0") {
		t.Errorf("reboot event %+v, want one at %v naming the window and the release", ev, nightStart)
	}
	// The flow enters rebooting, then runs the command.
	why := g.waitFile(g.rebootMarker(), "the reboot command's marker")
	if !strings.Contains(why, `maintenance window "night"`) {
		t.Errorf("reboot reason %q", why)
	}
}

// waitFlashAt waits until status says the release's firmware waits for
// the window opening at at.
func (g *gw) waitFlashAt(at time.Time) api.Status {
	g.t.Helper()
	for i := 0; ; i++ {
		st := g.status()
		if m := st.Maintenance; m != nil && m.FlashAt != nil && m.FlashAt.Equal(at) {
			return st
		}
		if i > 1500 {
			g.t.Fatalf("state %s (%s): maintenance %+v, want flash_at %v", st.State, st.Message, st.Maintenance, at)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReleaseFirmwareWaitsForWindow: the MCU firmware a release carries
// is fanned out after its commit; with flash: window and no window open
// it waits for the next one (status flash_at). The whole path runs: the
// install of a bundle with an STM32 package, the "reboot" into the new
// slot (a restart with the kernel command line naming it), the assessment
// and the commit. A restart while the firmware waits does not lose it; a
// reload that moves the window moves it. The device is not touched until
// the fake clock reaches the window's start, and is flashed then.
func TestReleaseFirmwareWaitsForWindow(t *testing.T) {
	sim, port := stm32(t)
	g := newGW(t, nightWindow+"  flash: window\n"+fleetYAML(port))
	pkg, img := g.mcuPackage("1.3.0")
	g.start()
	if err := g.install(g.bundleURL("2.0.0", pkg)); err != nil {
		t.Fatalf("install: %v", err)
	}
	if st := g.status(); st.State != api.StateInstalled {
		t.Fatalf("state %s after the install, want installed", st.State)
	}
	g.stop()
	g.boot("B") // the reboot into the new release
	g.start()
	st := g.waitFlashAt(nightStart)
	if st.State != api.StateCommitted || st.Release == nil || st.Release.Committed != "2.0.0" {
		t.Fatalf("after the reboot: state %s, release %+v; want 2.0.0 committed", st.State, st.Release)
	}
	// The message follows flash_at (the window is planned, then the flow
	// says so): give it a moment.
	want := fmt.Sprintf("waits for maintenance window %q at %s", "night", nightStart.Format(time.RFC3339))
	for i := 0; !strings.Contains(st.Message, want) && i < 250; i++ {
		time.Sleep(20 * time.Millisecond)
		st = g.status()
	}
	if !strings.Contains(st.Message, want) {
		t.Errorf("state message %q, want it to say %q", st.Message, want)
	}
	// A restart while the firmware waits: it waits again.
	g.stop()
	g.start()
	g.waitFlashAt(nightStart)
	evs := g.events()
	untouched := func(when string) {
		t.Helper()
		g.noEvent(evs, "a fan-out "+when, entered(api.StateFlashing))
		if st := g.status(); st.State != api.StateCommitted || st.MCUs[0].Result != "" {
			t.Fatalf("%s: state %s, devices %+v", when, st.State, st.MCUs)
		}
		if bytes.Equal(sim.Flash()[:len(img)], img) {
			t.Fatalf("the device was flashed %s", when)
		}
	}
	g.clock.Advance(nightStart.Add(-time.Second).Sub(g.clock.Now()))
	untouched("one second before the window")
	// The window moves to 04:00: the firmware waits for the new start.
	late := nightStart.Add(2 * time.Hour)
	cfg, _ := os.ReadFile(g.cfgPath)
	os.WriteFile(g.cfgPath, bytes.Replace(cfg, []byte(`"0 2 * * *"`), []byte(`"0 4 * * *"`), 1), 0o644)
	if err := api.NewClient(g.socket).Post(context.Background(), "/v1/reload", nil, nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	g.waitFlashAt(late)
	g.clock.Advance(late.Add(-time.Second).Sub(g.clock.Now()))
	untouched("at the old window's start, moved by a reload")
	g.clock.Advance(time.Second)
	ev := g.waitEvent(evs, "the fan-out at the window's start", entered(api.StateFlashing))
	if !ev.Time.Equal(late) || ev.Release != "1.3.0" {
		t.Errorf("fan-out event %+v, want one at %v for 1.3.0", ev, late)
	}
	done := g.waitEvent(evs, "the fan-out's end", func(ev api.Event) bool { return ev.Type == api.EventDone && ev.State == api.StateFlashing })
	if len(done.Devices) != 1 || done.Devices[0].Result != "success" || done.Devices[0].Version != "1.3.0" {
		t.Errorf("fan-out result %+v", done.Devices)
	}
	g.waitEvent(evs, "the return to committed", entered(api.StateCommitted))
	if !bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Errorf("the device's flash is not the release's image after the window opened")
	}
	// The package leaves the record once its fan-out returned.
	for i := 0; len(g.d.mcu.rec.payloads()) != 0; i++ {
		if i > 1500 {
			t.Fatalf("the release's firmware is still in the record after its fan-out: %v", g.d.mcu.rec.payloads())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := g.status().Maintenance; m.FlashAt != nil {
		t.Errorf("status still says the firmware waits: flash_at %v", m.FlashAt)
	}
}
