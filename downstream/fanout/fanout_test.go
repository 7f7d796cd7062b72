package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/link/linktest"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/sign/signtest"
)

// mux is a bus link that reaches whichever device the last reset selected,
// as BOOT0/NRST lines select one MCU on a shared UART.
type mux struct {
	mu  sync.Mutex
	cur *linktest.End
}

func (m *mux) end() *linktest.End          { m.mu.Lock(); defer m.mu.Unlock(); return m.cur }
func (m *mux) Read(p []byte) (int, error)  { return m.end().Read(p) }
func (m *mux) Write(p []byte) (int, error) { return m.end().Write(p) }
func (m *mux) SetReadDeadline(t time.Time) error {
	return m.end().SetReadDeadline(t)
}

type simDev struct {
	sim  *stm32sim.Sim
	host *linktest.End
}

// simHW is fanout.Hardware over simulators on in-memory links.
type simHW struct {
	t       *testing.T
	devs    map[string]*simDev
	buses   map[string]*mux
	mu      sync.Mutex
	opened  map[string]chan struct{}
	barrier []string // these buses wait in OpenBus until all of them are open
}

func newSimHW(t *testing.T) *simHW {
	return &simHW{t: t, devs: map[string]*simDev{}, buses: map[string]*mux{}, opened: map[string]chan struct{}{}}
}

func (h *simHW) add(name string, chip *chips.Chip, o stm32sim.Options) *stm32sim.Sim {
	host, dev := linktest.Pipe()
	sim := stm32sim.New(chip, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sim.Serve(ctx, dev); close(done) }()
	h.t.Cleanup(func() { cancel(); host.Close(); <-done })
	h.devs[name] = &simDev{sim: sim, host: host}
	return sim
}

func (h *simHW) ch(bus string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.opened[bus] == nil {
		h.opened[bus] = make(chan struct{})
	}
	return h.opened[bus]
}

