package rootfs

import (
	"errors"
	"fmt"

	"github.com/otagw/otagw/rootfs/source"
)

// SlotConfig is one slot from the configuration.
type SlotConfig struct {
	// Name identifies the slot ("rootfs.0").
	Name string `yaml:"name" json:"name"`
	// Class groups the slots a payload target can go to ("rootfs").
	Class string `yaml:"class" json:"class"`
	// Device is a block device path, PARTUUID=..., LABEL=..., or a regular
	// file (development).
	Device string `yaml:"device" json:"device"`
	// Bootname is what the boot loader calls the slot ("A", "B").
	Bootname string `yaml:"bootname" json:"bootname"`
}

// Options configure the installer.
type Options struct {
	Slots []SlotConfig `yaml:"slots" json:"slots"`
	// CheckpointBytes is how often (in written bytes) the slot is synced and
	// the progress checkpoint handed to the caller.
	CheckpointBytes int64 `yaml:"checkpoint_bytes" json:"checkpoint_bytes"`
	// Delta copies the chunks the booted slot of the same class already
	// holds (fixed chunks: at the same offset; bundles made with
	// --chunking cdc: anywhere, found by content) from that slot, and
	// fetches only the others, with HTTP Range requests that name their end.
	Delta bool `yaml:"delta" json:"delta"`
	// InFlight is how many chunks wait between pipeline stages, besides
	// one per worker (a worker per CPU decompresses and hashes); each
	// costs a chunk of memory.
	InFlight int `yaml:"in_flight" json:"in_flight"`
	// Source configures HTTP(S) sources.
	Source source.Options `yaml:"source" json:"source"`
}

// DefaultOptions are the defaults, with no slots.
func DefaultOptions() Options {
	return Options{CheckpointBytes: 16 << 20, InFlight: 1, Source: source.DefaultOptions()}
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.CheckpointBytes < 1<<20 {
		return fmt.Errorf("rootfs checkpoint_bytes %d: want at least 1 MiB", o.CheckpointBytes)
	}
	if o.InFlight < 1 || o.InFlight > 16 {
		return fmt.Errorf("rootfs in_flight %d: want 1..16", o.InFlight)
	}
	names := map[string]bool{}
	boot := map[string]bool{}
	for i, s := range o.Slots {
		if s.Name == "" || s.Class == "" || s.Device == "" || s.Bootname == "" {
			return fmt.Errorf("rootfs slots[%d]: name, class, device and bootname are required", i)
		}
		if s.Class == "mcu" {
			return fmt.Errorf("rootfs slot %s: class \"mcu\" is reserved for MCU firmware payloads", s.Name)
		}
		if names[s.Name] {
			return fmt.Errorf("rootfs slot %s: name used twice", s.Name)
		}
		names[s.Name] = true
		if boot[s.Class+"\x00"+s.Bootname] {
			return fmt.Errorf("rootfs slot %s: bootname %q used twice in class %s", s.Name, s.Bootname, s.Class)
		}
		boot[s.Class+"\x00"+s.Bootname] = true
	}
	return o.Source.Validate()
}

var errNoSlot = errors.New("no slot")
