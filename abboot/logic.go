package abboot

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// scriptDefaultTries is what boot.cmd sets a missing BOOT_<x>_LEFT to.
const scriptDefaultTries = 3

// raucLogic is RAUC's U-Boot convention, mirroring boot.cmd: the first slot
// in BOOT_ORDER with tries left boots; missing variables read as the
// defaults boot.cmd would set.
type raucLogic struct{ o Options }

func (l raucLogic) leftVar(slot string) string { return fmt.Sprintf(l.o.Vars.Left, slot) }

func (l raucLogic) order(env map[string]string) []string {
	v, ok := env[l.o.Vars.Order]
	if !ok || strings.TrimSpace(v) == "" {
		return slices.Clone(l.o.Slots)
	}
	var out []string
	for _, s := range strings.Fields(v) {
		if slices.Contains(l.o.Slots, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (l raucLogic) triesLeft(env map[string]string, slot string) int {
	v, ok := env[l.leftVar(slot)]
	if !ok {
		return scriptDefaultTries
	}
	return hexval(v)
}

func (l raucLogic) primary(env map[string]string) string {
	order := l.order(env)
	for _, s := range order {
		if l.triesLeft(env, s) > 0 {
			return s
		}
	}
	// No slot has tries: boot.cmd resets all counters and boots the first.
	if len(order) > 0 {
		return order[0]
	}
	return l.o.Slots[0]
}

func (l raucLogic) good(env map[string]string, slot string) bool {
	return slices.Contains(l.order(env), slot) && l.triesLeft(env, slot) > 0
}

func (l raucLogic) setOrder(env map[string]string, order []string) {
	if len(order) == 0 {
		delete(env, l.o.Vars.Order) // an empty value is a deletion in U-Boot
		return
	}
	env[l.o.Vars.Order] = strings.Join(order, " ")
}

// fill writes the defaults boot.cmd would assume, so that the stored state
// says exactly what the bootloader will do.
func (l raucLogic) fill(env map[string]string) {
	if _, ok := env[l.o.Vars.Order]; !ok {
		l.setOrder(env, l.order(env))
	}
	for _, s := range l.o.Slots {
		if _, ok := env[l.leftVar(s)]; !ok {
			env[l.leftVar(s)] = strconv.FormatInt(scriptDefaultTries, 16)
		}
	}
}

func (l raucLogic) setPrimary(env map[string]string, slot string, tries int) {
	l.fill(env)
	order := []string{slot}
	for _, s := range l.order(env) {
		if s != slot {
			order = append(order, s)
		}
	}
	l.setOrder(env, order)
	env[l.leftVar(slot)] = strconv.FormatInt(int64(tries), 16)
}

func (l raucLogic) markGood(env map[string]string, slot string) {
	l.fill(env)
	order := l.order(env)
	if !slices.Contains(order, slot) {
		l.setOrder(env, append(order, slot))
	}
	env[l.leftVar(slot)] = strconv.FormatInt(int64(l.o.GoodTries), 16)
}

func (l raucLogic) markBad(env map[string]string, slot string) {
	l.fill(env)
	l.setOrder(env, slices.DeleteFunc(l.order(env), func(s string) bool { return s == slot }))
	env[l.leftVar(slot)] = "0"
}

// bootcountLogic is U-Boot's bootcount convention with a slot variable:
// boot_slot is what bootcmd boots; while upgrade_available=1 U-Boot counts
// bootcount up and runs altbootcmd (boot.cmd flips boot_slot) once
// bootcount > bootlimit.
type bootcountLogic struct{ o Options }

func (l bootcountLogic) slot(env map[string]string) string {
	if s := env[l.o.Vars.Slot]; slices.Contains(l.o.Slots, s) {
		return s
	}
	return "A" // boot.cmd's default
}

func (l bootcountLogic) other(slot string) string {
	if slot == l.o.Slots[0] {
		return l.o.Slots[1]
	}
	return l.o.Slots[0]
}

func (l bootcountLogic) bad(env map[string]string) []string {
	var out []string
	for _, s := range strings.Fields(env[l.o.Vars.Bad]) {
		if slices.Contains(l.o.Slots, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (l bootcountLogic) setBad(env map[string]string, bad []string) {
	if len(bad) == 0 {
		delete(env, l.o.Vars.Bad)
		return
	}
	env[l.o.Vars.Bad] = strings.Join(bad, " ")
}

func (l bootcountLogic) trial(env map[string]string) (on bool, count, limit int) {
	on = decval(env["upgrade_available"]) != 0
	if on {
		count = decval(env["bootcount"])
	}
	return on, count, decval(env["bootlimit"])
}

func (l bootcountLogic) primary(env map[string]string) string {
	s := l.slot(env)
	if on, count, limit := l.trial(env); on && limit > 0 && count >= limit {
		return l.other(s) // the next boot runs altbootcmd
	}
	return s
}

func (l bootcountLogic) triesLeft(env map[string]string, slot string) int {
	if slices.Contains(l.bad(env), slot) {
		return 0
	}
	on, count, limit := l.trial(env)
	if limit == 0 {
		return l.o.GoodTries // no bootlimit: U-Boot does not count
	}
	if on && slot == l.slot(env) {
		return max(limit-count, 0)
	}
	return limit
}

func (l bootcountLogic) good(env map[string]string, slot string) bool {
	return l.triesLeft(env, slot) > 0
}

func (l bootcountLogic) setPrimary(env map[string]string, slot string, tries int) {
	env[l.o.Vars.Slot] = slot
	env["upgrade_available"] = "1"
	env["bootcount"] = "0"
	env["bootlimit"] = strconv.Itoa(tries)
	l.setBad(env, slices.DeleteFunc(l.bad(env), func(s string) bool { return s == slot }))
}

func (l bootcountLogic) markGood(env map[string]string, slot string) {
	l.setBad(env, slices.DeleteFunc(l.bad(env), func(s string) bool { return s == slot }))
	if slot == l.slot(env) {
		env[l.o.Vars.Slot] = slot
		env["upgrade_available"] = "0"
		env["bootcount"] = "0"
		env["bootlimit"] = strconv.Itoa(l.o.GoodTries)
	}
}

func (l bootcountLogic) markBad(env map[string]string, slot string) {
	bad := l.bad(env)
	if !slices.Contains(bad, slot) {
		bad = append(bad, slot)
	}
	l.setBad(env, bad)
	if slot == l.slot(env) {
		if o := l.other(slot); !slices.Contains(bad, o) {
			env[l.o.Vars.Slot] = o
		}
		env["upgrade_available"] = "0"
		env["bootcount"] = "0"
	}
}
