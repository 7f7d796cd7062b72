package qemu_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
	"github.com/otagw/otagw/tests/qemu/qemutest"
)

// TestVCANInGuest runs TestGuestVCAN in the QEMU guest: Debian's kernel
// with the vcan and can_raw modules, iproute2's ip to create vcan0 and
// can-utils' candump to record the bus (both copied from this machine with
// their libraries; scripts/test-deps.sh installs can-utils).
func TestVCANInGuest(t *testing.T) {
	files, err := qemutest.Binaries("ip", "candump")
	if err != nil {
		t.Fatalf("%v (scripts/test-deps.sh installs can-utils and iproute2)", err)
	}
	qemutest.Run(t, qemutest.Config{
		TestPkg: "./tests/qemu",
		TestRun: "^TestGuestVCAN$",
		Modules: []string{"vcan", "can_raw"},
		Files:   files,
	})
}

// TestGuestVCAN is the guest half of TestVCANInGuest (it skips elsewhere):
// it creates vcan0, starts candump -L on it, flashes the STM32 simulator
// served on one SocketCAN socket through the AN3154 client on another,
// and checks the recorded frames against AN3154's framing.
func TestGuestVCAN(t *testing.T) {
	if os.Getenv(qemutest.GuestEnv) != "1" {
		t.Skip("vcan needs the QEMU guest (this kernel has no CAN); TestVCANInGuest runs this test there")
	}
	for _, args := range [][]string{
		{"link", "add", "dev", "vcan0", "type", "vcan"},
		{"link", "set", "vcan0", "up"},
		{"link", "add", "dev", "vcan1", "type", "vcan"}, // left down
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := can.Dial("vcan1"); !errors.Is(err, can.ErrInterface) || !strings.Contains(err.Error(), "vcan1 is down") {
		t.Errorf("Dial on a down interface = %v; want it to say vcan1 is down", err)
	}
	if _, err := can.Dial("vcan9"); !errors.Is(err, can.ErrInterface) || !strings.Contains(err.Error(), "vcan9") {
		t.Errorf("Dial on a missing interface = %v", err)
	}

	logPath := "/tmp/candump.log"
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// -T: candump ends by itself after 10 s without a frame, which it can
	// only see once it has drained its socket's queue: a SIGTERM while it
	// still lags behind the exchange (TCG, a loaded host) cut the record
	// short.
	dump := exec.Command("candump", "-L", "-T", "10000", "vcan0")
	dump.Stdout, dump.Stderr = logf, os.Stderr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitReceiver("vcan0", 10*time.Second); err != nil {
		dump.Process.Kill()
		t.Fatal(err)
	}

	chip, _ := chips.Lookup(0x413)
	sim := stm32sim.New(chip, stm32sim.Options{})
	devConn, err := can.Dial("vcan0")
	if err != nil {
		t.Fatal(err)
	}
	hostConn, err := can.Dial("vcan0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- sim.ServeCAN(ctx, devConn) }()

	o := stm32.DefaultOptions()
	c := stm32.NewCAN(hostConn, o)
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 1500)
	rand.New(rand.NewSource(7)).Read(img)
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Go(ctx, chip.FlashStart); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Fatal("flash differs from the image")
	}
	hostConn.Close()
	cancel()
	<-served

	dumped := make(chan error, 1)
	go func() { dumped <- dump.Wait() }()
	select {
	case err := <-dumped:
		if err != nil {
			t.Logf("candump: %v", err)
		}
	case <-time.After(time.Minute):
		dump.Process.Signal(syscall.SIGTERM)
		t.Errorf("candump -T 10000 did not end within a minute of the last frame; record may be short: %v", <-dumped)
	}
	logf.Close()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := parseCandump(raw)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := checkAN3154(frames)
	if err != nil {
		t.Fatalf("candump -L record breaks AN3154 framing: %v\n%s", err, raw)
	}
	for _, op := range []uint32{0x79, 0x00, 0x01, 0x02, 0x43, 0x31, 0x11, 0x21} {
		if seen[op] == 0 {
			t.Errorf("no exchange with identifier 0x%02x recorded", op)
		}
	}
	if want := (len(img) + 255) / 256; seen[0x31] != want {
		t.Errorf("%d Write Memory exchanges recorded, want %d", seen[0x31], want)
	}
	t.Logf("candump recorded %d frames, exchanges by identifier %v", len(frames), seen)
}

