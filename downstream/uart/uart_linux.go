package uart

import (
	"fmt"
	"os"

	"github.com/otagw/otagw/downstream/link"
	"golang.org/x/sys/unix"
)

type termios = unix.Termios

var bauds = map[link.Baud]uint32{
	1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600, 19200: unix.B19200,
	38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200, 230400: unix.B230400,
	460800: unix.B460800, 921600: unix.B921600, 1000000: unix.B1000000, 2000000: unix.B2000000,
}

func baudConst(b link.Baud) (uint32, bool) {
	c, ok := bauds[b]
	return c, ok
}

type linuxSys struct{}

func (linuxSys) getTermios(fd int) (*termios, error) { return unix.IoctlGetTermios(fd, unix.TCGETS) }
func (linuxSys) setTermios(fd int, t *termios) error { return unix.IoctlSetTermios(fd, unix.TCSETS, t) }
func (linuxSys) getModem(fd int) (int, error)        { return unix.IoctlGetInt(fd, unix.TIOCMGET) }
func (linuxSys) setModem(fd int, bits int) error {
	return unix.IoctlSetPointerInt(fd, unix.TIOCMSET, bits)
}

// configure turns t into a raw 8-bit line with o's baud, parity and stop bits.
func configure(t *termios, o Options) error {
	speed, ok := baudConst(o.Baud)
	if !ok {
		return fmt.Errorf("baud %d: %w", o.Baud, ErrBaud)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
	switch o.Parity {
	case ParityEven:
		t.Cflag |= unix.PARENB
		t.Iflag |= unix.INPCK
	case ParityOdd:
		t.Cflag |= unix.PARENB | unix.PARODD
		t.Iflag |= unix.INPCK
	}
	if o.StopBits == 2 {
		t.Cflag |= unix.CSTOPB
	}
	t.Ispeed, t.Ospeed = speed, speed
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return nil
}

// Open opens and configures the serial port at path.
func Open(path string, o Options) (*Port, error) {
	return open(path, o, linuxSys{})
}

func open(path string, o Options, s sys) (*Port, error) {
	if o.StopBits == 0 {
		o.StopBits = 1
	}
	if o.Parity == "" {
		o.Parity = ParityEven
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// O_NONBLOCK lets the runtime poller serve read deadlines.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	fd := int(f.Fd())
	// Fd() makes the file blocking; make it non-blocking again for the poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	t, err := s.getTermios(fd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: get termios: %w", path, err)
	}
	if err := configure(t, o); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := s.setTermios(fd, t); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: set termios: %w", path, err)
	}
	return &Port{f: f, sys: s}, nil
}

func (p *Port) setLine(bit int, on bool) error {
	fd := int(p.f.Fd())
	bits, err := p.sys.getModem(fd)
	if err != nil {
		return fmt.Errorf("%s: modem lines: %w", p.f.Name(), err)
	}
	if on {
		bits |= bit
	} else {
		bits &^= bit
	}
	if err := p.sys.setModem(fd, bits); err != nil {
		return fmt.Errorf("%s: modem lines: %w", p.f.Name(), err)
	}
	return nil
}

// SetDTR drives DTR (asserted = true).
func (p *Port) SetDTR(on bool) error { return p.setLine(unix.TIOCM_DTR, on) }

// SetRTS drives RTS (asserted = true).
func (p *Port) SetRTS(on bool) error { return p.setLine(unix.TIOCM_RTS, on) }

// SetBaud changes the line rate of the open port, keeping the other
// settings. It keeps the descriptor non-blocking (no Fd()), so read
// deadlines still work.
func (p *Port) SetBaud(b link.Baud) error {
	speed, ok := baudConst(b)
	if !ok {
		return fmt.Errorf("%s: baud %d: %w", p.f.Name(), b, ErrBaud)
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", p.f.Name(), err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		t, err := p.sys.getTermios(int(fd))
		if err != nil {
			ierr = fmt.Errorf("get termios: %w", err)
			return
		}
		t.Cflag &^= unix.CBAUD
		t.Cflag |= speed
		t.Ispeed, t.Ospeed = speed, speed
		if err := p.sys.setTermios(int(fd), t); err != nil {
			ierr = fmt.Errorf("set termios: %w", err)
		}
	}); err != nil {
		return fmt.Errorf("%s: %w", p.f.Name(), err)
	}
	if ierr != nil {
		return fmt.Errorf("%s: %w", p.f.Name(), ierr)
	}
	return nil
}
