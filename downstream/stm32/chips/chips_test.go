package chips

import (
	"errors"
	"testing"
)

func TestLayouts(t *testing.T) {
	for _, c := range All() {
		var sum uint32
		for _, p := range c.Pages() {
			if p.Addr != c.FlashStart+sum {
				t.Errorf("%s page %d at 0x%x, want 0x%x", c, p.Index, p.Addr, c.FlashStart+sum)
			}
			sum += p.Size
		}
		if sum != c.FlashSize() {
			t.Errorf("%s: pages cover %d bytes, flash is %d", c, sum, c.FlashSize())
		}
	}
	want := map[string]bool{"F0": true, "F1": true, "F4": true, "G0": true, "L4": true, "H7": true}
	for _, f := range Families() {
		delete(want, f)
	}
	if len(want) != 0 {
		t.Errorf("families missing from the database: %v", want)
	}
}

func TestPageRange(t *testing.T) {
	f4, _ := Lookup(0x413)
	f1, _ := Lookup(0x410)
	tests := []struct {
		c          *Chip
		addr       uint32
		n          int
		first, cnt int
		err        error
	}{
		{f1, 0x08000000, 1024, 0, 1, nil},
		{f1, 0x08000000, 1025, 0, 2, nil},
		{f1, 0x08000400, 3000, 1, 3, nil},
		{f4, 0x08000000, 70 * 1024, 0, 5, nil},
		{f4, 0x08020000, 128 * 1024, 5, 1, nil},
		{f4, 0x080E0000, 128*1024 + 1, 0, 0, ErrOutOfFlash},
		{f1, 0x07FFFFFC, 8, 0, 0, ErrOutOfFlash},
	}
	for _, tt := range tests {
		first, cnt, err := tt.c.PageRange(tt.addr, tt.n)
		if !errors.Is(err, tt.err) || first != tt.first || cnt != tt.cnt {
			t.Errorf("%s PageRange(0x%x, %d) = %d, %d, %v; want %d, %d, %v", tt.c, tt.addr, tt.n, first, cnt, err, tt.first, tt.cnt, tt.err)
		}
	}
}