// waitReceiver polls /proc/net/can/rcvlist_all until a socket (candump's)
// has a receive filter on ifname: a line that starts with the interface
// name (an interface without receivers shows as "(vcan0: no entry)").
func waitReceiver(ifname string, limit time.Duration) error {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		b, err := os.ReadFile("/proc/net/can/rcvlist_all")
		if err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) > 0 && f[0] == ifname {
					return nil
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no CAN receiver on %s after %v (candump not running?)", ifname, limit)
}

// parseCandump reads candump -L lines: "(1700000000.123456) vcan0 011#0800000000".
func parseCandump(raw []byte) ([]can.Frame, error) {
	var out []can.Frame
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 || !strings.HasPrefix(fs[0], "(") {
			return nil, fmt.Errorf("candump line %q: want (time) iface id#data", sc.Text())
		}
		id, data, ok := strings.Cut(fs[2], "#")
		if !ok || (len(id) != 3 && len(id) != 8) || len(data)%2 != 0 || len(data) > 16 {
			return nil, fmt.Errorf("candump frame %q", fs[2])
		}
		v, err := strconv.ParseUint(id, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("candump frame %q: %v", fs[2], err)
		}
		f := can.Frame{ID: uint32(v), Extended: len(id) == 8, Len: uint8(len(data) / 2)}
		for i := 0; i < len(data)/2; i++ {
			b, err := strconv.ParseUint(data[2*i:2*i+2], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("candump frame %q: %v", fs[2], err)
			}
			f.Data[i] = byte(b)
		}
		out = append(out, f)
	}
	return out, sc.Err()
}

// checkAN3154 walks a recorded exchange and checks every frame against
// AN3154: command frames with the opcode as identifier and the command's
// length, a one-byte ACK (0x79) on the same identifier after each command,
// the reply frames each command has, an ACK after every Write Memory data
// frame (identifier 0x04) and every Erase page-list frame, and the final
// ACKs. It counts the exchanges per identifier.
func checkAN3154(fs []can.Frame) (map[uint32]int, error) {
	seen := map[uint32]int{}
	i := 0
	next := func() (can.Frame, error) {
		if i >= len(fs) {
			return can.Frame{}, fmt.Errorf("record ends inside an exchange (after frame %d)", i)
		}
		i++
		return fs[i-1], nil
	}
	ack := func(id uint32, what string) error {
		f, err := next()
		if err != nil {
			return err
		}
		if f.ID != id || f.Extended || f.Len != 1 || f.Data[0] != 0x79 {
			return fmt.Errorf("frame %d %v: want ACK %03X#79 %s", i, f, id, what)
		}
		return nil
	}
	one := func(id uint32, n uint8, what string) (can.Frame, error) {
		f, err := next()
		if err != nil {
			return f, err
		}
		if f.ID != id || f.Extended || f.Len != n {
			return f, fmt.Errorf("frame %d %v: want %s on %03X with %d bytes", i, f, what, id, n)
		}
		return f, nil
	}
	for i < len(fs) {
		cmd := fs[i]
		i++
		if cmd.Extended || cmd.RTR {
			return seen, fmt.Errorf("frame %d %v: AN3154 uses standard data frames only", i, cmd)
		}
		wantLen := map[uint32]uint8{0x79: 0, 0x00: 0, 0x01: 0, 0x02: 0, 0x11: 5, 0x21: 4, 0x31: 5, 0x43: 1}
		n, known := wantLen[cmd.ID]
		if !known || cmd.Len != n {
			return seen, fmt.Errorf("frame %d %v: not an AN3154 command frame (identifier and length)", i, cmd)
		}
		if err := ack(cmd.ID, "after the command"); err != nil {
			return seen, err
		}
		switch cmd.ID {
		case 0x00:
			cnt, err := one(0x00, 1, "Get count")
			if err != nil {
				return seen, err
			}
			for k := 0; k <= int(cnt.Data[0]); k++ { // version + N opcodes
				if _, err := one(0x00, 1, "Get version/opcode"); err != nil {
					return seen, err
				}
			}
			if err := ack(0x00, "ending Get"); err != nil {
				return seen, err
			}
		case 0x01:
			if _, err := one(0x01, 1, "version"); err != nil {
				return seen, err
			}
			if _, err := one(0x01, 2, "option bytes"); err != nil {
				return seen, err
			}
			if err := ack(0x01, "ending Get Version"); err != nil {
				return seen, err
			}
		case 0x02:
			if _, err := one(0x02, 2, "product ID"); err != nil {
				return seen, err
			}
			if err := ack(0x02, "ending Get ID"); err != nil {
				return seen, err
			}
		case 0x11:
			for left := int(cmd.Data[4]) + 1; left > 0; {
				f, err := one(0x11, uint8(min(left, 8)), "read data")
				if err != nil {
					return seen, err
				}
				left -= int(f.Len)
			}
			if err := ack(0x11, "ending Read Memory"); err != nil {
				return seen, err
			}
		case 0x31:
			for left := int(cmd.Data[4]) + 1; left > 0; {
				f, err := one(0x04, uint8(min(left, 8)), "write data")
				if err != nil {
					return seen, err
				}
				left -= int(f.Len)
				if err := ack(0x31, "after a data frame"); err != nil {
					return seen, err
				}
			}
			if err := ack(0x31, "after programming"); err != nil {
				return seen, err
			}
		case 0x43:
			if cmd.Data[0] != 0xFF {
				for left := int(cmd.Data[0]) + 1; left > 0; {
					f, err := one(0x43, uint8(min(left, 8)), "page numbers")
					if err != nil {
						return seen, err
					}
					left -= int(f.Len)
					if err := ack(0x43, "after page numbers"); err != nil {
						return seen, err
					}
				}
			}
			if err := ack(0x43, "after erasing"); err != nil {
				return seen, err
			}
		}
		seen[cmd.ID]++
	}
	return seen, nil
}

