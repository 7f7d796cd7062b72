package stm32_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/link/linktest"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

func fastOptions() stm32.Options {
	o := stm32.DefaultOptions()
	o.ByteTimeout = 25 * time.Millisecond
	o.WriteTimeout = 50 * time.Millisecond
	o.PageEraseTimeout = 20 * time.Millisecond
	o.MassEraseTimeout = 200 * time.Millisecond
	return o
}

func start(t *testing.T, chip *chips.Chip, so stm32sim.Options) (*stm32sim.Sim, *stm32.Client) {
	t.Helper()
	host, dev := linktest.Pipe()
	sim := stm32sim.New(chip, so)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sim.Serve(ctx, dev); close(done) }()
	t.Cleanup(func() { cancel(); host.Close(); <-done })
	return sim, stm32.New(host, fastOptions())
}

func image(seed int64, n int) []byte {
	p := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(p)
	return p
}

// TestFlashEveryChip flashes an image that straddles page boundaries into
// every chip of the database, reads it back through the client, and checks
// that flash outside the erased pages is untouched.
func TestFlashEveryChip(t *testing.T) {
	for _, chip := range chips.All() {
		t.Run(fmt.Sprintf("%03x", chip.PID), func(t *testing.T) {
			t.Parallel()
			sim, c := start(t, chip, stm32sim.Options{})
			ctx := context.Background()
			// mark all flash as programmed with a pattern so erases show
			fill := bytes.Repeat([]byte{0xA5}, int(chip.FlashSize()))
			sim.Program(chip.FlashStart, fill)
			p1 := chip.Pages()[1]
			addr := p1.Addr + p1.Size - 1000 // straddles page 1 / page 2
			img := image(int64(chip.PID), 3000+int(chip.PID%7))
			if err := c.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if c.Info().PID != chip.PID {
				t.Fatalf("PID = 0x%03x, want 0x%03x", c.Info().PID, chip.PID)
			}
			f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: addr, Data: img}}, fastOptions())
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Run(ctx, nil); err != nil {
				t.Fatal(err)
			}
			var back []byte
			for a := addr; a < addr+uint32(len(img)); a += 256 {
				n := min(256, int(addr+uint32(len(img))-a))
				p, err := c.ReadMemory(ctx, a, n)
				if err != nil {
					t.Fatal(err)
				}
				back = append(back, p...)
			}
			if !bytes.Equal(back, img) {
				t.Fatal("read-back differs from the image")
			}
			flash := sim.Flash()
			pages := f.Pages()
			ps := chip.Pages()
			lo := ps[pages[0]].Addr - chip.FlashStart
			hi := ps[pages[len(pages)-1]].Addr + ps[pages[len(pages)-1]].Size - chip.FlashStart
			if !bytes.Equal(flash[:lo], fill[:lo]) || !bytes.Equal(flash[hi:], fill[hi:]) {
				t.Fatal("flash outside the erased pages changed")
			}
			if st := sim.Stats(); st.Commands[0xFF] != 0 || st.PagesErased != len(pages) {
				t.Errorf("erased %d pages, want %d", st.PagesErased, len(pages))
			}
			if err := c.Go(ctx, chip.FlashStart); err != nil {
				t.Fatal(err)
			}
			if run, at := sim.Running(); !run || at != chip.FlashStart {
				t.Errorf("after Go: running=%v at 0x%x", run, at)
			}
		})
	}
}

// TestFaultInjection flashes through 5% NACKs, corrupted bytes (one per
// KiB, then two) and one disconnect mid-write, over many seeds. Every run
// must end either with the image in flash (checked against the simulator,
// not the client) or with an error; a single success with wrong content
// fails the test. Read-backs are not checksummed on USART, so corrupted
// bytes garble them: the Flasher must take that for a line error, not for
// corrupted flash (before it did, the parts with one 16 KiB sector under
// the image, 0x413, gave up on 10 of 32 seeds at two bytes per KiB).
func TestFaultInjection(t *testing.T) {
	for _, corrupt := range []float64{1, 2} {
		t.Run(fmt.Sprintf("corrupt-per-kib=%g", corrupt), func(t *testing.T) { faultInjection(t, corrupt) })
	}
}

