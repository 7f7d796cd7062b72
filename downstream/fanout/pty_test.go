package fanout_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// TestSerialPTY runs the real serial path end to end: uart.Open on the
// simulator's pseudo-terminal (8N1: a pty drops PARENB), the manual reset
// strategy, the STM32 client and the engine; once clean and once with
// NACKs and corrupted bytes on the line.
func TestSerialPTY(t *testing.T) {
	runSerial(t, []serialCase{
		{"clean-F4", 0x413, stm32sim.Faults{}},
		{"faulty-F1", 0x410, stm32sim.Faults{NACK: 0.03, CorruptPerKiB: 0.5}},
	}, func(t *testing.T, ctx context.Context, sim *stm32sim.Sim) downstream.Bus {
		p, err := stm32sim.ServePTY(ctx, sim)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return downstream.Bus{Name: "uart1", Protocol: "stm32-uart", Port: p.Path, Parity: "none", Reset: "manual"}
	}, nil)
}

type serialCase struct {
	name   string
	pid    uint16
	faults stm32sim.Faults
}

// runSerial flashes a 20 KiB package, per case, to one simulated part
// (seed 3, the case's faults) on the bus that serve sets up for it,
// through the real Hardware and the engine: the device must succeed with
// the image in the simulator's flash; then check, when not nil.
func runSerial(t *testing.T, cases []serialCase, serve func(t *testing.T, ctx context.Context, sim *stm32sim.Sim) downstream.Bus, check func(t *testing.T, sim *stm32sim.Sim)) {
	s, kr := keys(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chip, _ := chips.Lookup(tc.pid)
			pkg, img := makePkg(t, s, kr, tc.pid, chip.Family, "2.1.0", 20*1024)
			sim := stm32sim.New(chip, stm32sim.Options{Seed: 3, Faults: tc.faults})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			bus := serve(t, ctx, sim)
			o := downstream.DefaultOptions()
			o.STM32.ByteTimeout = 100 * time.Millisecond
			o.Backoff = 10 * time.Millisecond
			o.Buses = []downstream.Bus{bus}
			o.Devices = []downstream.Device{{Name: "mcu", Bus: bus.Name, Family: chip.Family, ProductID: tc.pid}}
			eng, err := fanout.New(o, fanout.NewMemStore(), nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := eng.Run(ctx, pkg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r := res[0]; r.State != fanout.Success {
				t.Fatalf("%s: %s", r.State, r.Reason)
			}
			if !bytes.Equal(sim.Flash()[:len(img)], img) {
				t.Fatal("flash differs from the image")
			}
			if check != nil {
				check(t, sim)
			}
			t.Logf("%s: retries %d, %+v", tc.name, res[0].Retries, sim.Stats().Injected)
		})
	}
}
