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
		module + "/rootfs":           module + "/abboot/ubootenv",
		module + "/downstream/stm32": module + "/internal/daemon",
		module + "/watchdog":         module + "/internal/config",
		module + "/internal/sign":    module + "/rootfs",
		module + "/abboot":           module + "/cmd/otagw",
		module + "/internal/config":  module + "/internal/daemon",
	}
	for from, to := range bad {
		if len(violations(from, []string{to})) == 0 {
			t.Errorf("%s -> %s not flagged", from, to)
		}
	}
	good := map[string]string{
		module + "/rootfs":          module + "/internal/sign",
		module + "/internal/daemon": module + "/rootfs",
		module + "/internal/config": module + "/abboot",
		module + "/cmd/otagw":       module + "/internal/daemon",
		module + "/abboot":          module + "/abboot/ubootenv",
	}
	for from, to := range good {
		if v := violations(from, []string{to}); len(v) != 0 {
			t.Errorf("%s -> %s flagged: %v", from, to, v)
		}
	}
}
