// Package channel is otagw's signed update channel: an index that any
// static web server, CDN or object store serves as plain files, naming for
// each compatible (and optional device tags) the current rootfs bundle, MCU
// packages and configuration document, each with its size and sha256.
//
//	idx, err := channel.Read(data, channel.Policy{Keyring: kr, Threshold: 1,
//		Channel: "stable", Compatible: "acme-gw-v2", Now: time.Now()}, last)
//	// errors.Is(err, channel.ErrExpired), ErrOlder, ErrReplayed, ...
//	e := idx.Entry // the entry for this device; nothing is downloaded before this
//
// The file (docs/channel-format.md) is JSON: {"index": {...}, "signatures":
// [...]}. The signatures cover the exact bytes of the "index" value (ed25519
// over sha256, context ContextIndex, at least Threshold distinct keys of the
// release keyring), so no canonical form is needed and the file is served
// byte for byte as written.
package channel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/otagw/otagw/internal/sign"
)

// ContextIndex is the signing context of a channel index.
const ContextIndex = "otagw-channel-index-v1"

// Format is the index format version this build reads and writes.
const Format = 1

// MaxIndexSize bounds an index file; a larger body is not an index.
const MaxIndexSize = 1 << 20

// IndexFile is the index's name inside a channel directory.
const IndexFile = "index.json"

// Each refusal has its own error; all wrap ErrRefused.
var (
	ErrRefused   = errors.New("channel index refused")
	ErrGarbage   = fmt.Errorf("%w: not a channel index", ErrRefused)
	ErrTruncated = fmt.Errorf("%w: truncated", ErrRefused)
	// ErrUnknownKey: no signature was made by a key of the release keyring.
	ErrUnknownKey = fmt.Errorf("%w: signed by no key in the keyring", ErrRefused)
	// ErrThreshold: fewer distinct trusted keys signed than the threshold.
	ErrThreshold = fmt.Errorf("%w: too few valid signatures", ErrRefused)
	// ErrSignature: a signature by a trusted key does not verify (the
	// index or the signature was altered).
	ErrSignature = fmt.Errorf("%w: signature invalid", ErrRefused)
	// ErrExpired: the index's expiry has passed (a frozen channel).
	ErrExpired = fmt.Errorf("%w: expired", ErrRefused)
	// ErrOlder: the sequence number is below the one last accepted.
	ErrOlder = fmt.Errorf("%w: older sequence number than the one accepted", ErrRefused)
	// ErrReplayed: the index was accepted before and has been superseded,
	// or another index carries the sequence number of the accepted one.
	ErrReplayed = fmt.Errorf("%w: replayed", ErrRefused)
	// ErrCompatible: the index has no entry for this device's compatible.
	ErrCompatible = fmt.Errorf("%w: no entry for this compatible", ErrRefused)
	// ErrChannel: the index is for another channel.
	ErrChannel = fmt.Errorf("%w: another channel", ErrRefused)
)

// File is one downloadable artifact of an entry.
type File struct {
	// URL is relative to the channel directory (or absolute).
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // 64 hex digits
	// Version is the artifact's own version, when it has one (the
	// bundle's release version, the MCU package's firmware version).
	Version string `json:"version,omitempty"`
	// Name is the file name it was published from, for messages.
	Name string `json:"name,omitempty"`
}

// Entry is what one kind of device should run.
type Entry struct {
	Compatible string `json:"compatible"`
	// Tags narrow the entry: it applies to devices that have all of them.
	// The entry with the most matching tags wins.
	Tags   []string `json:"tags,omitempty"`
	Bundle *File    `json:"bundle,omitempty"`
	MCU    []File   `json:"mcu,omitempty"`
	Config *File    `json:"config,omitempty"`
}

// Index is the signed content.
type Index struct {
	Format   int       `json:"format"`
	Channel  string    `json:"channel"`
	Sequence uint64    `json:"sequence"`
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
	Entries  []Entry   `json:"entries"`
}

// Envelope is the file as served.
type Envelope struct {
	Index      json.RawMessage  `json:"index"`
	Signatures []sign.Signature `json:"signatures"`
}

// Mark is what the device keeps of the last accepted index (in its
// HMAC-protected state): the sequence number, the digest, and the digests
// of the indexes accepted before it.
type Mark struct {
	Sequence uint64   `json:"sequence"`
	Digest   string   `json:"digest,omitempty"`
	Earlier  []string `json:"earlier,omitempty"` // newest first, at most MaxEarlier
}

