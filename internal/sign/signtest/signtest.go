// Package signtest gives tests a fresh signing key in memory.
//
//	s, pub := signtest.Key(t)
//	kr := sign.NewKeyring(pub)
package signtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"github.com/otagw/otagw/internal/sign"
)

// Key returns a new ed25519 signer and its public key.
func Key(t testing.TB) (sign.Signer, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return sign.NewSigner(priv), pub
}
