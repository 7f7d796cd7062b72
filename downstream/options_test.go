package downstream_test

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/otagw/otagw/downstream"
	_ "github.com/otagw/otagw/downstream/protocols" // stm32-rom
)

const sample = `
buses:
  - name: uart1
    protocol: stm32-uart
    port: /dev/ttyS1
    baud: 115200
    parity: even
    reset: gpio:gpiochip0:17:27
devices:
  - name: motor-ctrl
    bus: uart1
    family: F1
    product_id: 0x410
    version_header: 0x08000000
    min_version: 1.2.0
    precondition: test -e /run/battery-ok
attempts: 3
backoff: 500ms
stm32:
  byte_timeout: 200ms
  verify: readback
`

func TestOptionsYAML(t *testing.T) {
	o := downstream.DefaultOptions()
	dec := yaml.NewDecoder(strings.NewReader(sample))
	dec.KnownFields(true)
	if err := dec.Decode(&o); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	d := o.Devices[0]
	if d.ProductID != 0x410 || d.VersionHeader != 0x08000000 || o.Backoff != 500*time.Millisecond ||
		o.STM32.ByteTimeout != 200*time.Millisecond || o.STM32.WriteTimeout != time.Second || o.STM32.Verify != "readback" {
		t.Fatalf("decoded %+v", o)
	}
}
