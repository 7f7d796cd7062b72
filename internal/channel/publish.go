package channel

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/state"
)

// FilesDir is where a channel directory keeps its artifacts, by content:
// CHANNEL/files/SHA256-NAME. Old files stay, so a device still
// downloading the previous release can finish.
const FilesDir = "files"

// PublishOptions say what `otagw channel publish` writes.
type PublishOptions struct {
	Dir        string // the web root: DIR/CHANNEL/index.json
	Channel    string
	Compatible string
	Tags       []string
	Bundle     string   // a rootfs bundle file, or ""
	MCU        []string // MCU package files
	Config     string   // a YAML config document, or ""
	// Expires is how long the index is valid from Now.
	Expires time.Duration
	// Sequence: 0 means one above the index already in the directory.
	Sequence uint64
	Signers  []sign.Signer
	Now      time.Time
	// Check inspects each artifact before it is published: kind is
	// "bundle", "mcu" or "config"; it returns the artifact's version (""
	// when it has none) or why it may not be published (a bundle for
	// another compatible, a config that does not validate). The command
	// line passes the bundle, MCU package and config readers; this
	// package, a helper, knows none of them. nil: not checked.
	Check func(kind, name string, data []byte) (version string, err error)
}

// Publish adds or replaces the entry for (Compatible, Tags) in the
// channel's index (the other entries stay), copies the artifacts into the
// channel directory and writes the signed index atomically, last, so a
// server never serves an index whose files are not there yet.
func Publish(o PublishOptions) (*Index, error) {
	if o.Dir == "" || o.Channel == "" || o.Compatible == "" {
		return nil, errors.New("channel publish: DIR, --channel and --compatible are required")
	}
	if strings.ContainsAny(o.Channel, `/\`) || o.Channel == "." || o.Channel == ".." {
		return nil, fmt.Errorf("channel publish: --channel %q: want a plain name", o.Channel)
	}
	if len(o.Signers) == 0 {
		return nil, errors.New("channel publish: no --key")
	}
	if o.Expires <= 0 {
		return nil, fmt.Errorf("channel publish: --expires %v: must be positive", o.Expires)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	chDir := filepath.Join(o.Dir, o.Channel)
	if err := os.MkdirAll(filepath.Join(chDir, FilesDir), 0o755); err != nil {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	idxPath := filepath.Join(chDir, IndexFile)
	idx := &Index{Format: Format, Channel: o.Channel}
	if data, err := os.ReadFile(idxPath); err == nil {
		_, prev, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("channel publish: the index in place, %s: %w", idxPath, err)
		}
		idx.Entries, idx.Sequence = prev.Entries, prev.Sequence
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	seq := idx.Sequence + 1
	if o.Sequence != 0 {
		if o.Sequence <= idx.Sequence {
			return nil, fmt.Errorf("channel publish: --sequence %d is not above the published %d (devices refuse it)", o.Sequence, idx.Sequence)
		}
		seq = o.Sequence
	}
	tags := slices.Clone(o.Tags)
	slices.Sort(tags)
	e := Entry{Compatible: o.Compatible, Tags: tags}
	check := func(kind string) func(string, []byte) (string, error) {
		return func(name string, data []byte) (string, error) {
			if o.Check == nil {
				return "", nil
			}
			return o.Check(kind, name, data)
		}
	}
	if o.Bundle != "" {
		f, err := addFile(chDir, o.Bundle, check("bundle"))
		if err != nil {
			return nil, err
		}
		e.Bundle = f
	}
	for _, m := range o.MCU {
		f, err := addFile(chDir, m, check("mcu"))
		if err != nil {
			return nil, err
		}
		e.MCU = append(e.MCU, *f)
	}
	if o.Config != "" {
		f, err := addFile(chDir, o.Config, check("config"))
		if err != nil {
			return nil, err
		}
		e.Config = f
	}
	replaced := false
	for i := range idx.Entries {
		if idx.Entries[i].Compatible == e.Compatible && slices.Equal(idx.Entries[i].Tags, e.Tags) {
			idx.Entries[i], replaced = e, true
		}
	}
	if !replaced {
		idx.Entries = append(idx.Entries, e)
	}
	idx.Sequence = seq
	idx.Issued = o.Now.UTC().Truncate(time.Second)
	idx.Expires = idx.Issued.Add(o.Expires)
	out, err := Sign(idx, o.Signers...)
	if err != nil {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	var prevMod time.Time
	if st, err := os.Stat(idxPath); err == nil {
		prevMod = st.ModTime()
	}
	if err := state.WriteFileAtomic(idxPath, out, 0o644); err != nil {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	// Static servers derive Last-Modified and the ETag from the mtime in
	// whole seconds (and the size): a second publish within the same
	// second, of the same size, would be answered 304 to a gateway that
	// has the first. The new index gets a later second.
	if !prevMod.IsZero() {
		if st, err := os.Stat(idxPath); err == nil && st.ModTime().Unix() <= prevMod.Unix() {
			t := time.Unix(prevMod.Unix()+1, 0)
			if err := os.Chtimes(idxPath, t, t); err != nil {
				return nil, fmt.Errorf("channel publish: %w", err)
			}
		}
	}
	return idx, nil
}

// addFile checks src with check (which returns its version), copies it to
// CHANNEL/files/SHA256-NAME and returns its index entry.
func addFile(chDir, src string, check func(string, []byte) (string, error)) (*File, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	version, err := check(src, data)
	if err != nil {
		return nil, fmt.Errorf("channel publish: %w", err)
	}
	sum := sha256.Sum256(data)
	hexs := hex.EncodeToString(sum[:])
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, filepath.Base(src))
	rel := FilesDir + "/" + hexs[:16] + "-" + name
	dst := filepath.Join(chDir, filepath.FromSlash(rel))
	if have, err := fileSum(dst); err != nil || have != hexs {
		if err := state.WriteFileAtomic(dst, data, 0o644); err != nil {
			return nil, fmt.Errorf("channel publish: %w", err)
		}
	}
	return &File{URL: rel, Size: int64(len(data)), SHA256: hexs, Version: version, Name: filepath.Base(src)}, nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
