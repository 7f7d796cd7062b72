package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"

	"go.uber.org/zap"

	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/internal/fault"
)

// persisted is the release record: the one record that survives restarts
// and reboots. flow.enter writes it with every state entry; the install
// and the MCU fan-out write their progress into it.
type persisted struct {
	State          string   `json:"state"`
	Failure        *failure `json:"failure,omitempty"` // why State is failed, and how many times in a row
	Starts         int      `json:"starts"`            // daemon starts, for crash-loop evidence
	Committed      string   `json:"committed,omitempty"`
	Pending        string   `json:"pending,omitempty"`      // installed, not yet committed
	PendingSlot    string   `json:"pending_slot,omitempty"` // where Pending was installed
	PendingCounter uint64   `json:"pending_counter,omitempty"`
	// PendingSeq is the sequence number of the switch to Pending;
	// PendingSwitched says the boot environment is known to name it (the
	// state is written before the environment: see anchor.go).
	PendingSeq      uint64 `json:"pending_seq,omitempty"`
	PendingSwitched bool   `json:"pending_switched,omitempty"`
	// Seq rises at every switch and commit; the boot environment keeps a
	// copy, so a replayed state file shows as a lower number.
	Seq             uint64 `json:"seq,omitempty"`
	MinVersion      string `json:"min_version,omitempty"`
	SecurityCounter uint64 `json:"security_counter,omitempty"`
	// Install is the install's progress: source, target slot, checkpoint,
	// what each slot holds.
	Install installRecord `json:"install"`
	// MCUPayloads are the verified MCU packages of the installed release
	// (paths the install returned), fanned out after its commit.
	MCUPayloads []string `json:"mcu_payloads,omitempty"`
	// MCU is each device's fan-out record, by device name.
	MCU map[string]fanout.Record `json:"mcu,omitempty"`
	// Parts is the layout before one record: each part's piece by name
	// ("install", "mcu"). Read once at load and migrated; never written.
	Parts map[string]json.RawMessage `json:"parts,omitempty"`
}

// migrate brings a record of the layout before one record (each part's
// piece under "parts", MCU firmware found by listing a directory) to this
// one. Idempotent.
func migrate(p *persisted, stateDir string) error {
	var errs []error
	if raw, ok := p.Parts["install"]; ok {
		if err := json.Unmarshal(raw, &p.Install); err != nil {
			errs = append(errs, fmt.Errorf("parts.install: %w", err))
		}
	}
	if raw, ok := p.Parts["mcu"]; ok {
		if err := json.Unmarshal(raw, &p.MCU); err != nil {
			errs = append(errs, fmt.Errorf("parts.mcu: %w", err))
		}
	}
	if p.Parts != nil {
		// Firmware a committed release left for its fan-out, from when it
		// was found by listing the directory.
		files, _ := filepath.Glob(filepath.Join(stateDir, "mcu-payloads", "*"))
		sort.Strings(files)
		p.MCUPayloads = append(p.MCUPayloads, files...)
	}
	p.Parts = nil
	return errors.Join(errs...)
}

// persistState is flow's persist: the new state and failure go to disk
// with the rest of the record.
func (d *Daemon) persistState(s string, f *failure) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.State, d.st.Failure = s, f
	return d.saveLocked()
}

// loadInstall returns a copy of the install's part of the record.
func (d *Daemon) loadInstall() installRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Install.clone()
}

// saveInstall writes the install's part of the record with the rest of it.
func (d *Daemon) saveInstall(rec *installRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Install = rec.clone()
	return d.saveLocked()
}

// clone is a deep copy (the maps and the checkpoint are not shared).
func (r installRecord) clone() installRecord {
	c := r
	if r.Checkpoint != nil {
		cp := *r.Checkpoint
		c.Checkpoint = &cp
	}
	c.Installed = cloneMap(r.Installed)
	c.NotBootable = cloneMap(r.NotBootable)
	return c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// mcuStore is the fan-out's part of the record (fleetRecord).
type mcuStore struct{ d *Daemon }

func (s *mcuStore) all() map[string]fanout.Record {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	m := make(map[string]fanout.Record, len(s.d.st.MCU))
	for k, v := range s.d.st.MCU {
		m[k] = v
	}
	return m
}

func (s *mcuStore) Load(device string) (fanout.Record, bool, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	r, ok := s.d.st.MCU[device]
	return r, ok, nil
}

func (s *mcuStore) Save(r fanout.Record) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if s.d.st.MCU == nil {
		s.d.st.MCU = map[string]fanout.Record{}
	}
	s.d.st.MCU[r.Device] = r
	return s.d.saveLocked()
}

