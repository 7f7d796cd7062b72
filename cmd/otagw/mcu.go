package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/mcupkg"
	_ "github.com/otagw/otagw/downstream/protocols" // the protocols --protocol names
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/internal/sign"
)

func init() {
	register("mcu package", "create or inspect a signed MCU firmware package (create|info)", runMCUPackage)
	register("mcu flash", "flash an MCU package: standalone with --port, else through the daemon", runMCUFlash)
}

// mcuFlashDaemon is set by the daemon-client verb file when the daemon
// path (otagw mcu flash DEVICE...|--all PACKAGE) is wired; nil means only
// the standalone --port path exists in this build.
var mcuFlashDaemon func(ctx context.Context, args []string, stdout, stderr io.Writer) int

func mcuJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func parseUint32(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, 32)
	return uint32(v), err
}

func runMCUPackage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "create":
			return runMCUPackageCreate(args[1:], stdout, stderr)
		case "info":
			return runMCUPackageInfo(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, "usage: otagw mcu package create|info ...")
	return 2
}

type mcuList []string

func (m *mcuList) String() string     { return strings.Join(*m, ",") }
func (m *mcuList) Set(s string) error { *m = append(*m, strings.Split(s, ",")...); return nil }

func runMCUPackageCreate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu package create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keys, hwRevs mcuList
	fs.Var(&keys, "key", "signing key (PKCS#8 PEM); repeat for several signatures")
	target := fs.String("target", "", "target family, e.g. F1, F4, G0, L4, H7")
	pid := fs.String("product-id", "", "STM32 product ID, e.g. 0x410")
	version := fs.String("version", "", "firmware version MAJOR.MINOR.REVISION[+BUILD]")
	address := fs.String("address", "", "load address of a raw .bin input (and the Go address)")
	fs.Var(&hwRevs, "hw-rev", "hardware revision the image is for; repeat or comma-separate (default: any)")
	out := fs.String("o", "", "output package file")
	espChip := fs.String("chip", "", "ESP32 chip (esp32, esp32s3, esp32c3): an ESP32 package made of --region inputs")
	var regions mcuList
	fs.Var(&regions, "region", "ESP32: OFFSET=FILE, a raw image at its flash offset; repeat (bootloader, partition table, application)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otagw mcu package create --key K --target FAMILY --product-id 0xNNN --version V [--address A] [--hw-rev R] INPUT -o FILE")
		fmt.Fprintln(stderr, "       otagw mcu package create --key K --chip esp32|esp32s3|esp32c3 [--version V] --region 0x1000=bootloader.bin --region 0x8000=partitions.bin --region 0x10000=app.bin -o FILE")
		fs.PrintDefaults()
	}
	ops, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if *espChip != "" {
		if len(ops) != 0 || *out == "" || len(keys) == 0 || len(regions) == 0 || *pid != "" {
			fs.Usage()
			return 2
		}
		return createESP32Package(*espChip, *version, regions, hwRevs, keys, *out, stdout, stderr)
	}
	if len(ops) != 1 || *out == "" || len(keys) == 0 || *target == "" || *pid == "" || *version == "" {
		fs.Usage()
		return 2
	}
	p, err := strconv.ParseUint(*pid, 0, 16)
	if err != nil || p == 0 || p > 0xFFF {
		fmt.Fprintf(stderr, "otagw mcu package create: --product-id %q: want a 12-bit number like 0x410\n", *pid)
		return 2
	}
	var addr uint32
	if *address != "" {
		if addr, err = parseUint32(*address); err != nil {
			fmt.Fprintf(stderr, "otagw mcu package create: --address %q: %v\n", *address, err)
			return 2
		}
	}
	data, err := os.ReadFile(ops[0])
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu package create: %v\n", err)
		return 1
	}
	segs, err := mcupkg.LoadInput(ops[0], data, addr, *address != "")
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu package create: %s: %v\n", ops[0], err)
		return 1
	}
	if chip, ok := chips.Lookup(uint16(p)); ok {
		for _, s := range segs {
			if !chip.InFlash(s.Addr, len(s.Data)) {
				fmt.Fprintf(stderr, "otagw mcu package create: %s: segment 0x%08x+%d is outside the flash of %s\n", ops[0], s.Addr, len(s.Data), chip)
				return 1
			}
		}
	}
	var signers []sign.Signer
	for _, k := range keys {
		s, err := sign.LoadSigner(k)
		if err != nil {
			fmt.Fprintf(stderr, "otagw mcu package create: --key %s: %v\n", k, err)
			return 1
		}
		signers = append(signers, s)
	}
	m := mcupkg.Manifest{
		Target:      mcupkg.Target{Family: strings.ToUpper(*target), ProductID: uint16(p), HWRevs: hwRevs},
		Version:     *version,
		LoadAddress: addr,
		Source:      ops[0],
		Created:     time.Now().UTC().Format(time.RFC3339),
	}
	pkg, err := mcupkg.Create(m, segs, signers...)
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu package create: %v\n", err)
		return 1
	}
	if err := os.WriteFile(*out, pkg, 0o644); err != nil {
		fmt.Fprintf(stderr, "otagw mcu package create: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s 0x%03x version %s, %d segment(s), %d bytes\n", *out, m.Target.Family, p, *version, len(segs), len(pkg))
	return 0
}

