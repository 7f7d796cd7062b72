// Package precond decides whether the gateway is fit for risky work right
// now: not on a battery or UPS below a threshold, enough free space, load
// average low enough, and the operator's hook commands all say yes. Each
// check that fails gives a reason; the work is postponed, not failed, and
// is tried again later.
//
//	c, _ := precond.New(precond.Options{MinBattery: 30, Hooks: []string{"/usr/local/bin/ok-to-update"}})
//	if err := c.Check(ctx); err != nil { // errors.Is(err, precond.ErrNotMet)
//		fmt.Println(err) // "on battery BAT0 at 12% (below 30%)"
//	}
//
// Power comes from the Linux power_supply class (sysfs): a supply of type
// Mains that is online means mains power; otherwise a Battery or UPS that
// is Discharging below MinBattery percent postpones.
package precond

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotMet: a precondition is not met; the error lists each reason.
var ErrNotMet = errors.New("precondition not met")

// Options is the "preconditions:" configuration section.
type Options struct {
	// MinBattery postpones work while the gateway runs on a battery or
	// UPS below this charge, in percent; 0 turns the check off.
	MinBattery int `yaml:"min_battery" json:"min_battery"`
	// PowerSupplyDir is the power_supply class directory (tests point it
	// at a fake tree).
	PowerSupplyDir string `yaml:"power_supply_dir" json:"power_supply_dir"`
	// MinFree postpones work while the file system holding FreePath has
	// fewer bytes free; 0 turns the check off.
	MinFree  int64  `yaml:"min_free" json:"min_free"`
	FreePath string `yaml:"free_path" json:"free_path"`
	// MaxLoad postpones work while the 1-minute load average is above it;
	// 0 turns the check off. LoadAvgFile stands in for /proc/loadavg.
	MaxLoad     float64 `yaml:"max_load" json:"max_load"`
	LoadAvgFile string  `yaml:"loadavg_file" json:"loadavg_file"`
	// Hooks are shell commands (/bin/sh -c, as root) that must all exit 0;
	// one that fails or outlives HookTimeout postpones, with its output.
	Hooks       []string      `yaml:"hooks" json:"hooks"`
	HookTimeout time.Duration `yaml:"hook_timeout" json:"hook_timeout"`
}

// DefaultOptions: every check off; the kernel's paths.
func DefaultOptions() Options {
	return Options{PowerSupplyDir: "/sys/class/power_supply", FreePath: "/var/lib/otagw",
		LoadAvgFile: "/proc/loadavg", HookTimeout: 30 * time.Second}
}

type fieldError struct {
	field string
	err   error
}

func (e fieldError) Error() string { return e.err.Error() }
func (e fieldError) Field() string { return e.field }

func ferr(field, format string, a ...any) error {
	return fieldError{field, fmt.Errorf(format, a...)}
}

// Validate checks the section; each error names its key.
func (o Options) Validate() error {
	var errs []error
	if o.MinBattery < 0 || o.MinBattery > 100 {
		errs = append(errs, ferr("min_battery", "%d: want a percentage 0..100", o.MinBattery))
	}
	if o.MinBattery > 0 && !filepath.IsAbs(o.PowerSupplyDir) {
		errs = append(errs, ferr("power_supply_dir", "%q: want an absolute path", o.PowerSupplyDir))
	}
	if o.MinFree < 0 {
		errs = append(errs, ferr("min_free", "%d: must be 0 or more bytes", o.MinFree))
	}
	if o.MinFree > 0 && !filepath.IsAbs(o.FreePath) {
		errs = append(errs, ferr("free_path", "%q: want an absolute path", o.FreePath))
	}
	if o.MaxLoad < 0 {
		errs = append(errs, ferr("max_load", "%v: must be 0 or more", o.MaxLoad))
	}
	if o.MaxLoad > 0 && !filepath.IsAbs(o.LoadAvgFile) {
		errs = append(errs, ferr("loadavg_file", "%q: want an absolute path", o.LoadAvgFile))
	}
	for i, h := range o.Hooks {
		if strings.TrimSpace(h) == "" {
			errs = append(errs, ferr(fmt.Sprintf("hooks[%d]", i), "empty command"))
		}
	}
	if len(o.Hooks) > 0 && o.HookTimeout <= 0 {
		errs = append(errs, ferr("hook_timeout", "%v: must be positive", o.HookTimeout))
	}
	return errors.Join(errs...)
}