func (s *mcuStore) payloads() []string {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return append([]string(nil), s.d.st.MCUPayloads...)
}

func (s *mcuStore) payloadDone(path string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.st.MCUPayloads = slices.DeleteFunc(s.d.st.MCUPayloads, func(p string) bool { return p == path })
	return s.d.saveLocked()
}

func (s *mcuStore) committed() string {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return s.d.st.Committed
}

// releaseStore is the assessment's part of the record (releaseRecord).
type releaseStore struct{ d *Daemon }

func (r releaseStore) pending() (string, string) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.st.Pending, r.d.st.PendingSlot
}

// releases returns the committed and the pending release versions.
func (r releaseStore) releases() (committed, pending string) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.st.Committed, r.d.st.Pending
}

func (r releaseStore) dropPending(slot, version string) {
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = "", "", 0
	d.st.MCUPayloads = nil // the firmware of a release that is not running
	rec := &d.st.Install
	if rec.NotBootable == nil {
		rec.NotBootable = map[string]string{}
	}
	rec.NotBootable[slot] = "release " + version + " rolled back"
	delete(rec.Installed, slot)
	d.saveLocked()
}

// commit records a release that passed its assessment: the stored minimum
// version and security counter rise to it, so older releases are refused
// from now on. Idempotent. The state is written first, then the floor and
// the end of the trial go to the boot environment in one write; a cut
// between the two is repaired by reconcile at the next start.
func (r releaseStore) commit(ctx context.Context, slot string) error {
	d := r.d
	c, err := d.boot.chooser()
	if err != nil {
		return err
	}
	d.mu.Lock()
	if d.st.Pending == "" || d.st.PendingSlot != slot {
		d.mu.Unlock()
		return nil // already committed
	}
	v := d.st.Pending
	if higher(v, d.st.MinVersion) {
		d.st.MinVersion = v
	}
	if d.st.PendingCounter > d.st.SecurityCounter {
		d.st.SecurityCounter = d.st.PendingCounter
	}
	d.st.Seq++
	d.st.Committed, d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = v, "", "", 0
	d.st.PendingSeq, d.st.PendingSwitched = 0, false
	notes := d.anchorNotesLocked()
	notes[noteTrial] = ""
	min := d.st.MinVersion
	err = d.saveLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	fault.Point("commit.saved")
	if err := c.SetNotes(notes); err != nil {
		// The release is committed; reconcile copies the floor at the next start.
		d.log.Error("writing the floor to the boot environment", zap.Error(err))
	}
	fault.Point("commit.noted")
	d.log.Info("release committed", zap.String("version", v), zap.String("slot", slot), zap.String("min_version", min))
	return nil
}

// recordInstallStore is the install's part of the record (installStore).
type recordInstallStore struct{ d *Daemon }

func (r recordInstallStore) load() installRecord { return r.d.loadInstall() }

func (r recordInstallStore) save(rec *installRecord) error { return r.d.saveInstall(rec) }

func (r recordInstallStore) floor() (string, uint64) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.st.MinVersion, r.d.st.SecurityCounter
}

func (r recordInstallStore) announce(rec *installRecord, version string, counter uint64, payloads []string) (map[string]string, error) {
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Seq++
	d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = version, rec.Bootname, counter
	d.st.PendingSeq, d.st.PendingSwitched = d.st.Seq, false
	d.st.Install = rec.clone()
	d.st.MCUPayloads = payloads
	t := trial{Slot: rec.Bootname, Version: version, Counter: counter, Seq: d.st.Seq}
	notes := d.anchorNotesLocked()
	notes[noteTrial] = t.String()
	return notes, d.saveLocked()
}

func (r recordInstallStore) switched() error {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	r.d.st.PendingSwitched = true
	return r.d.saveLocked()
}
