// Package bootscript runs U-Boot boot scripts in Go: an interpreter for the
// subset of U-Boot's hush shell and commands that otagw's boot.cmd uses, and
// a model of U-Boot's boot flow (bootcount driver, bootcmd / altbootcmd)
// around it. Tests run the real boot.cmd text (the same file that mkimage
// compiles into boot.scr) against an environment, so the Go model of the
// bootloader's A/B logic cannot drift from what the gateway runs.
//
//	in := &bootscript.Interp{Env: env, Save: persist}
//	res, err := in.Run(bootscript.BootCmd)   // res.Action == bootscript.Boot
//	res.Bootargs                             // "... rauc.slot=B"
//
// Supported: if/elif/else/fi, for ... in ...; do ... done (items split on
// spaces after expansion, quoted or not, as U-Boot's make_list_in does),
// && and ||, "..." and '...' quoting, $name and ${name} (hush locals first,
// then the environment), name=value hush locals, and the commands setenv,
// setexpr, test, echo, run, saveenv, source, true, false, exit, reset and the
// boot commands (boot, bootm, bootz, booti), which end the run. Anything else
// is an error unless the caller adds it to Commands; unquoted expansions
// that are empty or contain blanks are rejected, so the script never depends
// on field-splitting rules.
package bootscript

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// BootCmd is otagw's boot script source (boot.cmd), the single source of
// truth; the copies under yocto/ and packaging/ are checked against it.
//
//go:embed boot.cmd
var BootCmd string

// ErrUnsupported: the script uses a construct or command outside the subset.
var ErrUnsupported = errors.New("unsupported in the U-Boot script model")

// Action is how a run ended.
type Action int

// Actions.
const (
	End   Action = iota // the script ran to its end (U-Boot would drop to the prompt)
	Boot                // a boot command was reached
	Reset               // reset: the board restarts
	Exit                // exit
)

func (a Action) String() string {
	return [...]string{"end", "boot", "reset", "exit"}[a]
}

// Result is the outcome of a run.
type Result struct {
	Action   Action
	Bootargs string   // Env["bootargs"] when Action == Boot
	BootCmd  []string // the boot command line
	Saves    int      // number of saveenv calls
	Output   []string // echo lines
}

// Interp interprets scripts against Env.
type Interp struct {
	Env map[string]string
	// Save persists Env (saveenv); nil means saveenv only counts.
	Save func(env map[string]string) error
	// Commands adds board commands (load, mmc, ...); return the exit status.
	Commands map[string]func(args []string) int
	// Source is what the "source" command runs; "" = BootCmd.
	Source string
	// Out receives echo output (optional).
	Out io.Writer

	locals map[string]string
	res    Result
	steps  int
	depth  int
}

type stop struct{ action Action }

func (stop) Error() string { return "stop" }

const maxSteps = 100000

// Run parses and runs script.
func (in *Interp) Run(script string) (Result, error) {
	if in.Env == nil {
		in.Env = map[string]string{}
	}
	in.locals = map[string]string{}
	in.res = Result{}
	in.steps = 0
	_, err := in.runText(script, "script")
	var s stop
	if errors.As(err, &s) {
		in.res.Action = s.action
		err = nil
	}
	return in.res, err
}

func (in *Interp) runText(text, name string) (int, error) {
	in.depth++
	defer func() { in.depth-- }()
	if in.depth > 16 {
		return 1, fmt.Errorf("%s: run/source nested too deep", name)
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangPOSIX)).Parse(strings.NewReader(text), name)
	if err != nil {
		return 1, fmt.Errorf("%w: parse: %v", ErrUnsupported, err)
	}
	return in.stmts(f.Stmts)
}

func (in *Interp) stmts(list []*syntax.Stmt) (int, error) {
	st := 0
	for _, s := range list {
		var err error
		if st, err = in.stmt(s); err != nil {
			return st, err
		}
	}
	return st, nil
}

func (in *Interp) stmt(s *syntax.Stmt) (int, error) {
	if in.steps++; in.steps > maxSteps {
		return 1, fmt.Errorf("%s: more than %d steps", s.Pos(), maxSteps)
	}
	if s.Background || s.Coprocess || len(s.Redirs) > 0 {
		return 1, fmt.Errorf("%s: %w: background/redirection", s.Pos(), ErrUnsupported)
	}
	st, err := in.cmd(s.Cmd)
	if err != nil {
		return st, err
	}
	if s.Negated {
		st = b2i(st != 0)
	}
	return st, nil
}

func b2i(b bool) int {
	if b {
		return 0
	}
	return 1
}

