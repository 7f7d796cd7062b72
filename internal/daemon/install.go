package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/otagw/otagw/abboot"
	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/config"
	"github.com/otagw/otagw/internal/fault"
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

	mu    sync.Mutex
	job   *installJob        // the running install, nil when idle
	retry context.CancelFunc // stops the automatic-resume loop, nil when none
}

// installRecord is the install part's persisted piece.
type installRecord struct {
	// Active: an install was started and has not ended; at start this
	// means it was interrupted.
	Active     bool               `json:"active"`
	Source     string             `json:"source,omitempty"`
	Bootname   string             `json:"bootname,omitempty"`
	Checkpoint *rootfs.Checkpoint `json:"checkpoint,omitempty"`
	// Failures counts automatic attempts that failed in transit, and
	// Restarts the daemon starts that found this install interrupted,
	// both since the last new checkpoint.
	Failures int `json:"failures,omitempty"`
	Restarts int `json:"restarts,omitempty"`
	// Installed is the release on each slot (by bootname) once verified.
	Installed map[string]string `json:"installed,omitempty"`
	// NotBootable names slots whose content is not a verified release.
	NotBootable map[string]string `json:"not_bootable,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	LastKind    string            `json:"last_kind,omitempty"`
}

// installJob is one running install and the clients following it. It
// exists from the moment the request is taken (the bundle head is read
// under it), so a second request finds the daemon busy, not blocked.
type installJob struct {
	source  string
	target  string
	auto    bool // an automatic resume: a transient failure keeps it resumable
	resumed bool // continues from a checkpoint
	ctx     context.Context
	cancel  context.CancelCauseFunc
	mu      sync.Mutex
	subs    []chan api.InstallEvent
	done    chan struct{}
	err     error // the outcome, set before done is closed
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

// maxRestarts bounds the daemon starts that find the same install
// interrupted with no new checkpoint in between (kill -9, power cuts, a
// crash the bundle causes): each start continues it, up to this many.
const maxRestarts = 50

// errCancelled is the cause of an install stopped by `otagw install --cancel`.
var errCancelled = errors.New("cancelled by an operator")

// installKind names an install failure for status, the API and scripts:
// rootfs.Kind's names, and "cancelled".
func installKind(err error) string {
	if errors.Is(err, errCancelled) {
		return "cancelled"
	}
	return rootfs.Kind(err)
}

// transient reports a failure that a later attempt may not meet: the
// source stalled, dropped or could not be reached. Everything else (a bad
// signature, a hash mismatch, a policy refusal) fails the same way again.
func transient(err error) bool {
	var ne net.Error
	return errors.Is(err, source.ErrStalled) || errors.Is(err, source.ErrRetries) || errors.As(err, &ne)
}

func (p *installPart) start(ctx context.Context, d *Daemon) error {
	p.d = d
	p.ctx, p.cancel = context.WithCancel(context.Background())
	c, cerr := d.bootPart().chooser()
	if cerr == nil {
		d.reconcile(c)
	}
	var rec installRecord
	if err := d.loadPart(installPartName, &rec); err != nil {
		d.log.Error("install record unreadable; starting clean", zap.Error(err))
	}
	if !rec.Active {
		return nil
	}
	cfg := d.config()
	if cerr == nil {
		if booted, err := c.Booted(); err == nil && booted == rec.Bootname {
			// Only a record older than the boot environment can name the
			// booted slot; writing it again would take the running
			// system's only fallback. Never without a fresh request.
			d.log.Error("interrupted install record names the booted slot; not resumed", zap.String("slot", booted))
			d.warn("an interrupted install record named the booted slot " + booted + "; it was dropped, not resumed")
			rec.Active, rec.Checkpoint = false, nil
			d.savePart(installPartName, &rec)
			return nil
		}
	}
	rec.Restarts++
	d.savePart(installPartName, &rec)
	switch {
	case isFD(rec.Source):
		name, _ := api.IsFDSource(rec.Source)
		p.markNotBootable(&rec, "install of a file a client passed was interrupted; resume it with: otagw install --resume "+name)
	case !sourceAvailable(rec.Source):
		p.markNotBootable(&rec, "install interrupted and its source "+rec.Source+" is gone")
	case cfg.Update.Resume != "auto":
		p.markNotBootable(&rec, "install interrupted; resume it with: otagw install --resume")
	case rec.Failures > cfg.Update.ResumeRetries:
		p.fail(&rec, fmt.Sprintf("install of %s gave up after %d automatic attempts", rec.Source, rec.Failures), "")
	case rec.Restarts >= maxRestarts:
		// A bundle that brings the daemon down every time must not loop.
		p.fail(&rec, fmt.Sprintf("install of %s was interrupted %d times in a row without progress", rec.Source, rec.Restarts), "")
	default:
		d.log.Warn("interrupted install found: resuming", zap.String("source", rec.Source),
			zap.String("slot", rec.Bootname), zap.Int("from_chunk", nextChunk(rec.Checkpoint)))
		// In the background: re-reading a remote bundle's head may take
		// its retries, and READY=1 must not wait for that.
		d.setState("installing", "resuming the interrupted install of "+rec.Source)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.autoResume(rec.Source, rec.Bootname)
		}()
	}
	return nil
}

// autoResume retries an interrupted install with backoff, each failed
// attempt counted in the record (so the count survives restarts), and
// ends in the failed state once update.resume_retries is used up.
func (p *installPart) autoResume(src, target string) {
	ctx, cancel := context.WithCancel(p.ctx)
	p.mu.Lock()
	p.retry = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.retry = nil
		p.mu.Unlock()
		cancel()
	}()
	cfg := p.d.config()
	delay := cfg.Update.ResumeBackoff
	for {
		var rec installRecord
		p.d.loadPart(installPartName, &rec)
		if !rec.Active || rec.Source != src {
			return // cancelled, or replaced by a new request
		}
		job, err := p.begin(nil, src, target, true, true)
		if err == nil {
			<-job.done
			err = job.err
		} else if errors.Is(err, api.ErrBusy) {
			return // an operator's request got there first
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		p.d.loadPart(installPartName, &rec)
		if !rec.Active {
			return // the failure was final and is recorded
		}
		if !transient(err) {
			p.fail(&rec, "resume failed: "+err.Error(), rootfs.Kind(err))
			return
		}
		rec.Failures++
		p.d.savePart(installPartName, &rec)
		if rec.Failures > cfg.Update.ResumeRetries {
			p.fail(&rec, fmt.Sprintf("install of %s failed after %d automatic attempts: %v", src, rec.Failures, err), rootfs.Kind(err))
			return
		}
		p.d.log.Warn("install attempt failed; retrying", zap.Int("attempt", rec.Failures), zap.Duration("in", delay), zap.Error(err))
		p.d.setState("installing", fmt.Sprintf("attempt %d of %d at %s failed (%v); retrying in %v",
			rec.Failures, cfg.Update.ResumeRetries+1, src, err, delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay *= 2
	}
}

func nextChunk(c *rootfs.Checkpoint) int {
	if c == nil {
		return 0
	}
	return c.Next
}

func isFD(src string) bool { _, ok := api.IsFDSource(src); return ok }

// sourceAvailable: a URL is tried when the install runs; a file must exist.
func sourceAvailable(src string) bool {
	if src == "" {
		return false
	}
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		return true
	}
	_, err := os.Stat(src)
	return err == nil
}

// markNotBootable records an interrupted install whose slot stays out of
// the boot order (it was marked bad before the first byte was written).
func (p *installPart) markNotBootable(rec *installRecord, why string) {
	p.endRecord(rec, why, "", "idle")
}

// fail ends an install for good: the slot stays not bootable and the
// daemon is in the failed state until the next request.
func (p *installPart) fail(rec *installRecord, why, kind string) {
	p.endRecord(rec, why, kind, "failed")
}

func (p *installPart) endRecord(rec *installRecord, why, kind, state string) {
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
	if kind != "" {
		rec.LastError, rec.LastKind = why, kind
	}
	p.d.log.Error("slot not bootable", zap.String("slot", rec.Bootname), zap.String("why", why))
	p.d.savePart(installPartName, rec)
	p.d.setState(state, "slot "+rec.Bootname+" not bootable: "+why)
}

func (p *installPart) routes(srv *api.Server) {
	srv.Write("POST /v1/install", p.handleInstall)
	srv.Write("POST /v1/install/cancel", p.handleCancel)
}

func (p *installPart) handleInstall(w http.ResponseWriter, r *http.Request) {
	var req api.InstallRequest
	if err := decodeJSON(r, &req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
		return
	}
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	src, target := req.Source, ""
	// The daemon opens URLs only: a local bundle arrives as a descriptor
	// the client opened with its own credentials (api.PassedFile).
	var passed source.Source
	if name, ok := api.IsFDSource(src); ok {
		f, err := api.PassedFile(r)
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("install %s: %v", name, err))
			return
		}
		d, err := source.NewDescriptor(f, name)
		if err != nil {
			f.Close()
			api.WriteError(w, http.StatusBadRequest, "bad-request", err.Error())
			return
		}
		passed = d
	} else if src != "" && !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		api.WriteError(w, http.StatusBadRequest, "bad-request",
			"the daemon opens no paths a caller names; give an http(s) URL, or let otagw install open the file and pass it")
		return
	}
	closePassed := func() {
		if c, ok := passed.(io.Closer); ok {
			c.Close()
		}
	}
	if req.Resume {
		p.mu.Lock()
		running := p.job
		p.mu.Unlock()
		if running != nil { // attach to the running one
			closePassed()
			p.follow(w, r, running)
			return
		}
		if rec.Source == "" || rec.Checkpoint == nil {
			closePassed()
			api.WriteError(w, http.StatusPreconditionFailed, "nothing-to-resume", "no interrupted install to resume")
			return
		}
		if src == "" {
			if name, ok := api.IsFDSource(rec.Source); ok {
				api.WriteError(w, http.StatusPreconditionFailed, "nothing-to-resume",
					"the interrupted install read a file the client passed: name it again: otagw install --resume "+name)
				return
			}
			src = rec.Source
		}
		if src == rec.Source {
			target = rec.Bootname // a resume continues where it was, never elsewhere
		}
	}
	if src == "" {
		api.WriteError(w, http.StatusBadRequest, "bad-request", "install: no source given")
		return
	}
	if err := p.d.maintenancePart().allowed(window.Install, req.Now || req.Resume); err != nil {
		closePassed()
		api.WriteError(w, http.StatusPreconditionFailed, "outside-maintenance-window", err.Error())
		return
	}
	// An operator's request replaces a pending automatic retry.
	p.mu.Lock()
	if p.retry != nil && p.job == nil {
		p.retry()
	}
	p.mu.Unlock()
	job, err := p.begin(passed, src, target, req.Resume, false)
	if err != nil {
		code, kind := http.StatusConflict, "busy"
		if !errors.Is(err, api.ErrBusy) {
			code, kind = http.StatusPreconditionFailed, installKind(err)
		}
		api.WriteError(w, code, kind, kind+": "+err.Error())
		return
	}
	p.follow(w, r, job)
}

// handleCancel stops the running install, or the interrupted one waiting
// to be resumed: its slot stays out of the boot order, marked not bootable.
func (p *installPart) handleCancel(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	job, retry := p.job, p.retry
	p.mu.Unlock()
	if retry != nil {
		retry()
	}
	var out api.InstallEvent
	if job != nil {
		job.cancel(errCancelled)
		select {
		case <-job.done:
		case <-r.Context().Done():
			return
		}
		out = api.InstallEvent{Type: "error", Kind: "cancelled", Slot: job.target, Error: "install of " + job.source + " " + errCancelled.Error()}
	}
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	if rec.Active {
		p.markNotBootable(&rec, "install of "+rec.Source+" "+errCancelled.Error())
		out = api.InstallEvent{Type: "error", Kind: "cancelled", Slot: rec.Bootname, Error: "install of " + rec.Source + " " + errCancelled.Error()}
	}
	if out.Type == "" {
		api.WriteError(w, http.StatusPreconditionFailed, "nothing-to-cancel", "no install is running or waiting to be resumed")
		return
	}
	api.WriteJSON(w, out)
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

// begin takes an install request: it reserves the install (a second
// request is busy from this moment), reads and checks the bundle head,
// and starts the install in the background. src names the bundle; s reads
// it (nil: opened from src, a URL or, for automatic resumes, a path) and
// is closed when the install ends. target names the slot of a resume; ""
// picks the rootfs slot that is not booted.
func (p *installPart) begin(s source.Source, src, target string, resume, auto bool) (*installJob, error) {
	closeSource := func() {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	if s == nil {
		var err error
		if s, err = source.New(src, p.d.config().Rootfs.Source); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	if p.job != nil {
		p.mu.Unlock()
		closeSource()
		return nil, fmt.Errorf("%w: an install of %s is running", api.ErrBusy, p.job.source)
	}
	ctx, cancel := context.WithCancelCause(p.ctx)
	job := &installJob{source: src, auto: auto, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	p.job = job
	p.mu.Unlock()
	started := false
	defer func() {
		if !started {
			closeSource()
			p.mu.Lock()
			p.job = nil
			p.mu.Unlock()
			cancel(nil)
			close(job.done)
		}
	}()
	p.d.setState("downloading", "downloading "+src)
	plan, err := p.prepare(ctx, s, target)
	if errors.Is(context.Cause(ctx), errCancelled) {
		err = fmt.Errorf("install of %s %w", src, errCancelled)
	}
	if err != nil {
		job.err = err
		if !errors.Is(err, api.ErrBusy) {
			p.refused(err)
		}
		return nil, err
	}
	job.target = plan.target
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	var cp *rootfs.Checkpoint
	if resume && rec.Checkpoint != nil && rec.Source == src && rec.Bootname == plan.target {
		cp = rec.Checkpoint
		job.resumed = true
	} else if !auto {
		rec.Failures, rec.Restarts = 0, 0
	}
	// RAUC's order: the target leaves the boot order before its first byte
	// changes, so no interruption can leave it bootable half-written.
	if err := plan.chooser.MarkBad(plan.target); err != nil {
		err = fmt.Errorf("mark slot %s bad before writing: %w", plan.target, err)
		job.err = err
		p.refused(err)
		return nil, err
	}
	fault.Point("install.marked-bad")
	rec.Active, rec.Source, rec.Bootname, rec.Checkpoint = true, src, plan.target, cp
	if rec.NotBootable == nil {
		rec.NotBootable = map[string]string{}
	}
	rec.NotBootable[plan.target] = "being written"
	delete(rec.Installed, plan.target)
	rec.LastError, rec.LastKind = "", ""
	if err := p.d.savePart(installPartName, &rec); err != nil {
		job.err = err
		return nil, err
	}
	cfg := p.d.config()
	req := plan.request
	req.Source, req.Src, req.Resume = src, s, cp
	req.MCUDir = filepath.Join(cfg.Daemon.StateDir, "mcu-payloads")
	req.OnProgress = func(pr rootfs.Progress) {
		job.publish(api.InstallEvent{Type: "progress", Done: pr.Done, Total: pr.Total, Rate: pr.Rate,
			Payload: pr.Payload, Slot: pr.Slot, Chunk: pr.Chunk, Chunks: pr.Chunks})
	}
	req.OnCheckpoint = func(c rootfs.Checkpoint) error {
		rec.Checkpoint = &c
		rec.Failures, rec.Restarts = 0, 0 // progress: the counts start again
		err := p.d.savePart(installPartName, &rec)
		fault.Point("install.checkpoint")
		return err
	}
	os.MkdirAll(req.MCUDir, 0o700)
	what := "installing"
	if cp != nil {
		what = fmt.Sprintf("resuming at chunk %d", cp.Next)
	}
	p.d.setState("installing", fmt.Sprintf("%s %s into slot %s", what, src, plan.target))
	started = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		res, err := plan.installer.Install(ctx, req)
		closeSource()
		p.finish(job, &rec, plan, res, err)
	}()
	return job, nil
}

// installPlan is what begin settled before the first byte is written.
type installPlan struct {
	target    string
	chooser   *abboot.Chooser
	installer *rootfs.Installer
	head      *bundle.Head
	request   rootfs.Request
}

// prepare picks the target slot and checks the bundle head: signatures,
// compatible, version policy and size. Nothing is written.
func (p *installPart) prepare(ctx context.Context, src source.Source, target string) (*installPlan, error) {
	cfg := p.d.config()
	c, err := p.d.bootPart().chooser()
	if err != nil {
		return nil, fmt.Errorf("boot selection unavailable: %w", err)
	}
	booted, err := c.Booted()
	if err != nil {
		return nil, fmt.Errorf("cannot tell the booted slot, so cannot tell which slot is safe to write: %w", err)
	}
	if target == "" {
		for _, s := range cfg.Rootfs.Slots {
			if s.Class == "rootfs" && s.Bootname != booted {
				target = s.Bootname
			}
		}
	}
	if target == "" {
		return nil, fmt.Errorf("no rootfs slot other than the booted %s in rootfs.slots", booted)
	}
	if target == booted {
		return nil, fmt.Errorf("slot %s is the booted slot: %w", target, rootfs.ErrSlotBusy)
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
	// Signatures, compatible, version policy and size first: a bundle
	// that is refused must not change the boot environment at all.
	h, err := rootfs.CheckHead(ctx, src, kr, policy, time.Now())
	if err != nil {
		return nil, err
	}
	return &installPlan{target: target, chooser: c, installer: inst, head: h,
		request: rootfs.Request{Keyring: kr, Policy: policy, Booted: booted, Head: h}}, nil
}

// refused records a request that ended before anything was written: the
// slots and the boot environment are unchanged; it says why everywhere.
func (p *installPart) refused(err error) {
	kind := installKind(err)
	var rec installRecord
	p.d.loadPart(installPartName, &rec)
	rec.LastError, rec.LastKind = err.Error(), kind
	p.d.savePart(installPartName, &rec)
	p.d.log.Error("install refused", zap.String("kind", kind), zap.Error(err))
	state, msg := "idle", "install refused ("+kind+"): "+err.Error()
	if rec.Active {
		state, msg = "installing", "install attempt failed ("+kind+"): "+err.Error()
	}
	p.d.setState(state, msg)
}

func (p *installPart) finish(job *installJob, rec *installRecord, plan *installPlan, res *rootfs.Result, err error) {
	defer func() {
		p.mu.Lock()
		p.job = nil
		p.mu.Unlock()
		job.err = err
		close(job.done)
	}()
	if err == nil && res.Bundle != plan.head.ID() {
		err = fmt.Errorf("bundle %s changed between its check (%s) and its install (%s): %w", job.source, plan.head.ID(), res.Bundle, source.ErrChanged)
	}
	if errors.Is(context.Cause(job.ctx), errCancelled) {
		err = errCancelled
		rec.LastError, rec.LastKind = "install of "+job.source+" "+errCancelled.Error(), "cancelled"
		p.markNotBootable(rec, rec.LastError)
		job.publish(api.InstallEvent{Type: "error", Kind: "cancelled", Slot: rec.Bootname, Error: rec.LastError})
		return
	}
	if p.ctx.Err() != nil {
		// The daemon is stopping: the record stays active so the next
		// start resumes from the checkpoint.
		p.d.log.Warn("install interrupted by shutdown; will resume at next start", zap.String("slot", rec.Bootname))
		if err == nil {
			err = context.Canceled
		}
		return
	}
	var ce *rootfs.ChunkError
	if err != nil && job.resumed &&
		(errors.Is(err, rootfs.ErrResume) || (errors.As(err, &ce) && ce.Index < 0)) {
		// The checkpoint does not fit the bundle any more, or the slot's
		// earlier chunks did not survive: the next attempt starts over
		// from chunk 0.
		p.d.log.Warn("resume failed; the next attempt starts over", zap.Error(err))
		rec.Checkpoint = nil
		p.d.savePart(installPartName, rec)
		job.publish(api.InstallEvent{Type: "error", Kind: "resume-mismatch", Error: "resume failed, the install starts over: " + err.Error()})
		err = fmt.Errorf("%w (%w)", source.ErrRetries, err) // transient: the next attempt starts over
		if isFD(rec.Source) {
			p.markNotBootable(rec, "the resume did not fit the slot; install the file again")
		} else if !job.auto {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				<-job.done
				p.autoResume(rec.Source, rec.Bootname)
			}()
		}
		return
	}
	if err != nil {
		kind := rootfs.Kind(err)
		rec.LastError, rec.LastKind = err.Error(), kind
		if job.auto && transient(err) {
			// The retry loop decides: the record stays resumable.
			p.d.savePart(installPartName, rec)
		} else {
			rec.Active = false
			rec.NotBootable[rec.Bootname] = "install failed: " + kind
			p.d.savePart(installPartName, rec)
			p.d.setState("idle", "install failed: "+err.Error())
		}
		p.d.log.Error("install failed", zap.String("kind", kind), zap.Error(err))
		job.publish(api.InstallEvent{Type: "error", Kind: kind, Error: err.Error()})
		return
	}
	fault.Point("install.verified")
	err = p.switchTo(rec, plan, res)
	if err != nil {
		err = fmt.Errorf("slot %s verified, but switching the boot to it failed: %w", rec.Bootname, err)
		kind := rootfs.Kind(err)
		p.d.log.Error("install failed", zap.String("kind", kind), zap.Error(err))
		p.d.setState("failed", err.Error())
		job.publish(api.InstallEvent{Type: "error", Kind: kind, Error: err.Error()})
		return
	}
	v := res.Manifest.Version
	tries := p.d.config().Boot.PrimaryTries
	p.d.log.Info("install complete", zap.String("version", v), zap.String("slot", rec.Bootname))
	p.d.setState("installed", fmt.Sprintf("release %s verified in slot %s; it boots next (%d tries)", v, rec.Bootname, tries))
	p.d.maintenancePart().scheduleReboot(v)
	job.publish(api.InstallEvent{Type: "done", Version: v, Slot: rec.Bootname, Bundle: res.Bundle})
}

// switchTo makes a verified slot the next boot, write-ahead: every crash
// point maps to one recovery in reconcile.
//
//  1. the signed manifest is kept as the slot's proof;
//  2. ONE state write says: install over, release v verified in slot S,
//     pending, switch number n not yet seen in the environment;
//  3. ONE environment write makes S primary with tries and notes the
//     trial "S v counter n" (abboot.SetPrimaryNoting);
//  4. the state notes that the switch landed.
//
// A cut before 2 resumes the install (all chunks are checkpointed, so
// only the read-back runs again); between 2 and 3 reconcile makes the
// switch (the slot was never bootable, so no try was spent); between 3
// and 4 it finds the trial in the environment.
func (p *installPart) switchTo(rec *installRecord, plan *installPlan, res *rootfs.Result) error {
	cfg := p.d.config()
	if err := saveProof(cfg.Daemon.StateDir, rec.Bootname, plan.head); err != nil {
		return fmt.Errorf("keeping the signed manifest of slot %s: %w", rec.Bootname, err)
	}
	m := res.Manifest
	rec.Active, rec.Checkpoint = false, nil
	delete(rec.NotBootable, rec.Bootname)
	if rec.Installed == nil {
		rec.Installed = map[string]string{}
	}
	rec.Installed[rec.Bootname] = m.Version
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	d := p.d
	d.mu.Lock()
	d.st.Seq++
	d.st.Pending, d.st.PendingSlot, d.st.PendingCounter = m.Version, rec.Bootname, m.SecurityCounter
	d.st.PendingSeq, d.st.PendingSwitched = d.st.Seq, false
	if d.st.Parts == nil {
		d.st.Parts = map[string]json.RawMessage{}
	}
	d.st.Parts[installPartName] = raw
	t := trial{Slot: rec.Bootname, Version: m.Version, Counter: m.SecurityCounter, Seq: d.st.Seq}
	notes := d.anchorNotesLocked()
	notes[noteTrial] = t.String()
	err = d.saveLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	fault.Point("install.announced")
	if err := plan.chooser.SetPrimaryNoting(rec.Bootname, cfg.Boot.PrimaryTries, notes); err != nil {
		return err
	}
	fault.Point("install.switched")
	d.mu.Lock()
	d.st.PendingSwitched = true
	d.st.State = "installed"
	err = d.saveLocked()
	d.mu.Unlock()
	fault.Point("install.done")
	return err
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
