//go:build !linux

package spi

import "fmt"

func openSpidev(c Config) (Conn, error) {
	return nil, fmt.Errorf("spi device %s: spidev needs Linux", c.Device)
}