// Checker runs the checks of one Options.
type Checker struct{ o Options }

// New checks o.
func New(o Options) (*Checker, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Checker{o: o}, nil
}

// NotMet is the error for unmet preconditions: one reason per check.
type NotMet struct{ Reasons []string }

func (e *NotMet) Error() string        { return strings.Join(e.Reasons, "; ") }
func (e *NotMet) Is(target error) bool { return target == ErrNotMet }

// Check runs every enabled check and returns nil, a *NotMet with every
// reason, or an error reading what a check needs (itself a reason to
// wait: it wraps ErrNotMet too).
func (c *Checker) Check(ctx context.Context) error {
	var reasons []string
	add := func(r string) { reasons = append(reasons, r) }
	if c.o.MinBattery > 0 {
		if r := Power(c.o.PowerSupplyDir, c.o.MinBattery); r != "" {
			add(r)
		}
	}
	if c.o.MinFree > 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(c.o.FreePath, &st); err != nil {
			add(fmt.Sprintf("free space of %s unknown: %v", c.o.FreePath, err))
		} else if free := int64(st.Bavail) * int64(st.Bsize); free < c.o.MinFree {
			add(fmt.Sprintf("%d bytes free on %s (below %d)", free, c.o.FreePath, c.o.MinFree))
		}
	}
	if c.o.MaxLoad > 0 {
		if l, err := loadAvg(c.o.LoadAvgFile); err != nil {
			add(fmt.Sprintf("load average unknown: %v", err))
		} else if l > c.o.MaxLoad {
			add(fmt.Sprintf("load average %.2f (above %.2f)", l, c.o.MaxLoad))
		}
	}
	for _, h := range c.o.Hooks {
		if err := Hook(ctx, h, c.o.HookTimeout); err != nil {
			add(err.Error())
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	return &NotMet{Reasons: reasons}
}

// Power reads the power_supply class under dir and returns why the
// gateway is not fit for work ("" when it is): no Mains supply online,
// and a Battery or UPS Discharging below minPercent. A supply whose files
// cannot be read is skipped.
func Power(dir string, minPercent int) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "" // no power_supply class: a gateway on mains without a battery driver
	}
	var low []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		typ := attr(p, "type")
		switch typ {
		case "Mains":
			if attr(p, "online") == "1" {
				return ""
			}
		case "Battery", "UPS":
			if attr(p, "status") != "Discharging" {
				continue
			}
			capacity, err := strconv.Atoi(attr(p, "capacity"))
			if err != nil {
				low = append(low, fmt.Sprintf("on %s %s with unknown charge (%s unreadable)", strings.ToLower(typ), e.Name(), filepath.Join(p, "capacity")))
				continue
			}
			if capacity < minPercent {
				low = append(low, fmt.Sprintf("on %s %s at %d%% (below %d%%)", strings.ToLower(typ), e.Name(), capacity, minPercent))
			}
		}
	}
	sort.Strings(low)
	return strings.Join(low, ", ")
}

func attr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func loadAvg(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, f[0])
	}
	return v, nil
}

// Hook runs one operator command with /bin/sh -c; a non-zero exit or a
// timeout is a reason naming the command and its output.
func Hook(ctx context.Context, command string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("hook %q did not finish within %v", command, timeout)
	}
	if msg != "" {
		return fmt.Errorf("hook %q: %v: %s", command, err, msg)
	}
	return fmt.Errorf("hook %q: %v", command, err)
}