// TestCheckAN3154 makes sure the checker refuses what it must: it passes
// a correct exchange and fails a missing ACK, a wrong length and a data
// frame on the wrong identifier.
func TestCheckAN3154(t *testing.T) {
	ok := []can.Frame{
		can.NewFrame(0x79), can.NewFrame(0x79, 0x79),
		can.NewFrame(0x02), can.NewFrame(0x02, 0x79), can.NewFrame(0x02, 0x04, 0x13), can.NewFrame(0x02, 0x79),
		can.NewFrame(0x31, 8, 0, 0, 0, 7), can.NewFrame(0x31, 0x79), can.NewFrame(0x04, 1, 2, 3, 4, 5, 6, 7, 8), can.NewFrame(0x31, 0x79), can.NewFrame(0x31, 0x79),
	}
	if seen, err := checkAN3154(ok); err != nil || seen[0x31] != 1 {
		t.Fatalf("good exchange: %v %v", seen, err)
	}
	for name, bad := range map[string][]can.Frame{
		"no ack":     {can.NewFrame(0x79), can.NewFrame(0x02)},
		"nack":       {can.NewFrame(0x79), can.NewFrame(0x79, 0x1F)},
		"long id":    {can.NewFrame(0x02), can.NewFrame(0x02, 0x79), can.NewFrame(0x02, 0x04, 0x13, 0), can.NewFrame(0x02, 0x79)},
		"data on 31": {can.NewFrame(0x31, 8, 0, 0, 0, 7), can.NewFrame(0x31, 0x79), can.NewFrame(0x31, 1, 2, 3, 4, 5, 6, 7, 8)},
		"truncated":  ok[:len(ok)-1],
	} {
		if _, err := checkAN3154(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	fs, err := parseCandump([]byte("(1700000000.000001) vcan0 079#\n(1700000000.000002) vcan0 079#79\n"))
	if err != nil || len(fs) != 2 || fs[1].String() != "079#79" {
		t.Fatalf("parseCandump: %v %v", fs, err)
	}
}
