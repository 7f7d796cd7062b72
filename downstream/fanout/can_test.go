package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// simLines is the real serial/CAN hardware with each device's reset lines
// wired to its simulator: entering the bootloader resets that part with
// BOOT0 high, starting it resets it with BOOT0 low.
type simLines struct {
	fanout.Serial
	sims map[string]*stm32sim.Sim
}

func (h simLines) Reset(_ downstream.Bus, d downstream.Device, _ link.Link, _ reset.Options) (reset.Strategy, error) {
	s := h.sims[d.Name]
	return reset.Func{
		Enter: func(context.Context) error { s.Reset(); return nil },
		Start: func(context.Context) error { s.RunApplication(); return nil },
	}, nil
}

// TestCANFleetOverSLCAN: two STM32 on one CAN bus behind an slcan adapter
// on a pseudo-terminal, flashed by the engine through the configured
// transport (transport: can, port:), one at a time: each ends in success
// with its image, running its application.
func TestCANFleetOverSLCAN(t *testing.T) {
	s, kr := keys(t)
	pkg, img := makePkg(t, s, kr, 0x413, "F4", "3.0.0", 12*1024)
	chip, _ := chips.Lookup(0x413)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sims := map[string]*stm32sim.Sim{"can-a": stm32sim.New(chip, stm32sim.Options{}), "can-b": stm32sim.New(chip, stm32sim.Options{})}
	for _, sim := range sims {
		sim.RunApplication()
	}
	p, err := stm32sim.ServeSLCANPTY(ctx, sims["can-a"], sims["can-b"])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	o := downstream.DefaultOptions()
	o.STM32.ByteTimeout = 250 * time.Millisecond
	o.Backoff = 10 * time.Millisecond
	o.Buses = []downstream.Bus{{Name: "can1", Transport: "can", Port: p.Path, Bitrate: 500000}}
	o.Devices = []downstream.Device{
		{Name: "can-a", Bus: "can1", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:1:2"},
		{Name: "can-b", Bus: "can1", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:3:4"},
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	eng, err := fanout.New(o, fanout.NewMemStore(), nil, fanout.WithHardware(simLines{sims: sims}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Run(ctx, pkg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.State != fanout.Success {
			t.Errorf("%s: %s: %s", r.Device, r.State, r.Reason)
		}
	}
	for name, sim := range sims {
		if !bytes.Equal(sim.Flash()[:len(img)], img) {
			t.Errorf("%s: flash differs from the image", name)
		}
		if run, _ := sim.Running(); !run {
			t.Errorf("%s: not running its application", name)
		}
		if st := sim.Stats(); st.Commands[0x31] != len(img)/256 {
			t.Errorf("%s: %d writes for %d blocks: the other device's traffic reached it", name, st.Commands[0x31], len(img)/256)
		}
	}
}

// TestCANInterfaceMissing: a SocketCAN bus whose interface does not exist
// fails each device with the interface's name in the reason.
func TestCANInterfaceMissing(t *testing.T) {
	s, kr := keys(t)
	pkg, _ := makePkg(t, s, kr, 0x413, "F4", "3.0.0", 1024)
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "can1", Transport: "can", Interface: "nocan3"}}
	o.Devices = []downstream.Device{{Name: "m", Bus: "can1", Family: "F4", ProductID: 0x413, Reset: "manual"}}
	eng, err := fanout.New(o, fanout.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Run(context.Background(), pkg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.State != fanout.Failed || !strings.Contains(r.Reason, "nocan3") || !errors.Is(r.Err, can.ErrInterface) {
		t.Fatalf("%s: %s (%v)", r.State, r.Reason, r.Err)
	}
}
