package fanout

import (
	"encoding/json"
	"fmt"
	"github.com/otagw/otagw/internal/state"
	"os"
	"sort"
	"sync"
	"time"
)

// Record is what is kept per device between runs.
type Record struct {
	Device        string    `json:"device"`
	Bus           string    `json:"bus"`
	State         State     `json:"state"`
	Reason        string    `json:"reason,omitempty"`
	Version       string    `json:"version,omitempty"`     // last known running version
	MinVersion    string    `json:"min_version,omitempty"` // never flash below this
	TargetVersion string    `json:"target_version,omitempty"`
	Attempts      int       `json:"attempts"`
	Retries       int       `json:"retries"` // line errors absorbed plus attempts repeated
	BytesVerified int       `json:"bytes_verified"`
	StartedAt     time.Time `json:"started_at"`
	FinishedAt    time.Time `json:"finished_at,omitempty"`
}

// Store persists records. The daemon backs it with its state store; the
// standalone CLI and tests use FileStore or MemStore.
type Store interface {
	Load(device string) (Record, bool, error)
	Save(r Record) error
}

// MemStore keeps records in memory.
type MemStore struct {
	mu sync.Mutex
	m  map[string]Record
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{m: map[string]Record{}} }

// Load returns the record of device.
func (s *MemStore) Load(device string) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[device]
	return r, ok, nil
}

// Save stores r.
func (s *MemStore) Save(r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[r.Device] = r
	return nil
}

// FileStore keeps all records in one JSON file, replaced atomically
// (write to a temporary file, fsync, rename) on every Save.
type FileStore struct {
	Path string
	mu   sync.Mutex
}

func (s *FileStore) read() (map[string]Record, error) {
	m := map[string]Record{}
	data, err := os.ReadFile(s.Path)
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Record
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path, err)
	}
	for _, r := range list {
		m[r.Device] = r
	}
	return m, nil
}

// Load returns the record of device.
func (s *FileStore) Load(device string) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.read()
	if err != nil {
		return Record{}, false, err
	}
	r, ok := m[device]
	return r, ok, nil
}

// List returns every record, sorted by device name.
func (s *FileStore) List() ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.read()
	if err != nil {
		return nil, err
	}
	return sorted(m), nil
}

func sorted(m map[string]Record) []Record {
	list := make([]Record, 0, len(m))
	for _, r := range m {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Device < list[j].Device })
	return list
}

// Save stores r.
func (s *FileStore) Save(r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.read()
	if err != nil {
		return err
	}
	m[r.Device] = r
	data, err := json.MarshalIndent(sorted(m), "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFileAtomic(s.Path, append(data, '\n'), 0o600)
}
