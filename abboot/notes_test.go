package abboot

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestNotesRideWithTheBootChange(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions()
	o.Backend, o.File, o.Cmdline = BackendFile, filepath.Join(dir, "env"), filepath.Join(dir, "cmdline")
	c, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetPrimaryNoting("B", 3, map[string]string{"otagw_anchor_trial": "B 2.0.0 7", "otagw_anchor_seq": "7"}); err != nil {
		t.Fatal(err)
	}
	env, err := ReadEnvFile(o.File)
	if err != nil {
		t.Fatal(err)
	}
	if env["BOOT_ORDER"] != "B A" || env["BOOT_B_LEFT"] != "3" || env["otagw_anchor_trial"] != "B 2.0.0 7" || env["otagw_anchor_seq"] != "7" {
		t.Fatalf("one write must carry both the switch and the notes: %v", env)
	}
	if err := c.SetNotes(map[string]string{"otagw_anchor_trial": "", "otagw_anchor_min_version": "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	n, err := c.Notes()
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 2 || n["otagw_anchor_min_version"] != "2.0.0" || n["otagw_anchor_seq"] != "7" {
		t.Fatalf("notes after delete and set: %v", n)
	}
	for _, bad := range []map[string]string{{"BOOT_ORDER": "A"}, {"otagw_anchor_x y": "1"}, {"otagw_anchor_x": "a\nb"}} {
		if err := c.SetNotes(bad); !errors.Is(err, ErrOptions) {
			t.Errorf("SetNotes(%v) = %v, want ErrOptions", bad, err)
		}
	}
}
