// Package ubootenv reads and writes the U-Boot environment exactly as U-Boot
// and libubootenv (fw_printenv / fw_setenv) do: a fw_env.config naming one
// copy (single) or two copies (redundant), each `u32 CRC32 (LE)` [+ `u8 flags`
// when redundant] followed by `name=value\0...\0\0` and padding.
//
// Typical use:
//
//	cfg, err := ubootenv.LoadConfig("/etc/fw_env.config")
//	st, err := ubootenv.Open(cfg, ubootenv.DefaultOptions())
//	snap, err := st.Read(ctx)                 // snap.Env["BOOT_ORDER"]
//	err = st.Update(ctx, func(env ubootenv.Env) error {
//		env["BOOT_ORDER"] = "B A"             // any number of changes ...
//		env["BOOT_B_LEFT"] = "3"
//		return nil
//	})                                        // ... land in ONE write
//
// Power safety: with a redundant environment every write goes to the copy
// that is not current, is flushed with fsync, and only then becomes current
// through its flags byte (a counter, or the NOR "obsolete" flag); a cut at any
// byte leaves the old copy intact and readable. A single-copy environment is
// overwritten in place and is NOT power-safe: a cut mid-write leaves no valid
// copy (U-Boot then falls back to its built-in default environment).
//
// Writers are serialised with flock(2) on a lock file, by default the one
// libubootenv uses (/var/lock/fw_printenv.lock), so otagw and fw_setenv never
// interleave. The lock is held from the read through the write. otagw
// creates the lock file 0600 root-owned, and takes over one that someone
// else created (chown root, chmod 0600): an unprivileged user cannot open
// it, so cannot hold the lock to stall reads or fail installs; fw_setenv
// and fw_printenv run as root still share it. Readers never wait for it:
// Read takes a shared lock when it is free and otherwise reads without
// it, trusting the CRC (a copy a writer is half-way through fails its CRC
// and is re-read a few times, for about a quarter of a second).
//
// The byte layout is described in docs/formats/uboot-env.md.
package ubootenv

import "errors"

// Errors, each wrapped with the file, device or line it concerns.
var (
	// ErrConfig: fw_env.config is missing, malformed or inconsistent.
	ErrConfig = errors.New("invalid fw_env.config")
	// ErrNoValidCopy: no copy of the environment has a correct CRC.
	ErrNoValidCopy = errors.New("no valid environment copy (bad CRC)")
	// ErrFormat: the data area of a CRC-valid copy is malformed.
	ErrFormat = errors.New("malformed environment data")
	// ErrDuplicate: a variable name occurs twice.
	ErrDuplicate = errors.New("duplicate variable")
	// ErrBadName: a variable name is empty or contains '=' or NUL.
	ErrBadName = errors.New("invalid variable name")
	// ErrBadValue: a value contains NUL.
	ErrBadValue = errors.New("invalid variable value")
	// ErrTooLarge: the variables do not fit into the environment size.
	ErrTooLarge = errors.New("environment too large")
	// ErrShort: the device or file is smaller than offset+size.
	ErrShort = errors.New("device too small for environment")
	// ErrNotSupported: a device kind or config format otagw does not handle
	// (UBI volumes, YAML fw_env.config, MTD types other than NOR/NAND).
	ErrNotSupported = errors.New("not supported")
	// ErrLocked: the lock file could not be taken before the context ended.
	ErrLocked = errors.New("environment lock busy")
)
