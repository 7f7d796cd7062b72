package spi_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/spi"
)

// echo answers each byte with the previous one plus one (a one-byte
// shift register), and counts resets.
type echo struct {
	last   byte
	resets int
}

func (e *echo) Clock(b byte) byte { out := e.last; e.last = b + 1; return out }
func (e *echo) Reset()            { e.last, e.resets = 0, e.resets+1 }

func TestFakeFullDuplex(t *testing.T) {
	f := spi.NewFake(&echo{}, spi.FakeOptions{})
	rx := make([]byte, 4)
	if err := f.Transfer([]byte{1, 2, 3, 4}, rx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rx, []byte{0, 2, 3, 4}) {
		t.Fatalf("rx = % x", rx)
	}
	if err := f.Transfer([]byte{1}, nil); !errors.Is(err, spi.ErrLength) {
		t.Fatalf("mismatched lengths: %v", err)
	}
	if st := f.Stats(); st.Bytes != 4 || st.BusTime != 32*time.Microsecond {
		t.Fatalf("stats %+v: want 4 bytes, 32µs at 1 MHz", st)
	}
}

func TestFakeFaults(t *testing.T) {
	e := &echo{}
	f := spi.NewFake(e, spi.FakeOptions{Faults: spi.Faults{StuckAfter: 3, StuckFor: 2, DisconnectAfter: 10, DisconnectFor: 1}})
	rx := make([]byte, 6)
	if err := f.Transfer([]byte{1, 2, 3, 4, 5, 6}, rx); err != nil {
		t.Fatal(err)
	}
	// bytes 3 and 4 hit the stuck slave (busy filler, not clocked)
	if !bytes.Equal(rx, []byte{0, 2, 0xA5, 0xA5, 3, 6}) {
		t.Fatalf("stuck: rx = % x", rx)
	}
	err := f.Transfer(make([]byte, 6), make([]byte, 6))
	if !errors.Is(err, spi.ErrDisconnected) || e.resets != 1 {
		t.Fatalf("disconnect: %v, resets %d", err, e.resets)
	}
	if err := f.Transfer([]byte{1}, []byte{0}); !errors.Is(err, spi.ErrDisconnected) {
		t.Fatalf("second transfer while disconnected: %v", err)
	}
	if err := f.Transfer([]byte{1}, []byte{0}); err != nil {
		t.Fatalf("after the disconnect: %v", err)
	}
	g := spi.NewFake(&echo{}, spi.FakeOptions{Seed: 1, Faults: spi.Faults{CorruptPerKiB: 64, DropPerKiB: 64}})
	big := make([]byte, 64<<10)
	if err := g.Transfer(big, make([]byte, len(big))); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Corrupted == 0 || st.Dropped == 0 {
		t.Fatalf("no faults injected: %+v", st)
	}
}

func TestSimLink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "spi.sock")
	if _, err := spi.ServeSim(ctx, sock, &echo{}); err != nil {
		t.Fatal(err)
	}
	c, err := spi.Open(spi.Config{Device: spi.SimPrefix + sock, SpeedHz: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tx := bytes.Repeat([]byte{7}, spi.MaxSimTransfer+3) // split in two requests
	rx := make([]byte, len(tx))
	if err := c.Transfer(tx, rx); err != nil {
		t.Fatal(err)
	}
	if rx[0] != 0 || rx[1] != 8 || rx[len(rx)-1] != 8 {
		t.Fatalf("rx % x ... % x", rx[:2], rx[len(rx)-2:])
	}
	if c.Config().SpeedHz != 2_000_000 || c.Config().BitsPerWord != 8 {
		t.Fatalf("config %+v", c.Config())
	}
	cancel()
	for i := 0; i < 100; i++ {
		if err = c.Transfer([]byte{1}, []byte{0}); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, spi.ErrDisconnected) {
		t.Fatalf("after the simulator ended: %v", err)
	}
}

func TestOpenMissingDeviceNamesIt(t *testing.T) {
	_, err := spi.Open(spi.Config{Device: "/dev/spidev9.7"})
	if err == nil || !strings.Contains(err.Error(), "/dev/spidev9.7") || !strings.Contains(err.Error(), "spidev") {
		t.Fatalf("Open of a missing node: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	err := spi.Config{Mode: 4, BitsPerWord: 16, SpeedHz: 200_000_000}.Validate()
	for _, field := range []string{"device:", "mode:", "bits_per_word:", "speed_hz:"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate does not name %s: %v", field, err)
		}
	}
	if err := (spi.Config{Device: "/dev/spidev0.0", Mode: 3}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLinkRefusesByteStreams(t *testing.T) {
	l := spi.Link{Conn: spi.NewFake(&echo{}, spi.FakeOptions{})}
	if _, err := l.Write([]byte{1}); err == nil || !strings.Contains(err.Error(), "SPI bus") {
		t.Fatalf("Write on an SPI bus handle: %v", err)
	}
	if c, ok := spi.ConnOf(l); !ok || c == nil {
		t.Fatal("ConnOf lost the Conn")
	}
}

func FuzzReadSimRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0x5A, 0x00})
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0, 0, 0, 9, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		tx, err := spi.ReadSimRequest(bytes.NewReader(p), nil)
		if err != nil {
			return
		}
		if len(p) < 4+len(tx) || !bytes.Equal(tx, p[4:4+len(tx)]) || len(tx) > spi.MaxSimTransfer {
			t.Fatalf("ReadSimRequest(% x) = % x", p, tx)
		}
	})
}

// TestOpenNotSpidev: a node that is not a spidev (here a regular file)
// opens but refuses the spidev ioctls; the error names the device and the
// setting.
func TestOpenNotSpidev(t *testing.T) {
	p := filepath.Join(t.TempDir(), "spidev0.0")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := spi.Open(spi.Config{Device: p, Mode: 0, SpeedHz: 4_000_000})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "setting mode") {
		t.Fatalf("Open of a regular file: %v", err)
	}
}
