package channel

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
)

// FuzzRead: the index reader never panics on outside input, and whatever
// it accepts verified under the keyring and names this device's entry.
func FuzzRead(f *testing.F) {
	ss, ps := keys(f, 2)
	kr := sign.NewKeyring(ps[0])
	later := t0.Add(24 * time.Hour)
	f.Add(signed(f, testIndex(1, later), ss[0]))
	f.Add(signed(f, testIndex(7, later), ss[0], ss[1]))
	f.Add(signed(f, testIndex(1, later), ss[1]))
	f.Add([]byte(`{"index": {}, "signatures": []}`))
	f.Add([]byte(`{"index": {"format":1,"channel":"stable","sequence":1,"expires":"2030-01-01T00:00:00Z","entries":[{"compatible":"gw-a","config":{"url":"x","size":1,"sha256":"00"}}]},"signatures":[{"key_id":"x","sig":"AA=="}]}`))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Read(data, Policy{Keyring: kr, Threshold: 1, Compatible: "gw-a", Now: t0}, Mark{Sequence: 1, Digest: "x"})
		if err != nil {
			return
		}
		if a.Entry.Compatible != "gw-a" || a.Index.Sequence < 1 || !t0.Before(a.Index.Expires) {
			t.Fatalf("accepted %+v", a)
		}
		env, _, err := Parse(data)
		if err != nil {
			t.Fatalf("Read accepted what Parse refuses: %v", err)
		}
		if err := kr.Verify(ContextIndex, [32]byte(mustHex(t, sha256hex(env.Index))), env.Signatures, 1); err != nil {
			t.Fatalf("accepted without a valid signature: %v", err)
		}
	})
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("digest %q", s)
	}
	return b
}