func faultInjection(t *testing.T, corrupt float64) {
	runFaultSeeds(t, []uint16{0x410, 0x413, 0x460}, func(t *testing.T, seed int64, chip *chips.Chip) (*stm32sim.Sim, stm32.Bootloader, func(*testing.T)) {
		sim, c := start(t, chip, stm32sim.Options{Seed: seed, Faults: stm32sim.Faults{
			NACK: 0.05, CorruptPerKiB: corrupt, DisconnectAfter: 1200 + seed*97,
		}})
		return sim, c, func(t *testing.T) {
			if st := sim.Stats(); st.Injected.NACKs == 0 || st.Injected.Disconnects != 1 {
				t.Errorf("faults not injected: %+v", st.Injected)
			}
		}
	})
}

// faultSetup starts one seed's faulty transport for chip: the simulator
// whose flash is the truth, the client over the transport, and the check,
// run after flashing, that the faults were injected.
type faultSetup func(t *testing.T, seed int64, chip *chips.Chip) (*stm32sim.Sim, stm32.Bootloader, func(*testing.T))

// runFaultSeeds is the fault tests' common run: 32 seeds (8 with -short)
// in parallel, seed s on pids[s%len(pids)] with an image of its own,
// flashed with up to 5 Init+Run attempts (the fan-out engine's outer
// retries). A run that reports success with a flash that differs from the
// image fails the test, so does one that never ends; then requireShare.
func runFaultSeeds(t *testing.T, pids []uint16, setup faultSetup) {
	t.Helper()
	seeds := 32
	if testing.Short() {
		seeds = 8
	}
	var ok, failed atomic.Int32
	t.Run("seeds", func(t *testing.T) {
		for seed := int64(1); seed <= int64(seeds); seed++ {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				chip, _ := chips.Lookup(pids[seed%int64(len(pids))])
				img := image(seed, 6*1024+int(seed*13))
				sim, c, injected := setup(t, seed, chip)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				var err error
				var f *stm32.Flasher
				for attempt := 0; attempt < 5; attempt++ { // the fan-out engine's outer retries
					if err = c.Init(ctx); err != nil {
						continue
					}
					if f == nil {
						if f, err = stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, fastOptions()); err != nil {
							t.Fatal(err)
						}
					}
					if err = f.Run(ctx, nil); err == nil {
						break
					}
				}
				got := sim.Flash()[:len(img)]
				if err == nil {
					if !bytes.Equal(got, img) {
						t.Fatalf("Run succeeded but the simulator's flash differs from the image (seed %d)", seed)
					}
					ok.Add(1)
				} else {
					if errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("flashing did not end: %v", err)
					}
					t.Logf("seed %d (0x%03x) failed cleanly: %v", seed, chip.PID, err)
					failed.Add(1)
				}
				injected(t)
			})
		}
	})
	t.Logf("%d seeds succeeded, %d failed with a reason", ok.Load(), failed.Load())
	requireShare(t, int(ok.Load()), seeds)
}

// requireShare fails the fault tests when fewer than 7 in 8 seeds got
// through. With garbled read-backs taken for line errors every seed of
// the UART, CAN and SPI fault tests succeeds (32 of 32 each); before,
// 22 of 32 did over SPI and over USART at two corrupted bytes per KiB.
func requireShare(t *testing.T, ok, seeds int) {
	t.Helper()
	if want := seeds - seeds/8; ok < want {
		t.Errorf("only %d of %d seeds succeeded (want at least %d): the retry logic is not doing its job", ok, seeds, want)
	}
}

func TestCRCVerifyAndMassErase(t *testing.T) {
	chip, _ := chips.Lookup(0x460) // G0: lists 0xA1
	sim, c := start(t, chip, stm32sim.Options{})
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	o := fastOptions()
	o.Verify, o.MassErase = "crc", true
	img := image(3, 5000)
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart + 2048, Data: img}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st := sim.Stats()
	if st.Commands[0xA1] != 1 || st.Commands[0x11] != 0 {
		t.Errorf("CRC verify: commands %v; want one 0xA1 (nothing written after it: no final CRC) and no read-back", st.Commands)
	}
	if st.PagesErased != len(chip.Pages()) {
		t.Errorf("mass erase erased %d pages", st.PagesErased)
	}
	if !bytes.Equal(sim.Flash()[2048:2048+len(img)], img) {
		t.Fatal("flash differs")
	}
}

