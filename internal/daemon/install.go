package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/internal/window"
	"github.com/otagw/otagw/rootfs"
	"github.com/otagw/otagw/rootfs/bundle"
	"github.com/otagw/otagw/rootfs/source"
)

// installPart streams bundles into the inactive slot, in RAUC's order:
// mark the target bad, write and verify every chunk, read the slot back,
// and only then make it the next boot with tries. Progress is persisted as
// a checkpoint so that after kill -9 or a power cut the daemon resumes
// from the last verified chunk, or reports the slot as not bootable.
type installPart struct {
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	job  *installJob // the running install, nil when idle
	last *api.InstallEvent
}

// installRecord is the install part's persisted piece.
type installRecord struct {
	// Active: an install was started and has not ended; at start this
	// means it was interrupted.
	Active     bool               `json:"active"`
	Source     string             `json:"source,omitempty"`
	Bootname   string             `json:"bootname,omitempty"`
	Checkpoint *rootfs.Checkpoint `json:"checkpoint,omitempty"`
	Resumes    int                `json:"resumes,omitempty"`
	// Installed is the release on each slot (by bootname) once verified.
	Installed map[string]string `json:"installed,omitempty"`
	// NotBootable names slots whose content is not a verified release.
	NotBootable map[string]string `json:"not_bootable,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	LastKind    string            `json:"last_kind,omitempty"`
}

// installJob is one running install and the clients following it.
type installJob struct {
	source string
	mu     sync.Mutex
	subs   []chan api.InstallEvent
	done   chan struct{}
}

func (j *installJob) subscribe() chan api.InstallEvent {
	ch := make(chan api.InstallEvent, 256)
	j.mu.Lock()
	j.subs = append(j.subs, ch)
	j.mu.Unlock()
	return ch
}

func (j *installJob) publish(ev api.InstallEvent) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, ch := range j.subs {
		select {
		case ch <- ev:
		default:
			if ev.Type != "progress" { // never drop the outcome
				go func(ch chan api.InstallEvent) { ch <- ev }(ch)
			}
		}
	}
}

const installPartName = "install"

// resumeAttempts bounds automatic resumes of one interrupted install, so a
// bundle that kills the daemon every time cannot loop forever.
const resumeAttempts = 50

func (p *installPart) start(ctx context.Context, d *Daemon) error {
	p.d = d
	p.ctx, p.cancel = context.WithCancel(context.Background())
	var rec installRecord
	if err := d.loadPart(installPartName, &rec); err != nil {
		d.log.Error("install record unreadable; starting clean", zap.Error(err))
	}
	if !rec.Active {
		return nil
	}
	cfg := d.config()
	auto := cfg.Update.Resume == "auto" && rec.Resumes < resumeAttempts
	if auto && rec.Source != "" && sourceAvailable(rec.Source) {
		d.log.Warn("interrupted install found: resuming", zap.String("source", rec.Source),
			zap.String("slot", rec.Bootname), zap.Int("from_chunk", nextChunk(rec.Checkpoint)))
		// In the background: re-reading a remote bundle's head may take
		// its retries, and READY=1 must not wait for that.
		d.setState("installing", "resuming the interrupted install of "+rec.Source)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if _, err := p.begin(rec.Source, true); err != nil {
				d.log.Error("resume failed to start", zap.Error(err))
				r := rec
				p.markNotBootable(&r, "resume failed: "+err.Error())
			}
		}()
		return nil
	}
	why := "install interrupted; resume it with: otagw install --resume"
	if !auto {
		why = "install interrupted and not resumed automatically (update.resume: manual or too many attempts)"
	}
	if !sourceAvailable(rec.Source) {
		why = "install interrupted and its source " + rec.Source + " is gone"
	}
	p.markNotBootable(&rec, why)
	return nil
}

func nextChunk(c *rootfs.Checkpoint) int {
	if c == nil {
		return 0
	}
	return c.Next
}

// sourceAvailable: a URL is tried when the install runs; a file must exist.
func sourceAvailable(src string) bool {
	if src == "" {
		return false
	}
	if len(src) > 7 && (src[:7] == "http://" || (len(src) > 8 && src[:8] == "https://")) {
		return true
	}
	_, err := os.Stat(src)
	return err == nil
}

// markNotBootable records an interrupted install whose slot stays out of
// the boot order (it was marked bad before the first byte was written).
func (p *installPart) markNotBootable(rec *installRecord, why string) {
	if rec.Bootname != "" {
		if c, err := p.d.bootPart().chooser(); err == nil {
			if err := c.MarkBad(rec.Bootname); err != nil {
				p.d.log.Error("marking interrupted slot bad", zap.String("slot", rec.Bootname), zap.Error(err))
			}
		}
		if rec.NotBootable == nil {
			rec.NotBootable = map[string]string{}
		}
		rec.NotBootable[rec.Bootname] = why
		delete(rec.Installed, rec.Bootname)
	}
	rec.Active = false
	p.d.log.Error("slot not bootable", zap.String("slot", rec.Bootname), zap.String("why", why))
	p.d.savePart(installPartName, rec)
	p.d.setState("idle", "slot "+rec.Bootname+" not bootable: "+why)
}

func (p *installPart) routes(srv *api.Server) {
	srv.Write("POST /v1/install", p.handleInstall)
}

func (p *installPart) handleInstall(w http.ResponseWriter, r *http.Request) {
	var req api.InstallRequest
	if err := decodeJSON(r, &req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
		return
	}
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	src := req.Source
	if req.Resume {
		p.mu.Lock()
		running := p.job
		p.mu.Unlock()
		if running != nil { // attach to the running one
			p.follow(w, r, running)
			return
		}
		if rec.Source == "" || rec.Checkpoint == nil {
			api.WriteError(w, http.StatusPreconditionFailed, "nothing-to-resume", "no interrupted install to resume")
			return
		}
		if src == "" {
			src = rec.Source
		}
	}
	if src == "" {
		api.WriteError(w, http.StatusBadRequest, "bad-request", "install: no source given")
		return
	}
	if err := p.d.maintenancePart().allowed(window.Install, req.Now || req.Resume); err != nil {
		api.WriteError(w, http.StatusPreconditionFailed, "outside-maintenance-window", err.Error())
		return
	}
	job, err := p.begin(src, req.Resume)
	if err != nil {
		code, kind := http.StatusConflict, "busy"
		if !errors.Is(err, api.ErrBusy) {
			code, kind = http.StatusPreconditionFailed, rootfs.Kind(err)
			// Refused before anything was written: the slots and the boot
			// environment are unchanged; say why everywhere.
			var rec installRecord
			p.d.loadPart(installPartName, &rec)
			rec.LastError, rec.LastKind = err.Error(), kind
			p.d.savePart(installPartName, &rec)
			p.d.log.Error("install refused", zap.String("kind", kind), zap.Error(err))
			p.d.setMessage("install refused (" + kind + "): " + err.Error())
		}
		api.WriteError(w, code, kind, kind+": "+err.Error())
		return
	}
	p.follow(w, r, job)
}

// follow streams a job's events to one client until it ends or the
// client goes away (the install goes on without it).
func (p *installPart) follow(w http.ResponseWriter, r *http.Request, job *installJob) {
	ch := job.subscribe()
	sw := api.NewStreamWriter(w)
	for {
		select {
		case ev := <-ch:
			if sw.Send(ev) != nil {
				return
			}
			if ev.Type == "done" || ev.Type == "error" {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// begin starts an install (or a resume) in the background.
func (p *installPart) begin(src string, resume bool) (*installJob, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.job != nil {
		return nil, fmt.Errorf("%w: an install of %s is running", api.ErrBusy, p.job.source)
	}
	cfg := p.d.config()
	c, err := p.d.bootPart().chooser()
	if err != nil {
		return nil, fmt.Errorf("boot selection unavailable: %w", err)
	}
	booted, err := c.Booted()
	if err != nil {
		return nil, fmt.Errorf("cannot tell the booted slot, so cannot tell which slot is safe to write: %w", err)
	}
	target := ""
	for _, s := range cfg.Rootfs.Slots {
		if s.Class == "rootfs" && s.Bootname != booted {
			target = s.Bootname
		}
	}
	if target == "" {
		return nil, fmt.Errorf("no rootfs slot other than the booted %s in rootfs.slots", booted)
	}
	kr, err := sign.LoadKeyring(cfg.Update.Keyring)
	if err != nil {
		return nil, fmt.Errorf("update.keyring: %w", err)
	}
	inst, err := rootfs.NewInstaller(cfg.Rootfs, p.d.log.Named("rootfs"))
	if err != nil {
		return nil, err
	}
	p.d.mu.Lock()
	minV, minSC := p.d.st.MinVersion, p.d.st.SecurityCounter
	p.d.mu.Unlock()
	policy := rootfs.Policy{Compatible: cfg.Update.Compatible, Threshold: cfg.Update.Threshold,
		MinVersion: minV, MinSecurityCounter: minSC, AllowDowngrade: cfg.Update.AllowDowngrade}
	// Signatures, compatible and version policy first: a bundle that is
	// refused must not change the boot environment at all.
	if err := checkHead(p.ctx, src, cfg.Rootfs.Source, kr, policy); err != nil {
		return nil, err
	}
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	var cp *rootfs.Checkpoint
	if resume && rec.Checkpoint != nil && rec.Source == src {
		cp = rec.Checkpoint
		rec.Resumes++
	} else {
		rec.Resumes = 0
	}
	// RAUC's order: the target leaves the boot order before its first byte
	// changes, so no interruption can leave it bootable half-written.
	if err := c.MarkBad(target); err != nil {
		return nil, fmt.Errorf("mark slot %s bad before writing: %w", target, err)
	}
	rec.Active, rec.Source, rec.Bootname, rec.Checkpoint = true, src, target, cp
	if rec.NotBootable == nil {
		rec.NotBootable = map[string]string{}
	}
	rec.NotBootable[target] = "being written"
	delete(rec.Installed, target)
	rec.LastError, rec.LastKind = "", ""
	if err := p.d.savePart(installPartName, &rec); err != nil {
		return nil, err
	}
	req := rootfs.Request{
		Source:  src,
		Keyring: kr,
		Policy:  policy,
		Booted:  booted,
		Resume:  cp,
		MCUDir:  filepath.Join(cfg.Daemon.StateDir, "mcu-payloads"),
	}
	job := &installJob{source: src, done: make(chan struct{})}
	req.OnProgress = func(pr rootfs.Progress) {
		job.publish(api.InstallEvent{Type: "progress", Done: pr.Done, Total: pr.Total, Rate: pr.Rate,
			Payload: pr.Payload, Slot: pr.Slot, Chunk: pr.Chunk, Chunks: pr.Chunks})
	}
	req.OnCheckpoint = func(c rootfs.Checkpoint) error {
		rec.Checkpoint = &c
		return p.d.savePart(installPartName, &rec)
	}
	os.MkdirAll(req.MCUDir, 0o700)
	p.job = job
	what := "installing"
	if cp != nil {
		what = fmt.Sprintf("resuming at chunk %d", cp.Next)
	}
	p.d.setState("installing", fmt.Sprintf("%s %s into slot %s", what, src, target))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		res, err := inst.Install(p.ctx, req)
		p.finish(job, &rec, res, err, c.SetPrimary, cfg.Boot.PrimaryTries)
	}()
	return job, nil
}

func (p *installPart) finish(job *installJob, rec *installRecord, res *rootfs.Result, err error, setPrimary func(string, int) error, tries int) {
	defer func() {
		p.mu.Lock()
		p.job = nil
		p.mu.Unlock()
		close(job.done)
	}()
	if err == nil && p.ctx.Err() == nil {
		err = setPrimary(rec.Bootname, tries)
		if err != nil {
			err = fmt.Errorf("slot %s verified, but switching the boot to it failed: %w", rec.Bootname, err)
		}
	}
	if p.ctx.Err() != nil {
		// The daemon is stopping: the record stays active so the next
		// start resumes from the checkpoint.
		p.d.log.Warn("install interrupted by shutdown; will resume at next start", zap.String("slot", rec.Bootname))
		return
	}
	var ce *rootfs.ChunkError
	if err != nil && rec.Checkpoint != nil && rec.Resumes > 0 &&
		(errors.Is(err, rootfs.ErrResume) || (errors.As(err, &ce) && ce.Index < 0)) {
		// The checkpoint does not fit the bundle any more, or the slot's
		// earlier chunks did not survive: start over from chunk 0, once.
		p.d.log.Warn("resume failed; starting the install over", zap.Error(err))
		rec.Checkpoint, rec.Resumes = nil, resumeAttempts
		p.d.savePart(installPartName, rec)
		src := rec.Source
		go func() {
			<-job.done
			if _, err := p.begin(src, false); err != nil {
				p.d.log.Error("restarting the install", zap.Error(err))
			}
		}()
		job.publish(api.InstallEvent{Type: "error", Kind: "resume-mismatch", Error: "resume failed, the install starts over: " + err.Error()})
		return
	}
	if err != nil {
		kind := rootfs.Kind(err)
		rec.Active = false
		rec.LastError, rec.LastKind = err.Error(), kind
		rec.NotBootable[rec.Bootname] = "install failed: " + kind
		p.d.savePart(installPartName, rec)
		p.d.log.Error("install failed", zap.String("kind", kind), zap.Error(err))
		p.d.setState("idle", "install failed: "+err.Error())
		job.publish(api.InstallEvent{Type: "error", Kind: kind, Error: err.Error()})
		return
	}
	v := res.Manifest.Version
	rec.Active, rec.Checkpoint = false, nil
	delete(rec.NotBootable, rec.Bootname)
	if rec.Installed == nil {
		rec.Installed = map[string]string{}
	}
	rec.Installed[rec.Bootname] = v
	p.d.mu.Lock()
	p.d.st.Pending, p.d.st.PendingSlot, p.d.st.PendingCounter = v, rec.Bootname, res.Manifest.SecurityCounter
	p.d.mu.Unlock()
	p.d.savePart(installPartName, rec)
	p.d.log.Info("install complete", zap.String("version", v), zap.String("slot", rec.Bootname))
	p.d.setState("installed", fmt.Sprintf("release %s verified in slot %s; it boots next (%d tries)", v, rec.Bootname, tries))
	p.d.maintenancePart().scheduleReboot(v)
	job.publish(api.InstallEvent{Type: "done", Version: v, Slot: rec.Bootname, Bundle: res.Bundle})
}

// checkHead reads only the bundle's header and signed manifest and applies
// the policy. The installer checks them again as it streams.
func checkHead(ctx context.Context, src string, o source.Options, kr *sign.Keyring, pol rootfs.Policy) error {
	s, err := source.New(src, o)
	if err != nil {
		return err
	}
	rc, err := s.Open(ctx, 0)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", src, err)
	}
	defer rc.Close()
	h, err := bundle.ReadHead(rc, kr, pol.Threshold)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", src, err)
	}
	if err := pol.Check(h.Manifest, time.Now()); err != nil {
		return fmt.Errorf("bundle %s: %w", src, err)
	}
	return nil
}

func (p *installPart) status(s *api.Status) {
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	cfg := p.d.config()
	// Merge the boot view (bootname, state, tries) with the slot config.
	for _, sc := range cfg.Rootfs.Slots {
		i := -1
		for j := range s.Slots {
			if s.Slots[j].Bootname == sc.Bootname {
				i = j
			}
		}
		if i < 0 {
			s.Slots = append(s.Slots, api.SlotStatus{Bootname: sc.Bootname, State: "unknown"})
			i = len(s.Slots) - 1
		}
		s.Slots[i].Name, s.Slots[i].Device = sc.Name, sc.Device
		s.Slots[i].Version = rec.Installed[sc.Bootname]
		if why, ok := rec.NotBootable[sc.Bootname]; ok {
			s.Slots[i].Note = "not bootable: " + why
		}
	}
	if rec.LastError != "" {
		s.LastError = &api.LastError{Kind: rec.LastKind, Error: rec.LastError}
	}
}

func (p *installPart) reload(cfg *config.Config) {}

func (p *installPart) stop() {
	p.cancel()
	p.wg.Wait()
}
