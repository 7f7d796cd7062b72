package daemon

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/state"
	"github.com/otagw/otagw/rootfs/bundle"
)

// The anti-downgrade floor (minimum version and security counter) must
// never fall below what the device can prove, whatever happens to the
// state file (a flipped byte, deletion, loss of the device key, or an
// older valid copy put back). Three stores hold it:
//
//   - the HMAC-protected state file (the daemon's working copy);
//   - the boot environment, through abboot's notes: the floor, the state
//     sequence number and the trial of an installed, not yet committed
//     release, written in the same environment write as the boot change
//     (SetPrimaryNoting at the switch, SetNotes at the commit);
//   - a signed proof per slot (state_dir/releases/<slot>.json: the
//     manifest bytes and signatures of the release written there), so the
//     version of the booted, committed release is provable from signed data.
//
// The sequence number rises at every switch and commit and is written to
// the state first (write-ahead), then to the environment: a state whose
// sequence is below the environment's is a replayed or lost copy. At start
// (reconcile) the daemon keeps the highest floor any store proves, says
// loudly when they disagree, and repairs the one that lags.
const (
	noteSeq     = abboot.NotePrefix + "seq"
	noteMin     = abboot.NotePrefix + "min_version"
	noteCounter = abboot.NotePrefix + "security_counter"
	// noteTrial names the release on trial: "SLOT VERSION COUNTER SEQ",
	// set with the switch to it, removed by its commit.
	noteTrial = abboot.NotePrefix + "trial"
)

// trial is a switch to a freshly installed release, as the environment
// records it.
type trial struct {
	Slot, Version string
	Counter, Seq  uint64
}

func (t trial) String() string {
	return fmt.Sprintf("%s %s %d %d", t.Slot, t.Version, t.Counter, t.Seq)
}

func parseTrial(s string) (trial, bool) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return trial{}, false
	}
	c, err1 := strconv.ParseUint(f[2], 10, 64)
	q, err2 := strconv.ParseUint(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return trial{}, false
	}
	return trial{Slot: f[0], Version: f[1], Counter: c, Seq: q}, true
}

// anchorNotesLocked is the floor part of the notes as the state has it.
func (d *Daemon) anchorNotesLocked() map[string]string {
	n := map[string]string{
		noteSeq:     strconv.FormatUint(d.st.Seq, 10),
		noteMin:     d.st.MinVersion,
		noteCounter: "",
	}
	if d.st.SecurityCounter > 0 {
		n[noteCounter] = strconv.FormatUint(d.st.SecurityCounter, 10)
	}
	return n
}

// proof is a release's signed manifest, kept per slot.
type proof struct {
	Manifest   []byte           `json:"manifest"`
	Signatures []sign.Signature `json:"signatures"`
}

func proofPath(stateDir, slot string) string {
	return filepath.Join(stateDir, "releases", slot+".json")
}

// saveProof keeps the signed manifest of the release now written in slot:
// the proof file that was written while its head was read (tmp, from
// startProof and finish) takes the slot's name.
func saveProof(stateDir, slot, tmp string) error {
	if err := os.Rename(tmp, proofPath(stateDir, slot)); err != nil {
		return err
	}
	return state.SyncDir(filepath.Dir(tmp))
}

// pendingProof is a proof file written while the bundle's head streams by,
// so the daemon never holds the manifest's bytes (0.66 MB for a 4 GiB
// image in bundle format 2, 1.9 MB in format 1): they go, base64 as
// json.Marshal of proof writes them, to a temporary file in
// state_dir/releases; finish adds the signatures; saveProof renames it
// into place once the slot is verified.
type pendingProof struct {
	f   *os.File
	bw  *bufio.Writer
	enc io.WriteCloser
}

const proofTmpPrefix = ".proof.tmp-"

