package daemon

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/otagw/otagw/internal/sign"
)

// A proof written as the manifest streams by is byte for byte the proof
// json.Marshal makes from the whole manifest, and it replaces the proof
// of the slot; a pending proof left by an interrupted install is removed
// by the next one.
func TestPendingProofMatchesMarshal(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	manifest := make([]byte, 100_003)
	rand.Read(manifest)
	sig, err := sign.SignDigest(sign.NewSigner(priv), sign.ContextBundle, sha256.Sum256(manifest))
	if err != nil {
		t.Fatal(err)
	}
	sigs := []sign.Signature{sig}

	left, err := startProof(dir) // interrupted: never finished
	if err != nil {
		t.Fatal(err)
	}
	left.Write(manifest[:10])
	pp, err := startProof(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left.f.Name()); !os.IsNotExist(err) {
		t.Errorf("the interrupted pending proof %s is still there (%v)", left.f.Name(), err)
	}
	for b := manifest; len(b) > 0; { // in pieces, as a stream reads it
		n := min(len(b), 4093)
		pp.Write(b[:n])
		b = b[n:]
	}
	tmp, err := pp.finish(sigs)
	if err != nil {
		t.Fatal(err)
	}
	if err := saveProof(dir, "B", tmp); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(proofPath(dir, "B"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(proof{Manifest: manifest, Signatures: sigs})
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed proof (%d bytes) differs from json.Marshal's (%d bytes)", len(got), len(want))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "releases", proofTmpPrefix+"*")); len(m) != 0 {
		t.Errorf("pending proofs left: %v", m)
	}
}
