package downstream_test

import (
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream"
	_ "github.com/otagw/otagw/downstream/protocols"
)

func TestSPIBusValidation(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{
		{Name: "spi0", Transport: "spi", Device: "/dev/spidev0.0", Mode: 0, SpeedHz: 4_000_000},
		{Name: "spi1", Transport: "spi", Mode: 5, BitsPerWord: 16, Port: "/dev/ttyS1"},
	}
	o.Devices = []downstream.Device{
		{Name: "ok", Bus: "spi0", Protocol: "stm32-rom", Family: "F4", ProductID: 0x413},
		{Name: "esp", Bus: "spi0", Protocol: "esp32-rom", Chip: "esp32"},
	}
	err := o.Validate()
	for _, want := range []string{
		"downstream.buses[1].device: empty",
		"downstream.buses[1].mode: 5",
		"downstream.buses[1].bits_per_word: 16",
		"downstream.buses[1].port:",
		"downstream.devices[1].protocol: esp32-rom cannot run on spi bus",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: want %q in %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "buses[0]") {
		t.Errorf("a good spi bus refused: %v", err)
	}
}
