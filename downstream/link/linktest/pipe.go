// Package linktest has an in-memory link pair for tests and simulators.
//
//	host, dev := linktest.Pipe()
//	go sim.Serve(ctx, dev)
//	client := stm32.New(host, opts, nil)
//	defer host.Close()
//
// Each direction is an unbounded buffer: writes never block, reads honour
// the read deadline and return io.EOF once the pipe is closed and drained.
package linktest

import (
	"io"
	"os"
	"sync"
	"time"
)

type buffer struct {
	mu     sync.Mutex
	data   []byte
	closed bool
	wake   chan struct{}
}

func newBuffer() *buffer { return &buffer{wake: make(chan struct{})} }

func (b *buffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, io.ErrClosedPipe
	}
	b.data = append(b.data, p...)
	close(b.wake)
	b.wake = make(chan struct{})
	return len(p), nil
}

func (b *buffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.wake)
	}
}

// End is one side of a Pipe. It implements link.Link.
type End struct {
	rx, tx *buffer
	dmu    sync.Mutex
	dl     time.Time
}

// Pipe returns two connected ends.
func Pipe() (*End, *End) {
	a2b, b2a := newBuffer(), newBuffer()
	return &End{rx: b2a, tx: a2b}, &End{rx: a2b, tx: b2a}
}

// Write appends p to the peer's input; it never blocks.
func (e *End) Write(p []byte) (int, error) { return e.tx.write(p) }

// SetReadDeadline sets the deadline for Read; zero means none.
func (e *End) SetReadDeadline(t time.Time) error {
	e.dmu.Lock()
	e.dl = t
	e.dmu.Unlock()
	return nil
}

// Read reads what the peer wrote, waiting until data, close, or deadline.
func (e *End) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		e.rx.mu.Lock()
		if len(e.rx.data) > 0 {
			n := copy(p, e.rx.data)
			e.rx.data = e.rx.data[n:]
			e.rx.mu.Unlock()
			return n, nil
		}
		if e.rx.closed {
			e.rx.mu.Unlock()
			return 0, io.EOF
		}
		wake := e.rx.wake
		e.rx.mu.Unlock()
		e.dmu.Lock()
		dl := e.dl
		e.dmu.Unlock()
		if dl.IsZero() {
			<-wake
			continue
		}
		d := time.Until(dl)
		if d <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		select {
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Close closes both directions; the peer reads io.EOF after draining.
func (e *End) Close() error {
	e.rx.close()
	e.tx.close()
	return nil
}