// MaxEarlier bounds the digests kept in Mark.Earlier.
const MaxEarlier = 32

// Policy is what a device accepts.
type Policy struct {
	Keyring    *sign.Keyring
	Threshold  int
	Channel    string // "" accepts any channel name
	Compatible string
	Tags       []string // the device's tags
	Now        time.Time
}

// Accepted is a verified index and this device's entry in it.
type Accepted struct {
	Index  Index
	Entry  Entry
	Digest string // sha256 of the signed bytes, hex
	// Unchanged: the same index as the one last accepted (sequence and
	// digest): nothing new.
	Unchanged bool
}

// Mark returns the mark to store after accepting a, given the previous one.
func (a *Accepted) Mark(prev Mark) Mark {
	if a.Unchanged {
		return prev
	}
	m := Mark{Sequence: a.Index.Sequence, Digest: a.Digest}
	if prev.Digest != "" {
		m.Earlier = append([]string{prev.Digest}, prev.Earlier...)
		if len(m.Earlier) > MaxEarlier {
			m.Earlier = m.Earlier[:MaxEarlier]
		}
	}
	return m
}

// Parse decodes an envelope without verifying it.
func Parse(data []byte) (*Envelope, *Index, error) {
	if len(data) > MaxIndexSize {
		return nil, nil, fmt.Errorf("%w: %d bytes is more than an index may have (%d)", ErrGarbage, len(data), MaxIndexSize)
	}
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || (err == io.EOF && len(bytes.TrimSpace(data)) > 0) {
			return nil, nil, fmt.Errorf("%w: the JSON ends early (%d bytes)", ErrTruncated, len(data))
		}
		if err == io.EOF {
			return nil, nil, fmt.Errorf("%w: empty", ErrTruncated)
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrGarbage, err)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) > 0 || dec.More() {
		return nil, nil, fmt.Errorf("%w: data after the index", ErrGarbage)
	}
	if len(env.Index) == 0 || env.Index[0] != '{' {
		return nil, nil, fmt.Errorf("%w: no \"index\" object", ErrGarbage)
	}
	var idx Index
	d2 := json.NewDecoder(bytes.NewReader(env.Index))
	d2.DisallowUnknownFields()
	if err := d2.Decode(&idx); err != nil {
		return nil, nil, fmt.Errorf("%w: index: %v", ErrGarbage, err)
	}
	if err := idx.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrGarbage, err)
	}
	return &env, &idx, nil
}

