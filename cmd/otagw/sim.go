package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/otagw/otagw/downstream/simpty"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

func init() {
	register("sim stm32", "simulate an STM32 ROM bootloader on a pseudo-terminal (prints its path)", runSimSTM32)
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
	slcan := fs.Bool("slcan", false, "serve the CAN bootloader (AN3154) behind an slcan adapter instead of the USART one (a bus with transport: can and port: the printed path)")
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
	serve, face := stm32sim.ServePTY, "USART"
	if *slcan {
		serve, face = func(ctx context.Context, s *stm32sim.Sim) (*simpty.PTY, error) { return stm32sim.ServeSLCANPTY(ctx, s) }, "CAN via slcan"
	}
	p, err := serve(ctx, sim)
	if err != nil {
		fmt.Fprintf(stderr, "otagw sim stm32: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, p.Path)
	if fl, ok := stdout.(*os.File); ok {
		fl.Sync()
	}
	fmt.Fprintf(stderr, "simulating %s (bootloader 0x%02x, %s) on %s until interrupted\n", chip, chip.BootloaderVersion, face, p.Path)
	<-ctx.Done()
	p.Close()
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
