package abboot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/abboot/bootscript"
	"github.com/otagw/otagw/abboot/ubootenv"
)

// board is the board part of the default environment boot.cmd needs.
var board = map[string]string{
	"bootcmd":          "load mmc 0:1 ${scriptaddr} boot.scr; source ${scriptaddr}",
	"scriptaddr":       "0x40000000",
	"otagw_load_A":     "load mmc 0:2 ${kernel_addr_r} /boot/zImage",
	"otagw_load_B":     "load mmc 0:3 ${kernel_addr_r} /boot/zImage",
	"otagw_root_A":     "/dev/mmcblk0p2",
	"otagw_root_B":     "/dev/mmcblk0p3",
	"otagw_boot":       "bootz ${kernel_addr_r} - ${fdt_addr_r}",
	"kernel_addr_r":    "0x42000000",
	"fdt_addr_r":       "0x43000000",
	"default_bootargs": "console=ttyS0,115200 rootwait",
}

var boardCommands = map[string]func([]string) int{"load": func([]string) int { return 0 }}

// rig is one backend under test plus the simulated U-Boot that boots it.
type rig struct {
	ch      *Chooser
	machine *bootscript.Machine
	boot    func() (bootscript.Result, error) // nil: machine.PowerOn
	cmdline string
}

func bootcountDefaults(t *testing.T) map[string]string {
	data, err := os.ReadFile("bootscript/uboot-env-bootcount.txt")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = v
		}
	}
	return env
}

