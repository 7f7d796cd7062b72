package config

import (
	"strings"
	"testing"
	"time"
)

// TestDownstreamMixedFleet: transport per bus, protocol per device, the
// ESP32 section, and each protocol's own device checks with the path.
func TestDownstreamMixedFleet(t *testing.T) {
	t.Parallel()
	in := `downstream:
  buses:
    - {name: u1, transport: uart, port: /dev/ttyS1}
    - {name: u2, transport: uart, port: /dev/ttyUSB0, reset: esp32-classic}
  devices:
    - {name: motor, bus: u1, protocol: stm32-rom, family: F1, product_id: 0x410}
    - {name: radio, bus: u2, protocol: esp32-rom, chip: esp32s3}
  esp32: {baud: 921600, compress: false, timeout: 2s}
`
	c, err := Parse("x.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Downstream.ESP32
	if e.Baud != 921600 || e.Compress || e.Timeout != 2*time.Second || e.BlockSize != 1024 {
		t.Fatalf("esp32 = %+v", e)
	}
	bad := strings.Replace(strings.Replace(in, "chip: esp32s3", "chip: esp8266", 1), "product_id: 0x410", "product_id: 0", 1)
	_, err = Parse("x.yaml", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "downstream.devices[1].chip") || !strings.Contains(err.Error(), "downstream.devices[0].product_id") {
		t.Fatalf("Parse(bad) = %v; want errors naming devices[1].chip and devices[0].product_id", err)
	}
}