func (in *Interp) cmd(c syntax.Command) (int, error) {
	switch c := c.(type) {
	case *syntax.CallExpr:
		for _, a := range c.Assigns {
			if a.Append || a.Naked || a.Index != nil || a.Array != nil {
				return 1, fmt.Errorf("%s: %w: assignment form", a.Pos(), ErrUnsupported)
			}
			v := ""
			if a.Value != nil {
				var err error
				if v, err = in.word(a.Value, true); err != nil {
					return 1, err
				}
			}
			in.locals[a.Name.Value] = v
		}
		if len(c.Args) == 0 {
			return 0, nil
		}
		args := make([]string, len(c.Args))
		for i, w := range c.Args {
			var err error
			if args[i], err = in.word(w, false); err != nil {
				return 1, err
			}
		}
		return in.call(c.Pos().String(), args)
	case *syntax.IfClause:
		for ic := c; ic != nil; ic = ic.Else {
			if len(ic.Cond) == 0 { // else
				return in.stmts(ic.Then)
			}
			st, err := in.stmts(ic.Cond)
			if err != nil {
				return st, err
			}
			if st == 0 {
				return in.stmts(ic.Then)
			}
		}
		return 0, nil
	case *syntax.ForClause:
		wi, ok := c.Loop.(*syntax.WordIter)
		if !ok || c.Select || c.Braces {
			return 1, fmt.Errorf("%s: %w: loop form", c.Pos(), ErrUnsupported)
		}
		var items []string
		for _, w := range wi.Items {
			v, err := in.word(w, true)
			if err != nil {
				return 1, err
			}
			for _, f := range strings.Split(v, " ") {
				if f != "" {
					items = append(items, f)
				}
			}
		}
		st := 0
		for _, it := range items {
			in.locals[wi.Name.Value] = it
			var err error
			if st, err = in.stmts(c.Do); err != nil {
				return st, err
			}
		}
		return st, nil
	case *syntax.BinaryCmd:
		st, err := in.stmt(c.X)
		if err != nil {
			return st, err
		}
		switch c.Op {
		case syntax.AndStmt:
			if st != 0 {
				return st, nil
			}
		case syntax.OrStmt:
			if st == 0 {
				return st, nil
			}
		default:
			return 1, fmt.Errorf("%s: %w: operator %v", c.Pos(), ErrUnsupported, c.Op)
		}
		return in.stmt(c.Y)
	}
	return 1, fmt.Errorf("%s: %w: %T", c.Pos(), ErrUnsupported, c)
}

// word expands a word. lenient allows unquoted expansions that are empty or
// contain blanks (for-lists and assignments, where hush's handling is known).
func (in *Interp) word(w *syntax.Word, lenient bool) (string, error) {
	var b strings.Builder
	for _, p := range w.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			b.WriteString(unescape(p.Value, false))
		case *syntax.SglQuoted:
			if p.Dollar {
				return "", fmt.Errorf("%s: %w: $'...'", p.Pos(), ErrUnsupported)
			}
			b.WriteString(p.Value)
		case *syntax.DblQuoted:
			if p.Dollar {
				return "", fmt.Errorf("%s: %w: $\"...\"", p.Pos(), ErrUnsupported)
			}
			for _, q := range p.Parts {
				switch q := q.(type) {
				case *syntax.Lit:
					b.WriteString(unescape(q.Value, true))
				case *syntax.ParamExp:
					v, err := in.param(q)
					if err != nil {
						return "", err
					}
					b.WriteString(v)
				default:
					return "", fmt.Errorf("%s: %w: %T in double quotes", q.Pos(), ErrUnsupported, q)
				}
			}
		case *syntax.ParamExp:
			v, err := in.param(p)
			if err != nil {
				return "", err
			}
			if !lenient && (v == "" && len(w.Parts) == 1 || strings.ContainsAny(v, " \t\n")) {
				return "", fmt.Errorf("%s: unquoted ${%s} expands to %q: quote it", p.Pos(), p.Param.Value, v)
			}
			b.WriteString(v)
		default:
			return "", fmt.Errorf("%s: %w: %T", p.Pos(), ErrUnsupported, p)
		}
	}
	return b.String(), nil
}

