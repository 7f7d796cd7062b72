// Package downstream is the gateway's MCU fleet: the buses MCUs hang off,
// the devices on them, and (in subpackages) transports, reset strategies,
// the STM32 ROM bootloader client, the signed MCU package format, device
// simulators and the fan-out engine that updates the fleet.
//
//	opts := downstream.DefaultOptions()      // filled from the "downstream:" YAML section
//	if err := opts.Validate(); err != nil { ... }
//	eng, _ := fanout.New(opts, store, log)   // store: the daemon's state, or fanout.FileStore
//	pkg, _ := mcupkg.Open(file, keyring, 1)
//	results := eng.Run(ctx, pkg, nil, onEvent) // nil: every device the package targets
package downstream

import (
	"errors"
	"fmt"
	"time"

	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/spi"
)

// ProtocolSTM32UART is the old bus-level form `protocol: stm32-uart`:
// transport uart, devices speaking ProtocolSTM32. Deprecated: write
// `transport: uart` on the bus and `protocol: stm32-rom` on the device.
const ProtocolSTM32UART = "stm32-uart"

// Device protocol names of the built-in protocols.
const (
	ProtocolSTM32 = "stm32-rom" // STM32 system bootloader over USART (AN3155)
	ProtocolESP32 = "esp32-rom" // Espressif ROM serial protocol
)

// Transports a bus can be.
const (
	TransportUART = "uart"
	TransportSPI  = "spi" // spidev; STM32 devices only (AN4286)
	// TransportCAN: a CAN bus, through SocketCAN (interface) or an slcan
	// adapter on a serial port (port); STM32 devices speak AN3154 on it.
	TransportCAN = "can"
)

// CANBitrates are the classic CAN bit rates a bus may be configured with.
var CANBitrates = []int{10000, 20000, 50000, 100000, 125000, 250000, 500000, 800000, 1000000}

// DefaultCANBitrate is the STM32 ROM bootloader's CAN rate (AN3154).
const DefaultCANBitrate = 125000

// Bus is one physical connection (a UART, a CAN bus, or an SPI chip
// select) with its line settings.
type Bus struct {
	Name      string `yaml:"name" json:"name"`
	Transport string `yaml:"transport" json:"transport,omitempty"` // uart (default), can or spi
	// Protocol is the deprecated bus-level protocol; only stm32-uart.
	Protocol string `yaml:"protocol" json:"protocol,omitempty"`
	// Port is the serial device: the UART (/dev/ttyS1), or on a CAN bus an
	// slcan adapter (/dev/ttyACM0).
	Port string `yaml:"port" json:"port"`
	Baud int    `yaml:"baud" json:"baud"` // default 115200
	// Interface is a CAN bus's SocketCAN interface (can0), brought up by the
	// OS (ip link set can0 up type can bitrate 125000); set it or port.
	Interface string `yaml:"interface" json:"interface,omitempty"`
	// Bitrate is a CAN bus's bit rate (default 125000, the STM32 ROM's);
	// otagw sets it on an slcan adapter, and on SocketCAN the OS does.
	Bitrate int `yaml:"bitrate" json:"bitrate,omitempty"`
	// Parity is even, none or odd; empty: what the devices' protocol wants
	// (even for STM32, none for ESP32).
	Parity string `yaml:"parity" json:"parity"`
	// Reset is the default strategy for the bus's devices: manual, dtr-rts,
	// esp32-classic, gpio:CHIP:BOOT0LINE:NRSTLINE or gpio-esp32:CHIP:STRAPLINE:ENLINE
	// (sim:SOCKET:PART drives a simulator's lines: tests and demo only).
	Reset string `yaml:"reset" json:"reset"`
	// Device is an SPI bus's spidev node (/dev/spidev0.0), one device per
	// chip select. "sim:PATH" is the simulator socket of tests and the demo.
	Device string `yaml:"device" json:"device,omitempty"`
	// Mode is the SPI mode 0..3 (the STM32 bootloader: 0).
	Mode uint8 `yaml:"mode" json:"mode,omitempty"`
	// SpeedHz is the SPI clock; 0 = 1 MHz (the STM32 bootloader: up to 8 MHz).
	SpeedHz uint32 `yaml:"speed_hz" json:"speed_hz,omitempty"`
	// BitsPerWord is the SPI word size; 0 = 8 (the only one the bootloader speaks).
	BitsPerWord uint8 `yaml:"bits_per_word" json:"bits_per_word,omitempty"`
}

