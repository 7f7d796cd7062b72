// Command bench-can measures STM32 flashing over CAN (AN3154): otagw's
// client and the STM32 simulator on an in-memory CAN bus paced at a bit
// rate (each frame holds the bus for can.FrameBits bit times, stuffing
// included), and prints a markdown table for docs/benchmarks-downstream.md.
//
//	go run ./scripts/bench-can [-kib 32] [-bitrates 125000,500000,1000000]
//
// The physical limit, measured in the same run: the payload rate of a bus
// carrying nothing but back-to-back 8-byte data frames of this image
// (bit rate × 64 / the mean FrameBits of the image's 8-byte frames).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/otagw/otagw/downstream/can"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

func main() {
	kib := flag.Int("kib", 32, "image size in KiB")
	rates := flag.String("bitrates", "125000,500000,1000000", "CAN bit rates to run at")
	flag.Parse()
	chip, _ := chips.Lookup(0x413)
	img := make([]byte, *kib*1024)
	rand.New(rand.NewSource(1)).Read(img)
	var bits int
	for off := 0; off < len(img); off += 8 {
		bits += can.FrameBits(can.NewFrame(stm32.CANWriteID, img[off:off+8]...))
	}
	meanBits := float64(bits) / float64(len(img)/8)
	fmt.Printf("image: %d bytes (random) into a simulated 0x%03x; mean 8-byte data frame: %.1f bits (stuffing included; 111 unstuffed)\n\n", len(img), chip.PID, meanBits)
	fmt.Println("| bit rate | frame-level limit B/s | write phase, bus time: × limit | write phase, wall: × limit | write+verify, bus time: × limit | write+verify, wall: B/s | × limit | bus busy | frames | retries |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range strings.Split(*rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-can: -bitrates: %v\n", err)
			os.Exit(2)
		}
		if err := run(chip, img, rate, meanBits); err != nil {
			fmt.Fprintf(os.Stderr, "bench-can: %d bit/s: %v\n", rate, err)
			os.Exit(1)
		}
	}
}

func run(chip *chips.Chip, img []byte, rate int, meanBits float64) error {
	bus := can.NewBus(can.BusOptions{Bitrate: rate})
	host, dev := bus.Attach(), bus.Attach()
	sim := stm32sim.New(chip, stm32sim.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.ServeCAN(ctx, dev)
	o := stm32.DefaultOptions()
	// A clean bus; on a heavily loaded machine a reply may still miss the
	// 500 ms default, so wait longer and report any retry in the table.
	o.ByteTimeout = 2 * time.Second
	c := stm32.NewCAN(host, o)
	if err := c.Init(ctx); err != nil {
		return err
	}
	f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, o)
	if err != nil {
		return err
	}
	before := bus.Stats()
	var writeStart, writeEnd time.Time
	var bitsStart, bitsEnd int64
	start := time.Now()
	err = f.Run(ctx, func(p stm32.Progress) {
		switch {
		case p.Phase == "write" && writeStart.IsZero():
			writeStart, bitsStart = time.Now(), bus.Stats().Bits // after the first block: the erase is behind
		case p.Phase == "verify" && writeEnd.IsZero():
			// after the first verified block: subtract its read (1 of the 128 reads)
			writeEnd, bitsEnd = time.Now(), bus.Stats().Bits
		}
	})
	total := time.Since(start)
	if err != nil {
		return err
	}
	after := bus.Stats()
	limit := float64(rate) * 64 / meanBits / 8 // payload bytes per second
	// The write phase: the blocks after the first, up to the first verify.
	written := float64(len(img) - 256)
	writeWall := written / writeEnd.Sub(writeStart).Seconds()
	writeBus := written / (float64(bitsEnd-bitsStart) / float64(rate))
	allWall := float64(len(img)) / total.Seconds()
	busBits := after.Bits - before.Bits
	allBus := float64(len(img)) / (float64(busBits) / float64(rate)) // if every turnaround took no time
	fmt.Printf("| %d | %.0f | %.3f | %.3f | %.3f | %.0f | %.3f | %.0f %% | %d | %d |\n",
		rate, limit, writeBus/limit, writeWall/limit, allBus/limit, allWall, allWall/limit,
		100*float64(busBits)/float64(rate)/total.Seconds(), after.Frames-before.Frames, f.Retries())
	return nil
}
