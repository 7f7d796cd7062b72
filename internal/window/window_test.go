package window

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOpenAndNext(t *testing.T) {
	t.Parallel()
	p, err := New(Options{Windows: []Window{
		{Name: "night", Start: "0 2 * * *", Duration: 2 * time.Hour},
		{Name: "sunday", Start: "30 12 * * 0", Duration: 30 * time.Minute},
	}, Install: InWindow, Flash: Anytime, Reboot: InWindow})
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		now      string
		open     bool
		name     string
		next     string
		installs bool
	}{
		{"2026-11-25 01:59", false, "night", "2026-11-25 02:00", false},
		{"2026-11-25 02:00", true, "night", "2026-11-25 02:00", true},
		{"2026-11-25 03:59", true, "night", "2026-11-25 03:59", true},
		{"2026-11-25 04:00", false, "night", "2026-11-26 02:00", false},
		{"2026-11-29 12:45", true, "sunday", "2026-11-29 12:45", true}, // a Sunday
		{"2026-11-29 13:00", false, "night", "2026-11-30 02:00", false},
		{"2026-11-25 23:30", false, "night", "2026-11-26 02:00", false},
	}
	for _, c := range cases {
		now := at(c.now)
		open, w := p.Open(now)
		next, nw := p.Next(now)
		if open != c.open || (open && w.Name != c.name) || !next.Equal(at(c.next)) || nw.Name != c.name {
			t.Errorf("at %s: open %v %q, next %s %q; want %v %q, %s", c.now, open, w.Name, next.Format("2006-01-02 15:04"), nw.Name, c.open, c.name, c.next)
		}
		err := p.Allowed(Install, now)
		if (err == nil) != c.installs || (err != nil && !errors.Is(err, ErrClosed)) {
			t.Errorf("at %s: Allowed(install) = %v", c.now, err)
		}
		if err := p.Allowed(Flash, now); err != nil {
			t.Errorf("flash is anytime, got %v", err)
		}
	}
}

func TestNoWindowsMeansAnytime(t *testing.T) {
	t.Parallel()
	p, err := New(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Allowed(Install, time.Now()); err != nil {
		t.Error(err)
	}
	if at, _ := p.Next(time.Now()); !at.IsZero() {
		t.Errorf("Next with no windows = %v", at)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := []Options{
		{Windows: []Window{{Name: "x", Start: "0 2 * *", Duration: time.Hour}}, Install: Anytime, Flash: Anytime, Reboot: Manual},
		{Windows: []Window{{Name: "x", Start: "0 2 * * *", Duration: time.Second}}, Install: Anytime, Flash: Anytime, Reboot: Manual},
		{Install: InWindow, Flash: Anytime, Reboot: Manual},
		{Install: "sometimes", Flash: Anytime, Reboot: Manual},
	}
	for i, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("case %d accepted: %+v", i, o)
		}
	}
}

func FuzzCronSpec(f *testing.F) {
	f.Add("0 2 * * *")
	f.Add("*/5 1-3 1,15 * MON-FRI")
	f.Add("@daily")
	f.Fuzz(func(t *testing.T, spec string) {
		o := Options{Windows: []Window{{Name: "w", Start: spec, Duration: time.Hour}}, Install: InWindow, Flash: Anytime, Reboot: Manual}
		p, err := New(o)
		if err != nil {
			return
		}
		now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
		p.Open(now)
		p.Next(now)
	})
}

// TestDownloadGate: downloads from the channel have their own policy; the
// other kinds are not affected by it.
func TestDownloadGate(t *testing.T) {
	p, err := New(Options{Windows: []Window{{Name: "night", Start: "0 2 * * *", Duration: 2 * time.Hour}},
		Install: Anytime, Flash: Anytime, Download: InWindow, Reboot: Manual})
	if err != nil {
		t.Fatal(err)
	}
	noon := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	if err := p.Allowed(Download, noon); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "download") {
		t.Errorf("download at noon: %v, want ErrClosed naming download", err)
	}
	if err := p.Allowed(Install, noon); err != nil {
		t.Errorf("install at noon: %v", err)
	}
	if err := p.Allowed(Download, noon.Add(14*time.Hour+30*time.Minute)); err != nil {
		t.Errorf("download at 02:30: %v", err)
	}
	if err := (Options{Install: Anytime, Flash: Anytime, Download: "sometimes", Reboot: Manual}).Validate(); err == nil || !strings.Contains(err.Error(), "download") {
		t.Errorf("Validate = %v, want download named", err)
	}
}
