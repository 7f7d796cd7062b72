package stm32_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
	"github.com/otagw/otagw/downstream/uart"
)

// calmOptions are for runs without injected faults: a timeout there fails
// the test, so it must not come from a loaded machine.
func calmOptions() stm32.Options {
	o := fastOptions()
	o.ByteTimeout, o.WriteTimeout = 250*time.Millisecond, 500*time.Millisecond
	return o
}

// startCAN puts a simulator and a client on a new in-memory bus.
func startCAN(t *testing.T, chip *chips.Chip, so stm32sim.Options, bo can.BusOptions, o stm32.Options) (*stm32sim.Sim, *stm32.CANClient, *can.Bus) {
	t.Helper()
	bus := can.NewBus(bo)
	host, dev := bus.Attach(), bus.Attach()
	sim := stm32sim.New(chip, so)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sim.ServeCAN(ctx, dev); close(done) }()
	t.Cleanup(func() { cancel(); host.Close(); <-done })
	return sim, stm32.NewCAN(host, o), bus
}

// TestCANFlashByteExact flashes an image straddling pages into several
// chips over CAN and compares the simulator's whole flash dump with what
// it must be: the image inside, the old pattern outside the erased pages,
// erased bytes in the rest of them.
func TestCANFlashByteExact(t *testing.T) {
	for _, pid := range []uint16{0x410, 0x413, 0x418, 0x460} {
		chip, _ := chips.Lookup(pid)
		t.Run(fmt.Sprintf("%03x", pid), func(t *testing.T) {
			t.Parallel()
			sim, c, bus := startCAN(t, chip, stm32sim.Options{}, can.BusOptions{}, calmOptions())
			ctx := context.Background()
			fill := bytes.Repeat([]byte{0xA5}, int(chip.FlashSize()))
			sim.Program(chip.FlashStart, fill)
			p1 := chip.Pages()[1]
			addr := p1.Addr + p1.Size - 1000
			img := image(int64(pid), 3000+int(pid%7))
			if err := c.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if c.Info().PID != pid || c.Info().Has(stm32.CmdChecksum) || !c.Info().Has(stm32.CmdErase) {
				t.Fatalf("Init: %+v", c.Info())
			}
			f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: addr, Data: img}}, fastOptions())
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Run(ctx, nil); err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), fill...)
			ps := chip.Pages()
			for _, p := range f.Pages() {
				o := ps[p].Addr - chip.FlashStart
				copy(want[o:o+ps[p].Size], bytes.Repeat([]byte{0xFF}, int(ps[p].Size)))
			}
			copy(want[addr-chip.FlashStart:], img)
			if got := sim.Flash(); !bytes.Equal(got, want) {
				i := 0
				for i < len(got) && got[i] == want[i] {
					i++
				}
				t.Fatalf("flash dump differs from the expected one at offset 0x%x", i)
			}
			if err := c.Go(ctx, chip.FlashStart); err != nil {
				t.Fatal(err)
			}
			if run, at := sim.Running(); !run || at != chip.FlashStart {
				t.Errorf("after Go: running=%v at 0x%x", run, at)
			}
			st, bst := sim.Stats(), bus.Stats()
			if bst.ByID[stm32.CANWriteID] < int64(len(img)/8) || st.Commands[stm32.CmdChecksum] != 0 {
				t.Errorf("write data frames %d for %d bytes; stats %+v", bst.ByID[stm32.CANWriteID], len(img), st)
			}
		})
	}
}

// TestCANFaultInjection: the UART fault test's 32 seeds and thresholds
// over CAN: 5% NACKs, lost frames (corrupted ones fail the CRC, so no
// read-back arrives garbled), one disconnect mid-write, and frames dropped
// on the bus itself. A single run
// that reports success with a flash that differs from the image fails the
// test; so does a run that never ends.
func TestCANFaultInjection(t *testing.T) {
	runFaultSeeds(t, []uint16{0x410, 0x413, 0x460}, func(t *testing.T, seed int64, chip *chips.Chip) (*stm32sim.Sim, stm32.Bootloader, func(*testing.T)) {
		sim, c, bus := startCAN(t, chip, stm32sim.Options{Seed: seed, Faults: stm32sim.Faults{
			NACK: 0.05, CorruptPerKiB: 1, DisconnectAfter: 1200 + seed*97,
		}}, can.BusOptions{Seed: seed, Faults: can.BusFaults{Drop: 0.002}}, fastOptions())
		return sim, c, func(t *testing.T) {
			if st := sim.Stats(); st.Injected.NACKs == 0 || st.Injected.Disconnects != 1 || st.Injected.Corrupted == 0 || bus.Stats().Dropped == 0 {
				t.Errorf("faults not injected: %+v, bus %+v", st.Injected, bus.Stats())
			}
		}
	})
}

