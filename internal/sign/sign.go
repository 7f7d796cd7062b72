// Package sign holds otagw's keys and signatures: ed25519 over a sha256
// digest, keys as PEM (PKCS#8 private, PKIX public), a keyring directory of
// trusted public keys, and a threshold of valid signatures so keys can be
// rotated without a flag day.
//
//	priv, pub, _ := sign.GenerateKey(dir, "signing")   // DIR/signing.key (0600), DIR/signing.pub
//	s, _ := sign.LoadSigner(priv)                       // or sign.CommandSigner(cmd, pubFile) for an HSM
//	sig, _ := sign.SignDigest(s, sign.ContextBundle, sha256.Sum256(manifest))
//	kr, _ := sign.LoadKeyring("/etc/otagw/keys")
//	err := kr.Verify(sign.ContextBundle, digest, []sign.Signature{sig}, 1)
//
// What is signed is never the raw digest alone but a context label, a NUL
// and the digest, so a signature made for one kind of object (a rootfs bundle
// manifest, an MCU package header) cannot be replayed as another.
package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Contexts in use. A new object kind gets a new label.
const (
	ContextBundle = "otagw-bundle-manifest-v1"
	ContextMCU    = "otagw-mcu-package-v1"
)

var (
	// ErrUnknownKey: no signature was made by a key in the keyring.
	ErrUnknownKey = errors.New("signed by no key in the keyring")
	// ErrSignature: a signature by a trusted key does not verify.
	ErrSignature = errors.New("signature invalid")
	// ErrThreshold: fewer distinct trusted keys signed than required.
	ErrThreshold = errors.New("too few valid signatures")
)

// Signature is one signature over an object's digest.
type Signature struct {
	KeyID string `json:"key_id"`
	Sig   []byte `json:"sig"` // 64 bytes, base64 in JSON
}

// Signer signs a message (already context-labelled) with one key.
type Signer interface {
	KeyID() string
	Sign(msg []byte) ([]byte, error)
}

// KeyID names a public key: the first 8 bytes of sha256 over its PKIX DER
// encoding, as 16 hex digits.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // ed25519 keys always marshal
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// Message is what is signed for a digest in a context.
func Message(context string, digest [32]byte) []byte {
	m := make([]byte, 0, len(context)+1+32)
	m = append(m, context...)
	m = append(m, 0)
	return append(m, digest[:]...)
}

// SignDigest signs digest in context with s.
func SignDigest(s Signer, context string, digest [32]byte) (Signature, error) {
	sig, err := s.Sign(Message(context, digest))
	if err != nil {
		return Signature{}, fmt.Errorf("sign with key %s: %w", s.KeyID(), err)
	}
	if len(sig) != ed25519.SignatureSize {
		return Signature{}, fmt.Errorf("sign with key %s: signer returned %d bytes, want %d", s.KeyID(), len(sig), ed25519.SignatureSize)
	}
	return Signature{KeyID: s.KeyID(), Sig: sig}, nil
}

// GenerateKey writes a new key pair as DIR/NAME.key (PKCS#8 PEM, mode 0600)
// and DIR/NAME.pub (PKIX PEM). It refuses to overwrite an existing key.
func GenerateKey(dir, name string) (privPath, pubPath string, err error) {
	if name == "" {
		name = "signing"
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	privPath = filepath.Join(dir, name+".key")
	pubPath = filepath.Join(dir, name+".pub")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("%s already exists; refusing to overwrite a key", p)
		}
	}
	if err := writeExcl(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeExcl(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}

func writeExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type keySigner struct {
	id   string
	priv ed25519.PrivateKey
}

func (k keySigner) KeyID() string                   { return k.id }
func (k keySigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(k.priv, msg), nil }

// NewSigner signs with a key held in memory.
func NewSigner(priv ed25519.PrivateKey) Signer {
	return keySigner{id: KeyID(priv.Public().(ed25519.PublicKey)), priv: priv}
}

// LoadSigner reads a PKCS#8 PEM ed25519 private key.
func LoadSigner(path string) (Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM \"PRIVATE KEY\" (PKCS#8) file", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, want ed25519", path, k)
	}
	return NewSigner(priv), nil
}

