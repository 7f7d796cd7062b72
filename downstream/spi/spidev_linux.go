package spi

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/u-root/u-root/pkg/spidev"
)

// maxChunk is spidev's default buffer size (the module parameter bufsiz):
// longer transfers are split.
const maxChunk = 4096

type spidevConn struct {
	dev *spidev.SPI
	cfg Config
}

func openSpidev(c Config) (Conn, error) {
	dev, err := spidev.Open(c.Device)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("spi device %s: not present (is the spidev driver bound to this chip select? a device-tree overlay or `modprobe spidev` creates /dev/spidevB.C): %w", c.Device, err)
		}
		return nil, fmt.Errorf("spi device %s: %w", c.Device, err)
	}
	set := []struct {
		field string
		err   error
	}{
		{"mode", dev.SetMode(spidev.Mode(c.Mode))},
		{"bits_per_word", dev.SetBitsPerWord(c.BitsPerWord)},
		{"speed_hz", dev.SetSpeedHz(c.SpeedHz)},
	}
	for _, s := range set {
		if s.err != nil {
			dev.Close()
			return nil, fmt.Errorf("spi device %s: setting %s: %w", c.Device, s.field, s.err)
		}
	}
	return &spidevConn{dev: dev, cfg: c}, nil
}

func (s *spidevConn) Transfer(tx, rx []byte) error {
	if err := checkLen(tx, rx); err != nil {
		return err
	}
	for off := 0; off < len(tx); off += maxChunk {
		end := min(off+maxChunk, len(tx))
		if err := s.dev.Transfer([]spidev.Transfer{{Tx: tx[off:end], Rx: rx[off:end], SpeedHz: s.cfg.SpeedHz, BitsPerWord: s.cfg.BitsPerWord}}); err != nil {
			return fmt.Errorf("spi device %s: transfer of %d bytes: %w", s.cfg.Device, end-off, err)
		}
	}
	return nil
}

func (s *spidevConn) Config() Config { return s.cfg }
func (s *spidevConn) Close() error   { return s.dev.Close() }
