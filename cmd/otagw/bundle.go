package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/otagw/otagw/internal/state"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

func init() {
	register("bundle create", "build and sign an update bundle from images (rootfs=IMAGE mcu=PKG ...)", runBundleCreate)
	register("bundle info", "print a bundle's manifest; checks its signatures with --keyring", runBundleInfo)
	register("bundle verify", "check a bundle's signatures and every chunk of every payload", runBundleVerify)
	register("bundle write", "development/factory: install a bundle straight into one device, no daemon", runBundleWrite)
}

// bundleKeyFlag collects a repeatable string flag.
type bundleKeyFlag []string

func (m *bundleKeyFlag) String() string     { return strings.Join(*m, ",") }
func (m *bundleKeyFlag) Set(s string) error { *m = append(*m, s); return nil }

// bundleExpiry takes a duration from now (Go syntax, plus a "d" day suffix)
// or an RFC 3339 time.
func bundleExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour).UTC().Truncate(time.Second), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %q: want a positive duration (720h, 30d) or an RFC 3339 time", s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}

// bundlePayloads turns TARGET[:NAME]=PATH arguments into payloads. A payload
// without a name is called after its target, or TARGET-N when the target
// appears more than once.
func bundlePayloads(args []string) ([]bundle.PayloadSpec, error) {
	count := map[string]int{}
	type arg struct{ target, name, path string }
	var parsed []arg
	for _, a := range args {
		lhs, path, ok := strings.Cut(a, "=")
		if !ok || lhs == "" || path == "" {
			return nil, fmt.Errorf("payload %q: want TARGET[:NAME]=PATH, e.g. rootfs=rootfs.ext4", a)
		}
		target, name, _ := strings.Cut(lhs, ":")
		parsed = append(parsed, arg{target, name, path})
		count[target]++
	}
	seen := map[string]int{}
	var specs []bundle.PayloadSpec
	for _, a := range parsed {
		seen[a.target]++
		name := a.name
		if name == "" {
			name = a.target
			if count[a.target] > 1 {
				name = fmt.Sprintf("%s-%d", a.target, seen[a.target])
			}
		}
		specs = append(specs, bundle.PayloadSpec{Name: name, Target: a.target, Path: a.path})
	}
	return specs, nil
}

func runBundleCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw bundle create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keys bundleKeyFlag
	fs.Var(&keys, "key", "signing key (PKCS#8 PEM); repeat for several signatures")
	signCmd := fs.String("sign-cmd", "", "sign with this command (HSM): message on stdin, signature on stdout")
	signPub := fs.String("sign-pub", "", "public key matching --sign-cmd")
	compatible := fs.String("compatible", "", "hardware compatible string (required)")
	version := fs.String("version", "", "release version, semver (required)")
	minVersion := fs.String("min-version", "", "minimum version the device stores once this release is committed")
	counter := fs.Uint64("security-counter", 0, "security counter the device stores once this release is committed")
	allowDown := fs.Bool("allow-downgrade", false, "allow installing below the device's stored minimum (if its config permits)")
	expires := fs.String("expires", "", "expiry: a duration from now (720h, 30d) or an RFC 3339 time")
	chunk := fs.Int64("chunk-size", bundle.DefaultChunk, "plain bytes per chunk (multiple of 4096); with --chunking cdc the largest chunk")
	chunking := fs.String("chunking", "fixed", "fixed, or cdc: chunks cut by content (64 KiB on average), for delta updates")
	compress := fs.String("compress", bundle.CompressAuto, "auto (zstd where it helps), zstd or none")
	format := fs.Int("format", bundle.FormatVersion, "bundle format: 2 (binary chunk table), or 1 for devices whose otagw reads only format 1")
	out := fs.String("o", "", "output bundle file (required)")
	fs.StringVar(out, "out", "", "same as -o")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if *out == "" || *compatible == "" || *version == "" || len(pos) == 0 || (len(keys) == 0 && *signCmd == "") || (*signCmd != "") != (*signPub != "") {
		fmt.Fprintln(stderr, "usage: otagw bundle create (--key K [--key K2] | --sign-cmd CMD --sign-pub PUB) --compatible C --version V\n"+
			"         [--min-version V] [--security-counter N] [--allow-downgrade] [--expires DURATION|RFC3339]\n"+
			"         [--chunk-size N] [--chunking fixed|cdc] [--compress auto|zstd|none] [--format 2|1] rootfs=IMAGE [mcu=PKG ...] -o OUT")
		return 2
	}
	specs, err := bundlePayloads(pos)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle create: %v\n", err)
		return 2
	}
	o := bundle.CreateOptions{Compatible: *compatible, Version: *version, MinVersion: *minVersion, SecurityCounter: *counter,
		AllowDowngrade: *allowDown, ChunkSize: *chunk, Compress: *compress, Payloads: specs, Format: *format}
	if *chunking != "fixed" {
		o.Chunking = *chunking
	}
	o.Created = time.Now().UTC().Truncate(time.Second)
	if *expires != "" {
		t, err := bundleExpiry(*expires, o.Created)
		if err != nil {
			fmt.Fprintf(stderr, "otagw bundle create: %v\n", err)
			return 2
		}
		o.Expires = &t
	}
	for _, k := range keys {
		s, err := sign.LoadSigner(k)
		if err != nil {
			fmt.Fprintf(stderr, "otagw bundle create: --key: %v\n", err)
			return 1
		}
		o.Signers = append(o.Signers, s)
	}
	if *signCmd != "" {
		s, err := sign.CommandSigner(*signCmd, *signPub)
		if err != nil {
			fmt.Fprintf(stderr, "otagw bundle create: --sign-cmd: %v\n", err)
			return 1
		}
		o.Signers = append(o.Signers, s)
	}
	start := time.Now()
	h, err := bundle.Create(ctx, *out, o)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle create: %v\n", err)
		return 1
	}
	el := time.Since(start)
	if *asJSON {
		writeJSON(stdout, map[string]any{"bundle": *out, "format": h.Header.Version, "digest": h.ID(), "size": h.Size(),
			"manifest_size": h.Header.ManifestLen, "seconds": el.Seconds(), "manifest": h.Manifest})
		return 0
	}
	fmt.Fprintf(stdout, "%s: format %d, %d bytes (manifest %d), digest %s, %d signature(s), built in %.1fs\n",
		*out, h.Header.Version, h.Size(), h.Header.ManifestLen, h.ID(), len(h.Signatures), el.Seconds())
	bundlePrintPayloads(stdout, h.Manifest)
	return 0
}

func bundlePrintPayloads(w io.Writer, m *bundle.Manifest) {
	for _, p := range m.Payloads {
		z := 0
		for _, c := range p.Chunks {
			if c.Zstd {
				z++
			}
		}
		of := "of"
		if p.Chunking == bundle.ChunkingCDC {
			of = "cut by content, at most"
		}
		fmt.Fprintf(w, "  payload %-12s target %-8s %d bytes, stored %d (%.1f%%), %d chunks %s %d (%d zstd), sha256 %s\n",
			p.Name, p.Target, p.Size, p.StoredSize, 100*float64(p.StoredSize)/float64(p.Size), len(p.Chunks), of, p.ChunkSize, z, p.SHA256)
	}
}

// bundleOpen opens a bundle file or http(s):// URL from its start.
func bundleOpen(ctx context.Context, loc string) (io.ReadCloser, error) {
	src, err := source.New(loc, source.DefaultOptions())
	if err != nil {
		return nil, err
	}
	return src.Open(ctx, 0)
}

func bundleKeyring(dir string) (*sign.Keyring, error) {
	if dir == "" {
		return nil, nil
	}
	return sign.LoadKeyring(dir)
}

