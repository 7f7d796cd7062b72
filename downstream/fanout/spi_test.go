package fanout_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// TestSerialSPI runs the SPI path end to end through the real Hardware:
// spi.Open on the simulator socket (device sim:PATH), the manual reset
// strategy, the AN4286 client and the engine; once clean and once with
// NACKs and corrupted bytes.
func TestSerialSPI(t *testing.T) {
	runSerial(t, []serialCase{
		{"clean-F4", 0x413, stm32sim.Faults{}},
		{"faulty-G0", 0x460, stm32sim.Faults{NACK: 0.03, CorruptPerKiB: 0.5}},
	}, func(t *testing.T, ctx context.Context, sim *stm32sim.Sim) downstream.Bus {
		sock := filepath.Join(t.TempDir(), "spi.sock")
		if _, err := stm32sim.ServeSPISocket(ctx, sim, sock); err != nil {
			t.Fatal(err)
		}
		return downstream.Bus{Name: "spi0", Transport: "spi", Device: "sim:" + sock, SpeedHz: 4_000_000, Reset: "manual"}
	}, func(t *testing.T, sim *stm32sim.Sim) {
		if run, _ := sim.Running(); !run {
			t.Error("the application was not started")
		}
	})
}

// TestSPIMissingDevice: a missing spidev node fails the device with a
// reason that names the node.
func TestSPIMissingDevice(t *testing.T) {
	s, kr := keys(t)
	chip, _ := chips.Lookup(0x413)
	pkg, _ := makePkg(t, s, kr, 0x413, chip.Family, "2.1.0", 1024)
	o := downstream.DefaultOptions()
	o.Attempts, o.Backoff = 1, time.Millisecond
	o.Buses = []downstream.Bus{{Name: "spi0", Transport: "spi", Device: "/dev/spidev7.3"}}
	o.Devices = []downstream.Device{{Name: "mcu", Bus: "spi0", Family: chip.Family, ProductID: 0x413}}
	eng, err := fanout.New(o, fanout.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Run(context.Background(), pkg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.State != fanout.Failed || !strings.Contains(r.Reason, "/dev/spidev7.3") {
		t.Fatalf("%s: %s", r.State, r.Reason)
	}
}