type mcuInfo struct {
	File       string          `json:"file"`
	Manifest   mcupkg.Manifest `json:"manifest"`
	Signatures []string        `json:"signatures"`
	Verified   *bool           `json:"verified,omitempty"`
	Chip       string          `json:"chip,omitempty"`
}

func runMCUPackageInfo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu package info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	keyring := fs.String("keyring", "", "verify the signatures against this keyring directory")
	ops, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(ops) != 1 {
		fmt.Fprintln(stderr, "usage: otagw mcu package info FILE [--keyring DIR] [--json]")
		return 2
	}
	f, err := os.Open(ops[0])
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu package info: %v\n", err)
		return 1
	}
	p, err := mcupkg.Read(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu package info: %s: %v\n", ops[0], err)
		return 1
	}
	info := mcuInfo{File: ops[0], Manifest: p.Manifest}
	for _, s := range p.Signatures {
		info.Signatures = append(info.Signatures, s.KeyID)
	}
	if c, ok := esp32.LookupChip(p.Manifest.Target.Chip); ok {
		info.Chip = c.Display
	} else if c, ok := chips.Lookup(p.Manifest.Target.ProductID); ok && p.Manifest.Target.Chip == "" {
		info.Chip = c.Name
	}
	rc := 0
	var verr error
	if *keyring != "" {
		kr, err := sign.LoadKeyring(*keyring)
		if err != nil {
			fmt.Fprintf(stderr, "otagw mcu package info: %v\n", err)
			return 1
		}
		verr = p.Verify(kr, 1)
		ok := verr == nil
		info.Verified = &ok
		if !ok {
			rc = 1
		}
	}
	if *asJSON {
		mcuJSON(stdout, info)
	} else {
		m := p.Manifest
		if m.Target.Chip != "" {
			fmt.Fprintf(stdout, "file:        %s\ntarget:      %s chip %s (%s)\n", ops[0], m.Target.Family, m.Target.Chip, info.Chip)
		} else {
			fmt.Fprintf(stdout, "file:        %s\ntarget:      %s product 0x%03x %s\n", ops[0], m.Target.Family, m.Target.ProductID, info.Chip)
		}
		if len(m.Target.HWRevs) > 0 {
			fmt.Fprintf(stdout, "hw revs:     %s\n", strings.Join(m.Target.HWRevs, ", "))
		}
		fmt.Fprintf(stdout, "version:     %s\nload addr:   0x%08x\nimage:       %d bytes sha256 %s\n", m.Version, m.LoadAddress, m.ImageSize, m.ImageSHA256)
		for i, s := range m.Segments {
			fmt.Fprintf(stdout, "segment %d:   0x%08x-0x%08x (%d bytes)\n", i, s.Addr, s.Addr+uint32(s.Size), s.Size)
		}
		fmt.Fprintf(stdout, "signed by:   %s\n", strings.Join(info.Signatures, ", "))
		if info.Verified != nil {
			if *info.Verified {
				fmt.Fprintln(stdout, "signature:   valid")
			} else {
				fmt.Fprintf(stdout, "signature:   INVALID: %v\n", verr)
			}
		}
	}
	return rc
}

func runMCUFlash(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	standalone := false
	for _, a := range args {
		if a == "--port" || a == "-port" || strings.HasPrefix(a, "--port=") || strings.HasPrefix(a, "-port=") {
			standalone = true
		}
	}
	if !standalone {
		if mcuFlashDaemon != nil {
			return mcuFlashDaemon(ctx, args, stdout, stderr)
		}
		fmt.Fprintln(stderr, "otagw mcu flash: flashing configured devices through the daemon is not available in this build; use --port DEV for a device on the command line")
		return 2
	}
	return runMCUFlashPort(ctx, args, stdout, stderr)
}

