package channel

import (
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
)

// BenchmarkRead: reading and verifying an index, against its physical
// limit measured in the same run: one sha256 over the signed bytes and one
// ed25519 verification (what no reader can skip). The ratio metric is
// Read's time over that floor.
//
//	go test -run XXX -bench BenchmarkRead -benchtime 2000x ./internal/channel
func BenchmarkRead(b *testing.B) {
	ss, ps := keys(b, 1)
	kr := sign.NewKeyring(ps...)
	data := signed(b, testIndex(1, t0.Add(24*time.Hour)), ss[0])
	env, _, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	msg := sign.Message(ContextIndex, sha256.Sum256(env.Index))
	sig := env.Signatures[0].Sig
	// The floor, timed by hand (testing.Benchmark cannot nest).
	const floorN = 2000
	start := time.Now()
	for i := 0; i < floorN; i++ {
		d := sha256.Sum256(env.Index)
		_ = d
		if !ed25519.Verify(ps[0], msg, sig) {
			b.Fatal("verify")
		}
	}
	floor := float64(time.Since(start).Nanoseconds()) / floorN
	pol := Policy{Keyring: kr, Threshold: 1, Compatible: "gw-a", Now: t0}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Read(data, pol, Mark{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/floor, "x-floor")
	b.ReportMetric(floor, "floor-ns")
}
