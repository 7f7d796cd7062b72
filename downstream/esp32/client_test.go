package esp32_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
	"github.com/otagw/otagw/downstream/link"
	"github.com/otagw/otagw/downstream/link/linktest"
	"github.com/otagw/otagw/downstream/uart"
)

func fastOptions() esp32.Options {
	o := downstream.DefaultESP32Options()
	o.Timeout = 300 * time.Millisecond
	return o
}

// image is half random, half text: compressible but not trivially.
func image(seed int64, n int) []byte {
	p := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(p[:n/2])
	for i := n / 2; i < n; i++ {
		p[i] = "otagw esp32 image text "[i%23]
	}
	return p
}

func start(t *testing.T, chip *esp32.Chip, so esp32sim.Options, o esp32.Options) (*esp32sim.Sim, *esp32.Client) {
	t.Helper()
	sim := esp32sim.New(chip, so)
	host, dev := linktest.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go sim.Serve(ctx, dev)
	t.Cleanup(func() { cancel(); host.Close() })
	return sim, esp32.New(host, o)
}

func connect(t *testing.T, c *esp32.Client, want *esp32.Chip) {
	t.Helper()
	ctx := context.Background()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	chip, err := c.Detect(ctx)
	if err != nil || chip != want {
		t.Fatalf("Detect() = %v, %v; want %v", chip, err, want)
	}
	if err := c.Attach(ctx, esp32.DefaultFlashSize); err != nil {
		t.Fatal(err)
	}
}

func TestFlashEveryChip(t *testing.T) {
	t.Parallel()
	for _, chip := range esp32.Chips() {
		for _, compress := range []bool{false, true} {
			chip, compress := chip, compress
			name := chip.Name + "/plain"
			if compress {
				name = chip.Name + "/deflate"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				sim := esp32sim.New(chip, esp32sim.Options{})
				host, dev := linktest.Pipe()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go sim.Serve(ctx, dev)
				defer host.Close()
				o := fastOptions()
				o.Compress = compress
				c := esp32.New(host, o)
				connect(t, c, chip)
				img := image(1, 50_000)
				if err := c.WriteRegion(ctx, 0x10000, img, func(string, int, int) {}); err != nil {
					t.Fatal(err)
				}
				if got := sim.Flash()[0x10000 : 0x10000+len(img)]; !bytes.Equal(got, img) {
					t.Fatal("flash differs from the image")
				}
				if err := c.Finish(ctx); err != nil {
					t.Fatal(err)
				}
				st := sim.Stats()
				if !sim.Running() || st.Starts != 1 {
					t.Fatalf("not started: %+v", st)
				}
				if len(st.Deviations) != 0 {
					t.Fatalf("deviations from what esptool.py sends: %v", st.Deviations)
				}
				t.Logf("%s: host %d B, device %d B, %d round trips, %d blocks", name, st.HostBytes, st.DeviceBytes, st.RoundTrips, st.DataBlocks)
			})
		}
	}
}

func TestMD5CatchesCorruptedBlock(t *testing.T) {
	t.Parallel()
	for _, compress := range []bool{false, true} {
		chip, _ := esp32.LookupChip("esp32s3")
		o := fastOptions()
		o.Compress = compress
		sim, c := start(t, chip, esp32sim.Options{Faults: esp32sim.Faults{CorruptBlock: 3}}, o)
		connect(t, c, chip)
		img := image(2, 40_000)
		if err := c.WriteRegion(context.Background(), 0x20000, img, func(string, int, int) {}); err != nil {
			t.Fatal(err)
		}
		if got := sim.Flash()[0x20000 : 0x20000+len(img)]; !bytes.Equal(got, img) {
			t.Fatal("flash differs from the image after repair")
		}
		if st := sim.Stats(); st.Injected.Corrupted != 1 || c.Retries() == 0 {
			t.Fatalf("corrupted %d, client retries %d; want 1 and >0", st.Injected.Corrupted, c.Retries())
		}
	}
}

func TestChecksumErrorRetriesBlock(t *testing.T) {
	t.Parallel()
	chip, _ := esp32.LookupChip("esp32")
	sim, c := start(t, chip, esp32sim.Options{Faults: esp32sim.Faults{ChecksumBlock: 2}}, fastOptions())
	connect(t, c, chip)
	img := image(3, 10_000)
	if err := c.WriteRegion(context.Background(), 0x1000, img, func(string, int, int) {}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sim.Flash()[0x1000:0x1000+len(img)], img) || sim.Stats().Injected.Checksum != 1 || c.Retries() != 1 {
		t.Fatalf("checksum fault: injected %+v, retries %d", sim.Stats().Injected, c.Retries())
	}
}

func TestChangeBaudOnPTY(t *testing.T) {
	t.Parallel()
	chip, _ := esp32.LookupChip("esp32c3")
	sim := esp32sim.New(chip, esp32sim.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := esp32sim.ServePTY(ctx, sim)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	port, err := uart.Open(p.Path, uart.Options{Baud: 115200, Parity: uart.ParityNone, StopBits: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	c := esp32.New(port, fastOptions())
	connect(t, c, chip)
	if err := c.ChangeBaud(ctx, link.Baud(921600)); err != nil {
		t.Fatal(err)
	}
	img := image(4, 30_000)
	if err := c.WriteRegion(ctx, 0x10000, img, func(string, int, int) {}); err != nil {
		t.Fatal(err)
	}
	if st := sim.Stats(); st.Baud != 921600 || st.BaudChanges != 1 || !bytes.Equal(sim.Flash()[0x10000:0x10000+len(img)], img) {
		t.Fatalf("baud %d, changes %d", st.Baud, st.BaudChanges)
	}
}

func TestUnknownChipAndTimeout(t *testing.T) {
	t.Parallel()
	host, _ := linktest.Pipe()
	o := fastOptions()
	o.SyncAttempts = 2
	c := esp32.New(host, o)
	if err := c.Sync(context.Background()); !errors.Is(err, esp32.ErrNotSynced) {
		t.Fatalf("Sync() on a silent line = %v; want ErrNotSynced", err)
	}
}
