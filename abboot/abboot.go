// Package abboot decides which root-filesystem slot boots next: the boot
// order, the tries each slot has left, marking a slot good or bad, and which
// slot is booted now (from the kernel command line, never from the
// environment).
//
//	ch, err := abboot.New(opts, log)      // opts.Backend: uboot | uboot-bootcount | file
//	booted, err := ch.Booted()            // "A" (rauc.slot=A on /proc/cmdline)
//	err = ch.SetPrimary("B", 3)           // after installing into B: 3 tries
//	// reboot; U-Boot's boot.cmd counts the tries down, falls back to A
//	err = ch.MarkGood("B")                // health checks passed on B
//	err = ch.MarkBad("B")                 // or: never boot B again
//	st, err := ch.Status()                // per slot: state, primary, booted, tries
//
// Every operation is one read-modify-write of the boot environment under its
// lock and lands in ONE write (unlike RAUC, which runs fw_setenv once per
// variable): a power cut leaves either the old or the new state.
//
// Backends:
//   - uboot: RAUC's convention, BOOT_ORDER="A B" and BOOT_<slot>_LEFT (hex),
//     run by abboot/bootscript/boot.cmd;
//   - uboot-bootcount: U-Boot's bootcount/bootlimit/upgrade_available/
//     altbootcmd with a slot variable (Mender-like), same boot.cmd with
//     otagw_mode=bootcount;
//   - file: the uboot semantics on a plain "name=value" text file (development,
//     demo), written atomically (temp file, fsync, rename).
package abboot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Backends.
const (
	BackendUBoot          = "uboot"
	BackendUBootBootcount = "uboot-bootcount"
	BackendFile           = "file"
)

// Errors.
var (
	// ErrUnknownSlot: a slot name that is not in Options.Slots.
	ErrUnknownSlot = errors.New("unknown slot")
	// ErrNoBootedSlot: the kernel command line names no (known) slot.
	ErrNoBootedSlot = errors.New("booted slot not found on the kernel command line")
	// ErrOptions: invalid Options.
	ErrOptions = errors.New("invalid abboot options")
)

// Vars names the environment variables the backends use.
type Vars struct {
	// uboot and file backends (RAUC convention).
	Order string `yaml:"order" json:"order"` // BOOT_ORDER
	Left  string `yaml:"left" json:"left"`   // BOOT_%s_LEFT, %s = slot bootname
	// uboot-bootcount backend (bootcount, bootlimit, upgrade_available and
	// altbootcmd are fixed by U-Boot).
	Slot string `yaml:"slot" json:"slot"` // boot_slot
	Bad  string `yaml:"bad" json:"bad"`   // boot_bad: slots that failed or were marked bad
}

// Options configure a Chooser.
type Options struct {
	Backend string   `yaml:"backend" json:"backend"`
	Slots   []string `yaml:"slots" json:"slots"` // U-Boot bootnames, e.g. ["A", "B"]
	// FWEnvConfig is the fw_env.config of the uboot backends.
	FWEnvConfig string `yaml:"fw_env_config" json:"fw_env_config"`
	// LockFile serialises environment writers (libubootenv's by default).
	LockFile string `yaml:"lock_file" json:"lock_file"`
	// File is the environment text file of the file backend.
	File string `yaml:"file" json:"file"`
	// Cmdline is read for the booted slot (/proc/cmdline).
	Cmdline string `yaml:"cmdline" json:"cmdline"`
	// BootedKey is the command-line word prefix naming the booted slot,
	// e.g. "rauc.slot=" or "root=PARTUUID=".
	BootedKey string `yaml:"booted_key" json:"booted_key"`
	// BootedMap maps the value after BootedKey to a slot (e.g. PARTUUIDs);
	// empty: the value is the slot name.
	BootedMap map[string]string `yaml:"booted_map" json:"booted_map"`
	// PrimaryTries is the default for SetPrimary, GoodTries what MarkGood sets.
	PrimaryTries int  `yaml:"primary_tries" json:"primary_tries"`
	GoodTries    int  `yaml:"good_tries" json:"good_tries"`
	Vars         Vars `yaml:"vars" json:"vars"`
	// LockTimeout bounds the wait for the environment lock.
	LockTimeout time.Duration `yaml:"lock_timeout" json:"lock_timeout"`
}