// LoadPublicKey reads a PKIX PEM ed25519 public key.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(path, data)
}

// ParsePublicKey parses a PKIX PEM ed25519 public key; name is used in errors.
func ParsePublicKey(name string, data []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: not a PEM \"PUBLIC KEY\" (PKIX) file", name)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, want ed25519", name, k)
	}
	return pub, nil
}

type cmdSigner struct {
	id   string
	pub  ed25519.PublicKey
	argv []string
}

// CommandSigner signs by running an external command (an HSM or a signing
// service). The command gets the message to sign on stdin and must print the
// 64-byte ed25519 signature, raw or base64, on stdout. pubPath names the
// matching public key: every signature is checked against it before use.
func CommandSigner(command, pubPath string) (Signer, error) {
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return nil, errors.New("sign command is empty")
	}
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		return nil, fmt.Errorf("sign command public key: %w", err)
	}
	return cmdSigner{id: KeyID(pub), pub: pub, argv: argv}, nil
}

func (c cmdSigner) KeyID() string { return c.id }

func (c cmdSigner) Sign(msg []byte) ([]byte, error) {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", c.argv[0], err, strings.TrimSpace(stderr.String()))
	}
	sig := out
	if len(sig) != ed25519.SignatureSize {
		dec, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
		if derr != nil || len(dec) != ed25519.SignatureSize {
			return nil, fmt.Errorf("%s: printed %d bytes, want a 64-byte signature raw or in base64", c.argv[0], len(out))
		}
		sig = dec
	}
	if !ed25519.Verify(c.pub, msg, sig) {
		return nil, fmt.Errorf("%s: signature does not verify with key %s", c.argv[0], c.id)
	}
	return sig, nil
}

// Keyring is a set of trusted public keys by key ID.
type Keyring struct {
	keys map[string]ed25519.PublicKey
	src  map[string]string // key ID -> file
}

// NewKeyring builds a keyring from keys in memory.
func NewKeyring(pubs ...ed25519.PublicKey) *Keyring {
	k := &Keyring{keys: map[string]ed25519.PublicKey{}, src: map[string]string{}}
	for _, p := range pubs {
		k.keys[KeyID(p)] = p
	}
	return k
}

// LoadKeyring reads every *.pub file in dir (or the single file dir names).
func LoadKeyring(dir string) (*Keyring, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	files := []string{dir}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(dir, "*.pub"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	k := NewKeyring()
	for _, f := range files {
		pub, err := LoadPublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		id := KeyID(pub)
		k.keys[id] = pub
		k.src[id] = f
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("keyring %s: no *.pub keys", dir)
	}
	return k, nil
}

// IDs lists the key IDs in the keyring, sorted.
func (k *Keyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Verify checks sigs over digest in context and requires at least threshold
// distinct trusted keys with a valid signature. A signature by an unknown key
// is ignored; a signature by a trusted key that fails is an error, because
// it means the object or the signature was altered.
func (k *Keyring) Verify(context string, digest [32]byte, sigs []Signature, threshold int) error {
	if threshold < 1 {
		threshold = 1
	}
	msg := Message(context, digest)
	valid := map[string]bool{}
	var unknown []string
	for _, s := range sigs {
		pub, ok := k.keys[s.KeyID]
		if !ok {
			unknown = append(unknown, s.KeyID)
			continue
		}
		if len(s.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, s.Sig) {
			return fmt.Errorf("key %s: %w", s.KeyID, ErrSignature)
		}
		valid[s.KeyID] = true
	}
	if len(valid) == 0 && len(unknown) > 0 {
		return fmt.Errorf("key(s) %s: %w", strings.Join(unknown, ", "), ErrUnknownKey)
	}
	if len(valid) < threshold {
		return fmt.Errorf("%d of %d required: %w", len(valid), threshold, ErrThreshold)
	}
	return nil
}
