package stm32sim_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// canPeer drives the CAN face frame by frame.
type canPeer struct {
	t *testing.T
	c can.Conn
}

func (p canPeer) send(id uint32, data ...byte) {
	p.t.Helper()
	if err := p.c.Send(can.NewFrame(id, data...)); err != nil {
		p.t.Fatal(err)
	}
}

// expect reads the next frame and compares it in candump notation.
func (p canPeer) expect(want string) {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	f, err := p.c.Recv()
	if err != nil {
		p.t.Fatalf("want %s: %v", want, err)
	}
	if f.String() != want {
		p.t.Fatalf("got %s, want %s", f, want)
	}
}

func (p canPeer) silent() {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if f, err := p.c.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		p.t.Fatalf("expected silence, got %v %v", f, err)
	}
}

func serveCAN(t *testing.T, sim *stm32sim.Sim) canPeer {
	bus := can.NewBus(can.BusOptions{})
	host, dev := bus.Attach(), bus.Attach()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sim.ServeCAN(ctx, dev); close(done) }()
	t.Cleanup(func() { cancel(); host.Close(); <-done })
	return canPeer{t, host}
}

// TestCANFace walks the AN3154 exchanges frame by frame: silence before
// the init frame, Get, Get ID, Speed, a Write Memory ended early by the
// init frame, readout protection, and silence after Go and in the
// application.
func TestCANFace(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	sim := stm32sim.New(chip, stm32sim.Options{})
	p := serveCAN(t, sim)
	p.send(0x02)
	p.silent() // not initialised yet
	p.send(0x79)
	p.expect("079#79")
	p.send(0x02)
	p.expect("002#79")
	p.expect("002#0413")
	p.expect("002#79")
	p.send(0x00)
	p.expect("000#79")
	p.expect("000#0C") // 12 opcodes
	p.expect("000#31") // version 3.1
	for _, op := range []string{"00", "01", "02", "03", "11", "21", "31", "43", "63", "73", "82", "92"} {
		p.expect("000#" + op)
	}
	p.expect("000#79")
	p.send(0x44, 0xFF, 0xFF) // not listed on CAN
	p.expect("044#1F")
	p.send(0x03, 3) // Speed: 500 kbit/s
	p.expect("003#79")
	p.expect("003#79")
	if sim.CANBitrate() != 500000 {
		t.Errorf("bit rate %d after Speed 3", sim.CANBitrate())
	}
	p.send(0x03, 9)
	p.expect("003#1F")
	// a write interrupted by the init frame: NACK on 0x31, then the init's ACK
	p.send(0x31, 0x08, 0, 0, 0, 15)
	p.expect("031#79")
	p.send(0x04, 1, 2, 3, 4, 5, 6, 7, 8)
	p.expect("031#79")
	p.send(0x79)
	p.expect("031#1F")
	p.expect("079#79")
	if sim.Flash()[0] != 0xFF {
		t.Fatal("an interrupted write programmed flash")
	}
	p.send(0x11, 0x08, 0, 0, 0, 3) // read 4 bytes: still erased
	p.expect("011#79")
	p.expect("011#FFFFFFFF")
	p.expect("011#79")
	p.send(0x82) // readout protect: ACK, ACK, reset
	p.expect("082#79")
	p.expect("082#79")
	p.send(0x11, 0x08, 0, 0, 0, 3)
	p.silent() // reset: waits for the init frame
	p.send(0x79)
	p.expect("079#79")
	p.send(0x11, 0x08, 0, 0, 0, 3)
	p.expect("011#1F")
	p.send(0x21, 0x08, 0, 0, 0)
	p.expect("021#1F") // Go refused under readout protection
	p.send(0x92)
	p.expect("092#79")
	p.expect("092#79")
	p.send(0x79)
	p.expect("079#79")
	p.send(0x21, 0x08, 0, 0, 0)
	p.expect("021#79")
	p.send(0x79)
	p.silent() // the application runs and ignores the bus
	sim.Reset()
	p.send(0x79)
	p.expect("079#79")
	sim.RunApplication()
	p.send(0x79)
	p.silent()
	st := sim.Stats()
	if st.HostFrames == 0 || st.DeviceFrames == 0 || st.Resets < 3 {
		t.Errorf("counters: %+v", st)
	}
}