func unescape(s string, dq bool) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			n := s[i+1]
			if !dq || strings.IndexByte("$\"\\`\n", n) >= 0 {
				i++
				if n != '\n' {
					b.WriteByte(n)
				}
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (in *Interp) param(p *syntax.ParamExp) (string, error) {
	if p.Excl || p.Length || p.Width || p.Index != nil || p.Slice != nil || p.Repl != nil || p.Names != 0 || p.Exp != nil {
		return "", fmt.Errorf("%s: %w: parameter expansion form", p.Pos(), ErrUnsupported)
	}
	name := p.Param.Value
	if v, ok := in.locals[name]; ok {
		return v, nil
	}
	return in.Env[name], nil
}

func (in *Interp) call(pos string, args []string) (int, error) {
	name := args[0]
	switch name {
	case "setenv", "env":
		if name == "env" {
			if len(args) < 2 || args[1] != "set" {
				return 1, fmt.Errorf("%s: %w: env %v", pos, ErrUnsupported, args[1:])
			}
			args = args[1:]
		}
		if len(args) < 2 {
			return 1, nil
		}
		v := strings.Join(args[2:], " ")
		if v == "" {
			delete(in.Env, args[1])
		} else {
			in.Env[args[1]] = v
		}
		delete(in.locals, args[1])
		return 0, nil
	case "setexpr":
		return in.setexpr(pos, args)
	case "test":
		return b2i(testExpr(args[1:])), nil
	case "true":
		return 0, nil
	case "false":
		return 1, nil
	case "echo":
		line := strings.Join(args[1:], " ")
		in.res.Output = append(in.res.Output, line)
		if in.Out != nil {
			fmt.Fprintln(in.Out, line)
		}
		return 0, nil
	case "saveenv":
		in.res.Saves++
		if in.Save != nil {
			if err := in.Save(in.Env); err != nil {
				return 1, fmt.Errorf("%s: saveenv: %w", pos, err)
			}
		}
		return 0, nil
	case "run":
		st := 0
		for _, v := range args[1:] {
			text, ok := in.Env[v]
			if !ok {
				return 1, nil // U-Boot: "## Error: "v" not defined", status 1
			}
			var err error
			if st, err = in.runText(text, v); err != nil {
				return st, err
			}
			if st != 0 {
				return st, nil
			}
		}
		return st, nil
	case "source":
		src := in.Source
		if src == "" {
			src = BootCmd
		}
		return in.runText(src, "boot.scr")
	case "reset":
		return 0, stop{Reset}
	case "exit":
		return 0, stop{Exit}
	case "boot", "bootm", "bootz", "booti":
		in.res.Bootargs = in.Env["bootargs"]
		in.res.BootCmd = args
		return 0, stop{Boot}
	}
	if f, ok := in.Commands[name]; ok {
		return f(args), nil
	}
	return 1, fmt.Errorf("%s: %w: command %q", pos, ErrUnsupported, name)
}

// setexpr NAME A [OP B]: U-Boot reads the operands as hex (simple_strtoul
// base 16, "0x" allowed) and stores the result as %lx.
func (in *Interp) setexpr(pos string, args []string) (int, error) {
	if len(args) != 3 && len(args) != 5 {
		return 1, fmt.Errorf("%s: %w: setexpr with %d arguments", pos, ErrUnsupported, len(args)-1)
	}
	a := strtoul(args[2], 16)
	r := a
	if len(args) == 5 {
		b := strtoul(args[4], 16)
		switch args[3] {
		case "+":
			r = a + b
		case "-":
			r = a - b
		case "*":
			r = a * b
		case "/", "%":
			if b == 0 {
				return 1, nil
			}
			if args[3] == "/" {
				r = a / b
			} else {
				r = a % b
			}
		case "&":
			r = a & b
		case "|":
			r = a | b
		case "^":
			r = a ^ b
		default:
			return 1, fmt.Errorf("%s: %w: setexpr operator %q", pos, ErrUnsupported, args[3])
		}
	}
	in.Env[args[1]] = strconv.FormatUint(r, 16)
	delete(in.locals, args[1])
	return 0, nil
}

// strtoul mimics simple_strtoul: base 0 picks 0x/0/decimal, base 16 skips a
// 0x prefix; parsing stops at the first invalid digit, errors give 0.
func strtoul(s string, base int) uint64 {
	if base == 0 {
		switch {
		case len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
			base, s = 16, s[2:]
		case len(s) > 0 && s[0] == '0':
			base = 8
		default:
			base = 10
		}
	} else if base == 16 && len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := digit(s[i])
		if d < 0 || d >= base {
			break
		}
		v = v*uint64(base) + uint64(d)
	}
	return v
}

func strtol(s string) int64 {
	if strings.HasPrefix(s, "-") {
		return -int64(strtoul(s[1:], 0))
	}
	return int64(strtoul(s, 0))
}

func digit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// testExpr evaluates U-Boot's test: "!", "-a", "-o", string and numeric
// comparisons (numbers via simple_strtol base 0).
func testExpr(a []string) bool {
	for i, s := range a {
		if s == "-o" {
			return testExpr(a[:i]) || testExpr(a[i+1:])
		}
	}
	for i, s := range a {
		if s == "-a" {
			return testExpr(a[:i]) && testExpr(a[i+1:])
		}
	}
	if len(a) > 0 && a[0] == "!" {
		return !testExpr(a[1:])
	}
	switch len(a) {
	case 0:
		return false
	case 1:
		return a[0] != ""
	case 2:
		switch a[0] {
		case "-z":
			return a[1] == ""
		case "-n":
			return a[1] != ""
		}
		return false
	}
	l, op, r := a[0], a[1], a[2]
	switch op {
	case "=", "==":
		return l == r
	case "!=":
		return l != r
	case "<":
		return l < r
	case ">":
		return l > r
	}
	x, y := strtol(l), strtol(r)
	switch op {
	case "-eq":
		return x == y
	case "-ne":
		return x != y
	case "-lt":
		return x < y
	case "-le":
		return x <= y
	case "-gt":
		return x > y
	case "-ge":
		return x >= y
	}
	return false
}