// SPIConfig is an spi bus's settings for spi.Open.
func (b Bus) SPIConfig() spi.Config {
	return spi.Config{Device: b.Device, Mode: b.Mode, SpeedHz: b.SpeedHz, BitsPerWord: b.BitsPerWord}
}

// TransportName is the bus's transport, with the defaults applied.
func (b Bus) TransportName() string {
	if b.Transport == "" {
		return TransportUART
	}
	return b.Transport
}

// Device is one MCU.
type Device struct {
	Name string `yaml:"name" json:"name"`
	Bus  string `yaml:"bus" json:"bus"`
	// Protocol is the bootloader protocol (stm32-rom, esp32-rom); empty:
	// stm32-rom.
	Protocol  string `yaml:"protocol" json:"protocol,omitempty"`
	Family    string `yaml:"family" json:"family,omitempty"`         // STM32: e.g. F1; must match the package
	ProductID uint16 `yaml:"product_id" json:"product_id,omitempty"` // STM32: e.g. 0x410; must match the package and the part
	// Chip is the ESP32 chip name (esp32, esp32s3, esp32c3).
	Chip  string `yaml:"chip" json:"chip,omitempty"`
	HWRev string `yaml:"hw_rev" json:"hw_rev,omitempty"`
	// VersionHeader is the flash address of an MCUboot image header to read
	// the running version from (0 = none: use the last recorded version).
	VersionHeader uint32 `yaml:"version_header" json:"version_header,omitempty"`
	// MinVersion refuses packages older than this, in addition to the
	// minimum recorded for the device.
	MinVersion string `yaml:"min_version" json:"min_version,omitempty"`
	// Precondition is a shell command run before flashing; a non-zero exit
	// postpones the device (e.g. battery too low). OTAGW_DEVICE and
	// OTAGW_VERSION are set in its environment.
	Precondition string `yaml:"precondition" json:"precondition,omitempty"`
	// Reset overrides the bus's reset strategy (devices sharing a UART need
	// their own BOOT0/NRST lines).
	Reset string `yaml:"reset" json:"reset,omitempty"`
}

// Options is the "downstream:" configuration section.
type Options struct {
	Buses   []Bus    `yaml:"buses"`
	Devices []Device `yaml:"devices"`
	// Attempts per device for transient failures (line errors, timeouts).
	Attempts int `yaml:"attempts"`
	// Backoff before the second attempt; doubled each time up to MaxBackoff.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// PreconditionTimeout bounds a precondition hook.
	PreconditionTimeout time.Duration `yaml:"precondition_timeout"`
	STM32               STM32Options  `yaml:"stm32"`
	ESP32               ESP32Options  `yaml:"esp32"`
	Reset               reset.Options `yaml:"reset_timing"`
}

// DefaultOptions has no buses or devices and the protocol defaults.
func DefaultOptions() Options {
	return Options{
		Attempts:            4,
		Backoff:             2 * time.Second,
		MaxBackoff:          time.Minute,
		PreconditionTimeout: 30 * time.Second,
		STM32:               DefaultSTM32Options(),
		ESP32:               DefaultESP32Options(),
		Reset:               reset.DefaultOptions(),
	}
}