// Validate checks the index's fields (not its signatures).
func (x *Index) Validate() error {
	if x.Format != Format {
		return fmt.Errorf("index.format: %d, this build reads %d", x.Format, Format)
	}
	if x.Sequence == 0 {
		return errors.New("index.sequence: must be 1 or more")
	}
	if x.Expires.IsZero() {
		return errors.New("index.expires: missing")
	}
	if len(x.Entries) == 0 {
		return errors.New("index.entries: none")
	}
	for i, e := range x.Entries {
		at := fmt.Sprintf("index.entries[%d]", i)
		if e.Compatible == "" {
			return fmt.Errorf("%s.compatible: empty", at)
		}
		if e.Bundle == nil && len(e.MCU) == 0 && e.Config == nil {
			return fmt.Errorf("%s: names no bundle, MCU package or config", at)
		}
		if e.Bundle != nil {
			if err := e.Bundle.validate(at + ".bundle"); err != nil {
				return err
			}
		}
		for j := range e.MCU {
			if err := e.MCU[j].validate(fmt.Sprintf("%s.mcu[%d]", at, j)); err != nil {
				return err
			}
		}
		if e.Config != nil {
			if err := e.Config.validate(at + ".config"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *File) validate(at string) error {
	if f.URL == "" {
		return fmt.Errorf("%s.url: empty", at)
	}
	if f.Size < 0 {
		return fmt.Errorf("%s.size: %d is negative", at, f.Size)
	}
	if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%s.sha256: %q is not 64 hex digits", at, f.SHA256)
	}
	return nil
}

// Read parses and verifies an index for a device whose last accepted
// index is last. The checks run in this order, each with its own error:
// form (ErrTruncated, ErrGarbage), signatures (ErrUnknownKey, ErrSignature,
// ErrThreshold), ErrChannel, ErrExpired, sequence (ErrOlder, ErrReplayed),
// ErrCompatible.
func Read(data []byte, p Policy, last Mark) (*Accepted, error) {
	env, idx, err := Parse(data)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(env.Index)
	if p.Keyring == nil {
		return nil, errors.New("channel: no keyring")
	}
	if err := p.Keyring.Verify(ContextIndex, digest, env.Signatures, p.Threshold); err != nil {
		switch {
		case errors.Is(err, sign.ErrUnknownKey):
			return nil, fmt.Errorf("%w (%v)", ErrUnknownKey, err)
		case errors.Is(err, sign.ErrThreshold):
			return nil, fmt.Errorf("%w (%v)", ErrThreshold, err)
		case errors.Is(err, sign.ErrSignature):
			return nil, fmt.Errorf("%w (%v)", ErrSignature, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if p.Channel != "" && idx.Channel != p.Channel {
		return nil, fmt.Errorf("%w: the index is for channel %q, this device follows %q", ErrChannel, idx.Channel, p.Channel)
	}
	if !p.Now.Before(idx.Expires) {
		return nil, fmt.Errorf("%w at %s (sequence %d); the publisher must re-sign it", ErrExpired, idx.Expires.Format(time.RFC3339), idx.Sequence)
	}
	hexd := hex.EncodeToString(digest[:])
	a := &Accepted{Index: *idx, Digest: hexd}
	switch {
	case idx.Sequence == last.Sequence && hexd == last.Digest:
		a.Unchanged = true
	case slices.Contains(last.Earlier, hexd):
		return nil, fmt.Errorf("%w: sequence %d was accepted before and superseded by %d", ErrReplayed, idx.Sequence, last.Sequence)
	case idx.Sequence == last.Sequence:
		return nil, fmt.Errorf("%w: sequence %d is the accepted one's, but the index differs", ErrReplayed, idx.Sequence)
	case idx.Sequence < last.Sequence:
		return nil, fmt.Errorf("%w: sequence %d, accepted %d", ErrOlder, idx.Sequence, last.Sequence)
	}
	e, ok := idx.Match(p.Compatible, p.Tags)
	if !ok {
		var have []string
		for _, e := range idx.Entries {
			have = append(have, e.Compatible)
		}
		return nil, fmt.Errorf("%w: this device is %q; the index has %s", ErrCompatible, p.Compatible, strings.Join(have, ", "))
	}
	a.Entry = e
	return a, nil
}

// Match returns the entry for compatible and a device's tags: the entry
// whose tags the device all has, with the most tags; the first one listed
// on a tie.
func (x *Index) Match(compatible string, tags []string) (Entry, bool) {
	best, found := Entry{}, false
	for _, e := range x.Entries {
		if e.Compatible != compatible {
			continue
		}
		all := true
		for _, t := range e.Tags {
			if !slices.Contains(tags, t) {
				all = false
			}
		}
		if all && (!found || len(e.Tags) > len(best.Tags)) {
			best, found = e, true
		}
	}
	return best, found
}

// Resolve returns ref (a file's URL in the index) against the index's URL.
func Resolve(indexURL, ref string) (string, error) {
	base, err := url.Parse(indexURL)
	if err != nil {
		return "", fmt.Errorf("channel url %q: %w", indexURL, err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("%w: file url %q: %v", ErrGarbage, ref, err)
	}
	return base.ResolveReference(r).String(), nil
}

// Sign builds a signed index file from idx with the signers.
func Sign(idx *Index, signers ...sign.Signer) ([]byte, error) {
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	body, err := json.MarshalIndent(idx, "  ", "  ")
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(body)
	env := Envelope{Index: body}
	for _, s := range signers {
		sig, err := sign.SignDigest(s, ContextIndex, digest)
		if err != nil {
			return nil, err
		}
		env.Signatures = append(env.Signatures, sig)
	}
	// Written by hand so the signed bytes stay exactly as signed.
	var b bytes.Buffer
	b.WriteString("{\n  \"index\": ")
	b.Write(body)
	b.WriteString(",\n  \"signatures\": ")
	sigs, err := json.Marshal(env.Signatures)
	if err != nil {
		return nil, err
	}
	if env.Signatures == nil {
		sigs = []byte("[]")
	}
	b.Write(sigs)
	b.WriteString("\n}\n")
	return b.Bytes(), nil
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