func runMCUFlashPort(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw mcu flash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.String("port", "", "serial device, e.g. /dev/ttyUSB0")
	protocol := fs.String("protocol", "", "bootloader protocol: stm32-rom or esp32-rom (default: the package's; stm32-uart: deprecated name of stm32-rom)")
	espBaud := fs.Int("esp-baud", 0, "ESP32: switch to this baud rate with CHANGE_BAUDRATE after sync")
	noCompress := fs.Bool("no-compress", false, "ESP32: send FLASH_DATA instead of compressed FLASH_DEFL_DATA")
	espBlock := fs.Int("esp-block-size", 0, "ESP32: data block size in bytes (default 1024, as esptool.py uses with the ROM; at most 16384)")
	keyring := fs.String("keyring", "", "directory of trusted public keys")
	baud := fs.Int("baud", 115200, "baud rate")
	parity := fs.String("parity", "", "parity: even, none (pseudo-terminals) or odd; default: the protocol's (even for STM32, none for ESP32)")
	rst := fs.String("reset", "manual", "how to enter the bootloader: manual, dtr-rts, gpio:CHIP:BOOT0LINE:NRSTLINE")
	hdr := fs.String("version-header", "", "flash address of an MCUboot image header: skip the flash when the device already runs this version")
	state := fs.String("state", "", "JSON file to record the result in (and read the minimum version from)")
	massErase := fs.Bool("mass-erase", false, "erase the whole flash instead of the pages the image needs")
	verify := fs.String("verify", "auto", "auto (CRC when offered, else read-back), readback or crc")
	unprotect := fs.Bool("unprotect", false, "remove write protection, and readout protection (which mass-erases)")
	asJSON := fs.Bool("json", false, "print line-delimited JSON events and the result")
	ops, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(ops) != 1 || *port == "" || *keyring == "" {
		fmt.Fprintln(stderr, "usage: otagw mcu flash --port DEV --protocol stm32-rom|esp32-rom --keyring DIR [--baud N] [--parity even|none] [--reset manual|dtr-rts|gpio:CHIP:BOOT0:NRST] PACKAGE [--json]")
		return 2
	}
	kr, err := sign.LoadKeyring(*keyring)
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu flash: %v\n", err)
		return 1
	}
	pkg, err := mcupkg.Open(ops[0], kr, 1)
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu flash: %v\n", err)
		return 1
	}
	m := pkg.Manifest
	o := downstream.DefaultOptions()
	o.Attempts = 3
	o.STM32.MassErase, o.STM32.Verify = *massErase, *verify
	o.STM32.WriteUnprotect, o.STM32.ReadoutUnprotect = *unprotect, *unprotect
	o.ESP32.Baud, o.ESP32.Compress = *espBaud, !*noCompress
	if *espBlock > 0 {
		o.ESP32.BlockSize = *espBlock
	}
	if *protocol == "" {
		*protocol = downstream.ProtocolSTM32
		if m.Target.Chip != "" {
			*protocol = downstream.ProtocolESP32
		}
	}
	if *protocol == downstream.ProtocolSTM32UART {
		fmt.Fprintf(stderr, "otagw mcu flash: --protocol %s is deprecated, say %s\n", downstream.ProtocolSTM32UART, downstream.ProtocolSTM32)
		*protocol = downstream.ProtocolSTM32
	}
	o.Buses = []downstream.Bus{{Name: "cli", Transport: downstream.TransportUART, Port: *port, Baud: *baud, Parity: *parity, Reset: *rst}}
	dev := downstream.Device{Name: *port, Bus: "cli", Protocol: *protocol, Family: m.Target.Family, ProductID: m.Target.ProductID, Chip: m.Target.Chip}
	if len(m.Target.HWRevs) == 1 {
		dev.HWRev = m.Target.HWRevs[0]
	}
	if *hdr != "" {
		if dev.VersionHeader, err = parseUint32(*hdr); err != nil {
			fmt.Fprintf(stderr, "otagw mcu flash: --version-header %q: %v\n", *hdr, err)
			return 2
		}
	}
	o.Devices = []downstream.Device{dev}
	var store fanout.Store = fanout.NewMemStore()
	if *state != "" {
		store = &fanout.FileStore{Path: *state}
	}
	eng, err := fanout.New(o, store, nil)
	if err != nil {
		fmt.Fprintf(stderr, "otagw mcu flash: %v\n", err)
		return 2
	}
	var bar *progressbar.ProgressBar
	enc := json.NewEncoder(stdout)
	onEvent := func(ev fanout.Event) {
		if *asJSON {
			enc.Encode(ev)
			return
		}
		switch ev.Kind {
		case "phase":
			if ev.Phase == "erase" || ev.Phase == "write" || ev.Phase == "verify" {
				if bar != nil {
					bar.Finish()
				}
				bar = progressbar.NewOptions(m.ImageSize, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription(fmt.Sprintf("%-7s", ev.Phase)),
					progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
			} else {
				fmt.Fprintf(stderr, "%s: %s\n", ev.Device, ev.Phase)
			}
		case "progress":
			if bar != nil {
				bar.Set(ev.Done)
			}
		case "retry":
			fmt.Fprintf(stderr, "\nretry %d: %s\n", ev.Retries, ev.Reason)
		case "done":
			if bar != nil {
				bar.Finish()
				bar = nil
			}
		}
	}
	res, err := eng.Run(ctx, pkg, nil, onEvent)
	if err != nil || len(res) != 1 {
		fmt.Fprintf(stderr, "otagw mcu flash: %v\n", err)
		return 1
	}
	r := res[0]
	if *asJSON {
		enc.Encode(struct {
			Result fanout.Result `json:"result"`
		}{r})
	} else {
		fmt.Fprintf(stdout, "%s: %s", *port, r.State)
		switch r.State {
		case fanout.Success:
			fmt.Fprintf(stdout, ": version %s written and verified (%d bytes, %d retries, %v)\n", r.ToVersion, r.Bytes, r.Retries, r.Duration.Round(time.Millisecond))
		case fanout.NotNeeded:
			fmt.Fprintf(stdout, ": already runs %s\n", r.ToVersion)
		default:
			fmt.Fprintf(stdout, ": %s\n", r.Reason)
		}
	}
	switch r.State {
	case fanout.Success, fanout.NotNeeded:
		return 0
	}
	return 1
}