func runBundleInfo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw bundle info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyring := fs.String("keyring", "", "keyring (directory of *.pub or one file): check the signatures")
	threshold := fs.Int("threshold", 1, "valid signatures required")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: otagw bundle info BUNDLE|URL [--keyring DIR [--threshold N]] [--json]")
		return 2
	}
	kr, err := bundleKeyring(*keyring)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle info: %v\n", err)
		return 1
	}
	f, err := bundleOpen(ctx, pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle info: %v\n", err)
		return 1
	}
	defer f.Close()
	h, err := bundle.ReadHead(f, kr, *threshold)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle info: %s: %v\n", pos[0], err)
		return 1
	}
	var ids []string
	for _, s := range h.Signatures {
		ids = append(ids, s.KeyID)
	}
	if *asJSON {
		writeJSON(stdout, map[string]any{"bundle": pos[0], "format": h.Header.Version, "digest": h.ID(), "size": h.Size(),
			"manifest_size": h.Header.ManifestLen, "signatures": ids, "signatures_checked": kr != nil, "manifest": h.Manifest})
		return 0
	}
	m := h.Manifest
	fmt.Fprintf(stdout, "bundle      %s\nformat      %d (manifest %d bytes)\ndigest      %s\nsize        %d\n",
		pos[0], h.Header.Version, h.Header.ManifestLen, h.ID(), h.Size())
	check := "not checked (no --keyring)"
	if kr != nil {
		check = fmt.Sprintf("valid (threshold %d)", *threshold)
	}
	fmt.Fprintf(stdout, "signatures  %s: %s\n", strings.Join(ids, ", "), check)
	fmt.Fprintf(stdout, "compatible  %s\nversion     %s\n", m.Compatible, m.Version)
	if m.MinVersion != "" {
		fmt.Fprintf(stdout, "min version %s\n", m.MinVersion)
	}
	if m.SecurityCounter != 0 {
		fmt.Fprintf(stdout, "security    %d\n", m.SecurityCounter)
	}
	fmt.Fprintf(stdout, "downgrade   %v\ncreated     %s\n", m.AllowDowngrade, m.Created.Format(time.RFC3339))
	if m.Expires != nil {
		fmt.Fprintf(stdout, "expires     %s\n", m.Expires.Format(time.RFC3339))
	}
	bundlePrintPayloads(stdout, m)
	return 0
}

func runBundleVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw bundle verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyring := fs.String("keyring", "", "keyring (directory of *.pub or one file; required)")
	threshold := fs.Int("threshold", 1, "valid signatures required")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 || *keyring == "" {
		fmt.Fprintln(stderr, "usage: otagw bundle verify BUNDLE|URL --keyring DIR [--threshold N] [--json]")
		return 2
	}
	kr, err := bundleKeyring(*keyring)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle verify: %v\n", err)
		return 1
	}
	f, err := bundleOpen(ctx, pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle verify: %v\n", err)
		return 1
	}
	defer f.Close()
	h, err := bundle.Verify(ctx, f, kr, *threshold, nil)
	if err != nil {
		if *asJSON {
			writeJSON(stdout, map[string]any{"bundle": pos[0], "ok": false, "error": err.Error(), "kind": rootfs.Kind(err)})
		}
		fmt.Fprintf(stderr, "otagw bundle verify: %s: %v\n", pos[0], err)
		return 1
	}
	if *asJSON {
		writeJSON(stdout, map[string]any{"bundle": pos[0], "ok": true, "digest": h.ID(), "version": h.Manifest.Version})
		return 0
	}
	var chunks int
	for _, p := range h.Manifest.Payloads {
		chunks += len(p.Chunks)
	}
	fmt.Fprintf(stdout, "%s: OK: signatures, %d payload(s), %d chunks, sizes and hashes verified (version %s, digest %s)\n",
		pos[0], len(h.Manifest.Payloads), chunks, h.Manifest.Version, h.ID())
	return 0
}

