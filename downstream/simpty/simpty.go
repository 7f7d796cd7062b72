// Package simpty serves a device simulator on a pseudo-terminal, so that
// host programs (otagw's own clients, stm32flash, esptool-js) open its
// slave side as they would a serial port.
//
//	p, err := simpty.Serve(ctx, sim.Serve) // p.Path is e.g. /dev/pts/3
//	defer p.Close()
package simpty

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// PTY is a simulator served on a pseudo-terminal.
type PTY struct {
	// Path is the slave device a host program opens (e.g. /dev/pts/3).
	Path   string
	master *os.File
	slave  *os.File
	done   chan error
}

// Serve opens a pseudo-terminal, puts it in raw mode and runs serve on its
// master side until ctx ends or Close is called. The slave stays open in
// this process so that host programs may open and close it repeatedly.
func Serve(ctx context.Context, serve func(context.Context, io.ReadWriter) error) (*PTY, error) {
	m, sl, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pseudo-terminal: %w", err)
	}
	if err := makeRaw(int(sl.Fd())); err != nil {
		m.Close()
		sl.Close()
		return nil, fmt.Errorf("raw mode on %s: %w", sl.Name(), err)
	}
	p := &PTY{Path: sl.Name(), master: m, slave: sl, done: make(chan error, 1)}
	go func() { p.done <- serve(ctx, m) }()
	return p, nil
}

// Close stops serving and closes the pseudo-terminal.
func (p *PTY) Close() error {
	p.master.Close()
	p.slave.Close()
	return <-p.done
}

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
