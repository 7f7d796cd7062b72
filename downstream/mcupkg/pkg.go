// Package mcupkg is the signed MCU firmware package: a JSON manifest
// (target family and product ID, hardware revisions, version, load address,
// segments with their SHA-256) signed with the otagw keys (internal/sign,
// context "otagw-mcu-package-v1"), followed by the image bytes. It also
// parses the inputs a package is made from: raw binary, Intel HEX and ELF.
// The byte layout is in docs/formats/mcu-package.md.
//
//	segs, _ := mcupkg.ParseHex(r)                     // or ParseELF, or a .bin at an address
//	data, _ := mcupkg.Create(mcupkg.Manifest{Target: t, Version: "1.4.0"}, segs, signer)
//	p, _ := mcupkg.Parse(data)                         // structure and hashes, no trust yet
//	err := p.Verify(keyring, 1)                        // signatures: now trusted
//	for _, s := range p.Segments { _ = s.Addr }
package mcupkg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/otagw/otagw/internal/sign"
)

// Magic starts every package file.
const Magic = "OTAGWMCU"

// FormatVersion is the manifest format this code writes and reads.
const FormatVersion = 1

// Limits on what Parse accepts.
const (
	MaxHeader = 1 << 20
	MaxImage  = 64 << 20
)

var (
	// ErrFormat: the file is not a well-formed package.
	ErrFormat = errors.New("not a valid MCU package")
	// ErrIntegrity: the image does not match the manifest's hashes.
	ErrIntegrity = errors.New("MCU package image does not match its manifest")
	// ErrUnsigned: no signatures, or none that the keyring accepts.
	ErrUnsigned = errors.New("MCU package signature check failed")
)

// Target says which MCUs a package is for.
type Target struct {
	Family    string `json:"family"`     // STM32: "F1", "F4", ...; ESP32: "ESP32"
	ProductID uint16 `json:"product_id"` // 12-bit STM32 PID, e.g. 0x410; 0 for ESP32
	// Chip names an ESP32 chip (esp32, esp32s3, esp32c3); empty for STM32.
	Chip   string   `json:"chip,omitempty"`
	HWRevs []string `json:"hw_revs,omitempty"` // empty: any hardware revision
}

// String is "F1/0x410" or "esp32s3".
func (t Target) String() string {
	if t.Chip != "" {
		return t.Chip
	}
	return fmt.Sprintf("%s/0x%03x", t.Family, t.ProductID)
}

