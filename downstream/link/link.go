// Package link is the byte connection a downstream protocol client talks
// over: a serial port, a pseudo-terminal, or an in-memory pipe to a
// simulator. Protocol code never opens devices itself; it takes a Link.
//
//	port, _ := uart.Open("/dev/ttyS1", uart.Options{Baud: 115200, Parity: uart.ParityEven})
//	var l link.Link = port
//	l.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
//	n, err := l.Read(buf)      // errors.Is(err, os.ErrDeadlineExceeded) on timeout
//	if lc, ok := l.(link.LineControl); ok { lc.SetDTR(true) }
package link

import (
	"io"
	"time"
)

// Link is a bidirectional byte stream with read deadlines. A read that hits
// the deadline returns an error that satisfies errors.Is(err, os.ErrDeadlineExceeded).
type Link interface {
	io.Reader
	io.Writer
	SetReadDeadline(t time.Time) error
}

// LineControl is implemented by links with modem control lines (a real
// UART). Pseudo-terminals have none (their ioctls fail with ENOTTY).
type LineControl interface {
	SetDTR(on bool) error
	SetRTS(on bool) error
}

// Baud is a serial line rate in bits per second.
type Baud int

// BaudSetter is implemented by links whose line rate can change while open
// (a UART; a protocol switches after telling the device, e.g. ESP32's
// CHANGE_BAUDRATE).
type BaudSetter interface {
	SetBaud(b Baud) error
}
