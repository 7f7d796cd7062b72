// Package state keeps otagw's persistent state safe across power cuts and
// tampering: every save is an atomic replace (write a temporary file, fsync
// it, rename it over the old one, fsync the directory), every file carries a
// schema version and an HMAC-SHA256 keyed by a per-device key file.
//
//	st, _ := state.Open(state.Options{Path: "/var/lib/otagw/state", KeyFile: "/var/lib/otagw/device.key", Schema: 1})
//	var s MyState
//	res, err := st.Load(&s) // res.Tampered: the file was bad and has been moved aside; s keeps its defaults
//	s.MinVersion = "2.1.0"
//	err = st.Save(&s)
//
// A file that is truncated, altered, written under another key or with an
// unknown schema is never trusted: Load moves it aside (PATH.bad-<unix
// time>), reports it in Result, and leaves the value untouched so the caller
// continues from its safe defaults. Load returns an error only for I/O
// failures it cannot work around.
//
// The file layout (all integers big-endian):
//
//	magic "OTAGWST1" | u32 schema | u32 payload length | payload (JSON) | HMAC-SHA256(key, all bytes before it)
package state

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const magic = "OTAGWST1"

const headerLen = len(magic) + 4 + 4

// KeyLen is the size of the device key in bytes.
const KeyLen = 32

// MaxPayload bounds what Load will read (state is small; a huge file is not ours).
const MaxPayload = 16 << 20

var (
	// ErrTampered: the file's HMAC does not match, it is truncated or malformed.
	ErrTampered = errors.New("state file failed its integrity check")
	// ErrSchema: the file was written with a schema this build does not know.
	ErrSchema = errors.New("state file has an unknown schema version")
)

// Options configure a Store.
type Options struct {
	Path    string // the state file
	KeyFile string // the device key; created (mode 0600) when missing
	Schema  uint32 // the schema version written and accepted
	// Now stamps the name of a moved-aside file; nil means time.Now.
	Now func() time.Time
}

// Result says what Load found.
type Result struct {
	Found    bool   // a valid file was loaded
	Tampered bool   // a file was there but not trusted; see Reason and MovedTo
	Reason   error  // why it was not trusted (wraps ErrTampered or ErrSchema)
	MovedTo  string // where the untrusted file went
	NewKey   bool   // the key file was created by this Open
}

// Store is one state file. It is safe for concurrent use.
type Store struct {
	opts   Options
	key    []byte
	newKey bool
	mu     sync.Mutex
}

// Open reads or creates the device key and returns the store.
func Open(opts Options) (*Store, error) {
	if opts.Path == "" || opts.KeyFile == "" {
		return nil, errors.New("state: path and key file are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Schema == 0 {
		opts.Schema = 1
	}
	key, created, err := loadOrCreateKey(opts.KeyFile)
	if err != nil {
		return nil, err
	}
	return &Store{opts: opts, key: key, newKey: created}, nil
}

func loadOrCreateKey(path string) ([]byte, bool, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != KeyLen {
			return nil, false, fmt.Errorf("state key %s: %d bytes, want %d; remove it to start over (state will be reset)", path, len(key), KeyLen)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("state key: %w", err)
	}
	key = make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("state key: %w", err)
	}
	if err := WriteFileAtomic(path, key, 0o600); err != nil {
		return nil, false, fmt.Errorf("state key: %w", err)
	}
	return key, true, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return s.opts.Path }

// Load reads the file into v (JSON). See the package doc for what happens
// to a bad file.
func (s *Store) Load(v any) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := Result{NewKey: s.newKey}
	data, err := os.ReadFile(s.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("state %s: %w", s.opts.Path, err)
	}
	payload, perr := s.open(data)
	if perr == nil {
		// The HMAC proves we wrote it; still, never trust a payload that
		// is not JSON (a bug in an older build, say).
		if !json.Valid(payload) {
			perr = fmt.Errorf("%w: payload is not JSON", ErrTampered)
		} else if err := json.Unmarshal(payload, v); err != nil {
			perr = fmt.Errorf("%w: payload: %v", ErrTampered, err)
		}
	}
	if perr == nil {
		res.Found = true
		return res, nil
	}
	res.Tampered = true
	res.Reason = perr
	moved := s.opts.Path + ".bad-" + strconv.FormatInt(s.opts.Now().Unix(), 10)
	if err := os.Rename(s.opts.Path, moved); err != nil {
		return res, fmt.Errorf("state %s: move aside untrusted file: %w", s.opts.Path, err)
	}
	syncDir(filepath.Dir(s.opts.Path))
	res.MovedTo = moved
	return res, nil
}

// open checks the envelope and returns the payload.
func (s *Store) open(data []byte) ([]byte, error) {
	if len(data) < headerLen+sha256.Size {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the envelope", ErrTampered, len(data))
	}
	if string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrTampered)
	}
	n := binary.BigEndian.Uint32(data[len(magic)+4:])
	if n > MaxPayload || int(n) != len(data)-headerLen-sha256.Size {
		return nil, fmt.Errorf("%w: payload length %d does not match file size %d (truncated or extended)", ErrTampered, n, len(data))
	}
	body := data[:len(data)-sha256.Size]
	m := hmac.New(sha256.New, s.key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), data[len(body):]) {
		return nil, fmt.Errorf("%w: HMAC mismatch (altered, or written under another device key)", ErrTampered)
	}
	if schema := binary.BigEndian.Uint32(data[len(magic):]); schema != s.opts.Schema {
		return nil, fmt.Errorf("%w: file has %d, this build reads %d", ErrSchema, schema, s.opts.Schema)
	}
	return data[headerLen : headerLen+int(n)], nil
}

// Save writes v atomically.
func (s *Store) Save(v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	b.WriteString(magic)
	binary.Write(&b, binary.BigEndian, s.opts.Schema)
	binary.Write(&b, binary.BigEndian, uint32(len(payload)))
	b.Write(payload)
	m := hmac.New(sha256.New, s.key)
	m.Write(b.Bytes())
	b.Write(m.Sum(nil))
	if err := WriteFileAtomic(s.opts.Path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("state %s: %w", s.opts.Path, err)
	}
	return nil
}

// WriteFileAtomic replaces path with data so that after a power cut at any
// point the file holds either the old or the new content: write a
// temporary file in the same directory, fsync it, rename it over path, fsync
// the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// SyncDir fsyncs a directory, so that a rename or a new file in it lasts.
func SyncDir(dir string) error { return syncDir(dir) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
