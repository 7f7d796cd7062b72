package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

// CheckHead decides whether src is a bundle this device takes, reading
// only its head: it opens src at 0, reads and verifies the header, signed
// manifest and signatures (kr, pol.Threshold), applies pol at time now,
// and, when src knows its size (a file; HTTP Content-Length or the
// Content-Range total), checks it against the size the manifest declares
// (bundle.Head.Size: the data offset plus the end of the last payload's
// chunks). It writes nothing and changes no boot variable, so a caller can
// refuse a bundle before touching either. Install runs the same check.
//
// A size mismatch wraps ErrTruncated (Kind "source-truncated") or
// ErrTrailingData ("trailing-data"); the other failures are those of
// Install's head (signature, policy, format, source errors).
//
// The head it returns keeps the manifest's bytes (Head.Raw); CheckHeadStream
// does not.
func CheckHead(ctx context.Context, src source.Source, kr *sign.Keyring, pol Policy, now time.Time) (*bundle.Head, error) {
	var raw bytes.Buffer
	h, err := CheckHeadStream(ctx, src, kr, pol, now, &raw)
	if err != nil {
		return nil, err
	}
	h.Raw = raw.Bytes()
	return h, nil
}

// CheckHeadStream is CheckHead in memory bounded by the decoded manifest,
// not its text (bundle.ReadHeadStream): the manifest's bytes go to raw as
// they stream by, when raw is not nil (a caller that keeps the signed
// manifest writes it to a file), and Head.Raw is nil. What raw received
// is only the signed manifest if CheckHeadStream returns no error.
func CheckHeadStream(ctx context.Context, src source.Source, kr *sign.Keyring, pol Policy, now time.Time, raw io.Writer) (*bundle.Head, error) {
	if kr == nil {
		return nil, errors.New("bundle head: no keyring")
	}
	st := &stream{ctx: ctx, src: src}
	defer st.close()
	return checkHead(st, src, kr, pol, now, raw)
}

// checkHead reads the head from r, at the start of src, and checks it;
// the manifest's bytes go to raw when it is not nil.
func checkHead(r io.Reader, src source.Source, kr *sign.Keyring, pol Policy, now time.Time, raw io.Writer) (*bundle.Head, error) {
	h, err := bundle.ReadHeadStream(r, kr, pol.Threshold, raw)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", src, err)
	}
	if err := pol.Check(h.Manifest, now); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", src, err)
	}
	if size := src.Size(); size >= 0 && size != h.Size() {
		kind := ErrTruncated
		if size > h.Size() {
			kind = ErrTrailingData
		}
		return nil, fmt.Errorf("bundle %s: %d bytes, manifest declares %d: %w", src, size, h.Size(), kind)
	}
	return h, nil
}

// recheckHead reads the head from r, at the start of src, and checks that
// it is the head h that CheckHead verified: the same header, and manifest
// bytes with the same sha256 (what the signatures sign). The manifest is
// hashed as it streams by, never held or parsed again; the signature block
// is skipped (the signatures verified over that digest stand). pol is
// applied again at now, and src's size checked against the manifest's.
func recheckHead(r io.Reader, src source.Source, h *bundle.Head, pol Policy, now time.Time) (*bundle.Head, error) {
	short := func(err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return err
	}
	hb := make([]byte, bundle.HeaderSize)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("bundle %s: header: %w", src, short(err))
	}
	hdr, err := bundle.ParseHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", src, err)
	}
	if hdr != h.Header {
		return nil, fmt.Errorf("bundle %s: header changed since its head was checked: %w", src, source.ErrChanged)
	}
	sum := sha256.New()
	if _, err := io.CopyN(sum, r, int64(hdr.ManifestLen)); err != nil {
		return nil, fmt.Errorf("bundle %s: manifest: %w", src, short(err))
	}
	if [32]byte(sum.Sum(nil)) != h.Digest {
		return nil, fmt.Errorf("bundle %s: manifest changed since its head was checked: %w", src, source.ErrChanged)
	}
	if _, err := io.CopyN(io.Discard, r, int64(hdr.SigLen)); err != nil {
		return nil, fmt.Errorf("bundle %s: signature block: %w", src, short(err))
	}
	if err := pol.Check(h.Manifest, now); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", src, err)
	}
	if size := src.Size(); size >= 0 && size != h.Size() {
		kind := ErrTruncated
		if size > h.Size() {
			kind = ErrTrailingData
		}
		return nil, fmt.Errorf("bundle %s: %d bytes, manifest declares %d: %w", src, size, h.Size(), kind)
	}
	return h, nil
}
