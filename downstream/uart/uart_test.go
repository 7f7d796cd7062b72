package uart

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/link/linktest"
	"golang.org/x/sys/unix"
)

func TestConfigure(t *testing.T) {
	for _, tt := range []struct {
		o                  Options
		parenb, odd, cstop bool
	}{
		{Options{Baud: 115200, Parity: ParityEven, StopBits: 1}, true, false, false},
		{Options{Baud: 57600, Parity: ParityNone, StopBits: 2}, false, false, true},
		{Options{Baud: 9600, Parity: ParityOdd, StopBits: 1}, true, true, false},
	} {
		tio := &unix.Termios{Lflag: unix.ECHO | unix.ICANON, Cflag: unix.PARENB | unix.CS7, Oflag: unix.OPOST}
		if err := configure(tio, tt.o); err != nil {
			t.Fatal(err)
		}
		if got := tio.Cflag&unix.PARENB != 0; got != tt.parenb {
			t.Errorf("%+v: PARENB = %v", tt.o, got)
		}
		if got := tio.Cflag&unix.PARODD != 0; got != tt.odd {
			t.Errorf("%+v: PARODD = %v", tt.o, got)
		}
		if got := tio.Cflag&unix.CSTOPB != 0; got != tt.cstop {
			t.Errorf("%+v: CSTOPB = %v", tt.o, got)
		}
		if tio.Cflag&unix.CSIZE != unix.CS8 || tio.Lflag&(unix.ECHO|unix.ICANON) != 0 || tio.Oflag&unix.OPOST != 0 {
			t.Errorf("%+v: not raw 8-bit: %+v", tt.o, tio)
		}
		if want := bauds[tt.o.Baud]; tio.Cflag&unix.CBAUD != want || tio.Ospeed != want {
			t.Errorf("%+v: speed bits 0x%x", tt.o, tio.Cflag&unix.CBAUD)
		}
	}
	if err := configure(&unix.Termios{}, Options{Baud: 12345}); !errors.Is(err, ErrBaud) {
		t.Errorf("baud 12345 = %v", err)
	}
}

type fakeSys struct {
	set   *unix.Termios
	modem int
}

func (f *fakeSys) getTermios(int) (*termios, error)   { return &unix.Termios{}, nil }
func (f *fakeSys) setTermios(_ int, t *termios) error { f.set = t; return nil }
func (f *fakeSys) getModem(int) (int, error)          { return f.modem, nil }
func (f *fakeSys) setModem(_ int, b int) error        { f.modem = b; return nil }

// TestOpenThroughSeam opens a pseudo-terminal with the ioctls faked: the
// termios Open hands the kernel has 8E1, and DTR/RTS set the modem bits.
func TestOpenThroughSeam(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	fs := &fakeSys{}
	p, err := open(s.Name(), DefaultOptions(), fs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if fs.set == nil || fs.set.Cflag&unix.PARENB == 0 || fs.set.Iflag&unix.INPCK == 0 {
		t.Fatalf("8E1 not requested: %+v", fs.set)
	}
	var lc link.LineControl = p
	lc.SetDTR(true)
	lc.SetRTS(true)
	lc.SetDTR(false)
	if fs.modem != unix.TIOCM_RTS {
		t.Fatalf("modem bits = 0x%x, want RTS only", fs.modem)
	}
}

// TestPTY opens a real pseudo-terminal: data flows, read deadlines work,
// and the modem-line ioctls fail (ENOTTY) as on every pty.
func TestPTY(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	p, err := Open(s.Name(), Options{Baud: 115200, Parity: ParityNone, StopBits: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var l link.Link = p
	m.Write([]byte{0x79})
	buf := make([]byte, 4)
	l.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := l.Read(buf); n != 1 || buf[0] != 0x79 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	l.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := l.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline = %v", err)
	}
	if err := p.SetDTR(true); err == nil {
		t.Log("DTR accepted on a pseudo-terminal (kernel differs from the one measured)")
	}
}

func TestLinkSuite(t *testing.T) {
	linktest.Run(t, func(t *testing.T) (link.Link, io.ReadWriter) {
		m, s, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		p, err := Open(s.Name(), Options{Baud: 115200, Parity: ParityNone, StopBits: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(); s.Close(); m.Close() })
		return p, m
	})
}
