package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
)

func init() {
	register("sim esp32", "simulate an ESP32 ROM serial loader on a pseudo-terminal (prints its path)", runSimESP32)
}

func runSimESP32(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw sim esp32", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chipName := fs.String("chip", "esp32", "simulated chip: esp32, esp32s3 or esp32c3")
	faults := fs.String("fault", "", "faults: corrupt-block=N,checksum-block=N,drop-reply=P,disconnect-after=BYTES,disconnect-for=D,delay=D")
	seed := fs.Int64("seed", 1, "fault random seed")
	flashMiB := fs.Int("flash-mib", 4, "flash size in MiB")
	statsFile := fs.String("stats", "", "write the wire counters as JSON to this file on exit")
	dump := fs.String("dump", "", "write the flash contents to this file on exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	chip, ok := esp32.LookupChip(*chipName)
	if !ok {
		fmt.Fprintf(stderr, "otagw sim esp32: --chip %s: want one of %s\n", *chipName, esp32.ChipNames())
		return 2
	}
	f, err := esp32sim.ParseFaults(*faults)
	if err != nil {
		fmt.Fprintf(stderr, "otagw sim esp32: --fault: %v\n", err)
		return 2
	}
	sim := esp32sim.New(chip, esp32sim.Options{Faults: f, Seed: *seed, FlashSize: *flashMiB << 20})
	p, err := esp32sim.ServePTY(ctx, sim)
	if err != nil {
		fmt.Fprintf(stderr, "otagw sim esp32: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, p.Path)
	if fl, ok := stdout.(*os.File); ok {
		fl.Sync()
	}
	fmt.Fprintf(stderr, "simulating the %s ROM loader on %s until interrupted\n", chip, p.Path)
	<-ctx.Done()
	p.Close()
	st := sim.Stats()
	fmt.Fprintf(stderr, "host_bytes=%d device_bytes=%d round_trips=%d data_blocks=%d baud=%d starts=%d\n", st.HostBytes, st.DeviceBytes, st.RoundTrips, st.DataBlocks, st.Baud, st.Starts)
	if *statsFile != "" {
		data, _ := json.MarshalIndent(st, "", "  ")
		if err := os.WriteFile(*statsFile, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "otagw sim esp32: %v\n", err)
			return 1
		}
	}
	if *dump != "" {
		if err := os.WriteFile(*dump, sim.Flash(), 0o644); err != nil {
			fmt.Fprintf(stderr, "otagw sim esp32: %v\n", err)
			return 1
		}
	}
	return 0
}
