package stm32_test

import (
	"context"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/spi"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// BenchmarkSPIFlash flashes 64 KiB into a simulated G0 over the SPI fake
// paced at the clock (every transfer takes its bits' time at speed_hz: the
// physical limit), erase, write and read-back verify. Reported:
// payload/clock, the image's bits over the wall time as a fraction of the
// clock rate (the limit is 1); bus_B/payload_B, bytes clocked per image
// byte; bus_time/wall, the share of the wall time the clock ran; polls/KiB,
// ACK polls per KiB. The simulator's erase and programming take no time.
func BenchmarkSPIFlash(b *testing.B) {
	for _, hz := range []uint32{1_000_000, 8_000_000, 0} {
		b.Run(map[uint32]string{1_000_000: "1MHz", 8_000_000: "8MHz", 0: "unpaced"}[hz], func(b *testing.B) {
			chip, _ := chips.Lookup(0x460)
			img := image(5, 64*1024)
			for i := 0; i < b.N; i++ {
				sim := stm32sim.New(chip, stm32sim.Options{})
				face, err := sim.SPI()
				if err != nil {
					b.Fatal(err)
				}
				bus := spi.NewFake(face, spi.FakeOptions{Config: spi.Config{Device: "fake", SpeedHz: hz}, Pace: hz != 0})
				c := stm32.NewSPI(bus, stm32.DefaultOptions())
				ctx := context.Background()
				t0 := time.Now()
				if err := c.Init(ctx); err != nil {
					b.Fatal(err)
				}
				f, err := stm32.NewFlasher(c, chip, []stm32.Segment{{Addr: chip.FlashStart, Data: img}}, stm32.DefaultOptions())
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Run(ctx, nil); err != nil {
					b.Fatal(err)
				}
				wall := time.Since(t0)
				face.Close()
				st := bus.Stats()
				limit := spi.ByteTime(bus.Config(), len(img))
				b.ReportMetric(limit.Seconds()/wall.Seconds(), "payload/clock")
				b.ReportMetric(float64(st.Bytes)/float64(len(img)), "bus_B/payload_B")
				b.ReportMetric(st.BusTime.Seconds()/wall.Seconds(), "bus_time/wall")
				b.ReportMetric(float64(c.Polls())/float64(len(img)/1024), "polls/KiB")
				b.ReportMetric(wall.Seconds(), "wall_s")
			}
		})
	}
}
