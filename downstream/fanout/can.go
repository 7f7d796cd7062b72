package fanout

import (
	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/uart"
)

// openCAN opens a CAN bus: SocketCAN on its interface, or an slcan adapter
// on its serial port (8N1, the bus's baud, the bit rate set on the
// adapter). The Conn travels as a link.Link (can.AsLink); protocols that
// speak CAN take it back with can.FromLink.
func openCAN(b downstream.Bus) (link.Link, error) {
	if b.Interface != "" {
		c, err := can.Dial(b.Interface)
		if err != nil {
			return nil, err
		}
		return can.AsLink(c, b.Name), nil
	}
	o := uart.DefaultOptions()
	o.Parity = uart.ParityNone // slcan is 8N1 whatever the devices' protocol wants
	if b.Baud > 0 {
		o.Baud = link.Baud(b.Baud)
	}
	p, err := uart.Open(b.Port, o)
	if err != nil {
		return nil, err
	}
	c, err := can.OpenSLCAN(p, b.Port, b.CANBitrate())
	if err != nil {
		p.Close()
		return nil, err
	}
	return can.AsLink(c, b.Name), nil
}
