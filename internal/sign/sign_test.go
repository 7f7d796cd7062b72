package sign

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSignVerifyThresholdRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k1, p1, err := GenerateKey(dir, "old")
	if err != nil {
		t.Fatal(err)
	}
	k2, _, err := GenerateKey(dir, "new")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(k1); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %v, want 0600", st.Mode().Perm())
	}
	if _, _, err := GenerateKey(dir, "old"); err == nil {
		t.Error("GenerateKey overwrote an existing key")
	}
	s1, _ := LoadSigner(k1)
	s2, _ := LoadSigner(k2)
	d := sha256.Sum256([]byte("manifest"))
	g1, _ := SignDigest(s1, ContextBundle, d)
	g2, _ := SignDigest(s2, ContextBundle, d)

	kr, err := LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Verify(ContextBundle, d, []Signature{g1, g2}, 2); err != nil {
		t.Errorf("two valid signatures, threshold 2: %v", err)
	}
	if err := kr.Verify(ContextBundle, d, []Signature{g1}, 2); !errors.Is(err, ErrThreshold) {
		t.Errorf("one signature, threshold 2: err = %v, want ErrThreshold", err)
	}
	if err := kr.Verify(ContextMCU, d, []Signature{g1}, 1); !errors.Is(err, ErrSignature) {
		t.Errorf("wrong context: err = %v, want ErrSignature", err)
	}
	bad := g1
	bad.Sig = append([]byte(nil), g1.Sig...)
	bad.Sig[5] ^= 1
	if err := kr.Verify(ContextBundle, d, []Signature{bad}, 1); !errors.Is(err, ErrSignature) {
		t.Errorf("flipped bit: err = %v, want ErrSignature", err)
	}
	// Only the old key trusted: the new one is unknown and ignored.
	only, err := LoadKeyring(p1)
	if err != nil {
		t.Fatal(err)
	}
	if err := only.Verify(ContextBundle, d, []Signature{g2, g1}, 1); err != nil {
		t.Errorf("rotation (old trusted, both signed): %v", err)
	}
	if err := only.Verify(ContextBundle, d, []Signature{g2}, 1); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("only unknown key: err = %v, want ErrUnknownKey", err)
	}
}

func TestCommandSigner(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, pub, err := GenerateKey(dir, "hsm")
	if err != nil {
		t.Fatal(err)
	}
	// The "HSM" is openssl when present; otherwise skip with the reason.
	if _, err := os.Stat("/usr/bin/openssl"); err != nil {
		t.Skip("openssl not installed: external signer test needs it")
	}
	script := filepath.Join(dir, "sign.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nt=$(mktemp)\ncat >$t\nopenssl pkeyutl -sign -inkey "+key+" -rawin -in $t\nrc=$?\nrm -f $t\nexit $rc\n"), 0o755)
	s, err := CommandSigner("sh "+script, pub) // sh: never exec a file this process just wrote (ETXTBSY)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	g, err := SignDigest(s, ContextBundle, d)
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := LoadKeyring(pub)
	if err := kr.Verify(ContextBundle, d, []Signature{g}, 1); err != nil {
		t.Fatal(err)
	}
}