// SegmentInfo describes one segment in the manifest.
type SegmentInfo struct {
	Addr   uint32 `json:"addr"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest is the signed description of a package.
type Manifest struct {
	Format      int           `json:"format"`
	Target      Target        `json:"target"`
	Version     string        `json:"version"`
	LoadAddress uint32        `json:"load_address"` // where Go starts (vector table)
	Segments    []SegmentInfo `json:"segments"`
	ImageSize   int           `json:"image_size"`
	ImageSHA256 string        `json:"image_sha256"`
	Source      string        `json:"source,omitempty"`
	Created     string        `json:"created,omitempty"`
}

// Segment is image bytes at an address.
type Segment struct {
	Addr uint32
	Data []byte
}

type header struct {
	Manifest   json.RawMessage  `json:"manifest"`
	Signatures []sign.Signature `json:"signatures"`
}

// Package is a parsed package.
type Package struct {
	Manifest   Manifest
	Segments   []Segment
	Signatures []sign.Signature
	rawMan     []byte
	verified   bool
}

// Digest is the SHA-256 of the manifest bytes, which the signatures cover.
func (p *Package) Digest() [32]byte { return sha256.Sum256(p.rawMan) }

// Verified reports whether Verify succeeded.
func (p *Package) Verified() bool { return p.verified }

// Create builds a package from m and segs, filling the segment table and
// hashes, and signs it with every signer.
func Create(m Manifest, segs []Segment, signers ...sign.Signer) ([]byte, error) {
	if len(signers) == 0 {
		return nil, errors.New("mcu package: no signing key")
	}
	segs = sortSegments(segs)
	if len(segs) == 0 {
		return nil, errors.New("mcu package: empty image")
	}
	if err := checkTarget(m.Target); err != nil {
		return nil, err
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return nil, fmt.Errorf("mcu package: %w", err)
	}
	m.Format = FormatVersion
	m.Segments = nil
	var img []byte
	for i, s := range segs {
		if i > 0 && uint64(segs[i-1].Addr)+uint64(len(segs[i-1].Data)) > uint64(s.Addr) {
			return nil, fmt.Errorf("mcu package: segments at 0x%08x and 0x%08x overlap", segs[i-1].Addr, s.Addr)
		}
		sum := sha256.Sum256(s.Data)
		m.Segments = append(m.Segments, SegmentInfo{Addr: s.Addr, Size: len(s.Data), SHA256: hex.EncodeToString(sum[:])})
		img = append(img, s.Data...)
	}
	if len(img) > MaxImage {
		return nil, fmt.Errorf("mcu package: image of %d bytes exceeds %d", len(img), MaxImage)
	}
	sum := sha256.Sum256(img)
	m.ImageSize, m.ImageSHA256 = len(img), hex.EncodeToString(sum[:])
	if m.LoadAddress == 0 {
		m.LoadAddress = segs[0].Addr
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	h := header{Manifest: raw}
	for _, s := range signers {
		sig, err := sign.SignDigest(s, sign.ContextMCU, sha256.Sum256(raw))
		if err != nil {
			return nil, fmt.Errorf("mcu package: %w", err)
		}
		h.Signatures = append(h.Signatures, sig)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString(Magic)
	binary.Write(&out, binary.BigEndian, uint32(len(hb)))
	out.Write(hb)
	out.Write(img)
	return out.Bytes(), nil
}

func checkTarget(t Target) error {
	if t.Chip != "" {
		if t.ProductID != 0 {
			return errors.New("mcu package: a chip target has no product id")
		}
		return nil
	}
	if t.Family == "" {
		return errors.New("mcu package: target family is empty")
	}
	if t.ProductID == 0 || t.ProductID > 0xFFF {
		return fmt.Errorf("mcu package: product id 0x%x is not a 12-bit STM32 PID", t.ProductID)
	}
	return nil
}

func sortSegments(segs []Segment) []Segment {
	var out []Segment
	for _, s := range segs {
		if len(s.Data) > 0 {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// Parse checks a package's structure and that its image matches the
// manifest hashes. It does not check signatures: call Verify.
func Parse(data []byte) (*Package, error) {
	if len(data) < len(Magic)+4 || string(data[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	hl := binary.BigEndian.Uint32(data[len(Magic):])
	rest := data[len(Magic)+4:]
	if hl > MaxHeader || int(hl) > len(rest) {
		return nil, fmt.Errorf("%w: header length %d with %d bytes left", ErrFormat, hl, len(rest))
	}
	var h header
	if err := json.Unmarshal(rest[:hl], &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	p := &Package{Signatures: h.Signatures, rawMan: []byte(h.Manifest)}
	dec := json.NewDecoder(bytes.NewReader(h.Manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.Manifest); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	m := p.Manifest
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("%w: manifest format %d, want %d", ErrFormat, m.Format, FormatVersion)
	}
	if err := checkTarget(m.Target); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	img := rest[hl:]
	if m.ImageSize != len(img) || m.ImageSize > MaxImage {
		return nil, fmt.Errorf("%w: image is %d bytes, manifest says %d", ErrIntegrity, len(img), m.ImageSize)
	}
	sum := sha256.Sum256(img)
	if hex.EncodeToString(sum[:]) != m.ImageSHA256 {
		return nil, fmt.Errorf("%w: image sha256", ErrIntegrity)
	}
	off := 0
	var prevEnd uint64
	for i, s := range m.Segments {
		if s.Size <= 0 || off+s.Size > len(img) || s.Size > len(img) {
			return nil, fmt.Errorf("%w: segment %d size %d", ErrFormat, i, s.Size)
		}
		if i > 0 && uint64(s.Addr) < prevEnd {
			return nil, fmt.Errorf("%w: segment %d at 0x%08x overlaps or is out of order", ErrFormat, i, s.Addr)
		}
		if uint64(s.Addr)+uint64(s.Size) > 1<<32 {
			return nil, fmt.Errorf("%w: segment %d wraps the address space", ErrFormat, i)
		}
		d := img[off : off+s.Size]
		ss := sha256.Sum256(d)
		if hex.EncodeToString(ss[:]) != s.SHA256 {
			return nil, fmt.Errorf("%w: segment %d sha256", ErrIntegrity, i)
		}
		p.Segments = append(p.Segments, Segment{Addr: s.Addr, Data: d})
		off += s.Size
		prevEnd = uint64(s.Addr) + uint64(s.Size)
	}
	if off != len(img) || len(p.Segments) == 0 {
		return nil, fmt.Errorf("%w: segments cover %d of %d image bytes", ErrFormat, off, len(img))
	}
	return p, nil
}

// Verify checks the signatures against kr; at least threshold distinct
// trusted keys must have signed.
func (p *Package) Verify(kr *sign.Keyring, threshold int) error {
	if len(p.Signatures) == 0 {
		return fmt.Errorf("%w: no signatures", ErrUnsigned)
	}
	if err := kr.Verify(sign.ContextMCU, p.Digest(), p.Signatures, threshold); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsigned, err)
	}
	p.verified = true
	return nil
}

// Read reads and parses a package from r (at most MaxHeader+MaxImage+12 bytes).
func Read(r io.Reader) (*Package, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxHeader+MaxImage+int64(len(Magic))+5))
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Open reads, parses and verifies the package file at path.
func Open(path string, kr *sign.Keyring, threshold int) (*Package, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := p.Verify(kr, threshold); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Size is the total image size.
func (p *Package) Size() int { return p.Manifest.ImageSize }
