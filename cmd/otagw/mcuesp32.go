package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/mcupkg"
	"github.com/otagw/otagw/internal/sign"
)

// createESP32Package builds an ESP32 package: raw images at flash
// offsets; the version comes from the application's esp_app_desc when
// --version is not given; an image built for another chip is refused.
func createESP32Package(chipName, version string, regions, hwRevs, keys []string, out string, stdout, stderr io.Writer) int {
	const me = "otagw mcu package create"
	chip, ok := esp32.LookupChip(chipName)
	if !ok {
		fmt.Fprintf(stderr, "%s: --chip %q: want one of %s\n", me, chipName, esp32.ChipNames())
		return 2
	}
	var segs []mcupkg.Segment
	for _, r := range regions {
		off, file, ok := strings.Cut(r, "=")
		addr, err := parseUint32(off)
		if !ok || err != nil || file == "" {
			fmt.Fprintf(stderr, "%s: --region %q: want OFFSET=FILE\n", me, r)
			return 2
		}
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", me, err)
			return 1
		}
		segs = append(segs, mcupkg.Segment{Addr: addr, Data: data})
	}
	if err := esp32.CheckRegions(chip, segs); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", me, err)
		return 1
	}
	src := "--version"
	if version == "" {
		for _, s := range segs {
			if info, err := esp32.ParseImage(s.Data); err == nil && info.App != nil && info.App.Version != "" {
				version, src = strings.TrimPrefix(info.App.Version, "v"), fmt.Sprintf("esp_app_desc of the image at 0x%x", s.Addr)
				break
			}
		}
		if version == "" {
			fmt.Fprintf(stderr, "%s: no --version and no region carries an app descriptor\n", me)
			return 2
		}
	}
	var signers []sign.Signer
	for _, k := range keys {
		s, err := sign.LoadSigner(k)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --key %s: %v\n", me, k, err)
			return 1
		}
		signers = append(signers, s)
	}
	m := mcupkg.Manifest{
		Target:  mcupkg.Target{Family: "ESP32", Chip: chip.Name, HWRevs: hwRevs},
		Version: version,
		Source:  strings.Join(regions, " "),
		Created: time.Now().UTC().Format(time.RFC3339),
	}
	pkg, err := mcupkg.Create(m, segs, signers...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (version from %s)\n", me, err, src)
		return 1
	}
	if err := os.WriteFile(out, pkg, 0o644); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", me, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s version %s (from %s), %d region(s), %d bytes\n", out, chip, version, src, len(segs), len(pkg))
	return 0
}
