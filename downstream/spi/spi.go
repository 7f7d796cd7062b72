// Package spi is the SPI transport of the downstream fleet: a full-duplex
// Conn that an SPI bootloader client (STM32 AN4286) drives as bus master.
//
//	c, err := spi.Open(spi.Config{Device: "/dev/spidev0.0", Mode: 0, SpeedHz: 1_000_000, BitsPerWord: 8})
//	rx := make([]byte, len(tx))
//	err = c.Transfer(tx, rx) // tx clocked out on MOSI while rx is clocked in on MISO
//
// Three implementations sit behind Conn:
//
//   - spidev (Linux /dev/spidevB.C, through u-root's pkg/spidev): the real bus.
//   - Fake: an in-memory bus to a Slave (a simulator clocked byte by byte),
//     with fault injection (corrupted and dropped bytes, a slave stuck busy,
//     a disconnect) and an optional pacing model at the configured clock.
//   - the simulator link, Device "sim:PATH": transfers go over a Unix
//     socket to `otagw sim stm32 --spi PATH`. It exists only for tests and
//     the demo, because the daemon runs as its own process and this kind of
//     host has no spidev; a gateway never uses it.
package spi

import (
	"errors"
	"fmt"
	"strings"
)

// Defaults for a bus that leaves a setting out. The STM32 ROM bootloader's
// SPI slave runs in mode 0, 8-bit words, MSB first, up to 8 MHz (AN2606).
const (
	DefaultSpeedHz     = 1_000_000
	DefaultBitsPerWord = 8
	// SimPrefix marks a Device that is a simulator socket, not a spidev node.
	SimPrefix = "sim:"
)

var (
	// ErrDisconnected: the bus or the device behind it is gone.
	ErrDisconnected = errors.New("spi: device disconnected")
	// ErrLength: tx and rx of a transfer differ in length.
	ErrLength = errors.New("spi: tx and rx lengths differ")
)

// Config is an SPI bus as the configuration describes it.
type Config struct {
	Device      string // /dev/spidev0.0, or sim:/run/x.sock (tests and demo only)
	Mode        uint8  // SPI mode 0..3 (CPOL<<1 | CPHA)
	SpeedHz     uint32 // clock; 0 = DefaultSpeedHz
	BitsPerWord uint8  // 0 = 8
}

// WithDefaults fills the zero settings.
func (c Config) WithDefaults() Config {
	if c.SpeedHz == 0 {
		c.SpeedHz = DefaultSpeedHz
	}
	if c.BitsPerWord == 0 {
		c.BitsPerWord = DefaultBitsPerWord
	}
	return c
}

// Validate checks the settings; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if c.Device == "" {
		errs = append(errs, errors.New("device: empty (want /dev/spidevB.C)"))
	}
	if c.Mode > 3 {
		errs = append(errs, fmt.Errorf("mode: %d: SPI modes are 0 to 3", c.Mode))
	}
	if c.SpeedHz > 100_000_000 {
		errs = append(errs, fmt.Errorf("speed_hz: %d: above 100 MHz", c.SpeedHz))
	}
	if c.BitsPerWord != 0 && c.BitsPerWord != 8 {
		errs = append(errs, fmt.Errorf("bits_per_word: %d: the STM32 bootloader speaks 8-bit words", c.BitsPerWord))
	}
	return errors.Join(errs...)
}

// Conn is one SPI slave behind a chip select, driven as master.
type Conn interface {
	// Transfer clocks len(tx) bytes: tx out on MOSI, MISO into rx
	// (len(rx) == len(tx)); chip select stays asserted for the transfer.
	Transfer(tx, rx []byte) error
	// Config is the bus's settings as applied (mode, speed, word size).
	Config() Config
	Close() error
}

// Open opens the bus: a spidev node, or a simulator socket for a Device
// written "sim:PATH".
func Open(c Config) (Conn, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if p, ok := strings.CutPrefix(c.Device, SimPrefix); ok {
		return DialSim(p, c)
	}
	return openSpidev(c)
}

func checkLen(tx, rx []byte) error {
	if len(tx) != len(rx) {
		return fmt.Errorf("%w: %d and %d", ErrLength, len(tx), len(rx))
	}
	return nil
}
