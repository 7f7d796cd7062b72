package bootscript

import (
	"fmt"
	"strconv"
)

// Machine models one U-Boot board for tests and demos: the persistent
// environment (Load/Save), U-Boot's bootcount driver when Bootcount is set
// (CONFIG_BOOTCOUNT_LIMIT + CONFIG_BOOTCOUNT_ENV, as in
// drivers/bootcount/bootcount_env.c and common/autoboot.c), then bootcmd or
// altbootcmd, which source the boot script.
type Machine struct {
	Load func() (map[string]string, error)
	Save func(map[string]string) error
	// Bootcount enables the bootcount driver model.
	Bootcount bool
	// Script is the boot script ("" = BootCmd); bootcmd defaults to "source".
	Script string
	// Commands are extra board commands for the interpreter.
	Commands map[string]func(args []string) int
}

// PowerOn runs one boot from reset to the kernel (or reset) and returns how
// it ended.
func (m *Machine) PowerOn() (Result, error) {
	env, err := m.Load()
	if err != nil {
		return Result{}, fmt.Errorf("load environment: %w", err)
	}
	in := &Interp{Env: env, Save: m.Save, Commands: m.Commands, Source: m.Script}
	cmd := env["bootcmd"]
	if cmd == "" {
		cmd = "source"
	}
	if m.Bootcount {
		// bootcount_inc(): load (0 unless upgrade_available), +1, store
		// (only with upgrade_available, followed by env_save).
		upgrade := strtoulEnv(env, "upgrade_available") != 0
		count := uint64(0)
		if upgrade {
			count = strtoulEnv(env, "bootcount")
		}
		count++
		if upgrade {
			env["bootcount"] = strconv.FormatUint(count, 10)
			if m.Save != nil {
				if err := m.Save(env); err != nil {
					return Result{}, fmt.Errorf("bootcount env_save: %w", err)
				}
			}
		}
		// bootcount_error(): bootlimit set and exceeded -> altbootcmd.
		if limit := strtoulEnv(env, "bootlimit"); limit != 0 && count > limit {
			alt, ok := env["altbootcmd"]
			if !ok {
				return Result{Action: End}, nil // U-Boot drops to the prompt
			}
			cmd = alt
		}
	}
	return in.Run(cmd)
}

// strtoulEnv is env_get_ulong(name, 10, 0).
func strtoulEnv(env map[string]string, name string) uint64 {
	v, ok := env[name]
	if !ok {
		return 0
	}
	return strtoul(v, 10)
}
