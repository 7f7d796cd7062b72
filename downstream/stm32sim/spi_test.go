package stm32sim

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/downstream/reset"
	"github.com/otagw/otagw/downstream/spi"
	"github.com/otagw/otagw/downstream/stm32/chips"
)

// clock runs host bytes through a face and returns what came back.
func clock(f *SPIFace, mosi ...byte) []byte {
	out := make([]byte, len(mosi))
	for i, b := range mosi {
		out[i] = f.Clock(b)
	}
	return out
}

// TestSPIWireTrace checks the face against AN4286's drawings, byte by byte:
// sync answered by filler then the ACK procedure (MOSI 00 00 79, MISO
// xx 79 xx); Get ID's data frame after one dummy byte; an invalid command
// NACKed; Get Checksum not offered.
func TestSPIWireTrace(t *testing.T) {
	chip, _ := chips.Lookup(0x460)
	sim := New(chip, Options{})
	f, err := sim.SPI()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	steps := []struct {
		name       string
		mosi, want []byte
	}{
		{"sync", []byte{0x5A}, []byte{0xA5}},
		{"ack procedure", []byte{0x00, 0x00, 0x79}, []byte{0xA5, 0x79, 0xA5}},
		{"get id frame", []byte{0x5A, 0x02, 0xFD}, []byte{0xA5, 0xA5, 0xA5}},
		{"get id ack", []byte{0x00, 0x00, 0x79}, []byte{0xA5, 0x79, 0xA5}},
		{"get id data", []byte{0, 0, 0, 0}, []byte{0xA5, 0x01, 0x04, 0x60}},
		{"get id closing ack", []byte{0x00, 0x79}, []byte{0x79, 0xA5}},
		{"invalid pair", []byte{0x5A, 0x02, 0x02, 0x00, 0x00, 0x79}, []byte{0xA5, 0xA5, 0xA5, 0xA5, 0x1F, 0xA5}},
		{"checksum not offered", []byte{0x5A, 0xA1, 0x5E, 0x00, 0x00, 0x79}, []byte{0xA5, 0xA5, 0xA5, 0xA5, 0x1F, 0xA5}},
	}
	for _, s := range steps {
		if got := clock(f, s.mosi...); !bytes.Equal(got, s.want) {
			t.Fatalf("%s: MOSI % x: MISO % x, want % x", s.name, s.mosi, got, s.want)
		}
	}
	if st := sim.Stats(); st.Commands[0x02] != 1 || st.IdleClocks == 0 {
		t.Fatalf("stats %+v", st)
	}
	// a reset from outside: the part wants the sync byte again
	sim.Reset()
	if got := clock(f, 0x5A, 0x02, 0xFD, 0x00, 0x00); !bytes.Equal(got, []byte{0xA5, 0xA5, 0x79, 0xA5, 0xA5}) {
		t.Fatalf("after reset: % x (want the sync ACK, the frame ignored until the host's 0x79)", got)
	}
}

func TestSPIFaceNeedsAnSPIBootloader(t *testing.T) {
	f1, _ := chips.Lookup(0x410)
	if _, err := New(f1, Options{}).SPI(); err == nil || !strings.Contains(err.Error(), "SPI") {
		t.Fatalf("F1 over SPI: %v", err)
	}
}

func TestSPISocket(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	sim := New(chip, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "stm32.sock")
	if _, err := ServeSPISocket(ctx, sim, sock); err != nil {
		t.Fatal(err)
	}
	c, err := spi.Open(spi.Config{Device: "sim:" + sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rx := make([]byte, 4)
	if err := c.Transfer([]byte{0x5A, 0x00, 0x00, 0x79}, rx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rx, []byte{0xA5, 0xA5, 0x79, 0xA5}) {
		t.Fatalf("sync over the socket: % x", rx)
	}
}

// TestResetLines: reset strategy sim:SOCKET:PART drives one part of a
// simulator process, and only that part.
func TestResetLines(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	a, b := New(chip, Options{}), New(chip, Options{})
	a.RunApplication()
	b.RunApplication()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "lines.sock")
	if _, err := ServeResetLines(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	rs, err := reset.Parse("sim:"+sock+":1", nil, reset.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.EnterBootloader(ctx); err != nil {
		t.Fatal(err)
	}
	if runA, _ := a.Running(); !runA {
		t.Fatal("part 0 left its application")
	}
	if runB, _ := b.Running(); runB {
		t.Fatal("part 1 is not in its bootloader")
	}
	if err := rs.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if runB, _ := b.Running(); !runB {
		t.Fatal("part 1 did not start its application")
	}
	bad, _ := reset.Parse("sim:"+sock+":7", nil, reset.DefaultOptions())
	if err := bad.EnterBootloader(ctx); err == nil || !strings.Contains(err.Error(), "no part") {
		t.Fatalf("part 7: %v", err)
	}
	if _, err := reset.Parse("sim:nosocket", nil, reset.DefaultOptions()); err == nil {
		t.Fatal("sim: without a part accepted")
	}
}

// FuzzLineCommand: the reset-lines socket's command parser answers every
// line with "ok" or an error text and touches only the part it names.
func FuzzLineCommand(f *testing.F) {
	f.Add("boot 0")
	f.Add("app 1")
	f.Add("boot -1")
	f.Add("reset 0 1")
	chip, _ := chips.Lookup(0x413)
	f.Fuzz(func(t *testing.T, line string) {
		sims := []*Sim{New(chip, Options{}), New(chip, Options{})}
		got := lineCommand(strings.Fields(line), sims)
		if got == "" || strings.Contains(got, "\n") {
			t.Fatalf("%q: answer %q", line, got)
		}
	})
}
