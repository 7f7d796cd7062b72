package can_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/link/linktest"
)

// TestFrameBitsBounds: the unstuffed length is 47 bits plus 8 per data byte
// (standard) or 67 plus 8 per byte (extended); stuffing adds at most one
// bit per four after the first run, over the stuffed span only.
func TestFrameBitsBounds(t *testing.T) {
	for n := 0; n <= 8; n++ {
		for _, ext := range []bool{false, true} {
			for _, fill := range []byte{0x00, 0xFF, 0x55, 0x0F} {
				f := can.Frame{ID: 0x123, Len: uint8(n), Extended: ext}
				for i := range f.Data[:n] {
					f.Data[i] = fill
				}
				base, span := 47+8*n, 34+8*n
				if ext {
					base, span = 67+8*n, 54+8*n
				}
				got := can.FrameBits(f)
				if got < base || got > base+(span-1)/4 {
					t.Errorf("FrameBits(%v) = %d, want %d..%d", f, got, base, base+(span-1)/4)
				}
			}
		}
	}
}

// TestFrameBitsStuffing: eight 0x00 data bytes are 64 equal bits: a stuff
// bit after each run of five
// alone (a stuff bit starts the next run: one per five data bits, at
// least 12 for 64 bits); 0x55 bytes alternate and need none there.
func TestFrameBitsStuffing(t *testing.T) {
	zero := can.Frame{ID: 0x555, Len: 8}
	alt := can.Frame{ID: 0x555, Len: 8, Data: [8]byte{0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55}}
	if z := can.FrameBits(zero); z < 111+12 {
		t.Errorf("all-zero 8-byte frame: %d bits, want at least %d", z, 111+12)
	}
	if a := can.FrameBits(alt); a > 111+4 {
		t.Errorf("alternating 8-byte frame: %d bits, want at most %d (stuffing only in CRC/DLC)", a, 111+4)
	}
	if can.FrameBits(can.Frame{ID: 1, RTR: true, Len: 8}) != can.FrameBits(can.Frame{ID: 1, RTR: true, Len: 8, Data: [8]byte{1, 2, 3}}) {
		t.Error("a remote frame's bits depend on data it does not carry")
	}
}

// TestCRC15: the CRC-15/CAN check value over "123456789" is 0x059E.
func TestCRC15(t *testing.T) {
	if got := can.CRC15Bytes([]byte("123456789")); got != 0x059E {
		t.Fatalf("CRC-15 check = 0x%04X, want 0x059E", got)
	}
}

