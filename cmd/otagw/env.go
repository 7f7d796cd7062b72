package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/otagw/otagw/abboot/ubootenv"
)

// The env verbs mirror libubootenv's fw_printenv / fw_setenv (0.3.2, as in
// Debian) for the common cases: same arguments, output and exit status 0.
// Differences, all on error paths: messages name the file/device and the
// cause, failures exit 1 (usage 2) instead of a negative errno, and a
// corrupt environment is only replaced when -f names a default file.

func init() {
	register("env print", "print U-Boot environment variables (like fw_printenv)", envPrint)
	register("env set", "set or delete U-Boot environment variables in one write (like fw_setenv)", envSet)
}

type envFlags struct {
	config, lock, defenv string
}

func (e *envFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&e.config, "c", ubootenv.DefaultConfigPath, "fw_env.config `file`")
	fs.StringVar(&e.config, "config", ubootenv.DefaultConfigPath, "fw_env.config `file`")
	fs.StringVar(&e.lock, "lock", ubootenv.DefaultLockFile, "lock `file` shared with fw_printenv/fw_setenv")
	fs.StringVar(&e.defenv, "f", "", "default environment `file` (name=value lines) used only when no valid copy exists")
	fs.StringVar(&e.defenv, "defenv", "", "same as -f")
}

func (e *envFlags) open() (*ubootenv.Store, error) {
	cfg, err := ubootenv.LoadConfig(e.config)
	if err != nil {
		return nil, err
	}
	opts := ubootenv.DefaultOptions()
	opts.LockFile = e.lock
	return ubootenv.Open(cfg, opts)
}

// loadDefault reads a default environment file in fw_setenv script format.
func loadDefault(path string) (ubootenv.Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	changes, err := ubootenv.ParseScript(path, f)
	if err != nil {
		return nil, err
	}
	env := ubootenv.Env{}
	ubootenv.Apply(env, changes)
	return env, nil
}

// parseInterleaved lets flags and operands mix, as getopt does for the
// fw_* tools; everything after "--" is an operand.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	var ops []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(ops, rest...), nil
		}
		ops = append(ops, args[0])
		args = args[1:]
	}
}

func envPrint(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw env print", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ef envFlags
	ef.add(fs)
	noHeader := fs.Bool("n", false, "print only the values of the named variables")
	asJSON := fs.Bool("json", false, "print a JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otagw env print [-c FW_ENV_CONFIG] [-n] [--json] [NAME...]")
		fs.PrintDefaults()
	}
	names, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	st, err := ef.open()
	if err != nil {
		fmt.Fprintf(stderr, "otagw env print: %v\n", err)
		return 1
	}
	var env ubootenv.Env
	snap, err := st.Read(ctx)
	switch {
	case err == nil:
		env = snap.Env
	case errors.Is(err, ubootenv.ErrNoValidCopy) && ef.defenv != "":
		fmt.Fprintf(stderr, "Cannot read environment, using default: %v\n", err)
		if env, err = loadDefault(ef.defenv); err != nil {
			fmt.Fprintf(stderr, "otagw env print: default environment: %v\n", err)
			return 1
		}
	default:
		fmt.Fprintf(stderr, "otagw env print: %v\n", err)
		return 1
	}
	if *asJSON {
		out := map[string]*string{}
		if len(names) == 0 {
			for k, v := range env {
				out[k] = &v
			}
		}
		for _, n := range names {
			if v, ok := env[n]; ok {
				out[n] = &v
			} else {
				out[n] = nil
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return 1
		}
		return 0
	}
	if len(names) == 0 {
		for _, k := range env.Names() {
			fmt.Fprintf(stdout, "%s=%s\n", k, env[k])
		}
		return 0
	}
	// fw_printenv 0.3.2 prints "NAME=" for an undefined variable and exits 0.
	for _, n := range names {
		if *noHeader {
			fmt.Fprintf(stdout, "%s\n", env[n])
		} else {
			fmt.Fprintf(stdout, "%s=%s\n", n, env[n])
		}
	}
	return 0
}

func envSet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw env set", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ef envFlags
	ef.add(fs)
	script := fs.String("s", "", "read name=value lines from `file` ('-' = stdin) and apply them in one write")
	fs.StringVar(script, "script", "", "same as -s")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otagw env set [-c FW_ENV_CONFIG] NAME [VALUE] [NAME [VALUE]...]\n       otagw env set [-c FW_ENV_CONFIG] -s SCRIPT|-")
		fs.PrintDefaults()
	}
	ops, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	var changes []ubootenv.Change
	if *script != "" {
		// Like fw_setenv, operands are ignored when a script is given.
		var r io.Reader = os.Stdin
		name := "stdin"
		if *script != "-" {
			f, err := os.Open(*script)
			if err != nil {
				fmt.Fprintf(stderr, "otagw env set: %v\n", err)
				return 1
			}
			defer f.Close()
			r, name = f, *script
		}
		if changes, err = ubootenv.ParseScript(name, r); err != nil {
			fmt.Fprintf(stderr, "otagw env set: %v\n", err)
			return 1
		}
	} else {
		// fw_setenv 0.3.2: NAME VALUE pairs; a trailing NAME alone deletes it.
		for i := 0; i < len(ops); i += 2 {
			c := ubootenv.Change{Name: ops[i], Delete: i+1 == len(ops)}
			if !c.Delete {
				c.Value = ops[i+1]
			}
			if err := ubootenv.CheckName(c.Name); err != nil {
				if strings.Contains(c.Name, "=") {
					// fw_setenv's wording
					fmt.Fprintf(stderr, "Error: illegal character '=' in variable name \"%s\"\n", c.Name)
				} else {
					fmt.Fprintf(stderr, "otagw env set: %v\n", err)
				}
				return 1
			}
			if err := ubootenv.CheckValue(c.Name, c.Value); err != nil {
				fmt.Fprintf(stderr, "otagw env set: %v\n", err)
				return 1
			}
			changes = append(changes, c)
		}
	}
	if len(changes) == 0 {
		return 0
	}
	st, err := ef.open()
	if err != nil {
		fmt.Fprintf(stderr, "otagw env set: %v\n", err)
		return 1
	}
	if !st.Redundant() {
		fmt.Fprintf(stderr, "otagw env set: warning: %s names a single environment copy; this write is not power-safe (a power cut during it loses the whole environment)\n", ef.config)
	}
	err = st.Update(ctx, func(env ubootenv.Env) error {
		ubootenv.Apply(env, changes)
		return nil
	})
	if errors.Is(err, ubootenv.ErrNoValidCopy) && ef.defenv != "" {
		fmt.Fprintf(stderr, "Cannot read environment, using default: %v\n", err)
		env, derr := loadDefault(ef.defenv)
		if derr != nil {
			fmt.Fprintf(stderr, "otagw env set: default environment: %v\n", derr)
			return 1
		}
		ubootenv.Apply(env, changes)
		err = st.Reset(ctx, env)
	}
	if err != nil {
		fmt.Fprintf(stderr, "otagw env set: %v\n", err)
		if errors.Is(err, ubootenv.ErrNoValidCopy) {
			fmt.Fprintln(stderr, "otagw env set: nothing written; pass -f FILE (a default environment, /dev/null for an empty one) to start over")
		}
		return 1
	}
	return 0
}
