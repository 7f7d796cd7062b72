package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

func init() {
	register("sim stm32", "simulate an STM32 ROM bootloader on a pseudo-terminal, or with --spi on an SPI simulator socket (prints its path)", runSimSTM32)
}

func runSimSTM32(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw sim stm32", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chipID := fs.String("chip", "0x410", "product ID of the simulated part")
	faults := fs.String("fault", "", "faults: nack=P,corrupt-per-kib=N,drop=P|drop-per-kib=N,delay=D,disconnect-after=BYTES")
	seed := fs.Int64("seed", 1, "fault random seed")
	eraseTime := fs.Duration("erase-time", 0, "simulated time per erased page or sector")
	rdp := fs.Bool("read-protected", false, "start with readout protection")
	wrp := fs.Bool("write-protected", false, "start with write protection")
	statsFile := fs.String("stats", "", "write the byte and round-trip counters as JSON to this file on exit")
	slcan := fs.Bool("slcan", false, "serve the CAN face (AN3154) on one CAN bus behind an slcan adapter on a pty; an otagw bus reaches it as transport: can, port: PTY")
	parts := fs.Int("parts", 1, "with --slcan: this many parts on the bus")
	lines := fs.String("reset-socket", "", "serve the parts' BOOT0/NRST lines on this Unix socket (reset: sim:SOCKET:PART, parts from 0; tests and demo only); the parts then start in their applications")
	spiSock := fs.String("spi", "", "serve the SPI face (AN4286) on this Unix socket instead of a pty; an spi bus reaches it as device: sim:PATH (tests and demo only)")
	list := fs.Bool("list", false, "list the simulated chips and exit")
	asJSON := fs.Bool("json", false, "with --list: print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *list {
		type row struct {
			PID           string `json:"pid"`
			Name          string `json:"name"`
			Family        string `json:"family"`
			FlashKiB      uint32 `json:"flash_kib"`
			Pages         int    `json:"pages"`
			Bootloader    string `json:"bootloader_version"`
			ExtendedErase bool   `json:"extended_erase"`
		}
		var rows []row
		for _, c := range chips.All() {
			rows = append(rows, row{fmt.Sprintf("0x%03x", c.PID), c.Name, c.Family, c.FlashSize() / 1024, len(c.Pages()), fmt.Sprintf("0x%02x", c.BootloaderVersion), c.ExtendedErase})
		}
		if *asJSON {
			mcuJSON(stdout, rows)
		} else {
			for _, r := range rows {
				fmt.Fprintf(stdout, "%s  %-2s  %-30s %5d KiB %4d pages  BL %s\n", r.PID, r.Family, r.Name, r.FlashKiB, r.Pages, r.Bootloader)
			}
		}
		return 0
	}
	pid, err := strconv.ParseUint(*chipID, 0, 16)
	chip, ok := chips.Lookup(uint16(pid))
	if err != nil || !ok {
		fmt.Fprintf(stderr, "otagw sim stm32: --chip %s: not in the chip database (see --list)\n", *chipID)
		return 2
	}
	f, err := stm32sim.ParseFaults(*faults)
	if err != nil {
		fmt.Fprintf(stderr, "otagw sim stm32: --fault: %v\n", err)
		return 2
	}
	sim := stm32sim.New(chip, stm32sim.Options{Faults: f, Seed: *seed, EraseTime: *eraseTime, ReadProtected: *rdp, WriteProtected: *wrp})
	var path string
	var closer io.Closer
	if *parts < 1 || ((*parts > 1 || *lines != "") && !*slcan) || (*slcan && *spiSock != "") {
		fmt.Fprintln(stderr, "otagw sim stm32: --parts and --reset-socket need --slcan; --slcan and --spi exclude each other")
		return 2
	}
	if *slcan {
		sims := []*stm32sim.Sim{sim}
		for i := 1; i < *parts; i++ {
			sims = append(sims, stm32sim.New(chip, stm32sim.Options{Faults: f, Seed: *seed + int64(i), EraseTime: *eraseTime, ReadProtected: *rdp, WriteProtected: *wrp}))
		}
		if *lines != "" {
			for _, s := range sims {
				s.RunApplication()
			}
			if _, err := stm32sim.ServeResetLines(ctx, *lines, sims...); err != nil {
				fmt.Fprintf(stderr, "otagw sim stm32: --reset-socket: %v\n", err)
				return 1
			}
		}
		p, err := stm32sim.ServeSLCANPTY(ctx, sims...)
		if err != nil {
			fmt.Fprintf(stderr, "otagw sim stm32: --slcan: %v\n", err)
			return 1
		}
		path, closer = p.Path, p
	} else if *spiSock != "" {
		ln, err := stm32sim.ServeSPISocket(ctx, sim, *spiSock)
		if err != nil {
			fmt.Fprintf(stderr, "otagw sim stm32: --spi: %v\n", err)
			return 1
		}
		path, closer = *spiSock, ln
	} else {
		p, err := stm32sim.ServePTY(ctx, sim)
		if err != nil {
			fmt.Fprintf(stderr, "otagw sim stm32: %v\n", err)
			return 1
		}
		path, closer = p.Path, p
	}
	fmt.Fprintln(stdout, path)
	if fl, ok := stdout.(*os.File); ok {
		fl.Sync()
	}
	face := "USART"
	switch {
	case *spiSock != "":
		face = "SPI"
	case *slcan:
		face = fmt.Sprintf("CAN (%d parts behind slcan)", *parts)
	}
	fmt.Fprintf(stderr, "simulating %s (bootloader 0x%02x) over %s on %s until interrupted\n", chip, chip.BootloaderVersion, face, path)
	<-ctx.Done()
	closer.Close()
	st := sim.Stats()
	fmt.Fprintf(stderr, "host_bytes=%d device_bytes=%d round_trips=%d erases=%d pages_erased=%d\n", st.HostBytes, st.DeviceBytes, st.RoundTrips, st.Erases, st.PagesErased)
	if *statsFile != "" {
		data, _ := json.MarshalIndent(st, "", "  ")
		if err := os.WriteFile(*statsFile, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "otagw sim stm32: %v\n", err)
			return 1
		}
	}
	return 0
}
