package tests

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/otagw/otagw/internal/config"
)

// configKeys lists every yaml key of the config structs as a dotted path
// (key[].sub below lists, key.NAME.sub below maps of structs).
func configKeys(prefix string, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			keys = append(keys, configKeys(prefix, f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		keys = append(keys, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		isStruct := func(t reflect.Type) bool {
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			return t.Kind() == reflect.Struct && t.PkgPath() != "time"
		}
		switch {
		case isStruct(ft):
			keys = append(keys, configKeys(key+".", ft)...)
		case ft.Kind() == reflect.Slice && isStruct(ft.Elem()):
			keys = append(keys, configKeys(key+"[].", ft.Elem())...)
		case ft.Kind() == reflect.Map && isStruct(ft.Elem()):
			keys = append(keys, configKeys(key+".NAME.", ft.Elem())...)
		}
	}
	return keys
}

// TestConfigReference: every yaml key of the config structs appears in
// docs/configuration.md, and its generated table is current.
func TestConfigReference(t *testing.T) {
	doc := string(readRepo(t, "docs/configuration.md"))
	keys := configKeys("", reflect.TypeOf(config.Config{}))
	if len(keys) < 50 {
		t.Fatalf("only %d config keys found", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", k)
		}
	}
	cmd := exec.Command("go", "run", "./scripts/config-doc", "-check")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%v: %s", err, out)
	}
}

// TestDocPages: the documentation a gateway team needs exists and the
// README links every page. docs/security.md is written on another branch;
// only its link is checked here.
func TestDocPages(t *testing.T) {
	readme := string(readRepo(t, "README.md"))
	for _, p := range []string{
		"docs/getting-started.md", "docs/configuration.md", "docs/uboot.md", "docs/mcu-wiring.md",
		"docs/mcu.md", "docs/operations.md", "docs/benchmarks.md", "docs/security.md",
		"yocto/meta-otagw/README.md", "LICENSE",
	} {
		if !strings.Contains(readme, "("+p+")") {
			t.Errorf("README.md does not link %s", p)
		}
		if p != "docs/security.md" {
			readRepo(t, p)
		}
	}
	// Every benchmark figure names the command that produced it.
	bench := string(readRepo(t, "docs/benchmarks.md"))
	for _, s := range []string{"scripts/bench-rootfs.sh", "scripts/bench-abboot.sh", "scripts/bench-downstream.sh"} {
		if !strings.Contains(bench, s) {
			t.Errorf("docs/benchmarks.md does not name %s", s)
		}
	}
}