func TestMemBus(t *testing.T) {
	b := can.NewBus(can.BusOptions{})
	a, c, d := b.Attach(), b.Attach(), b.Attach()
	if err := a.Send(can.NewFrame(0x11, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	for _, x := range []can.Conn{c, d} {
		x.SetReadDeadline(time.Now().Add(time.Second))
		f, err := x.Recv()
		if err != nil || f.String() != "011#010203" {
			t.Fatalf("Recv = %v, %v", f, err)
		}
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := a.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("sender received its own frame or no timeout: %v", err)
	}
	b.Unplug(2)
	a.Send(can.NewFrame(0x12))
	d.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if f, err := d.Recv(); err == nil {
		t.Fatalf("unplugged node received %v", f)
	}
	if err := a.Send(can.Frame{ID: 0x800}); err == nil {
		t.Error("standard id 0x800 accepted")
	}
	c.Close()
	if _, err := c.Recv(); !errors.Is(err, can.ErrClosed) {
		t.Errorf("Recv after Close = %v", err)
	}
	if st := b.Stats(); st.Frames != 2 || st.ByID[0x11] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestMemBusFaults(t *testing.T) {
	b := can.NewBus(can.BusOptions{Seed: 1, Faults: can.BusFaults{Drop: 0.3, Corrupt: 0.3}})
	a, c := b.Attach(), b.Attach()
	sent := 1000
	for i := 0; i < sent; i++ {
		a.Send(can.NewFrame(0x04, 0, 0, 0, 0, 0, 0, 0, 0))
	}
	got, bad := 0, 0
	c.SetReadDeadline(time.Now())
	for {
		f, err := c.Recv()
		if err != nil {
			break
		}
		got++
		if f.Data != [8]byte{} {
			bad++
		}
	}
	st := b.Stats()
	if int64(got) != int64(sent)-st.Dropped || int64(bad) != st.Corrupted || st.Dropped < 200 || st.Corrupted < 150 {
		t.Fatalf("received %d (%d corrupted) of %d; stats %+v", got, bad, sent, st)
	}
}

func TestSLCANFormatParse(t *testing.T) {
	for _, tc := range []struct {
		f    can.Frame
		line string
	}{
		{can.NewFrame(0x79), "t0790"},
		{can.NewFrame(0x31, 0x08, 0, 0, 0, 0xFF), "t031508000000FF"},
		{can.Frame{ID: 0x1ABCDEF0, Extended: true, Len: 1, Data: [8]byte{0x42}}, "T1ABCDEF0142"},
		{can.Frame{ID: 0x123, RTR: true, Len: 2}, "r1232"},
		{can.Frame{ID: 0x123, RTR: true, Extended: true}, "R000001230"},
	} {
		if got := string(can.FormatSLCAN(tc.f)); got != tc.line+"\r" {
			t.Errorf("FormatSLCAN(%v) = %q, want %q", tc.f, got, tc.line)
		}
		f, err := can.ParseSLCAN([]byte(tc.line))
		if err != nil || f != tc.f {
			t.Errorf("ParseSLCAN(%q) = %v, %v", tc.line, f, err)
		}
		if f, err := can.ParseSLCAN([]byte(tc.line + "1A2B")); err != nil || f != tc.f {
			t.Errorf("with timestamp: ParseSLCAN = %v, %v", f, err)
		}
	}
	for _, bad := range []string{"", "x123", "t12", "t1239", "t80000", "t1231G0", "t12310", "t123200", "T2000000010", "t0790XYZW"} {
		if _, err := can.ParseSLCAN([]byte(bad)); !errors.Is(err, can.ErrSLCANLine) {
			t.Errorf("ParseSLCAN(%q) = %v, want ErrSLCANLine", bad, err)
		}
	}
}

// TestSLCANOverPipe: the host end opens the channel on the adapter end and
// frames cross both ways.
func TestSLCANOverPipe(t *testing.T) {
	host, dev := linktest.Pipe()
	defer host.Close()
	ad := can.NewSLCANAdapter(dev)
	defer ad.Close()
	c, err := can.OpenSLCAN(host, "pipe", 500000)
	if err != nil {
		t.Fatal(err)
	}
	if ad.Bitrate() != 500000 {
		t.Errorf("adapter at %d bit/s", ad.Bitrate())
	}
	c.Send(can.NewFrame(0x11, 8, 0, 0, 0, 0xFF))
	ad.SetReadDeadline(time.Now().Add(time.Second))
	if f, err := ad.Recv(); err != nil || f.String() != "011#08000000FF" {
		t.Fatalf("adapter got %v, %v", f, err)
	}
	ad.Send(can.NewFrame(0x11, 0x79))
	c.SetReadDeadline(time.Now().Add(time.Second))
	if f, err := c.Recv(); err != nil || f.String() != "011#79" {
		t.Fatalf("host got %v, %v", f, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle Recv = %v", err)
	}
	// garbage and a transmit confirmation are skipped
	dev.Write([]byte("zt12G\rt0021AB\r"))
	c.SetReadDeadline(time.Now().Add(time.Second))
	if f, err := c.Recv(); err != nil || f.String() != "002#AB" {
		t.Fatalf("after garbage: %v, %v", f, err)
	}
	host.Close()
	ad.SetReadDeadline(time.Time{})
	if _, err := ad.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("adapter Recv after host close = %v, want EOF", err)
	}
}

func TestSLCANRefused(t *testing.T) {
	host, dev := linktest.Pipe()
	defer host.Close()
	go func() { // an adapter that refuses everything
		buf := make([]byte, 64)
		for {
			n, err := dev.Read(buf)
			if err != nil {
				return
			}
			dev.Write(bytes.Repeat([]byte{'\a'}, bytes.Count(buf[:n], []byte{'\r'})))
		}
	}()
	_, err := can.OpenSLCAN(host, "/dev/ttyACM0", 125000)
	if err == nil || !strings.Contains(err.Error(), "/dev/ttyACM0") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("OpenSLCAN on a refusing adapter = %v", err)
	}
	if _, err := can.OpenSLCAN(host, "/dev/ttyACM0", 123456); err == nil || !strings.Contains(err.Error(), "123456") {
		t.Fatalf("odd bit rate: %v", err)
	}
}

func TestCheckInterfaceMissing(t *testing.T) {
	err := can.CheckInterface("nocan7")
	if !errors.Is(err, can.ErrInterface) || !strings.Contains(err.Error(), "nocan7") {
		t.Fatalf("CheckInterface(nocan7) = %v", err)
	}
	if _, err := can.Dial("nocan7"); !errors.Is(err, can.ErrInterface) {
		t.Fatalf("Dial(nocan7) = %v", err)
	}
	// lo exists and is up but is no CAN device: the socket bind fails and says where
	if _, err := can.Dial("lo"); err == nil || !strings.Contains(err.Error(), "lo") {
		t.Fatalf("Dial(lo) = %v", err)
	}
}

func TestMarshalFrame(t *testing.T) {
	for _, f := range []can.Frame{can.NewFrame(0x79), {ID: 0x1FFFFFFF, Extended: true, Len: 8, Data: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}, {ID: 0x7FF, RTR: true}} {
		b := can.MarshalFrame(f)
		g, err := can.UnmarshalFrame(b[:])
		if err != nil || g != f {
			t.Errorf("round trip %v -> %v, %v", f, g, err)
		}
	}
}

func FuzzParseSLCAN(f *testing.F) {
	for _, s := range []string{"t0790", "t031508000000FF", "T1ABCDEF0142", "r1232", "t0021AB12CD", "t12"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := can.ParseSLCAN(line)
		if err != nil {
			return
		}
		if fr.Validate() != nil {
			t.Fatalf("ParseSLCAN(%q) accepted an invalid frame %v", line, fr)
		}
		back := can.FormatSLCAN(fr)
		again, err := can.ParseSLCAN(back[:len(back)-1])
		if err != nil || again != fr {
			t.Fatalf("%q -> %v -> %q -> %v, %v", line, fr, back, again, err)
		}
	})
}

func FuzzUnmarshalFrame(f *testing.F) {
	b := can.MarshalFrame(can.NewFrame(0x31, 1, 2))
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, p []byte) {
		fr, err := can.UnmarshalFrame(p)
		if err == nil && fr.Validate() != nil {
			t.Fatalf("UnmarshalFrame accepted invalid %v", fr)
		}
	})
}
