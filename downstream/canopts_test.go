package downstream_test

import (
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream"
)

func TestCANBusValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		bus  downstream.Bus
		devs []downstream.Device
		want []string // substrings of the error; none: valid
	}{
		{"socketcan", downstream.Bus{Name: "can", Transport: "can", Interface: "can0", Bitrate: 500000}, nil, nil},
		{"slcan", downstream.Bus{Name: "can", Transport: "can", Port: "/dev/ttyACM0"}, nil, nil},
		{"neither", downstream.Bus{Name: "can", Transport: "can"}, nil, []string{"buses[0].interface: empty"}},
		{"both", downstream.Bus{Name: "can", Transport: "can", Interface: "can0", Port: "/dev/ttyACM0"}, nil, []string{"buses[0].port"}},
		{"bitrate", downstream.Bus{Name: "can", Transport: "can", Interface: "can0", Bitrate: 123456}, nil, []string{"buses[0].bitrate: 123456"}},
		{"baud on socketcan", downstream.Bus{Name: "can", Transport: "can", Interface: "can0", Baud: 115200}, nil, []string{"buses[0].baud/parity"}},
		{"dtr-rts", downstream.Bus{Name: "can", Transport: "can", Interface: "can0", Reset: "dtr-rts"}, nil, []string{"buses[0].reset", "devices[0].reset"}},
		{"esp32 on can", downstream.Bus{Name: "can", Transport: "can", Interface: "can0"},
			[]downstream.Device{{Name: "e", Bus: "can", Protocol: "esp32-rom", Chip: "esp32c3"}}, []string{"devices[0].protocol: esp32-rom cannot run on CAN bus"}},
		{"shared reset", downstream.Bus{Name: "can", Transport: "can", Interface: "can0"},
			[]downstream.Device{
				{Name: "a", Bus: "can", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:5:6"},
				{Name: "b", Bus: "can", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:5:6"},
			}, []string{"devices[1].reset", `device "a"`}},
		{"own resets", downstream.Bus{Name: "can", Transport: "can", Interface: "can0"},
			[]downstream.Device{
				{Name: "a", Bus: "can", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:5:6"},
				{Name: "b", Bus: "can", Family: "F4", ProductID: 0x413, Reset: "gpio:gpiochip0:7:8"},
			}, nil},
		{"interface on uart", downstream.Bus{Name: "u", Port: "/dev/ttyS1", Interface: "can0"}, nil, []string{"buses[0].interface/bitrate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := downstream.DefaultOptions()
			o.Buses = []downstream.Bus{tc.bus}
			o.Devices = tc.devs
			if o.Devices == nil {
				o.Devices = []downstream.Device{{Name: "m", Bus: tc.bus.Name, Family: "F4", ProductID: 0x413}}
			}
			err := o.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v; want %q", err, w)
				}
			}
		})
	}
}

func TestCANBitrateWarning(t *testing.T) {
	o := downstream.DefaultOptions()
	o.Buses = []downstream.Bus{{Name: "a", Transport: "can", Interface: "can0"}, {Name: "b", Transport: "can", Interface: "can1", Bitrate: 500000}}
	w := o.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "buses[1].bitrate: 500000") {
		t.Fatalf("Warnings() = %q; want one for buses[1]", w)
	}
}