func newRig(t *testing.T, backend string) *rig {
	t.Helper()
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.Backend = backend
	opts.Cmdline = filepath.Join(dir, "cmdline")
	opts.LockFile = filepath.Join(dir, "fw_printenv.lock")
	env := map[string]string{}
	for k, v := range board {
		env[k] = v
	}
	r := &rig{cmdline: opts.Cmdline}
	r.machine = &bootscript.Machine{Commands: boardCommands}
	switch backend {
	case BackendUBoot, BackendUBootBootcount:
		img := filepath.Join(dir, "uboot.env")
		if err := os.WriteFile(img, make([]byte, 0x8000), 0o644); err != nil {
			t.Fatal(err)
		}
		opts.FWEnvConfig = filepath.Join(dir, "fw_env.config")
		os.WriteFile(opts.FWEnvConfig, []byte(fmt.Sprintf("%s 0x0 0x4000\n%s 0x4000 0x4000\n", img, img)), 0o644)
		cfg, err := ubootenv.LoadConfig(opts.FWEnvConfig)
		if err != nil {
			t.Fatal(err)
		}
		eo := ubootenv.DefaultOptions()
		eo.LockFile = opts.LockFile
		st, err := ubootenv.Open(cfg, eo)
		if err != nil {
			t.Fatal(err)
		}
		if backend == BackendUBootBootcount {
			for k, v := range bootcountDefaults(t) {
				env[k] = v
			}
			r.machine.Bootcount = true
		}
		if err := st.Reset(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		r.machine.Load = func() (map[string]string, error) {
			s, err := st.Read(context.Background())
			if err != nil {
				return nil, err
			}
			return s.Env, nil
		}
		r.machine.Save = func(e map[string]string) error { return st.Write(context.Background(), e) }
	case BackendFile:
		opts.File = filepath.Join(dir, "bootenv.txt")
		if err := WriteEnvFile(opts.File, env); err != nil {
			t.Fatal(err)
		}
		r.machine.Load = func() (map[string]string, error) { return ReadEnvFile(opts.File) }
		r.machine.Save = func(e map[string]string) error { return WriteEnvFile(opts.File, e) }
	}
	ch, err := New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.ch = ch
	return r
}

// powerOn boots the simulated board until a kernel starts (resets restart
// it) and writes the kernel command line the slot would see.
func (r *rig) powerOn(t *testing.T) {
	t.Helper()
	boot := r.boot
	if boot == nil {
		boot = r.machine.PowerOn
	}
	for i := 0; i < 5; i++ {
		res, err := boot()
		if err != nil {
			t.Fatal(err)
		}
		switch res.Action {
		case bootscript.Boot:
			if err := os.WriteFile(r.cmdline, []byte(res.Bootargs+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		case bootscript.Reset:
			continue
		default:
			t.Fatalf("boot ended with %v: %v", res.Action, res.Output)
		}
	}
	t.Fatal("board keeps resetting")
}

type step struct {
	do      string // boot | primary SLOT N | good SLOT | bad SLOT
	booted  string
	primary string
	left    map[string]int
	state   map[string]string
}

// The A/B state machine, one table for every backend.
var abTable = []step{
	{do: "boot", booted: "A", primary: "A"},
	{do: "good A", booted: "A", primary: "A", left: map[string]int{"A": 3}, state: map[string]string{"A": "good"}},
	// install to B
	{do: "primary B 3", booted: "A", primary: "B", left: map[string]int{"B": 3}, state: map[string]string{"A": "good", "B": "good"}},
	{do: "boot", booted: "B", primary: "B", left: map[string]int{"B": 2}},
	// B hangs: the watchdog resets the board, U-Boot counts down
	{do: "boot", booted: "B", primary: "B", left: map[string]int{"B": 1}},
	{do: "boot", booted: "B", primary: "A", left: map[string]int{"B": 0}, state: map[string]string{"A": "good", "B": "bad"}},
	// B's tries are exhausted: fallback to A
	{do: "boot", booted: "A", primary: "A", left: map[string]int{"B": 0}, state: map[string]string{"A": "good", "B": "bad"}},
	{do: "good A", booted: "A", primary: "A", left: map[string]int{"A": 3, "B": 0}},
	{do: "boot", booted: "A", primary: "A"},
	// a second install to B succeeds
	{do: "primary B 2", booted: "A", primary: "B", left: map[string]int{"B": 2}, state: map[string]string{"B": "good"}},
	{do: "boot", booted: "B", primary: "B", left: map[string]int{"B": 1}},
	// mark good resets the tries
	{do: "good B", booted: "B", primary: "B", left: map[string]int{"B": 3}, state: map[string]string{"A": "good", "B": "good"}},
	{do: "boot", booted: "B", primary: "B"},
	{do: "good B", booted: "B", primary: "B", left: map[string]int{"B": 3}},
	// mark bad removes B from the order: the next boot is A
	{do: "bad B", booted: "B", primary: "A", left: map[string]int{"B": 0}, state: map[string]string{"A": "good", "B": "bad"}},
	{do: "boot", booted: "A", primary: "A", state: map[string]string{"B": "bad"}},
	{do: "good A", booted: "A", primary: "A", left: map[string]int{"A": 3, "B": 0}, state: map[string]string{"A": "good", "B": "bad"}},
	{do: "boot", booted: "A", primary: "A", state: map[string]string{"B": "bad"}},
	{do: "good A", booted: "A", primary: "A", left: map[string]int{"A": 3}},
	// and a later install brings B back
	{do: "primary B 3", booted: "A", primary: "B", left: map[string]int{"B": 3}, state: map[string]string{"B": "good"}},
	{do: "boot", booted: "B", primary: "B", left: map[string]int{"B": 2}},
	{do: "good B", booted: "B", primary: "B", left: map[string]int{"B": 3}, state: map[string]string{"A": "good", "B": "good"}},
}

func TestABStateMachine(t *testing.T) {
	for _, backend := range []string{BackendUBoot, BackendUBootBootcount, BackendFile} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			runTable(t, newRig(t, backend))
		})
	}
}

func runTable(t *testing.T, r *rig) {
	t.Helper()
	for i, s := range abTable {
		f := strings.Fields(s.do)
		var err error
		switch f[0] {
		case "boot":
			r.powerOn(t)
		case "primary":
			var n int
			fmt.Sscan(f[2], &n)
			err = r.ch.SetPrimary(f[1], n)
		case "good":
			err = r.ch.MarkGood(f[1])
		case "bad":
			err = r.ch.MarkBad(f[1])
		}
		if err != nil {
			t.Fatalf("step %d %q: %v", i, s.do, err)
		}
		if got, err := r.ch.Booted(); err != nil || got != s.booted {
			t.Fatalf("step %d %q: Booted = %q, %v; want %q", i, s.do, got, err, s.booted)
		}
		if got, err := r.ch.Primary(); err != nil || got != s.primary {
			t.Fatalf("step %d %q: Primary = %q, %v; want %q", i, s.do, got, err, s.primary)
		}
		for slot, want := range s.left {
			if got, err := r.ch.TriesLeft(slot); err != nil || got != want {
				t.Fatalf("step %d %q: TriesLeft(%s) = %d, %v; want %d", i, s.do, slot, got, err, want)
			}
		}
		st, err := r.ch.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, ss := range st {
			if want, ok := s.state[ss.Bootname]; ok && ss.State != want {
				t.Fatalf("step %d %q: slot %s state %s, want %s (%+v)", i, s.do, ss.Bootname, ss.State, want, st)
			}
			if ss.Booted != (ss.Bootname == s.booted) || ss.Primary != (ss.Bootname == s.primary) {
				t.Fatalf("step %d %q: status flags %+v", i, s.do, ss)
			}
		}
	}
}

