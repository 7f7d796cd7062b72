package spi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// The simulator link carries transfers over a Unix socket, for tests and
// the demo only (the daemon runs as its own process and the test host has
// no spidev). Each transfer is one request, a 4-byte big-endian length and
// that many MOSI bytes, answered by as many MISO bytes.

// MaxSimTransfer bounds one transfer on the simulator link.
const MaxSimTransfer = 1 << 16

type simConn struct {
	mu  sync.Mutex
	c   net.Conn
	cfg Config
	buf []byte
}

// DialSim connects to a simulator serving on the Unix socket path.
func DialSim(path string, cfg Config) (Conn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("spi simulator %s: %w", path, err)
	}
	return &simConn{c: c, cfg: cfg.WithDefaults()}, nil
}

func (s *simConn) Transfer(tx, rx []byte) error {
	if err := checkLen(tx, rx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := 0; off < len(tx); off += MaxSimTransfer {
		end := min(off+MaxSimTransfer, len(tx))
		s.buf = binary.BigEndian.AppendUint32(s.buf[:0], uint32(end-off))
		s.buf = append(s.buf, tx[off:end]...)
		if _, err := s.c.Write(s.buf); err != nil {
			return fmt.Errorf("spi simulator %s: %w: %w", s.cfg.Device, ErrDisconnected, err)
		}
		if _, err := io.ReadFull(s.c, rx[off:end]); err != nil {
			return fmt.Errorf("spi simulator %s: %w: %w", s.cfg.Device, ErrDisconnected, err)
		}
	}
	return nil
}

func (s *simConn) Config() Config { return s.cfg }
func (s *simConn) Close() error   { return s.c.Close() }

// ReadSimRequest reads one transfer request from r into buf (grown as
// needed) and returns the MOSI bytes.
func ReadSimRequest(r io.Reader, buf []byte) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > MaxSimTransfer {
		return nil, fmt.Errorf("spi simulator link: transfer of %d bytes (max %d)", n, MaxSimTransfer)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("spi simulator link: %d-byte transfer cut short: %w", n, err)
	}
	return buf, nil
}

// ServeSim listens on the Unix socket path and clocks every transfer of
// every connection through slave, one connection at a time, until ctx
// ends. A stale socket file at path is replaced.
func ServeSim(ctx context.Context, path string, slave Slave) (net.Listener, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("spi simulator %s: %w", path, err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		var mu sync.Mutex // one master at a time, as on one chip select
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				defer stop()
				var in, out []byte
				for {
					tx, err := ReadSimRequest(c, in)
					if err != nil {
						return
					}
					in = tx
					out = append(out[:0], tx...)
					mu.Lock()
					for i, b := range tx {
						out[i] = slave.Clock(b)
					}
					mu.Unlock()
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln, nil
}

// Link lets an SPI Conn travel where the fan-out engine passes a
// link.Link (a bus handle); byte-stream reads and writes are refused, an
// SPI protocol takes the Conn back with ConnOf.
type Link struct{ Conn }

var errNotStream = errors.New("is an SPI bus: a byte-stream (UART) protocol cannot run on it")

func (l Link) Read([]byte) (int, error) {
	return 0, fmt.Errorf("%s %w", l.Config().Device, errNotStream)
}

func (l Link) Write([]byte) (int, error) {
	return 0, fmt.Errorf("%s %w", l.Config().Device, errNotStream)
}

// SetReadDeadline does nothing: SPI transfers are clocked by the master.
func (Link) SetReadDeadline(time.Time) error { return nil }

// ConnOf returns the SPI Conn inside a bus handle opened for an SPI bus.
func ConnOf(l any) (Conn, bool) {
	switch x := l.(type) {
	case Link:
		return x.Conn, true
	case *Link:
		return x.Conn, true
	case Conn:
		return x, true
	}
	return nil, false
}