// startProof begins a pending proof, removing those an interrupted
// install left (one install runs at a time).
func startProof(stateDir string) (*pendingProof, error) {
	dir := filepath.Join(stateDir, "releases")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	old, _ := filepath.Glob(filepath.Join(dir, proofTmpPrefix+"*"))
	for _, o := range old {
		os.Remove(o)
	}
	f, err := os.CreateTemp(dir, proofTmpPrefix+"*")
	if err != nil {
		return nil, err
	}
	pp := &pendingProof{f: f, bw: bufio.NewWriterSize(f, 32<<10)}
	pp.bw.WriteString(`{"manifest":"`)
	pp.enc = base64.NewEncoder(base64.StdEncoding, pp.bw)
	return pp, nil
}

// Write takes the manifest's bytes.
func (pp *pendingProof) Write(b []byte) (int, error) { return pp.enc.Write(b) }

// finish adds the signatures and syncs the file; it returns its path.
func (pp *pendingProof) finish(sigs []sign.Signature) (string, error) {
	sb, err := json.Marshal(sigs)
	if err != nil {
		pp.discard()
		return "", err
	}
	pp.enc.Close()
	pp.bw.WriteString(`","signatures":`)
	pp.bw.Write(sb)
	pp.bw.WriteString("}")
	if err := pp.bw.Flush(); err != nil {
		pp.discard()
		return "", fmt.Errorf("%s: %w", pp.f.Name(), err)
	}
	if err := pp.f.Sync(); err != nil {
		pp.discard()
		return "", fmt.Errorf("%s: %w", pp.f.Name(), err)
	}
	if err := pp.f.Close(); err != nil {
		os.Remove(pp.f.Name())
		return "", fmt.Errorf("%s: %w", pp.f.Name(), err)
	}
	return pp.f.Name(), nil
}

// discard removes an unfinished proof.
func (pp *pendingProof) discard() {
	pp.f.Close()
	os.Remove(pp.f.Name())
}

// loadProof returns the manifest of the release in slot when its kept
// proof verifies against the keyring.
func loadProof(stateDir, slot string, kr *sign.Keyring, threshold int) (*bundle.Manifest, error) {
	b, err := os.ReadFile(proofPath(stateDir, slot))
	if err != nil {
		return nil, err
	}
	var p proof
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", proofPath(stateDir, slot), err)
	}
	if err := kr.Verify(sign.ContextBundle, sha256.Sum256(p.Manifest), p.Signatures, threshold); err != nil {
		return nil, fmt.Errorf("%s: %w", proofPath(stateDir, slot), err)
	}
	return bundle.ParseManifest(p.Manifest)
}

// higher reports whether version a is above b ("" is below everything).
func higher(a, b string) bool {
	if a == "" {
		return false
	}
	if b == "" {
		return true
	}
	c, err := bundle.CompareVersions(a, b)
	return err == nil && c > 0
}

