package tests

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
)

// slotHolds reports whether the slot file starts with img.
func slotHolds(t *testing.T, path string, img []byte) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(b) >= len(img) && bytes.Equal(b[:len(img)], img)
}

// primaryOf is the slot the file boot environment boots next.
func primaryOf(env map[string]string) string {
	for _, s := range strings.Fields(env["BOOT_ORDER"]) {
		if env["BOOT_"+s+"_LEFT"] != "0" {
			return s
		}
	}
	return ""
}

// waitExit waits for a daemon killed by a fault point.
func (d *daemonProc) waitExit(t *testing.T, point string) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the daemon did not reach fault point %s", point)
	}
	if !strings.Contains(d.out.String(), "fault point "+point) {
		t.Fatalf("the daemon exited, but not at fault point %s:\n%s", point, d.out.String())
	}
}

// TestKillAtEveryPersistencePoint kills the daemon (SIGKILL, from inside,
// at the exact moment) at each persistence point of an install and of a
// commit, then boots whatever the environment says and starts the daemon
// again. Every crash point must map to one correct recovery: the boot
// loader only ever boots a slot with a complete verified image, the old
// slot is never overwritten while the new one is booted, a release is
// never committed without its assessment, and the floor ends at 2.0.0.
//
// Before the write-ahead record (issue 9, item 2) install.switched failed
// here: the restarted daemon on B marked B good with no check and
// "resumed" the stale install record into A.
func TestKillAtEveryPersistencePoint(t *testing.T) {
	t.Parallel()
	points := []struct {
		name   string
		commit bool // a point of the commit, reached on the first boot of B
		resume bool // the restart continues the install by itself
	}{
		{"install.marked-bad", false, false}, // before the record: nothing written, B stays bad
		{"install.checkpoint", false, true},
		{"install.verified", false, true},
		{"install.announced", false, true},
		{"install.switched", false, true},
		{"install.done", false, true},
		{"commit.marked-good", true, false},
		{"commit.saved", true, false},
		{"commit.noted", true, false},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			g := flowGateway(t, "uboot", "  deadline: 60s\n  retry_interval: 1s\n")
			os.WriteFile(filepath.Join(g.Dir, "healthy"), nil, 0o644)
			oldA, _ := os.ReadFile(g.SlotA)
			img := testImage(6 << 20)
			b := g.bundle(t, "2.0.0", img)
			if s := g.boot(t); s != "A" {
				t.Fatalf("first boot: %s", s)
			}
			// safe checks what U-Boot would do next: boot only a verified slot.
			safe := func(when string) {
				t.Helper()
				env := g.env(t)
				if primaryOf(env) == "B" && !slotHolds(t, g.SlotB, img) {
					t.Fatalf("%s: the environment boots B (%v) but B does not hold the verified image", when, env)
				}
			}
			fault := []string{"OTAGW_FAULT=" + p.name}
			if !p.commit {
				d := g.start(t)
				d.stop(t)
				d = startReady(t, g.Config, fault...)
				g.install(t, b) // the daemon dies under it
				d.waitExit(t, p.name)
				safe("after the kill")
				booted := g.boot(t)
				if booted == "B" {
					if !slotHolds(t, g.SlotB, img) {
						t.Fatalf("booted B without the verified image")
					}
				}
				d = g.start(t)
				var st api.Status
				if booted == "A" {
					if p.resume {
						// A file the CLI passed cannot be reopened by the
						// daemon: the operator names it again (--resume),
						// and the install continues from its checkpoint.
						st = g.waitState(t, "install recovered", func(s api.Status) bool {
							return s.State == "installed" || strings.Contains(slot(s, "B").Note, "--resume")
						})
						if st.State != "installed" {
							out, e, code := otagw(t, nil, "install", "--resume", "--socket", g.Socket, b)
							if code != 0 {
								t.Fatalf("install --resume: %s %s", out, e)
							}
							st = statusOf(t, g.Socket)
						}
					} else {
						st = g.waitState(t, "idle", func(s api.Status) bool { return s.State == "idle" })
						if slot(st, "B").State != "bad" || slot(st, "A").State != "good" || !slot(st, "A").Primary {
							t.Fatalf("after a kill before the record: A %+v, B %+v", slot(st, "A"), slot(st, "B"))
						}
						if out, code := g.install(t, b); code != 0 {
							t.Fatalf("a new install after the kill: %s", out)
						}
						st = statusOf(t, g.Socket)
					}
					if st.Release == nil || st.Release.Pending != "2.0.0" || !slot(st, "B").Primary {
						t.Fatalf("recovered install: state %s, release %+v, B %+v", st.State, st.Release, slot(st, "B"))
					}
					if !slotHolds(t, g.SlotA, oldA) {
						t.Fatalf("slot A was written")
					}
					safe("after the recovery")
					d.stop(t)
					if s := g.boot(t); s != "B" {
						t.Fatalf("boot after the recovered install: %s", s)
					}
					d = g.start(t)
				}
				st = g.waitState(t, "assessment", func(s api.Status) bool { return s.Assessment != nil && s.State != "assessing" })
				if st.Assessment.Outcome != "committed" || st.Assessment.Rounds < 1 {
					t.Fatalf("first start on B: assessment %+v: 2.0.0 must be committed by its health checks, not without them", st.Assessment)
				}
				d.stop(t)
			} else {
				d := g.start(t)
				if out, code := g.install(t, b); code != 0 {
					t.Fatalf("install: %s", out)
				}
				d.stop(t)
				if s := g.boot(t); s != "B" {
					t.Fatalf("boot after install: %s", s)
				}
				d = startDaemon(t, g.Config, fault...) // the assessment may run before READY=1
				d.waitExit(t, p.name)
				safe("after the kill")
				if s := g.boot(t); s != "B" {
					t.Fatalf("boot after the kill in the commit: %s", s)
				}
				d = g.start(t)
				st := g.waitState(t, "assessment", func(s api.Status) bool { return s.Assessment != nil && s.State != "assessing" })
				if p.name == "commit.marked-good" && st.Assessment.Outcome != "committed" {
					t.Fatalf("a kill before the commit was saved must lead to a new assessment: %+v", st.Assessment)
				}
				d.stop(t)
			}
			// The end, for every point: B booted, good, committed; A untouched.
			if s := g.boot(t); s != "B" {
				t.Fatalf("final boot: %s", s)
			}
			d := g.start(t)
			st := g.waitState(t, "settled", func(s api.Status) bool { return s.Assessment != nil && s.State != "assessing" })
			if st.Release == nil || st.Release.Committed != "2.0.0" || st.Release.MinVersion != "2.0.0" || st.Release.Pending != "" {
				t.Fatalf("final release record: %+v", st.Release)
			}
			if b := slot(st, "B"); !b.Booted || b.State != "good" {
				t.Fatalf("final slot B: %+v", b)
			}
			if !slotHolds(t, g.SlotA, oldA) || !slotHolds(t, g.SlotB, img) {
				t.Fatalf("final slot contents wrong")
			}
			env := g.env(t)
			if env["otagw_anchor_min_version"] != "2.0.0" || env["otagw_anchor_trial"] != "" {
				t.Fatalf("boot environment's copy of the floor: %v", env)
			}
			d.stop(t)
		})
	}
}