func TestOutOfFlashRefused(t *testing.T) {
	chip, _ := chips.Lookup(0x412)
	_, err := stm32.NewFlasher(nil, chip, []stm32.Segment{{Addr: chip.FlashEnd - 16, Data: make([]byte, 32)}}, fastOptions())
	if !errors.Is(err, chips.ErrOutOfFlash) {
		t.Fatalf("NewFlasher beyond flash = %v; want ErrOutOfFlash", err)
	}
}

func TestNormalize(t *testing.T) {
	got := stm32.Normalize([]stm32.Segment{{Addr: 10, Data: []byte{1, 2}}, {Addr: 1, Data: []byte{9}}, {Addr: 100, Data: []byte{7}}, {Addr: 101, Data: []byte{8}}})
	want := []stm32.Segment{{Addr: 0, Data: []byte{0xFF, 9, 0xFF, 0xFF}}, {Addr: 8, Data: []byte{0xFF, 0xFF, 1, 2}}, {Addr: 100, Data: []byte{7, 8, 0xFF, 0xFF}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Normalize = %v\nwant %v", got, want)
	}
}

func FuzzParseReplies(f *testing.F) {
	f.Add([]byte{11, 0x22, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92, 0x79})
	f.Add([]byte{1, 0x04, 0x10, 0x79})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, p []byte) {
		if v, cmds, err := stm32.ParseGet(p); err == nil && (len(cmds) != int(p[0]) || v != p[1]) {
			t.Fatalf("ParseGet(% x) = %x, % x", p, v, cmds)
		}
		if pid, err := stm32.ParseID(p); err == nil && pid != uint16(p[1])<<8|uint16(p[2]) {
			t.Fatalf("ParseID(% x) = %x", p, pid)
		}
	})
}

// TestResume: a Run that gives up after a disconnect mid-write is resumed
// by the next Run from the last verified block: no page is erased twice
// and no verified block is written again.
func TestResume(t *testing.T) {
	chip, _ := chips.Lookup(0x410)
	img := image(9, 16*1024)
	sim, c := start(t, chip, stm32sim.Options{Faults: stm32sim.Faults{DisconnectAfter: 8000}})
	ctx := context.Background()
	o := fastOptions()
	o.MaxRetries = 0
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, o)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Run(ctx, nil)
	if !errors.Is(err, stm32.ErrRetries) {
		t.Fatalf("first Run = %v; want ErrRetries (no retries allowed)", err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st := sim.Stats()
	blocks := len(img) / 256
	if st.PagesErased != len(f.Pages()) || st.Commands[stm32.CmdWriteMemory] > blocks+1 {
		t.Fatalf("resume redid work: %d pages erased (want %d), %d writes for %d blocks", st.PagesErased, len(f.Pages()), st.Commands[stm32.CmdWriteMemory], blocks)
	}
	if !bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Fatal("flash differs")
	}
}

// garbler garbles read-backs on the way to the Flasher: of every three
// reads, the first two come back with one byte changed (a different byte
// each time), the third intact. stuck, when set, is a flash cell that
// holds stuckVal whatever is written to it (rewritten after every write).
type garbler struct {
	stm32.Bootloader
	sim      *stm32sim.Sim
	reads    int
	stuck    uint32
	stuckVal byte
}

func (g *garbler) ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error) {
	p, err := g.Bootloader.ReadMemory(ctx, addr, n)
	if err == nil && g.reads%3 != 2 {
		p[g.reads%len(p)] ^= 0x5A
	}
	g.reads++
	return p, err
}

func (g *garbler) WriteMemory(ctx context.Context, addr uint32, data []byte) error {
	err := g.Bootloader.WriteMemory(ctx, addr, data)
	if g.stuck != 0 && g.stuck >= addr && g.stuck < addr+uint32(len(data)) {
		g.sim.Program(g.stuck, []byte{g.stuckVal})
	}
	return err
}

