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
	s, kr := keys(t)
	for _, tc := range []struct {
		name   string
		pid    uint16
		faults stm32sim.Faults
	}{
		{"clean-F4", 0x413, stm32sim.Faults{}},
		{"faulty-F1", 0x410, stm32sim.Faults{NACK: 0.03, CorruptPerKiB: 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chip, _ := chips.Lookup(tc.pid)
			pkg, img := makePkg(t, s, kr, tc.pid, chip.Family, "2.1.0", 20*1024)
			sim := stm32sim.New(chip, stm32sim.Options{Seed: 3, Faults: tc.faults})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p, err := stm32sim.ServePTY(ctx, sim)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			o := downstream.DefaultOptions()
			o.STM32.ByteTimeout = 100 * time.Millisecond
			o.Backoff = 10 * time.Millisecond
			o.Buses = []downstream.Bus{{Name: "uart1", Protocol: "stm32-uart", Port: p.Path, Parity: "none", Reset: "manual"}}
			o.Devices = []downstream.Device{{Name: "mcu", Bus: "uart1", Family: chip.Family, ProductID: tc.pid}}
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
			t.Logf("%s: retries %d, %+v", tc.name, res[0].Retries, sim.Stats().Injected)
		})
	}
}