// Validate checks names, references and settings; errors name the entry.
func (o Options) Validate() error {
	var errs []error
	buses := map[string]bool{}
	for i, b := range o.Buses {
		at := fmt.Sprintf("downstream.buses[%d]", i)
		if b.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty", at))
		} else if buses[b.Name] {
			errs = append(errs, fmt.Errorf("%s.name: bus %q defined twice", at, b.Name))
		}
		buses[b.Name] = true
		if b.Protocol != "" && b.Protocol != ProtocolSTM32UART {
			errs = append(errs, fmt.Errorf("%s.protocol: %q: protocols are set per device now (protocol: %s); the bus takes transport: %s", at, b.Protocol, ProtocolSTM32, TransportUART))
		}
		switch t := b.TransportName(); t {
		case TransportUART:
			if b.Port == "" {
				errs = append(errs, fmt.Errorf("%s.port: empty", at))
			}
			if b.Interface != "" || b.Bitrate != 0 {
				errs = append(errs, fmt.Errorf("%s.interface/bitrate: only for transport: %s", at, TransportCAN))
			}
		case TransportSPI:
			if b.Interface != "" || b.Bitrate != 0 {
				errs = append(errs, fmt.Errorf("%s.interface/bitrate: only for transport: %s", at, TransportCAN))
			}
			if err := b.SPIConfig().Validate(); err != nil {
				for _, e := range unjoin(err) { // each names its field: "mode: ..."
					errs = append(errs, fmt.Errorf("%s.%w", at, e))
				}
			}
			if b.Port != "" {
				errs = append(errs, fmt.Errorf("%s.port: an spi bus names its spidev node in device:, not port:", at))
			}
		case TransportCAN:
			errs = append(errs, b.validateCAN(at)...)
		default:
			errs = append(errs, fmt.Errorf("%s.transport: %q: supported: %s, %s, %s", at, t, TransportUART, TransportCAN, TransportSPI))
		}
		switch b.Parity {
		case "", "even", "none", "odd":
		default:
			errs = append(errs, fmt.Errorf("%s.parity: %q: want even, none or odd", at, b.Parity))
		}
		if b.Baud < 0 {
			errs = append(errs, fmt.Errorf("%s.baud: negative", at))
		}
		if _, err := reset.Parse(b.Reset, nil, o.Reset); err != nil && !errors.Is(err, reset.ErrNoLines) {
			errs = append(errs, fmt.Errorf("%s.reset: %w", at, err))
		}
	}
	devs := map[string]bool{}
	for i, d := range o.Devices {
		at := fmt.Sprintf("downstream.devices[%d]", i)
		if d.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty", at))
		} else if devs[d.Name] {
			errs = append(errs, fmt.Errorf("%s.name: device %q defined twice", at, d.Name))
		}
		devs[d.Name] = true
		if !buses[d.Bus] {
			errs = append(errs, fmt.Errorf("%s.bus: no bus named %q", at, d.Bus))
		} else if b, _ := o.BusByName(d.Bus); b.TransportName() == TransportSPI && o.ProtocolOf(d) != ProtocolSTM32 {
			errs = append(errs, fmt.Errorf("%s.protocol: %s cannot run on spi bus %q (only %s speaks SPI)", at, o.ProtocolOf(d), d.Bus, ProtocolSTM32))
		}
		if p, err := Lookup(o.ProtocolOf(d)); err != nil {
			errs = append(errs, fmt.Errorf("%s.protocol: %w", at, err))
		} else if err := p.ValidateDevice(d); err != nil {
			for _, e := range unjoin(err) { // each names its field: "product_id: ..."
				errs = append(errs, fmt.Errorf("%s.%w", at, e))
			}
		}
		if d.Reset != "" {
			if _, err := reset.Parse(d.Reset, nil, o.Reset); err != nil && !errors.Is(err, reset.ErrNoLines) {
				errs = append(errs, fmt.Errorf("%s.reset: %w", at, err))
			}
		}
	}
	errs = append(errs, o.validateCANDevices()...)
	if o.Attempts < 1 {
		errs = append(errs, errors.New("downstream.attempts: must be at least 1"))
	}
	if o.Backoff < 0 || o.MaxBackoff < 0 || o.PreconditionTimeout < 0 {
		errs = append(errs, errors.New("downstream: negative duration"))
	}
	if err := o.STM32.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("downstream.stm32: %w", err))
	}
	if err := o.ESP32.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("downstream.esp32: %w", err))
	}
	return errors.Join(errs...)
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// BusByName finds a bus.
func (o Options) BusByName(name string) (Bus, bool) {
	for _, b := range o.Buses {
		if b.Name == name {
			return b, true
		}
	}
	return Bus{}, false
}

// ProtocolOf is the device's protocol name: its own, or stm32-rom (what
// the bus's deprecated stm32-uart means, and the default).
func (o Options) ProtocolOf(d Device) string {
	if d.Protocol != "" {
		return d.Protocol
	}
	return ProtocolSTM32 // the bus's deprecated stm32-uart, or nothing said
}

// Warnings lists deprecated settings in use, one line each.
func (o Options) Warnings() []string {
	var w []string
	for i, b := range o.Buses {
		if b.Protocol == ProtocolSTM32UART {
			w = append(w, fmt.Sprintf("downstream.buses[%d].protocol: %s is deprecated: write transport: %s on the bus and protocol: %s on its devices", i, ProtocolSTM32UART, TransportUART, ProtocolSTM32))
		}
	}
	return append(w, o.canWarnings()...)
}