// TestGarbledReadBacksAreLineErrors: two read-backs of a block that
// differ from the image and from each other are a line error, not a bad
// block: an image in one 16 KiB sector (0x413) read back garbled twice in
// every three reads verifies without erasing the sector again. (The
// Flasher that re-erased on two wrong read-backs gave up here.)
func TestGarbledReadBacksAreLineErrors(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	sim, c := start(t, chip, stm32sim.Options{})
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	img := image(11, 6*1024)
	g := &garbler{Bootloader: c}
	f, err := stm32.NewFlasher(g, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatalf("Run through garbled read-backs: %v", err)
	}
	if !bytes.Equal(sim.Flash()[:len(img)], img) {
		t.Fatal("flash differs from the image")
	}
	blocks := len(img) / 256
	if st := sim.Stats(); st.PagesErased != len(f.Pages()) || st.Commands[stm32.CmdWriteMemory] != blocks {
		t.Errorf("garbled read-backs taken for corrupted flash: %d pages erased (want %d), %d writes (want %d)",
			st.PagesErased, len(f.Pages()), st.Commands[stm32.CmdWriteMemory], blocks)
	}
	if f.Retries() != blocks {
		t.Errorf("Retries = %d; want %d (one disagreeing pair of read-backs per block)", f.Retries(), blocks)
	}
}

// TestStuckCellBoundedRepairs: a cell that keeps reading back wrong (the
// same twice) is real corruption: its sector is erased again and
// rewritten, but at most three times; then Run fails with ErrVerify naming
// the block and the page, and never reports success.
func TestStuckCellBoundedRepairs(t *testing.T) {
	chip, _ := chips.Lookup(0x413)
	sim, c := start(t, chip, stm32sim.Options{})
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	img := image(12, 6*1024)
	g := &garbler{Bootloader: c, sim: sim, stuck: chip.FlashStart + 1000, stuckVal: img[1000] ^ 0x10}
	f, err := stm32.NewFlasher(g, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 2; run++ { // a second Run does not erase again either
		err = f.Run(ctx, nil)
		if !errors.Is(err, stm32.ErrVerify) {
			t.Fatalf("Run %d with a stuck cell = %v; want ErrVerify", run, err)
		}
		for _, want := range []string{"block 0x08000300", "page 0 (0x08000000", "erased again 3 times"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
	}
	if st := sim.Stats(); st.PagesErased != 1+3 {
		t.Errorf("sector erased %d times; want 4 (the first erase and three repairs)", st.PagesErased)
	}
}

// astray models a write that goes astray during a repair: the first
// write of the block at bad leaves a wrong byte there (the block must be
// repaired), and the repair's rewrite of it also changes the byte at
// victim, in a block elsewhere that had already verified.
type astray struct {
	stm32.Bootloader
	sim         *stm32sim.Sim
	bad, victim uint32
	badVal, val byte
	writes      int
}

func (w *astray) WriteMemory(ctx context.Context, addr uint32, data []byte) error {
	err := w.Bootloader.WriteMemory(ctx, addr, data)
	if err == nil && addr == w.bad {
		switch w.writes++; w.writes {
		case 1:
			w.sim.Program(w.bad, []byte{w.badVal})
		case 2:
			w.sim.Program(w.victim, []byte{w.val})
		}
	}
	return err
}

// TestFinalCRCCatchesLateChange: with Get Checksum offered (0x460), once
// every block verified Run checks again the CRC of each run of blocks that
// a write or erase came after, so a block changed after its own
// verification (here by the rewrite of another page) is found, read back
// wrong twice, its page erased again and rewritten; Run does not report
// success over it.
func TestFinalCRCCatchesLateChange(t *testing.T) {
	chip, _ := chips.Lookup(0x460)
	sim, c := start(t, chip, stm32sim.Options{})
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	ps := chip.Pages()
	a, b := image(13, 1024), image(14, 1024)
	w := &astray{Bootloader: c, sim: sim, bad: ps[2].Addr, badVal: b[0] ^ 0x01, victim: ps[0].Addr + 100, val: a[100] ^ 0x01}
	f, err := stm32.NewFlasher(w, chip, []stm32.Segment{{Addr: ps[0].Addr, Data: a}, {Addr: ps[2].Addr, Data: b}}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	flash := sim.Flash()
	if !bytes.Equal(flash[:len(a)], a) || !bytes.Equal(flash[ps[2].Addr-chip.FlashStart:][:len(b)], b) {
		t.Fatal("Run succeeded but the flash differs from the image")
	}
	if w.writes != 2 {
		t.Fatalf("the block at 0x%08x was written %d times; want 2 (the bad write, the repair)", w.bad, w.writes)
	}
	if st := sim.Stats(); st.PagesErased != 2+2 {
		t.Errorf("%d pages erased; want 4 (pages 0 and 2, then each again)", st.PagesErased)
	}
}
