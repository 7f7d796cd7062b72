package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otagw/otagw/internal/channel"
	"github.com/otagw/otagw/internal/sign"
)

// TestChannelPublishVerb: otagw channel publish writes an index a gateway
// accepts, checks each artifact (a bundle for another compatible, a
// config that does not validate) and prints the index with --json.
func TestChannelPublishVerb(t *testing.T) {
	dir := t.TempDir()
	keys, web := filepath.Join(dir, "keys"), filepath.Join(dir, "web")
	if code, _, e := runVerb(t, "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen: %s", e)
	}
	key := filepath.Join(keys, "signing.key")
	img := filepath.Join(dir, "img")
	os.WriteFile(img, []byte(strings.Repeat("image ", 20000)), 0o644)
	b := filepath.Join(dir, "r.otab")
	if code, _, e := runVerb(t, "bundle", "create", "--key", key, "--compatible", "gw-a", "--version", "1.4.0", "rootfs="+img, "-o", b); code != 0 {
		t.Fatalf("bundle create: %s", e)
	}
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("daemon:\n  log_level: warn\n"), 0o644)
	os.WriteFile(bad, []byte("daemon:\n  log_level: loud\n"), 0o644)

	code, out, e := runVerb(t, "channel", "publish", web, "--key", key, "--compatible", "gw-a", "--bundle", b, "--config", good, "--json")
	if code != 0 {
		t.Fatalf("publish: %d %s", code, e)
	}
	var idx channel.Index
	if err := json.Unmarshal([]byte(out), &idx); err != nil || idx.Sequence != 1 || idx.Entries[0].Bundle.Version != "1.4.0" {
		t.Fatalf("--json: %v %s", err, out)
	}
	if code, _, e := runVerb(t, "channel", "publish", web, "--key", key, "--compatible", "gw-b", "--bundle", b); code != 1 || !strings.Contains(e, `for compatible "gw-a", not "gw-b"`) {
		t.Errorf("bundle for another compatible: %d %s", code, e)
	}
	if code, _, e := runVerb(t, "channel", "publish", web, "--key", key, "--compatible", "gw-a", "--config", bad); code != 1 || !strings.Contains(e, "bad.yaml:2:3: daemon.log_level") {
		t.Errorf("invalid config: %d %s", code, e)
	}
	if code, _, _ := runVerb(t, "channel", "publish", web, "--key", key); code != 2 {
		t.Errorf("no --compatible: exit %d, want 2", code)
	}
	data, _ := os.ReadFile(filepath.Join(web, "stable", channel.IndexFile))
	kr, err := sign.LoadKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	a, err := channel.Read(data, channel.Policy{Keyring: kr, Threshold: 1, Compatible: "gw-a", Now: idx.Issued}, channel.Mark{})
	if err != nil || a.Index.Sequence != 1 {
		t.Fatalf("the published index: %v", err)
	}
	if _, err := os.Stat(filepath.Join(web, "stable", a.Entry.Bundle.URL)); err != nil {
		t.Errorf("the bundle is not where the index says: %v", err)
	}
}
