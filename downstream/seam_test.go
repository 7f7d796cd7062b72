package downstream_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream"
	_ "github.com/otagw/otagw/downstream/protocols"
)

func TestTransportAndProtocolPerDevice(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "u1", Transport: "uart", Port: "/dev/ttyS1"}}
	o.Devices = []downstream.Device{{Name: "m", Bus: "u1", Protocol: "stm32-rom", Family: "F1", ProductID: 0x410}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if w := o.Warnings(); len(w) != 0 {
		t.Fatalf("Warnings() = %v; want none", w)
	}
	if got := o.ProtocolOf(o.Devices[0]); got != downstream.ProtocolSTM32 {
		t.Fatalf("ProtocolOf = %q", got)
	}
}

func TestDeprecatedBusProtocol(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "u1", Protocol: "stm32-uart", Port: "/dev/ttyS1"}}
	o.Devices = []downstream.Device{{Name: "m", Bus: "u1", Family: "F1", ProductID: 0x410}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	w := o.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "deprecated") || !strings.Contains(w[0], "transport: uart") {
		t.Fatalf("Warnings() = %v; want one deprecation line", w)
	}
	if got := o.ProtocolOf(o.Devices[0]); got != downstream.ProtocolSTM32 {
		t.Fatalf("ProtocolOf = %q", got)
	}
}

func TestUnknownProtocolAndTransport(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "c", Transport: "lin", Port: "/dev/ttyS2"}}
	o.Devices = []downstream.Device{{Name: "m", Bus: "c", Protocol: "avr109"}}
	err := o.Validate()
	if !errors.Is(err, downstream.ErrUnknownProtocol) {
		t.Fatalf("Validate() = %v; want ErrUnknownProtocol", err)
	}
	for _, want := range []string{"buses[0].transport", "devices[0].protocol"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want %s", err, want)
		}
	}
}
