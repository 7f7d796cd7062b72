package fanout_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// barrierSerial is the real serial hardware, except that no bus may open
// before every bus has asked to: the run can only finish if the bus
// workers run at the same time (no timing involved).
type barrierSerial struct {
	fanout.Serial
	wg *sync.WaitGroup
}

func (b barrierSerial) OpenBus(ctx context.Context, bus downstream.Bus) (link.Link, error) {
	b.wg.Done()
	b.wg.Wait()
	return b.Serial.OpenBus(ctx, bus)
}

// TestMixedFleetOnPTYs: two STM32s and two ESP32s on four pseudo-terminals,
// one run with an STM32 and an ESP32 package through the real serial path;
// every device ends in success, the four buses in parallel.
func TestMixedFleetOnPTYs(t *testing.T) {
	s, kr := keys(t)
	stm, img := makePkg(t, s, kr, 0x410, "F1", "1.3.0", 16*1024)
	chip, _ := chips.Lookup(0x410)
	c3, _ := esp32.LookupChip("esp32c3")
	app := esp32.BuildImage(c3, "1.3.0", bytes.Repeat([]byte("esp32 app "), 4000))
	data, err := mcupkg.Create(mcupkg.Manifest{Target: mcupkg.Target{Family: "ESP32", Chip: "esp32c3"}, Version: "1.3.0"},
		[]mcupkg.Segment{{Addr: 0x10000, Data: app}}, s)
	if err != nil {
		t.Fatal(err)
	}
	esp, _ := mcupkg.Parse(data)
	if err := esp.Verify(kr, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := downstream.DefaultOptions()
	o.STM32.ByteTimeout = 100 * time.Millisecond
	o.ESP32.Timeout = 500 * time.Millisecond
	o.Backoff = 10 * time.Millisecond
	var stms []*stm32sim.Sim
	var esps []*esp32sim.Sim
	for i, name := range []string{"stm-a", "stm-b", "esp-a", "esp-b"} {
		var path string
		if i < 2 {
			sim := stm32sim.New(chip, stm32sim.Options{})
			p, err := stm32sim.ServePTY(ctx, sim)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			path, stms = p.Path, append(stms, sim)
			o.Devices = append(o.Devices, downstream.Device{Name: name, Bus: name, Protocol: "stm32-rom", Family: "F1", ProductID: 0x410})
		} else {
			sim := esp32sim.New(c3, esp32sim.Options{})
			p, err := esp32sim.ServePTY(ctx, sim)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			path, esps = p.Path, append(esps, sim)
			o.Devices = append(o.Devices, downstream.Device{Name: name, Bus: name, Protocol: "esp32-rom", Chip: "esp32c3"})
		}
		// STM32 buses: a pty drops PARENB, so 8N1; ESP32 buses take the protocol's 8N1
		parity := ""
		if i < 2 {
			parity = "none"
		}
		o.Buses = append(o.Buses, downstream.Bus{Name: name, Transport: "uart", Port: path, Parity: parity, Reset: "manual"})
	}
	var wg sync.WaitGroup
	wg.Add(4)
	eng, err := fanout.New(o, fanout.NewMemStore(), nil, fanout.WithHardware(barrierSerial{wg: &wg}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.RunMany(ctx, []*mcupkg.Package{stm, esp}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.State != fanout.Success {
			t.Errorf("%s: %s %s", r.Device, r.State, r.Reason)
		}
	}
	for _, sim := range stms {
		if !bytes.Equal(sim.Flash()[:len(img)], img) {
			t.Error("STM32 flash differs")
		}
	}
	for _, sim := range esps {
		if !bytes.Equal(sim.Flash()[0x10000:0x10000+len(app)], app) || !sim.Running() {
			t.Error("ESP32 flash differs or the application was not started")
		}
	}
}
