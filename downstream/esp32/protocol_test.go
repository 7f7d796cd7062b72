package esp32_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/link/linktest"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/sign/signtest"
)

// pipeHW serves one simulator per bus on an in-memory link.
type pipeHW struct{ sims map[string]*esp32sim.Sim }

func (h pipeHW) OpenBus(ctx context.Context, b downstream.Bus) (link.Link, error) {
	host, dev := linktest.Pipe()
	go h.sims[b.Name].Serve(ctx, dev)
	return host, nil
}

func (h pipeHW) Reset(b downstream.Bus, _ downstream.Device, _ link.Link, _ reset.Options) (reset.Strategy, error) {
	sim := h.sims[b.Name]
	return reset.Func{Enter: func(context.Context) error { sim.Reset(); return nil }}, nil
}

func esp32Package(t *testing.T, chip *esp32.Chip, version string, target string) (*mcupkg.Package, []mcupkg.Segment) {
	t.Helper()
	s, pub := signtest.Key(t)
	segs := []mcupkg.Segment{
		{Addr: chip.BootloaderOffset, Data: append([]byte{esp32.ImageMagic, 3, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, byte(chip.ID), 0}, image(9, 9000)...)},
		{Addr: 0x8000, Data: image(10, 3072)},
		{Addr: 0x10000, Data: esp32.BuildImage(chip, version, image(11, 60_000))},
	}
	data, err := mcupkg.Create(mcupkg.Manifest{Target: mcupkg.Target{Family: "ESP32", Chip: target}, Version: version}, segs, s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := mcupkg.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(sign.NewKeyring(pub), 1); err != nil {
		t.Fatal(err)
	}
	return p, segs
}

func fleet(chip string, devs ...string) downstream.Options {
	o := downstream.DefaultOptions()
	o.ESP32.Timeout = 300 * time.Millisecond
	o.Backoff, o.MaxBackoff = time.Millisecond, time.Millisecond
	for _, d := range devs {
		o.Buses = append(o.Buses, downstream.Bus{Name: d, Transport: "uart", Port: "/dev/null"})
		o.Devices = append(o.Devices, downstream.Device{Name: d, Bus: d, Protocol: "esp32-rom", Chip: chip})
	}
	return o
}

func noSleep(context.Context, time.Duration) error { return nil }

func TestFanoutESP32(t *testing.T) {
	t.Parallel()
	chip, _ := esp32.LookupChip("esp32")
	pkg, segs := esp32Package(t, chip, "2.1.0", "esp32")
	sim := esp32sim.New(chip, esp32sim.Options{})
	hw := pipeHW{map[string]*esp32sim.Sim{"e1": sim}}
	store := fanout.NewMemStore()
	run := func() fanout.Result {
		eng, err := fanout.New(fleet("esp32", "e1"), store, nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
		if err != nil {
			t.Fatal(err)
		}
		res, err := eng.Run(context.Background(), pkg, nil, nil)
		if err != nil || len(res) != 1 {
			t.Fatalf("Run() = %v, %v", res, err)
		}
		return res[0]
	}
	if r := run(); r.State != fanout.Success {
		t.Fatalf("first run: %s %s", r.State, r.Reason)
	}
	for _, s := range segs {
		if !bytes.Equal(sim.Flash()[s.Addr:int(s.Addr)+len(s.Data)], s.Data) {
			t.Fatalf("region 0x%x differs", s.Addr)
		}
	}
	if !sim.Running() {
		t.Fatal("application not started")
	}
	// forget the record: the flash MD5 still says the device is current
	if r := (func() fanout.Result { store = fanout.NewMemStore(); return run() })(); r.State != fanout.NotNeeded {
		t.Fatalf("second run: %s %s; want not-needed", r.State, r.Reason)
	}
}

// TestDisconnectMidWrite: the device drops off the line in the middle of
// the application region; with one attempt the run fails with a clear
// error and records what was verified; the next run resumes and succeeds.
func TestDisconnectMidWrite(t *testing.T) {
	t.Parallel()
	chip, _ := esp32.LookupChip("esp32s3")
	pkg, segs := esp32Package(t, chip, "1.0.0", "esp32s3")
	sim := esp32sim.New(chip, esp32sim.Options{Faults: esp32sim.Faults{DisconnectAfter: 30_000, DisconnectFor: 200 * time.Millisecond}})
	hw := pipeHW{map[string]*esp32sim.Sim{"e1": sim}}
	store := fanout.NewMemStore()
	o := fleet("esp32s3", "e1")
	o.Attempts = 1
	o.ESP32.Compress = false
	eng, _ := fanout.New(o, store, nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
	res, _ := eng.Run(context.Background(), pkg, nil, nil)
	r := res[0]
	if r.State != fanout.Failed || !errors.Is(r.Err, esp32.ErrTimeout) || !strings.Contains(r.Reason, "0x10000") {
		t.Fatalf("disconnected run: %s %q; want failed with a timeout in region 0x10000", r.State, r.Reason)
	}
	rec, _, _ := store.Load("e1")
	total := 0
	for _, s := range segs {
		total += len(s.Data)
	}
	if rec.BytesVerified == 0 || rec.BytesVerified >= total || rec.State != fanout.Failed {
		t.Fatalf("record after the cut: %+v; want some but not all bytes verified", rec)
	}
	t.Logf("cut: %s; %d of %d bytes verified", r.Reason, rec.BytesVerified, total)
	time.Sleep(250 * time.Millisecond)
	o.Attempts = 2
	eng, _ = fanout.New(o, store, nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
	res, _ = eng.Run(context.Background(), pkg, nil, nil)
	if res[0].State != fanout.Success {
		t.Fatalf("resumed run: %s %s", res[0].State, res[0].Reason)
	}
	if st := sim.Stats(); st.Injected.Disconnects != 1 {
		t.Fatalf("disconnects %d", st.Injected.Disconnects)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	s3, _ := esp32.LookupChip("esp32s3")
	c3, _ := esp32.LookupChip("esp32c3")
	// a package that says esp32s3 but carries an image built for the C3
	pkg, _ := esp32Package(t, c3, "1.0.0", "esp32s3")
	err := esp32.Protocol{}.Check(downstream.Device{Name: "d", Chip: "esp32s3"}, pkg)
	if !errors.Is(err, downstream.ErrWrongTarget) || !strings.Contains(err.Error(), "ESP32-C3") {
		t.Fatalf("Check() = %v; want a wrong-target refusal naming ESP32-C3", err)
	}
	pkg2, _ := esp32Package(t, s3, "1.0.0", "esp32s3")
	if err := (esp32.Protocol{}).Check(downstream.Device{Name: "d", Chip: "esp32c3"}, pkg2); !errors.Is(err, downstream.ErrWrongTarget) {
		t.Fatalf("Check() for another chip = %v", err)
	}
	if err := (esp32.Protocol{}).ValidateDevice(downstream.Device{Chip: "esp8266", ProductID: 0x410}); err == nil || !strings.Contains(err.Error(), "chip") || !strings.Contains(err.Error(), "product_id") {
		t.Fatalf("ValidateDevice() = %v", err)
	}
}
