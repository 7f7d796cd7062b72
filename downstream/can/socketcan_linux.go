package can

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Flags in struct can_frame's can_id (linux/can.h).
const (
	effFlag = 0x80000000
	rtrFlag = 0x40000000
	errFlag = 0x20000000
)

// sizeof(struct can_frame): can_id (4), len, pad, res0, len8_dlc, data[8].
const frameSize = 16

// ErrInterface: the CAN interface is missing or not up.
var ErrInterface = errors.New("can interface not usable")

// CheckInterface reports, in words an operator can act on, why name cannot
// carry CAN frames: it does not exist or is down. Bringing it up is the
// OS's job (ip link, systemd-networkd); otagw never configures links.
func CheckInterface(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("%w: %s: no such network interface (load the driver, e.g. modprobe vcan && ip link add %s type vcan, or plug the adapter): %v", ErrInterface, name, name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return fmt.Errorf("%w: %s is down (bring it up: ip link set %s up type can bitrate 125000, or a systemd-networkd .network file with [CAN] BitRate=)", ErrInterface, name, name)
	}
	return nil
}

// socketConn is a CAN_RAW socket bound to one interface.
type socketConn struct {
	name string
	f    *os.File
}

// Dial opens a CAN_RAW socket on interface name (can0, vcan0). The socket
// does not receive its own frames (CAN_RAW_RECV_OWN_MSGS is off by
// default) and sees every frame on the bus.
func Dial(name string) (Conn, error) {
	if err := CheckInterface(name); err != nil {
		return nil, err
	}
	ifi, _ := net.InterfaceByName(name)
	fd, err := unix.Socket(unix.AF_CAN, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.CAN_RAW)
	if err != nil {
		return nil, fmt.Errorf("can %s: socket(AF_CAN): %w (kernel without CAN support? modprobe can-raw)", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrCAN{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("can %s: bind: %w", name, err)
	}
	// A non-blocking descriptor joins Go's poller: deadlines work.
	return &socketConn{name: name, f: os.NewFile(uintptr(fd), "can:"+name)}, nil
}

// MarshalFrame is f as a Linux struct can_frame.
func MarshalFrame(f Frame) [frameSize]byte {
	var b [frameSize]byte
	id := f.ID
	if f.Extended {
		id |= effFlag
	}
	if f.RTR {
		id |= rtrFlag
	}
	binary.NativeEndian.PutUint32(b[0:], id)
	b[4] = f.Len
	copy(b[8:], f.Data[:])
	return b
}

// UnmarshalFrame parses a Linux struct can_frame; error frames are refused.
func UnmarshalFrame(b []byte) (Frame, error) {
	if len(b) < frameSize {
		return Frame{}, fmt.Errorf("can_frame of %d bytes, want %d", len(b), frameSize)
	}
	id := binary.NativeEndian.Uint32(b)
	if id&errFlag != 0 {
		return Frame{}, fmt.Errorf("can error frame, class 0x%x", id&MaxExtendedID)
	}
	f := Frame{Len: b[4], Extended: id&effFlag != 0, RTR: id&rtrFlag != 0}
	if f.Extended {
		f.ID = id & MaxExtendedID
	} else {
		f.ID = id & MaxStandardID
	}
	if f.Len > 8 {
		return Frame{}, fmt.Errorf("can_frame length %d over 8", f.Len)
	}
	copy(f.Data[:], b[8:16])
	return f, nil
}

func (c *socketConn) Send(f Frame) error {
	if err := f.Validate(); err != nil {
		return err
	}
	b := MarshalFrame(f)
	// A full transmit queue (txqueuelen, often 10 on can0) answers ENOBUFS,
	// not EAGAIN, so the poller does not wait for it: wait here, for at
	// most about a second (a bus without a listener never drains).
	for wait := time.Duration(0); ; wait += time.Millisecond {
		_, err := c.f.Write(b[:])
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ENOBUFS) && wait < time.Second:
			time.Sleep(time.Millisecond)
			continue
		case errors.Is(err, unix.ENETDOWN):
			return fmt.Errorf("can %s: %w: interface went down", c.name, ErrInterface)
		case errors.Is(err, unix.ENOBUFS):
			return fmt.Errorf("can %s: send: transmit queue full for 1s (no other node acknowledging frames?): %w", c.name, err)
		}
		return fmt.Errorf("can %s: send: %w", c.name, err)
	}
}

func (c *socketConn) Recv() (Frame, error) {
	var b [frameSize]byte
	for {
		n, err := c.f.Read(b[:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Frame{}, err
			}
			if errors.Is(err, os.ErrClosed) {
				return Frame{}, ErrClosed
			}
			return Frame{}, fmt.Errorf("can %s: recv: %w", c.name, err)
		}
		f, err := UnmarshalFrame(b[:n])
		if err != nil {
			continue // error frames are only delivered when asked for; skip anyway
		}
		return f, nil
	}
}

func (c *socketConn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

func (c *socketConn) Close() error { return c.f.Close() }
