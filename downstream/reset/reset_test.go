package reset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/otagw/otagw/downstream/link/linktest"
)

type rec struct{ log []string }

func (r *rec) SetBoot0(h bool) error { r.log = append(r.log, fmt.Sprintf("boot0=%v", h)); return nil }
func (r *rec) SetReset(a bool) error { r.log = append(r.log, fmt.Sprintf("reset=%v", a)); return nil }
func (r *rec) SetDTR(on bool) error  { return r.SetReset(on) }
func (r *rec) SetRTS(on bool) error  { return r.SetBoot0(on) }

func noSleep(o *Options, log *[]string) {
	o.Sleep = func(_ context.Context, d time.Duration) error { *log = append(*log, "sleep "+d.String()); return nil }
}

func TestSequence(t *testing.T) {
	r := &rec{}
	o := DefaultOptions()
	noSleep(&o, &r.log)
	s := Sequence{L: r, O: o}
	s.EnterBootloader(context.Background())
	s.Run(context.Background())
	want := "boot0=true reset=true sleep 50ms reset=false sleep 100ms boot0=false reset=true sleep 50ms reset=false sleep 100ms"
	if got := strings.Join(r.log, " "); got != want {
		t.Fatalf("sequence = %s\nwant %s", got, want)
	}
}

func TestParse(t *testing.T) {
	pipe, _ := linktest.Pipe()
	if s, err := Parse("manual", pipe, DefaultOptions()); err != nil || s != (Manual{}) {
		t.Errorf("manual = %v, %v", s, err)
	}
	if _, err := Parse("dtr-rts", pipe, DefaultOptions()); !errors.Is(err, ErrNoLines) {
		t.Errorf("dtr-rts on a pipe = %v; want ErrNoLines", err)
	}
	s, err := Parse("gpio:0:17:27", pipe, DefaultOptions())
	if g, ok := s.(*GPIO); err != nil || !ok || g.Chip != "/dev/gpiochip0" || g.Boot0 != 17 || g.NRST != 27 {
		t.Errorf("gpio = %+v, %v", s, err)
	}
	for _, bad := range []string{"gpio:0:1", "gpio:0:3:3", "jtag", "gpio::1:2"} {
		if _, err := Parse(bad, pipe, DefaultOptions()); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

type fakeGPIO struct {
	req  *gpioV2LineRequest
	sets []uint64
}

func (f *fakeGPIO) open(string) (int, error) { return 3, nil }
func (f *fakeGPIO) getLine(_ int, r *gpioV2LineRequest) error {
	f.req = r
	r.Fd = 9
	return nil
}
func (f *fakeGPIO) setValues(fd int, v *gpioV2LineValues) error {
	if fd != 9 || v.Mask != 3 {
		return fmt.Errorf("setValues fd %d mask %b", fd, v.Mask)
	}
	f.sets = append(f.sets, v.Bits)
	return nil
}
func (f *fakeGPIO) close(int) error { return nil }

func TestGPIO(t *testing.T) {
	if unsafe.Sizeof(gpioV2LineRequest{}) != 592 || unsafe.Sizeof(gpioV2LineValues{}) != 16 || unsafe.Sizeof(gpioV2LineConfig{}) != 272 {
		t.Fatalf("uAPI struct sizes %d/%d/%d, want 592/16/272", unsafe.Sizeof(gpioV2LineRequest{}), unsafe.Sizeof(gpioV2LineValues{}), unsafe.Sizeof(gpioV2LineConfig{}))
	}
	f := &fakeGPIO{}
	var log []string
	o := DefaultOptions()
	noSleep(&o, &log)
	g := &GPIO{Chip: "/dev/gpiochip0", Boot0: 17, NRST: 27, O: o, sys: f}
	if err := g.EnterBootloader(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.req.NumLines != 2 || f.req.Offsets[0] != 17 || f.req.Offsets[1] != 27 || f.req.Config.Flags != gpioV2LineFlagOutput {
		t.Fatalf("line request = %+v", f.req)
	}
	// BOOT0 high (bit0), NRST low (bit1 clear), NRST high
	if want := []uint64{0b11, 0b01, 0b11}; fmt.Sprint(f.sets) != fmt.Sprint(want) {
		t.Fatalf("levels = %b, want %b", f.sets, want)
	}
}

type modem struct{ log []string }

func (m *modem) SetDTR(on bool) error { m.log = append(m.log, fmt.Sprintf("D%d", b2i(on))); return nil }
func (m *modem) SetRTS(on bool) error { m.log = append(m.log, fmt.Sprintf("R%d", b2i(on))); return nil }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestESP32Classic: esptool-js writes the classic reset as
// D0|R1|W100|D1|R0|W50|D0.
func TestESP32Classic(t *testing.T) {
	m := &modem{}
	o := DefaultOptions()
	o.Sleep = func(_ context.Context, d time.Duration) error {
		if d > 0 {
			m.log = append(m.log, fmt.Sprintf("W%d", d.Milliseconds()))
		}
		return nil
	}
	e := ESP32Classic{LC: m, O: o}
	e.EnterBootloader(context.Background())
	if got, want := strings.Join(m.log, "|"), "D0|R1|W100|D1|R0|W50|D0|R0"; got != want {
		t.Fatalf("enter = %s; want %s", got, want)
	}
	m.log = nil
	e.Run(context.Background())
	if got, want := strings.Join(m.log, "|"), "D0|R1|W100|R0"; got != want {
		t.Fatalf("run = %s; want %s", got, want)
	}
	pipe, _ := linktest.Pipe()
	if _, err := Parse("esp32-classic", pipe, o); !errors.Is(err, ErrNoLines) {
		t.Fatalf("Parse(esp32-classic) on a pipe = %v; want ErrNoLines", err)
	}
}

// TestGPIOESP32: the strap is driven low for the ROM, high for the app.
func TestGPIOESP32(t *testing.T) {
	s, err := Parse("gpio-esp32:gpiochip1:4:5", nil, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	g := s.(*GPIO)
	if g.Chip != "/dev/gpiochip1" || g.Boot0 != 4 || g.NRST != 5 || !g.StrapLow {
		t.Fatalf("Parse = %+v", g)
	}
	f := &fakeGPIO{}
	var log []string
	noSleep(&g.O, &log)
	g.sys = f
	g.EnterBootloader(context.Background())
	g.Run(context.Background())
	// strap low (bit0 clear) with EN pulsed low, then strap high with EN pulsed
	if want := []uint64{0b10, 0b00, 0b10, 0b11, 0b01, 0b11}; fmt.Sprint(f.sets) != fmt.Sprint(want) {
		t.Fatalf("levels = %b, want %b", f.sets, want)
	}
}