// TestFloorSurvivesStateLoss: whatever happens to the state file, the
// anti-downgrade floor stays at the committed 2.0.0, the daemon says so
// loudly, and 1.0.0 is refused. Before issue 9, item 3, every case here
// installed the downgrade.
func TestFloorSurvivesStateLoss(t *testing.T) {
	t.Parallel()
	dropNotes := func(t *testing.T, g *gateway) {
		b, _ := os.ReadFile(g.Env)
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, "otagw_anchor_") {
				keep = append(keep, l)
			}
		}
		os.WriteFile(g.Env, []byte(strings.Join(keep, "\n")), 0o644)
	}
	cases := []struct {
		name string
		harm func(t *testing.T, g *gateway, saved []byte)
	}{
		{"byte flipped", func(t *testing.T, g *gateway, _ []byte) {
			p := filepath.Join(g.Dir, "state", "state")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x40
			os.WriteFile(p, b, 0o600)
		}},
		{"state deleted", func(t *testing.T, g *gateway, _ []byte) {
			os.Remove(filepath.Join(g.Dir, "state", "state"))
		}},
		{"device key deleted", func(t *testing.T, g *gateway, _ []byte) {
			matches, _ := filepath.Glob(filepath.Join(g.Dir, "state", "*key*"))
			if len(matches) == 0 {
				t.Fatalf("no device key in %s", filepath.Join(g.Dir, "state"))
			}
			for _, m := range matches {
				os.Remove(m)
			}
		}},
		{"older copy replayed", func(t *testing.T, g *gateway, saved []byte) {
			os.WriteFile(filepath.Join(g.Dir, "state", "state"), saved, 0o600)
		}},
		{"state deleted and environment notes lost", func(t *testing.T, g *gateway, _ []byte) {
			os.Remove(filepath.Join(g.Dir, "state", "state"))
			dropNotes(t, g)
		}},
		{"replayed and environment notes lost", func(t *testing.T, g *gateway, saved []byte) {
			os.WriteFile(filepath.Join(g.Dir, "state", "state"), saved, 0o600)
			dropNotes(t, g)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g := flowGateway(t, "file", "  deadline: 60s\n  retry_interval: 1s\n")
			os.WriteFile(filepath.Join(g.Dir, "healthy"), nil, 0o644)
			g.boot(t)
			older := g.bundle(t, "1.0.0", testImage(4<<20))
			newer := g.bundle(t, "2.0.0", testImage(4<<20))
			d := g.start(t)
			d.stop(t)
			// A valid state file from before the commit: the replay.
			saved, err := os.ReadFile(filepath.Join(g.Dir, "state", "state"))
			if err != nil {
				t.Fatal(err)
			}
			d = g.start(t)
			if out, code := g.install(t, newer); code != 0 {
				t.Fatalf("install: %s", out)
			}
			d.stop(t)
			g.boot(t)
			d = g.start(t)
			st := g.waitState(t, "commit", func(s api.Status) bool { return s.Assessment != nil && s.State != "assessing" })
			if st.Release == nil || st.Release.MinVersion != "2.0.0" {
				t.Fatalf("setup: %+v", st.Release)
			}
			d.stop(t)

			c.harm(t, g, saved)
			d = g.start(t)
			st = statusOf(t, g.Socket)
			if st.Release == nil || st.Release.MinVersion != "2.0.0" {
				t.Fatalf("floor after %s: %+v (warnings %q)", c.name, st.Release, st.Warnings)
			}
			if len(st.Warnings) == 0 {
				t.Errorf("%s went unreported: no warning in status", c.name)
			}
			out, code := g.install(t, older)
			if code == 0 || !strings.Contains(out, "downgrade-refused") {
				t.Fatalf("1.0.0 after %s: exit %d: %s", c.name, code, out)
			}
			if !slotHolds(t, g.SlotB, mustRead(t, filepath.Join(g.Dir, "image-2.0.0"))) {
				t.Fatalf("the booted slot changed")
			}
			d.stop(t)
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// silentServer answers with headers and a Content-Length, then sends
// nothing more until the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	stop := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10485760")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(stop); srv.Close() })
	return "http://" + ln.Addr().String() + "/silent.otagw"
}

// TestInstallBusyAndCancelWhileHeadStalls: a server that goes silent
// while the bundle head is read. Before issue 9, item 1, status said
// "idle: ready", a second install hung, and nothing could stop the first.
func TestInstallBusyAndCancelWhileHeadStalls(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 8<<20, "")
	url := silentServer(t)
	d := g.start(t)
	first := make(chan string, 1)
	go func() {
		out, e, _ := otagw(t, nil, "install", "--socket", g.Socket, url)
		first <- out + e
	}()
	st := g.waitState(t, "downloading", func(s api.Status) bool { return s.State == "downloading" })
	if !strings.Contains(st.Message, url) {
		t.Errorf("status while the head downloads: %q, want it to name %s", st.Message, url)
	}
	t0 := time.Now()
	_, e, code := otagw(t, nil, "install", "--socket", g.Socket, url)
	if code == 0 || !strings.Contains(e, "busy") || time.Since(t0) > 10*time.Second {
		t.Fatalf("second install while the first reads its head: exit %d after %v: %s", code, time.Since(t0), e)
	}
	out, e, code := otagw(t, nil, "install", "--cancel", "--json", "--socket", g.Socket)
	if code != 0 || !strings.Contains(out, "cancelled") {
		t.Fatalf("install --cancel: exit %d: %s %s", code, out, e)
	}
	select {
	case o := <-first:
		if !strings.Contains(o, "cancel") {
			t.Errorf("the cancelled install's client says: %s", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the cancelled install's client did not return")
	}
	st = statusOf(t, g.Socket)
	if st.State == "downloading" || st.State == "installing" {
		t.Fatalf("after cancel: %s: %s", st.State, st.Message)
	}
	if slot(st, "A").Primary != true {
		t.Errorf("after cancel: A must stay primary: %+v", st.Slots)
	}
	if _, e, code := otagw(t, nil, "install", "--cancel", "--socket", g.Socket); code == 0 || !strings.Contains(e, "no install is running") {
		t.Errorf("cancel with nothing running: exit %d: %s", code, e)
	}
	d.stop(t)
}

// TestInstallSizeMismatchLeavesBootAlone: a bundle cut short or with
// bytes appended is refused before the environment changes (issue 9,
// item 5: B used to be marked bad although nothing was written).
func TestInstallSizeMismatchLeavesBootAlone(t *testing.T) {
	t.Parallel()
	g := newGateway(t, 8<<20, "")
	good := g.bundle(t, "2.0.0", testImage(2<<20))
	data := mustRead(t, good)
	d := g.start(t)
	// Let the start settle (the booted slot gets its tries back) first.
	g.waitState(t, "start-up assessment", func(s api.Status) bool { return s.Assessment != nil })
	before, _ := os.ReadFile(g.Env)
	for name, b := range map[string][]byte{
		"truncated": data[:len(data)-1],
		"trailing":  append(append([]byte(nil), data...), 0),
	} {
		p := filepath.Join(g.Dir, name+".otagw")
		os.WriteFile(p, b, 0o644)
		out, code := g.install(t, p)
		if code == 0 || !(strings.Contains(out, "source-truncated") || strings.Contains(out, "trailing-data")) {
			t.Errorf("%s bundle: exit %d: %s", name, code, out)
		}
		if after, _ := os.ReadFile(g.Env); !bytes.Equal(before, after) {
			t.Errorf("%s bundle changed the boot environment:\n%s\n->\n%s", name, before, after)
		}
	}
	// And right after a good install, status agrees with the record.
	if out, code := g.install(t, good); code != 0 {
		t.Fatalf("install: %s", out)
	}
	st := statusOf(t, g.Socket)
	if st.State != "installed" || !strings.Contains(st.Message, "2.0.0") || st.Release == nil || st.Release.Pending != "2.0.0" {
		t.Errorf("status right after the install: %s: %q, release %+v", st.State, st.Message, st.Release)
	}
	d.stop(t)
}
