package tests

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/otagw/otagw"

var domains = []string{"abboot", "rootfs", "watchdog", "downstream"}

// area names the part of the tree a package belongs to: a domain name,
// "daemon", "config", "cmd", "helper" (other internal/*), "tests" or "".
func area(pkg string) string {
	if pkg != module && !strings.HasPrefix(pkg, module+"/") {
		return ""
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	top, rest, _ := strings.Cut(rel, "/")
	switch top {
	case "cmd", "tests":
		return top
	case "internal":
		sub, _, _ := strings.Cut(rest, "/")
		if sub == "daemon" || sub == "config" {
			return sub
		}
		return "helper"
	}
	for _, d := range domains {
		if top == d {
			return d
		}
	}
	return ""
}

// violations applies DESIGN.md's dependency direction to one package and
// its dependencies.
func violations(pkg string, deps []string) []string {
	from := area(pkg)
	var out []string
	for _, dep := range deps {
		to := area(dep)
		if to == "" || to == from {
			continue
		}
		bad := false
		switch from {
		case "abboot", "rootfs", "watchdog", "downstream":
			bad = to != "helper" // not another domain, daemon, config, cmd, tests
		case "helper":
			bad = to != "helper"
		case "config":
			bad = to == "daemon" || to == "cmd" || to == "tests"
		case "daemon":
			bad = to == "cmd" || to == "tests"
		}
		if bad {
			out = append(out, pkg+" imports "+dep+" ("+from+" -> "+to+")")
		}
	}
	return append(out, seamViolations(pkg, deps)...)
}

// protocolPkgs are the protocol clients and their simulators: the seam
// inside downstream (ARCHITECTURE.md) keeps them out of the fan-out engine
// and the root package, which reach them only through downstream.Lookup.
var protocolPkgs = []string{"downstream/stm32", "downstream/esp32", "downstream/stm32sim", "downstream/esp32sim"}

// seamViolations: downstream (root) and downstream/fanout know no protocol.
func seamViolations(pkg string, deps []string) []string {
	if pkg != module+"/downstream" && pkg != module+"/downstream/fanout" {
		return nil
	}
	var out []string
	for _, dep := range deps {
		for _, p := range protocolPkgs {
			if dep == module+"/"+p || strings.HasPrefix(dep, module+"/"+p+"/") {
				out = append(out, pkg+" imports "+dep+" (the engine knows protocols only by name)")
			}
		}
	}
	return out
}

// TestDependencyDirection fails when a package imports against DESIGN.md:
// domain packages never import each other, internal/daemon, internal/config
// or cmd; the small internal helpers never import a domain package.
func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n++
		for _, v := range violations(f[0], f[1:]) {
			t.Error(v)
		}
	}
	if n < 5 {
		t.Fatalf("go list saw only %d packages", n)
	}
}

// TestDependencyRulesCatchViolations proves the rule can fail.
func TestDependencyRulesCatchViolations(t *testing.T) {
	t.Parallel()
	bad := map[string]string{
		module + "/rootfs":            module + "/abboot/ubootenv",
		module + "/downstream/stm32":  module + "/internal/daemon",
		module + "/watchdog":          module + "/internal/config",
		module + "/internal/sign":     module + "/rootfs",
		module + "/abboot":            module + "/cmd/otagw",
		module + "/internal/config":   module + "/internal/daemon",
		module + "/downstream/fanout": module + "/downstream/stm32",
		module + "/downstream":        module + "/downstream/esp32",
	}
	for from, to := range bad {
		if len(violations(from, []string{to})) == 0 {
			t.Errorf("%s -> %s not flagged", from, to)
		}
	}
	good := map[string]string{
		module + "/rootfs":               module + "/internal/sign",
		module + "/internal/daemon":      module + "/rootfs",
		module + "/internal/config":      module + "/abboot",
		module + "/cmd/otagw":            module + "/internal/daemon",
		module + "/abboot":               module + "/abboot/ubootenv",
		module + "/downstream/protocols": module + "/downstream/stm32",
		module + "/downstream/fanout":    module + "/downstream/link",
	}
	for from, to := range good {
		if v := violations(from, []string{to}); len(v) != 0 {
			t.Errorf("%s -> %s flagged: %v", from, to, v)
		}
	}
}