func (h *simHW) OpenBus(ctx context.Context, b downstream.Bus) (link.Link, error) {
	h.mu.Lock()
	if c := h.opened[b.Name]; c == nil {
		h.opened[b.Name] = make(chan struct{})
	}
	select {
	case <-h.opened[b.Name]:
	default:
		close(h.opened[b.Name])
	}
	h.mu.Unlock()
	for _, other := range h.barrier {
		select {
		case <-h.ch(other):
		case <-time.After(20 * time.Second):
			h.t.Errorf("bus %s: bus %s was not opened while this one was: workers are not concurrent", b.Name, other)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := &mux{}
	h.buses[b.Name] = m
	return m, nil
}

func (h *simHW) Reset(b downstream.Bus, d downstream.Device, l link.Link, o reset.Options) (reset.Strategy, error) {
	sd := h.devs[d.Name]
	m := l.(*mux)
	return reset.Func{Enter: func(context.Context) error {
		m.mu.Lock()
		m.cur = sd.host
		m.mu.Unlock()
		sd.sim.Reset()
		return nil
	}}, nil
}

func fastOptions() downstream.Options {
	o := downstream.DefaultOptions()
	o.STM32.ByteTimeout = 25 * time.Millisecond
	o.STM32.WriteTimeout = 50 * time.Millisecond
	o.STM32.PageEraseTimeout = 20 * time.Millisecond
	o.STM32.MassEraseTimeout = 200 * time.Millisecond
	o.Backoff, o.MaxBackoff = time.Millisecond, time.Millisecond
	return o
}

func makePkg(t *testing.T, s sign.Signer, kr *sign.Keyring, pid uint16, family, version string, size int) (*mcupkg.Package, []byte) {
	t.Helper()
	chip, _ := chips.Lookup(pid)
	v, _ := mcupkg.ParseVersion(version)
	img := append(mcupkg.MCUbootHeader(v), make([]byte, size-mcupkg.HeaderSize)...)
	mrand.New(mrand.NewSource(int64(size))).Read(img[mcupkg.HeaderSize:])
	data, err := mcupkg.Create(mcupkg.Manifest{Target: mcupkg.Target{Family: family, ProductID: pid}, Version: version},
		[]mcupkg.Segment{{Addr: chip.FlashStart, Data: img}}, s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := mcupkg.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if kr != nil {
		if err := p.Verify(kr, 1); err != nil {
			t.Fatal(err)
		}
	}
	return p, img
}

func keys(t testing.TB) (sign.Signer, *sign.Keyring) {
	s, pub := signtest.Key(t)
	return s, sign.NewKeyring(pub)
}

func noSleep(context.Context, time.Duration) error { return nil }

// TestFleet: five devices on two buses. Bus a: normal (Success), flaky
// link (Success with retries). Bus b: precondition fails (Postponed),
// outdated (Success), already current (NotNeeded). The two bus workers run
// at the same time (a barrier in OpenBus proves it, no timing involved).
func TestFleet(t *testing.T) {
	s, kr := keys(t)
	pkg, img := makePkg(t, s, kr, 0x410, "F1", "1.0.0", 24*1024)
	chip, _ := chips.Lookup(0x410)
	hw := newSimHW(t)
	hw.barrier = []string{"a", "b"}
	sims := map[string]*stm32sim.Sim{
		"normal":   hw.add("normal", chip, stm32sim.Options{}),
		"flaky":    hw.add("flaky", chip, stm32sim.Options{Seed: 7, Faults: stm32sim.Faults{NACK: 0.05, CorruptPerKiB: 1, DisconnectAfter: 9000}}),
		"battery":  hw.add("battery", chip, stm32sim.Options{}),
		"outdated": hw.add("outdated", chip, stm32sim.Options{}),
		"current":  hw.add("current", chip, stm32sim.Options{}),
	}
	old, _ := mcupkg.ParseVersion("0.9.1")
	sims["outdated"].Program(chip.FlashStart, mcupkg.MCUbootHeader(old))
	cur, _ := mcupkg.ParseVersion("1.0.0")
	sims["current"].Program(chip.FlashStart, mcupkg.MCUbootHeader(cur))

	o := fastOptions()
	o.Buses = []downstream.Bus{{Name: "a", Protocol: "stm32-uart", Port: "/dev/null"}, {Name: "b", Protocol: "stm32-uart", Port: "/dev/null"}}
	dev := func(name, bus, pre string) downstream.Device {
		return downstream.Device{Name: name, Bus: bus, Family: "F1", ProductID: 0x410, VersionHeader: chip.FlashStart, Precondition: pre}
	}
	o.Devices = []downstream.Device{dev("normal", "a", ""), dev("flaky", "a", "true"), dev("battery", "b", "echo battery at 12%; exit 3"), dev("outdated", "b", ""), dev("current", "b", "")}
	store := &fanout.FileStore{Path: filepath.Join(t.TempDir(), "mcu.json")}
	eng, err := fanout.New(o, store, nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
	if err != nil {
		t.Fatal(err)
	}
	var events []fanout.Event
	res, err := eng.Run(context.Background(), pkg, nil, func(ev fanout.Event) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fanout.State{"normal": fanout.Success, "flaky": fanout.Success, "battery": fanout.Postponed, "outdated": fanout.Success, "current": fanout.NotNeeded}
	for _, r := range res {
		if r.State != want[r.Device] {
			t.Errorf("%s: %s (%s); want %s", r.Device, r.State, r.Reason, want[r.Device])
		}
		sim := sims[r.Device]
		st := sim.Stats()
		switch r.State {
		case fanout.Success:
			if !bytes.Equal(sim.Flash()[:len(img)], img) {
				t.Errorf("%s: Success but flash differs", r.Device)
			}
			if run, _ := sim.Running(); !run {
				t.Errorf("%s: application not started", r.Device)
			}
		case fanout.NotNeeded, fanout.Postponed:
			if st.Erases != 0 || st.Commands[0x31] != 0 {
				t.Errorf("%s: %s but the device saw erase/write: %v", r.Device, r.State, st.Commands)
			}
		}
		rec, ok, _ := store.Load(r.Device)
		if !ok || rec.State != r.State {
			t.Errorf("%s: stored record %+v", r.Device, rec)
		}
	}
	byName := map[string]fanout.Result{}
	for _, r := range res {
		byName[r.Device] = r
	}
	if r := byName["flaky"]; r.Retries == 0 {
		t.Errorf("flaky: Success with 0 retries; the faults did not bite")
	}
	if r := byName["outdated"]; r.FromVersion != "0.9.1" {
		t.Errorf("outdated: from version %q, want 0.9.1 (read from the device)", r.FromVersion)
	}
	if r := byName["battery"]; sims["battery"].Stats().HostBytes != 0 || !errors.Is(r.Err, fanout.ErrPrecondition) {
		t.Errorf("battery: %v; bytes %d", r.Err, sims["battery"].Stats().HostBytes)
	}
	// show the overlap of flashing on the two buses (no timing assertion)
	span := map[string][2]time.Time{}
	for _, ev := range events {
		s := span[ev.Device]
		if ev.Kind == "start" {
			s[0] = ev.Time
		}
		if ev.Kind == "done" {
			s[1] = ev.Time
		}
		span[ev.Device] = s
	}
	for _, a := range []string{"normal", "flaky"} {
		b := span["outdated"]
		x := span[a]
		t.Logf("bus a %-8s %v..%v  bus b outdated %v..%v  overlap=%v", a, x[0].Format("15:04:05.000"), x[1].Format("15:04:05.000"),
			b[0].Format("15:04:05.000"), b[1].Format("15:04:05.000"), x[0].Before(b[1]) && b[0].Before(x[1]))
	}
	// a second run: the flashed devices are now current
	res2, _ := eng.Run(context.Background(), pkg, []string{"normal", "outdated"}, nil)
	for _, r := range res2 {
		if r.State != fanout.NotNeeded {
			t.Errorf("second run %s: %s (%s); want not-needed", r.Device, r.State, r.Reason)
		}
	}
}

// TestRefusedBeforeErase: a tampered (unverified) package, a wrong product
// ID, an image beyond the chip's flash and a downgrade are each refused
// with the simulator having seen no erase (and no write).
func TestRefusedBeforeErase(t *testing.T) {
	s, kr := keys(t)
	good, _ := makePkg(t, s, kr, 0x410, "F1", "1.0.0", 4096)
	_, otherKR := keys(t)
	tampered, _ := makePkg(t, s, nil, 0x410, "F1", "1.0.0", 4096)
	if err := tampered.Verify(otherKR, 1); err == nil {
		t.Fatal("foreign keyring accepted the package")
	}
	big, _ := makePkg(t, s, kr, 0x412, "F1", "1.0.0", 40*1024) // F1 low density: 32 KiB flash
	old, _ := makePkg(t, s, kr, 0x410, "F1", "0.5.0", 4096)
	for _, tc := range []struct {
		name    string
		pkg     *mcupkg.Package
		devPID  uint16 // configured
		simPID  uint16 // actual part
		minimum string
		want    error
	}{
		{"tampered", tampered, 0x410, 0x410, "", fanout.ErrUnverified},
		{"wrong-product", good, 0x410, 0x413, "", fanout.ErrWrongProduct},
		{"beyond-flash", big, 0x412, 0x412, "", chips.ErrOutOfFlash},
		{"downgrade", old, 0x410, 0x410, "0.9.0", fanout.ErrDowngrade},
	} {
		t.Run(tc.name, func(t *testing.T) {
			simChip, _ := chips.Lookup(tc.simPID)
			hw := newSimHW(t)
			sim := hw.add("d", simChip, stm32sim.Options{})
			o := fastOptions()
			o.Buses = []downstream.Bus{{Name: "a", Protocol: "stm32-uart", Port: "/dev/null"}}
			o.Devices = []downstream.Device{{Name: "d", Bus: "a", Family: "F1", ProductID: tc.devPID}}
			store := fanout.NewMemStore()
			if tc.minimum != "" {
				store.Save(fanout.Record{Device: "d", MinVersion: tc.minimum, Version: "1.0.0"})
			}
			eng, err := fanout.New(o, store, nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
			if err != nil {
				t.Fatal(err)
			}
			res, err := eng.Run(context.Background(), tc.pkg, []string{"d"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.State != fanout.Failed || !errors.Is(r.Err, tc.want) {
				t.Fatalf("%s: %s %v; want failed with %v", tc.name, r.State, r.Err, tc.want)
			}
			st := sim.Stats()
			if st.Erases != 0 || st.Commands[stm32.CmdErase] != 0 || st.Commands[stm32.CmdExtendedErase] != 0 || st.Commands[stm32.CmdWriteMemory] != 0 {
				t.Fatalf("%s: the device saw erase/write commands: %v", tc.name, st.Commands)
			}
			t.Logf("%s refused: %s", tc.name, r.Reason)
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "a", Protocol: "spi", Port: "/dev/ttyS1", Reset: "gpio:0:1"}}
	o.Devices = []downstream.Device{{Name: "d", Bus: "x", ProductID: 0x1410}}
	err := o.Validate()
	for _, want := range []string{"buses[0].protocol", "buses[0].reset", "devices[0].bus", "devices[0].product_id", "devices[0].family"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate() = %v; want a complaint about %s", err, want)
		}
	}
	_ = fmt.Sprint
}