// DefaultOptions returns the defaults: the uboot backend with RAUC's names.
func DefaultOptions() Options {
	return Options{
		Backend:      BackendUBoot,
		Slots:        []string{"A", "B"},
		FWEnvConfig:  "/etc/fw_env.config",
		LockFile:     "/var/lock/fw_printenv.lock",
		File:         "/var/lib/otagw/bootenv.txt",
		Cmdline:      "/proc/cmdline",
		BootedKey:    "rauc.slot=",
		PrimaryTries: 3,
		GoodTries:    3,
		Vars:         Vars{Order: "BOOT_ORDER", Left: "BOOT_%s_LEFT", Slot: "boot_slot", Bad: "boot_bad"},
		LockTimeout:  10 * time.Second,
	}
}

// Validate checks o.
func (o Options) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrOptions, fmt.Sprintf(f, a...)) }
	switch o.Backend {
	case BackendUBoot, BackendUBootBootcount:
		if o.FWEnvConfig == "" {
			return bad("fw_env_config is empty")
		}
	case BackendFile:
		if o.File == "" {
			return bad("file is empty")
		}
	default:
		return bad("backend %q: want %s, %s or %s", o.Backend, BackendUBoot, BackendUBootBootcount, BackendFile)
	}
	if len(o.Slots) < 2 {
		return bad("slots: need at least two, got %v", o.Slots)
	}
	if o.Backend == BackendUBootBootcount && len(o.Slots) != 2 {
		return bad("slots: the uboot-bootcount backend needs exactly two, got %v", o.Slots)
	}
	for i, s := range o.Slots {
		if s == "" || strings.ContainsAny(s, " \t\n=\x00%$\"'") {
			return bad("slots[%d] %q: not a bootname", i, s)
		}
		if slices.Index(o.Slots, s) != i {
			return bad("slots: %q twice", s)
		}
	}
	if o.Cmdline == "" || o.BootedKey == "" {
		return bad("cmdline and booted_key must be set")
	}
	for k, v := range o.BootedMap {
		if !slices.Contains(o.Slots, v) {
			return bad("booted_map[%q] = %q is not a slot", k, v)
		}
	}
	if o.PrimaryTries < 1 || o.PrimaryTries > 255 || o.GoodTries < 1 || o.GoodTries > 255 {
		return bad("primary_tries %d / good_tries %d: want 1..255", o.PrimaryTries, o.GoodTries)
	}
	if o.Vars.Order == "" || o.Vars.Slot == "" || o.Vars.Bad == "" || strings.Count(o.Vars.Left, "%s") != 1 || strings.Count(o.Vars.Left, "%") != 1 {
		return bad("vars: order, slot, bad must be set and left must contain exactly one %%s (got %+v)", o.Vars)
	}
	if o.LockTimeout <= 0 {
		return bad("lock_timeout must be positive")
	}
	return nil
}

// SlotStatus is one slot as Status reports it.
type SlotStatus struct {
	Bootname  string `json:"bootname"`
	State     string `json:"state"` // "good" or "bad"
	Primary   bool   `json:"primary"`
	Booted    bool   `json:"booted"`
	TriesLeft int    `json:"tries_left"`
}

// envStore is where the variables live.
type envStore interface {
	read(ctx context.Context) (map[string]string, error)
	update(ctx context.Context, fn func(map[string]string) error) error
}

// logic is a boot-selection convention over the variables.
type logic interface {
	primary(env map[string]string) string
	triesLeft(env map[string]string, slot string) int
	good(env map[string]string, slot string) bool
	setPrimary(env map[string]string, slot string, tries int)
	markGood(env map[string]string, slot string)
	markBad(env map[string]string, slot string)
}

// Chooser is the boot selection of one device.
type Chooser struct {
	opts  Options
	log   *zap.Logger
	store envStore
	logic logic
}

// New returns a Chooser for opts.
func New(opts Options, log *zap.Logger) (*Chooser, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := &Chooser{opts: opts, log: log.With(zap.String("backend", opts.Backend))}
	switch opts.Backend {
	case BackendUBoot, BackendUBootBootcount:
		s, err := openUBoot(opts)
		if err != nil {
			return nil, err
		}
		c.store = s
	case BackendFile:
		c.store = &fileStore{path: opts.File}
	}
	if opts.Backend == BackendUBootBootcount {
		c.logic = bootcountLogic{opts}
	} else {
		c.logic = raucLogic{opts}
	}
	return c, nil
}

func (c *Chooser) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.opts.LockTimeout)
}

func (c *Chooser) check(slot string) error {
	if !slices.Contains(c.opts.Slots, slot) {
		return fmt.Errorf("%w %q (slots: %v)", ErrUnknownSlot, slot, c.opts.Slots)
	}
	return nil
}

func (c *Chooser) read() (map[string]string, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.store.read(ctx)
}