func TestBootedFromCmdline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, cmdline, key string
		m                  map[string]string
		want               string
		err                error
	}{
		{"rauc.slot", "console=ttyS0 rauc.slot=B quiet", "rauc.slot=", nil, "B", nil},
		{"last wins", "rauc.slot=A rauc.slot=B", "rauc.slot=", nil, "B", nil},
		{"partuuid", "root=PARTUUID=1234-ABCD rw", "root=PARTUUID=", map[string]string{"1234-abcd": "B", "1234-0001": "A"}, "B", nil},
		{"missing", "console=ttyS0", "rauc.slot=", nil, "", ErrNoBootedSlot},
		{"unknown slot", "rauc.slot=C", "rauc.slot=", nil, "", ErrNoBootedSlot},
		{"unmapped partuuid", "root=PARTUUID=ffff", "root=PARTUUID=", map[string]string{"1234": "A"}, "", ErrNoBootedSlot},
	}
	for i, tt := range tests {
		opts := DefaultOptions()
		opts.Backend = BackendFile
		opts.File = filepath.Join(dir, "env.txt")
		opts.Cmdline = filepath.Join(dir, fmt.Sprintf("cmdline%d", i))
		opts.BootedKey = tt.key
		opts.BootedMap = tt.m
		os.WriteFile(opts.Cmdline, []byte(tt.cmdline+"\n"), 0o644)
		ch, err := New(opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ch.Booted()
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("%s: Booted = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Options){
		"backend":         func(o *Options) { o.Backend = "grub" },
		"one slot":        func(o *Options) { o.Slots = []string{"A"} },
		"dup slot":        func(o *Options) { o.Slots = []string{"A", "A"} },
		"space slot":      func(o *Options) { o.Slots = []string{"A", "B C"} },
		"bootcount three": func(o *Options) { o.Backend = BackendUBootBootcount; o.Slots = []string{"A", "B", "C"} },
		"tries":           func(o *Options) { o.PrimaryTries = 0 },
		"left format":     func(o *Options) { o.Vars.Left = "BOOT_LEFT" },
		"map":             func(o *Options) { o.BootedMap = map[string]string{"x": "C"} },
	} {
		o := DefaultOptions()
		mod(&o)
		if err := o.Validate(); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
}

// TestOneWritePerOperation checks that SetPrimary lands as a single
// environment write (one flags increment), unlike RAUC's two fw_setenv calls.
func TestOneWritePerOperation(t *testing.T) {
	t.Parallel()
	r := newRig(t, BackendUBoot)
	st := r.ch.store.(*ubootStore).st
	before, err := st.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ch.SetPrimary("B", 5); err != nil {
		t.Fatal(err)
	}
	after, err := st.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after.Copies[after.Current].Flags != before.Copies[before.Current].Flags+1 {
		t.Fatalf("flags %d -> %d: not exactly one write", before.Copies[before.Current].Flags, after.Copies[after.Current].Flags)
	}
	if after.Env["BOOT_ORDER"] != "B A" || after.Env["BOOT_B_LEFT"] != "5" {
		t.Fatalf("env after SetPrimary: %v", after.Env)
	}
}

// TestNoWriteWithoutChange: marking a good slot good (what the daemon does
// on every boot of a committed slot) leaves the environment file alone.
func TestNoWriteWithoutChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.Backend = BackendFile
	opts.File = filepath.Join(dir, "env.txt")
	opts.Cmdline = filepath.Join(dir, "cmdline")
	ch, err := New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.MarkGood("A"); err != nil { // creates the variables
		t.Fatal(err)
	}
	before, err := os.Stat(opts.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.MarkGood("A"); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(opts.File)
	if !os.SameFile(before, after) {
		t.Errorf("MarkGood of a good slot rewrote the environment")
	}
	if err := ch.MarkBad("B"); err != nil {
		t.Fatal(err)
	}
	if changed, _ := os.Stat(opts.File); os.SameFile(after, changed) {
		t.Errorf("MarkBad did not write")
	}
}