// TestCANTwoOnOneBus: two parts on one bus; only the one whose reset line
// put it in its bootloader answers, the other runs its application and
// stays untouched. Each is flashed in turn.
func TestCANTwoOnOneBus(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	bus := can.NewBus(can.BusOptions{})
	host := bus.Attach()
	defer host.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sims := []*stm32sim.Sim{stm32sim.New(chip, stm32sim.Options{}), stm32sim.New(chip, stm32sim.Options{})}
	for _, s := range sims {
		s.RunApplication()
		go s.ServeCAN(ctx, bus.Attach())
	}
	c := stm32.NewCAN(host, calmOptions())
	if err := c.Init(ctx); !errors.Is(err, stm32.ErrTimeout) {
		t.Fatalf("Init with both parts in their application = %v, want a timeout", err)
	}
	imgs := [][]byte{image(21, 5000), image(22, 7000)}
	for i, s := range sims {
		s.Reset() // BOOT0 high, NRST pulsed: only this one enters the bootloader
		if err := c.Init(ctx); err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: imgs[i]}}, fastOptions())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Run(ctx, nil); err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		if err := c.Go(ctx, chip.FlashStart); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range sims {
		if !bytes.Equal(s.Flash()[:len(imgs[i])], imgs[i]) {
			t.Errorf("device %d: flash differs", i)
		}
		if other := s.Flash()[len(imgs[i]) : len(imgs[i])+16]; !bytes.Equal(other, bytes.Repeat([]byte{0xFF}, 16)) {
			t.Errorf("device %d: written past its image", i)
		}
		if st := s.Stats(); st.Commands[stm32.CmdWriteMemory] != (len(imgs[i])+255)/256 {
			t.Errorf("device %d took %d writes, want %d (the other's traffic reached it?)", i, st.Commands[stm32.CmdWriteMemory], (len(imgs[i])+255)/256)
		}
	}
}

// TestCANSLCANPTY flashes through the slcan transport on a pseudo-terminal,
// the path the daemon's end-to-end tests and the demo use.
func TestCANSLCANPTY(t *testing.T) {
	chip, _ := chips.Lookup(0x410)
	sim := stm32sim.New(chip, stm32sim.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := stm32sim.ServeSLCANPTY(ctx, sim)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	port, err := uart.Open(p.Path, uart.Options{Baud: 115200, Parity: uart.ParityNone})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := can.OpenSLCAN(port, p.Path, 125000)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	o := calmOptions()
	c := stm32.NewCAN(conn, o)
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	img := image(5, 4000)
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart + 1024, Data: img}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sim.Flash()[1024:1024+len(img)], img) {
		t.Fatal("flash differs")
	}
}

func FuzzCANReply(f *testing.F) {
	f.Add([]byte{1, 0, 12, 1, 0, 0x22, 1, 0, 0x00, 1, 0, 0x01, 1, 0, 0x02, 1, 0, 0x11, 1, 0, 0x79})
	f.Add([]byte{2, 2, 0x04, 0x13, 1, 2, 0x79})
	f.Add([]byte{1, 1, 0x31, 2, 1, 0, 0, 1, 1, 0x79})
	f.Fuzz(func(t *testing.T, p []byte) {
		// p is a sequence of frames: length byte, identifier byte, data
		var fs []can.Frame
		for len(p) >= 2 {
			n := int(p[0] % 9)
			fr := can.Frame{ID: uint32(p[1]), Len: uint8(n)}
			p = p[2:]
			copy(fr.Data[:], p[:min(n, len(p))])
			p = p[min(n, len(p)):]
			fs = append(fs, fr)
		}
		if v, cmds, err := stm32.ParseCANGet(fs); err == nil {
			if len(fs) != len(cmds)+3 || v != fs[1].Data[0] || fs[len(fs)-1].Data[0] != stm32.ACK {
				t.Fatalf("ParseCANGet(%v) = %x % x", fs, v, cmds)
			}
		}
		if pid, err := stm32.ParseCANID(fs); err == nil && (len(fs) != 2 || pid != uint16(fs[0].Data[0])<<8|uint16(fs[0].Data[1])) {
			t.Fatalf("ParseCANID(%v) = %x", fs, pid)
		}
		if v, _, _, err := stm32.ParseCANVersion(fs); err == nil && (len(fs) != 3 || v != fs[0].Data[0]) {
			t.Fatalf("ParseCANVersion(%v) = %x", fs, v)
		}
		for _, fr := range fs {
			if err := stm32.ParseCANAck(fr); err == nil && (fr.Len != 1 || fr.Data[0] != stm32.ACK) {
				t.Fatalf("ParseCANAck(%v) accepted", fr)
			}
		}
	})
}

// TestCANPagesBeyond255: AN3154's Erase numbers pages in one byte; an
// image on page 300 of a 512-page part is refused with ErrNoCommand (the
// session makes it fatal) before anything is erased or written.
func TestCANPagesBeyond255(t *testing.T) {
	chip, _ := chips.Lookup(0x430)
	sim, c, _ := startCAN(t, chip, stm32sim.Options{}, can.BusOptions{}, calmOptions())
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.Pages()[300].Addr, Data: image(3, 512)}}, calmOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); !errors.Is(err, stm32.ErrNoCommand) || !strings.Contains(err.Error(), "page 300") {
		t.Fatalf("Run = %v; want ErrNoCommand naming page 300", err)
	}
	if st := sim.Stats(); st.Erases != 0 || st.Commands[stm32.CmdWriteMemory] != 0 {
		t.Fatalf("the part was touched: %+v", st)
	}
}