func (c *Chooser) update(op, slot string, fn func(map[string]string)) error {
	if err := c.check(slot); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := c.ctx()
	defer cancel()
	// No write when the operation changes nothing (marking a good slot
	// good on every boot): every write wears the flash and is a moment
	// where power can fail.
	if cur, err := c.store.read(ctx); err == nil {
		next := make(map[string]string, len(cur))
		for k, v := range cur {
			next[k] = v
		}
		fn(next)
		if maps.Equal(cur, next) {
			return nil
		}
	}
	err := c.store.update(ctx, func(env map[string]string) error { fn(env); return nil })
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, slot, err)
	}
	c.log.Info("boot selection changed", zap.String("op", op), zap.String("slot", slot))
	return nil
}

// Booted returns the slot the running system was booted from, read from
// the kernel command line.
func (c *Chooser) Booted() (string, error) {
	data, err := os.ReadFile(c.opts.Cmdline)
	if err != nil {
		return "", fmt.Errorf("booted slot: %w", err)
	}
	val, found := "", false
	for _, w := range strings.Fields(string(data)) {
		if strings.HasPrefix(w, c.opts.BootedKey) {
			val, found = strings.Trim(strings.TrimPrefix(w, c.opts.BootedKey), `"`), true // last one wins, as in the kernel
		}
	}
	if !found {
		return "", fmt.Errorf("%w: no %q in %s", ErrNoBootedSlot, c.opts.BootedKey, c.opts.Cmdline)
	}
	slot := val
	if len(c.opts.BootedMap) > 0 {
		slot = ""
		for k, v := range c.opts.BootedMap {
			if strings.EqualFold(k, val) {
				slot = v
			}
		}
	}
	if !slices.Contains(c.opts.Slots, slot) {
		return "", fmt.Errorf("%w: %s%s in %s is not one of %v", ErrNoBootedSlot, c.opts.BootedKey, val, c.opts.Cmdline, c.opts.Slots)
	}
	return slot, nil
}

// Primary returns the slot U-Boot will boot next.
func (c *Chooser) Primary() (string, error) {
	env, err := c.read()
	if err != nil {
		return "", fmt.Errorf("primary: %w", err)
	}
	return c.logic.primary(env), nil
}

// SetPrimary makes slot the next boot with tries attempts (tries <= 0:
// Options.PrimaryTries), in one environment write.
func (c *Chooser) SetPrimary(slot string, tries int) error {
	if tries <= 0 {
		tries = c.opts.PrimaryTries
	}
	if tries > 255 {
		return fmt.Errorf("set primary %s: %w: tries %d > 255", slot, ErrOptions, tries)
	}
	return c.update("set primary", slot, func(env map[string]string) { c.logic.setPrimary(env, slot, tries) })
}

// MarkGood marks slot as good: its tries are reset to Options.GoodTries.
func (c *Chooser) MarkGood(slot string) error {
	return c.update("mark good", slot, func(env map[string]string) { c.logic.markGood(env, slot) })
}

// MarkBad marks slot as bad: it is taken out of the boot order.
func (c *Chooser) MarkBad(slot string) error {
	return c.update("mark bad", slot, func(env map[string]string) { c.logic.markBad(env, slot) })
}

// TriesLeft returns the boot attempts slot has left.
func (c *Chooser) TriesLeft(slot string) (int, error) {
	if err := c.check(slot); err != nil {
		return 0, err
	}
	env, err := c.read()
	if err != nil {
		return 0, fmt.Errorf("tries left %s: %w", slot, err)
	}
	return c.logic.triesLeft(env, slot), nil
}

// Status reports every slot. A missing booted slot (development host) only
// leaves Booted false everywhere.
func (c *Chooser) Status() ([]SlotStatus, error) {
	env, err := c.read()
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	booted, _ := c.Booted()
	primary := c.logic.primary(env)
	var out []SlotStatus
	for _, s := range c.opts.Slots {
		st := SlotStatus{Bootname: s, State: "bad", Primary: s == primary, Booted: s == booted, TriesLeft: c.logic.triesLeft(env, s)}
		if c.logic.good(env, s) {
			st.State = "good"
		}
		out = append(out, st)
	}
	return out, nil
}

// hexval reads a counter like U-Boot's simple_strtoul(s, 16): leading hex
// digits, 0x allowed, anything else ends the number.
func hexval(s string) int {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	n := 0
	for _, r := range s {
		d, err := strconv.ParseUint(string(r), 16, 8)
		if err != nil || n > 1<<20 {
			break
		}
		n = n*16 + int(d)
	}
	return n
}

// decval is env_get_ulong(name, 10, 0).
func decval(s string) int {
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' || n > 1<<20 {
			break
		}
		n = n*10 + int(r-'0')
	}
	return n
}
