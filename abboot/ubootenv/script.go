package ubootenv

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Change is one assignment from a fw_setenv script or command line; Delete
// is set for "name=" (empty value) and for a name given without a value.
type Change struct {
	Name   string
	Value  string
	Delete bool
	Line   int // script line, 0 for the command line
}

// ParseScript reads the fw_setenv script format of libubootenv 0.3.2:
// "name=value" per line (the value may hold blanks and further '='),
// trailing CR/LF stripped, empty lines and lines starting with '#' skipped,
// lines without '=' ignored (as libubootenv does, silently), "name=" deletes.
// An empty name, which libubootenv would store and U-Boot then rejects, is an
// error naming the line.
func ParseScript(name string, r io.Reader) ([]Change, error) {
	var out []Change
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadString('\n')
		if line == "" && err != nil {
			if err == io.EOF {
				return out, nil
			}
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if err := CheckName(k); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if err := CheckValue(k, v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		out = append(out, Change{Name: k, Value: v, Delete: v == "", Line: n})
	}
}

// Apply applies changes to env in order.
func Apply(env Env, changes []Change) {
	for _, c := range changes {
		if c.Delete {
			delete(env, c.Name)
		} else {
			env[c.Name] = c.Value
		}
	}
}