func runBundleWrite(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw bundle write", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.String("slot-device", "", "device or file to write (required; must not be mounted)")
	class := fs.String("class", "rootfs", "payload target written to the device")
	keyring := fs.String("keyring", "", "keyring (directory of *.pub or one file; required)")
	threshold := fs.Int("threshold", 1, "valid signatures required")
	compatible := fs.String("compatible", "", "this hardware's compatible string (required)")
	minVersion := fs.String("min-version", "", "refuse bundles below this version (unless signed to allow it and --allow-downgrade)")
	allowDown := fs.Bool("allow-downgrade", false, "permit bundles signed with allow-downgrade")
	mcuDir := fs.String("mcu-dir", "", "extract MCU payloads into this directory")
	ckpt := fs.String("checkpoint", "", "keep the progress checkpoint in this file and resume from it")
	deltaFrom := fs.String("delta-from", "", "delta install: copy the chunks this device or file (the booted slot) already holds instead of fetching them")
	asJSON := fs.Bool("json", false, "line-delimited JSON progress events and result")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 || *dev == "" || *keyring == "" || *compatible == "" {
		fmt.Fprintln(stderr, "usage: otagw bundle write BUNDLE|URL --slot-device DEV --keyring DIR --compatible C\n"+
			"         [--class rootfs] [--threshold N] [--min-version V] [--allow-downgrade] [--mcu-dir DIR] [--checkpoint FILE]\n"+
			"         [--delta-from DEV] [--json]")
		return 2
	}
	kr, err := bundleKeyring(*keyring)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle write: %v\n", err)
		return 1
	}
	if !strings.Contains(*dev, "=") && !filepath.IsAbs(*dev) {
		if abs, err := filepath.Abs(*dev); err == nil {
			*dev = abs
		}
	}
	opts := rootfs.DefaultOptions()
	opts.Slots = []rootfs.SlotConfig{{Name: "target", Class: *class, Device: *dev, Bootname: "target"}}
	opts.Source = source.DefaultOptions()
	booted := ""
	if *deltaFrom != "" {
		if abs, err := filepath.Abs(*deltaFrom); err == nil && !strings.Contains(*deltaFrom, "=") {
			*deltaFrom = abs
		}
		opts.Slots = append(opts.Slots, rootfs.SlotConfig{Name: "booted", Class: *class, Device: *deltaFrom, Bootname: "booted"})
		opts.Delta, booted = true, "booted"
	}
	inst, err := rootfs.NewInstaller(opts, nil)
	if err != nil {
		fmt.Fprintf(stderr, "otagw bundle write: %v\n", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	req := rootfs.Request{Source: pos[0], Keyring: kr, MCUDir: *mcuDir, Booted: booted,
		Policy: rootfs.Policy{Compatible: *compatible, Threshold: *threshold, MinVersion: *minVersion, AllowDowngrade: *allowDown}}
	if *ckpt != "" {
		if b, err := os.ReadFile(*ckpt); err == nil {
			var c rootfs.Checkpoint
			if err := json.Unmarshal(b, &c); err != nil {
				fmt.Fprintf(stderr, "otagw bundle write: checkpoint %s: %v\n", *ckpt, err)
				return 1
			}
			req.Resume = &c
		}
		req.OnCheckpoint = func(c rootfs.Checkpoint) error { return bundleSaveCheckpoint(*ckpt, c) }
	}
	var lastPct int64 = -1
	req.OnProgress = func(p rootfs.Progress) {
		if *asJSON {
			enc.Encode(map[string]any{"event": "progress", "progress": p})
			return
		}
		if pct := 100 * p.Done / max(p.Total, 1); pct/10 != lastPct/10 || p.Done == p.Total {
			lastPct = pct
			fmt.Fprintf(stderr, "\r%s: %3d%% %d/%d bytes, %.1f MiB/s", p.Payload, pct, p.Done, p.Total, p.Rate/(1<<20))
		}
	}
	start := time.Now()
	res, err := inst.Install(ctx, req)
	if !*asJSON {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		if *asJSON {
			enc.Encode(map[string]any{"event": "error", "error": err.Error(), "kind": rootfs.Kind(err)})
		}
		fmt.Fprintf(stderr, "otagw bundle write: %v\n", err)
		return 1
	}
	if *ckpt != "" {
		os.Remove(*ckpt)
	}
	if *asJSON {
		enc.Encode(map[string]any{"event": "done", "seconds": time.Since(start).Seconds(), "result": res})
		return 0
	}
	for _, s := range res.Slots {
		fmt.Fprintf(stdout, "%s: payload %s (%d bytes) written to %s and read back, sha256 %s\n", pos[0], s.Payload, s.Size, s.Device, s.SHA256)
	}
	for _, m := range res.MCU {
		fmt.Fprintf(stdout, "%s: MCU payload %s (%d bytes) verified %s\n", pos[0], m.Payload, m.Size, m.Path)
	}
	fmt.Fprintf(stdout, "done in %.1fs; switching the boot slot is not done by this verb\n", time.Since(start).Seconds())
	return 0
}

func bundleSaveCheckpoint(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return state.WriteFileAtomic(path, b, 0o600)
}
