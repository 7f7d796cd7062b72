// Command yocto-gomods writes the otagw recipe's Go module list,
// yocto/meta-otagw/recipes-otagw/otagw/otagw-go-mods.inc, and the licenses
// of the modules linked into otagw, otagw-licenses.inc, from go.mod and
// go.sum: one gomod:// SRC_URI entry per module, with the sha256 of the file
// bitbake's gomod fetcher downloads from the Go module proxy (the module zip,
// or only its go.mod for modules the build reads no code from).
//
//	go run ./scripts/yocto-gomods          # rewrite the .inc
//	go run ./scripts/yocto-gomods -check   # exit 1 when it is out of date
//
// The files come from the local module cache (GOMODCACHE), filled by
// `go mod download` when a file is missing; each one is checked against its
// go.sum hash before its sha256 is written, so the .inc can only name the
// bytes go.sum already pins.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/otagw/otagw/internal/gomods"
)

const (
	incPath     = "yocto/meta-otagw/recipes-otagw/otagw/otagw-go-mods.inc"
	licensePath = "yocto/meta-otagw/recipes-otagw/otagw/otagw-licenses.inc"
)

func main() {
	check := flag.Bool("check", false, "only compare: exit 1 when "+incPath+" is out of date")
	dir := flag.String("C", ".", "the otagw source tree (where go.mod and go.sum are)")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "yocto-gomods:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	mods, err := gomods.Inc(dir)
	if err != nil {
		return err
	}
	if err := write(dir, incPath, mods, check); err != nil {
		return err
	}
	lics, err := gomods.LicenseInc(dir)
	if err != nil {
		return err
	}
	return write(dir, licensePath, lics, check)
}

func write(dir, rel string, want []byte, check bool) error {
	path := filepath.Join(dir, rel)
	if check {
		have, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(have, want) {
			return fmt.Errorf("%s is out of date with go.mod/go.sum: run go run ./scripts/yocto-gomods", rel)
		}
		return nil
	}
	return os.WriteFile(path, want, 0o644)
}