// reconcile runs once at start, before any install or assessment: it
// brings the state, the boot environment's notes and the signed proofs to
// one story. It is where every crash point of an install and a commit is
// recovered (see the steps in finish and commit).
func (d *Daemon) reconcile(c bootSelection) {
	cfg := d.config()
	notes, err := c.Notes()
	if err != nil {
		d.log.Error("boot environment unreadable: the floor is checked against the state file only", zap.Error(err))
		d.warn("boot environment unreadable, floor not cross-checked: " + err.Error())
		return
	}
	envSeq, _ := strconv.ParseUint(notes[noteSeq], 10, 64)
	envCounter, _ := strconv.ParseUint(notes[noteCounter], 10, 64)
	envMin := notes[noteMin]
	tr, onTrial := parseTrial(notes[noteTrial])
	booted, bootedErr := c.Booted()

	d.mu.Lock()
	defer d.mu.Unlock()
	st := &d.st
	changed := false
	var loud []string

	if envSeq > st.Seq {
		loud = append(loud, fmt.Sprintf("the state file is older than the boot environment's record (sequence %d < %d): it was lost, reset or replaced by an older copy",
			st.Seq, envSeq))
		st.Seq, changed = envSeq, true
	}

	// A switch the state announced (write-ahead) but did not see land.
	if st.Pending != "" && !st.PendingSwitched {
		want := trial{Slot: st.PendingSlot, Version: st.Pending, Counter: st.PendingCounter, Seq: st.PendingSeq}
		switch {
		case onTrial && tr == want:
			st.PendingSwitched, changed = true, true // it landed; only the state's note of it was lost
		case bootedErr == nil && booted != st.PendingSlot:
			// It never landed: the slot holds the verified release (the
			// state says so only after the read-back) and has never been
			// bootable, so the switch is made now.
			n := d.anchorNotesLocked()
			n[noteTrial] = want.String()
			if err := c.SetPrimaryNoting(want.Slot, cfg.Boot.PrimaryTries, n); err != nil {
				d.log.Error("completing the interrupted boot switch", zap.String("slot", want.Slot), zap.Error(err))
			} else {
				d.log.Warn("completed the boot switch an interruption had left undone", zap.String("slot", want.Slot), zap.String("version", want.Version))
				st.PendingSwitched, changed = true, true
				envSeq, tr, onTrial = st.Seq, want, true
			}
		}
	}

	// A trial the environment records on the booted slot that the state
	// does not know: the state was lost or replayed while the release was
	// on trial. It is assessed again, never committed without a check.
	if bootedErr == nil && onTrial && tr.Slot == booted && st.Pending == "" &&
		!(st.Committed == tr.Version && st.Seq > tr.Seq) {
		loud = append(loud, fmt.Sprintf("release %s on trial in the booted slot %s was missing from the state: it is assessed again", tr.Version, booted))
		st.Pending, st.PendingSlot, st.PendingCounter, st.PendingSeq, st.PendingSwitched = tr.Version, tr.Slot, tr.Counter, tr.Seq, true
		changed = true // restore() says installed, or assessing
	}

	// The floor: the highest that any store proves.
	floor, counter, from := st.MinVersion, st.SecurityCounter, "state file"
	raise := func(v string, sc uint64, src string) {
		if higher(v, floor) {
			floor, from = v, src
		}
		if sc > counter {
			counter = sc
		}
	}
	raise(envMin, envCounter, "boot environment")
	if bootedErr == nil && !(st.Pending != "" && st.PendingSlot == booted) {
		if kr, err := sign.LoadKeyring(cfg.Update.Keyring); err == nil {
			if m, err := loadProof(cfg.Daemon.StateDir, booted, kr, cfg.Update.Threshold); err == nil {
				raise(m.Version, m.SecurityCounter, "signed manifest of the booted release")
			} else if !errors.Is(err, os.ErrNotExist) {
				d.log.Warn("signed proof of the booted release unusable", zap.String("slot", booted), zap.Error(err))
			}
		}
	}
	if floor != st.MinVersion || counter != st.SecurityCounter {
		loud = append(loud, fmt.Sprintf("minimum version restored from the %s: %s (the state file said %q), security counter %d",
			from, floor, st.MinVersion, counter))
		st.MinVersion, st.SecurityCounter, changed = floor, counter, true
		if st.Committed == "" {
			st.Committed = floor
		}
	}
	for _, m := range loud {
		d.log.Error("anti-downgrade floor: "+m, zap.String("min_version", st.MinVersion))
		d.warnings = append(d.warnings, m)
	}
	if changed {
		d.saveLocked()
	}

	// The environment lags the state (a cut between the two writes, or a
	// reset environment): bring it up to date.
	if st.Seq > envSeq || notes[noteMin] != st.MinVersion {
		n := d.anchorNotesLocked()
		if onTrial && st.Pending == "" {
			n[noteTrial] = "" // committed or rolled back since
		}
		if err := c.SetNotes(n); err != nil {
			d.log.Error("writing the floor to the boot environment", zap.Error(err))
		}
	}
}
