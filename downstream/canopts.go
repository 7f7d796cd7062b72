package downstream

import (
	"fmt"
	"slices"
	"strings"
)

// validateCAN checks a CAN bus: one of interface (SocketCAN) or port
// (slcan), a classic bit rate, no UART line settings where they mean nothing.
func (b Bus) validateCAN(at string) []error {
	var errs []error
	switch {
	case b.Interface == "" && b.Port == "":
		errs = append(errs, fmt.Errorf("%s.interface: empty: a CAN bus needs interface (SocketCAN, e.g. can0) or port (an slcan adapter, e.g. /dev/ttyACM0)", at))
	case b.Interface != "" && b.Port != "":
		errs = append(errs, fmt.Errorf("%s.port: %q given with interface %q: set one (interface for SocketCAN, port for slcan)", at, b.Port, b.Interface))
	}
	if b.Interface != "" && (b.Baud != 0 || b.Parity != "") {
		errs = append(errs, fmt.Errorf("%s.baud/parity: not used on a SocketCAN bus (its bit rate is bitrate, set by the OS)", at))
	}
	if b.Port != "" && b.Parity != "" && b.Parity != "none" {
		errs = append(errs, fmt.Errorf("%s.parity: %q: slcan adapters speak 8N1", at, b.Parity))
	}
	if b.Bitrate != 0 && !slices.Contains(CANBitrates, b.Bitrate) {
		errs = append(errs, fmt.Errorf("%s.bitrate: %d: want one of %v", at, b.Bitrate, CANBitrates))
	}
	if strings.HasPrefix(b.Reset, "dtr-rts") || strings.HasPrefix(b.Reset, "esp32-classic") {
		errs = append(errs, fmt.Errorf("%s.reset: %q: a CAN bus has no modem lines: use gpio:CHIP:BOOT0:NRST per device, or manual", at, b.Reset))
	}
	return errs
}

// CANBitrate is the bus's bit rate with the default applied.
func (b Bus) CANBitrate() int {
	if b.Bitrate == 0 {
		return DefaultCANBitrate
	}
	return b.Bitrate
}

// validateCANDevices checks the devices on CAN buses: STM32 only, and
// when several share a bus, each on its own reset lines (otherwise more
// than one would be in its bootloader and answer the same frames).
func (o Options) validateCANDevices() []error {
	var errs []error
	seen := map[string]map[string]string{} // bus -> reset spec -> device
	for i, d := range o.Devices {
		b, ok := o.BusByName(d.Bus)
		if !ok || b.TransportName() != TransportCAN {
			continue
		}
		at := fmt.Sprintf("downstream.devices[%d]", i)
		if p := o.ProtocolOf(d); p != ProtocolSTM32 {
			errs = append(errs, fmt.Errorf("%s.protocol: %s cannot run on CAN bus %q (only %s, AN3154)", at, p, d.Bus, ProtocolSTM32))
		}
		spec := d.Reset
		if spec == "" {
			spec = b.Reset
		}
		if strings.HasPrefix(spec, "dtr-rts") || strings.HasPrefix(spec, "esp32-classic") {
			errs = append(errs, fmt.Errorf("%s.reset: %q: a CAN bus has no modem lines: use gpio:CHIP:BOOT0:NRST", at, spec))
		}
		if seen[d.Bus] == nil {
			seen[d.Bus] = map[string]string{}
		}
		if other, dup := seen[d.Bus][spec]; dup {
			errs = append(errs, fmt.Errorf("%s.reset: %q: device %q on CAN bus %q has the same reset lines; each device on a shared CAN bus needs its own BOOT0/NRST (gpio:CHIP:BOOT0:NRST)", at, spec, other, d.Bus))
		}
		seen[d.Bus][spec] = d.Name
	}
	return errs
}

// canWarnings: the STM32 ROM bootloader listens at 125 kbit/s only
// (AN3154; it has no autobaud on CAN), so a CAN bus at another rate
// reaches no STM32 in its bootloader.
func (o Options) canWarnings() []string {
	var w []string
	for i, b := range o.Buses {
		if b.TransportName() == TransportCAN && b.CANBitrate() != DefaultCANBitrate {
			w = append(w, fmt.Sprintf("downstream.buses[%d].bitrate: %d: the STM32 ROM bootloader listens at %d bit/s only (AN3154); its devices will not answer at another rate", i, b.Bitrate, DefaultCANBitrate))
		}
	}
	return w
}
