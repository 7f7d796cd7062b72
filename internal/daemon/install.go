package daemon

import (
	"context"
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
	log     *zap.Logger
	cfg     func() *config.Config
	now     func() time.Time
	warn    func(string)
	boot    func() (bootSelection, error)
	windows windows
	flow    *flow
	bus     *bus
	store   installStore

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	job   *installJob        // the running install, nil when idle
	retry context.CancelFunc // stops the automatic-resume loop, nil when none
}

// installStore is the install's part of the release record.
type installStore interface {
	// load returns a copy of the install record; save writes it.
	load() installRecord
	save(rec *installRecord) error
	// floor is the anti-downgrade floor: minimum version and security counter.
	floor() (string, uint64)
	// announce is step 2 of switchTo: in one write, the install is over
	// and version (counter) in rec.Bootname is pending, with the MCU
	// payloads it carries; it returns the boot environment notes to
	// write with the switch.
	announce(rec *installRecord, version string, counter uint64, payloads []string) (map[string]string, error)
	// switched is step 4: the switch landed in the boot environment.
	switched() error
}

// installRecord is the install's part of the release record (persisted.Install).
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
	done    chan struct{}
	err     error // the outcome, set before done is closed
}

// installView is the install stream's view of the bus: the progress and
// the outcome of the install (events whose state is downloading or
// installing).
func installView(ev api.Event) bool {
	switch ev.Type {
	case api.EventProgress, api.EventDone, api.EventError:
		return ev.State == api.StateDownloading || ev.State == api.StateInstalling
	}
	return ev.Type == api.EventLagged
}

// publish sends one event of the install on the bus.
func (p *installPart) publish(ev api.Event) {
	if ev.State == "" {
		ev.State = api.StateInstalling
	}
	p.bus.publish(ev)
}

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

func (p *installPart) start(ctx context.Context) error {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	c, cerr := p.boot()
	rec := p.store.load()
	if !rec.Active {
		return nil
	}
	cfg := p.cfg()
	if cerr == nil {
		if booted, err := c.Booted(); err == nil && booted == rec.Bootname {
			// Only a record older than the boot environment can name the
			// booted slot; writing it again would take the running
			// system's only fallback. Never without a fresh request.
			p.log.Error("interrupted install record names the booted slot; not resumed", zap.String("slot", booted))
			p.warn("an interrupted install record named the booted slot " + booted + "; it was dropped, not resumed")
			rec.Active, rec.Checkpoint = false, nil
			p.store.save(&rec)
			p.flow.enter(api.StateIdle, "an interrupted install record named the booted slot "+booted+"; dropped", entry{Slot: booted})
			return nil
		}
	}
	rec.Restarts++
	p.store.save(&rec)
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
		p.log.Warn("interrupted install found: resuming", zap.String("source", rec.Source),
			zap.String("slot", rec.Bootname), zap.Int("from_chunk", nextChunk(rec.Checkpoint)))
		// In the background: re-reading a remote bundle's head may take
		// its retries, and READY=1 must not wait for that. The flow is in
		// installing already (restore).
		p.flow.note("resuming the interrupted install of " + rec.Source)
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
	cfg := p.cfg()
	delay := cfg.Update.ResumeBackoff
	for {
		rec := p.store.load()
		if !rec.Active || rec.Source != src {
			return // cancelled, or replaced by a new request
		}
		job, err := p.begin(nil, src, target, true, true, "resume")
		if err == nil {
			<-job.done
			err = job.err
		} else if errors.Is(err, api.ErrBusy) {
			return // an operator's request got there first
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		rec = p.store.load()
		if !rec.Active {
			return // the failure was final and is recorded
		}
		if !transient(err) {
			p.fail(&rec, "resume failed: "+err.Error(), rootfs.Kind(err))
			return
		}
		rec.Failures++
		p.store.save(&rec)
		if rec.Failures > cfg.Update.ResumeRetries {
			p.fail(&rec, fmt.Sprintf("install of %s failed after %d automatic attempts: %v", src, rec.Failures, err), rootfs.Kind(err))
			return
		}
		p.log.Warn("install attempt failed; retrying", zap.Int("attempt", rec.Failures), zap.Duration("in", delay), zap.Error(err))
		p.flow.note(fmt.Sprintf("attempt %d of %d at %s failed (%v); retrying in %v",
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
	p.endRecord(rec, why, "", api.StateIdle)
}

// fail ends an install for good: the slot stays not bootable and the
// daemon is in the failed state until the next request.
func (p *installPart) fail(rec *installRecord, why, kind string) {
	p.endRecord(rec, why, kind, api.StateFailed)
}

func (p *installPart) endRecord(rec *installRecord, why, kind, state string) {
	if rec.Bootname != "" {
		if c, err := p.boot(); err == nil {
			if err := c.MarkBad(rec.Bootname); err != nil {
				p.log.Error("marking interrupted slot bad", zap.String("slot", rec.Bootname), zap.Error(err))
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
	p.log.Error("slot not bootable", zap.String("slot", rec.Bootname), zap.String("why", why))
	p.store.save(rec)
	e := entry{Slot: rec.Bootname, Source: rec.Source}
	if state == api.StateFailed {
		e.Kind, e.Error = kind, why
		if e.Kind == "" {
			e.Kind = "interrupted"
		}
	}
	p.flow.enter(state, "slot "+rec.Bootname+" not bootable: "+why, e)
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
	rec := p.store.load()
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
			sub, _ := p.bus.subscribe(RequestBuffer, installView)
			defer p.bus.unsubscribe(sub)
			follow(api.NewStreamWriter(w), r, sub)
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
	if err := p.windows.allowed(window.Install, req.Now || req.Resume); err != nil {
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
	// The answer is the install's view of the bus, subscribed before the
	// install starts so that no event of it is missed.
	sub, _ := p.bus.subscribe(RequestBuffer, installView)
	defer p.bus.unsubscribe(sub)
	_, err := p.begin(passed, src, target, req.Resume, false, "cli")
	if err != nil {
		code, kind := http.StatusConflict, "busy"
		if !errors.Is(err, api.ErrBusy) {
			code, kind = http.StatusPreconditionFailed, installKind(err)
		}
		api.WriteError(w, code, kind, kind+": "+err.Error())
		return
	}
	follow(api.NewStreamWriter(w), r, sub)
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
	var out api.Event
	if job != nil {
		job.cancel(errCancelled)
		select {
		case <-job.done:
		case <-r.Context().Done():
			return
		}
		out = api.Event{Type: api.EventError, State: api.StateInstalling, Kind: "cancelled", Slot: job.target, Error: "install of " + job.source + " " + errCancelled.Error()}
	}
	rec := p.store.load()
	if rec.Active {
		p.markNotBootable(&rec, "install of "+rec.Source+" "+errCancelled.Error())
		out = api.Event{Type: api.EventError, State: api.StateInstalling, Kind: "cancelled", Slot: rec.Bootname, Error: "install of " + rec.Source + " " + errCancelled.Error()}
	}
	if out.Type == "" {
		api.WriteError(w, http.StatusPreconditionFailed, "nothing-to-cancel", "no install is running or waiting to be resumed")
		return
	}
	out.Time = p.now()
	api.WriteJSON(w, out)
}

// begin takes an install request: it reserves the install (a second
// request is busy from this moment), reads and checks the bundle head,
// and starts the install in the background. src names the bundle; s reads
// it (nil: opened from src, a URL or, for automatic resumes, a path) and
// is closed when the install ends. target names the slot of a resume; ""
// picks the rootfs slot that is not booted. origin is where the request
// came from (api.Event.Source: cli, resume, channel).
func (p *installPart) begin(s source.Source, src, target string, resume, auto bool, origin string) (*installJob, error) {
	closeSource := func() {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	if s == nil {
		var err error
		if s, err = source.New(src, p.cfg().Rootfs.Source); err != nil {
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
	// The flow moves first: an install the flow does not allow now (an
	// assessment, a fan-out or a reboot is under way) is refused as busy.
	if p.flow.State() != api.StateInstalling {
		if err := p.flow.enter(api.StateDownloading, "reading the head of "+src, entry{Bundle: src, Source: origin}); err != nil {
			job.err = fmt.Errorf("%w: %v", api.ErrBusy, err)
			return nil, job.err
		}
	}
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
	rec := p.store.load()
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
	if err := p.store.save(&rec); err != nil {
		job.err = err
		return nil, err
	}
	cfg := p.cfg()
	req := plan.request
	req.Source, req.Src, req.Resume = src, s, cp
	req.MCUDir = filepath.Join(cfg.Daemon.StateDir, "mcu-payloads")
	version := plan.head.Manifest.Version
	req.OnProgress = func(pr rootfs.Progress) {
		p.publish(api.Event{Type: api.EventProgress, Done: pr.Done, Total: pr.Total, Rate: pr.Rate, Release: version,
			Payload: pr.Payload, Slot: pr.Slot, Chunk: pr.Chunk, Chunks: pr.Chunks})
	}
	req.OnCheckpoint = func(c rootfs.Checkpoint) error {
		rec.Checkpoint = &c
		rec.Failures, rec.Restarts = 0, 0 // progress: the counts start again
		err := p.store.save(&rec)
		fault.Point("install.checkpoint")
		return err
	}
	os.MkdirAll(req.MCUDir, 0o700)
	what := "installing"
	if cp != nil {
		what = fmt.Sprintf("resuming at chunk %d", cp.Next)
	}
	p.flow.enter(api.StateInstalling, fmt.Sprintf("%s %s into slot %s", what, src, plan.target),
		entry{Release: version, Slot: plan.target, Bundle: src, Source: origin})
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
	chooser   bootSelection
	installer *rootfs.Installer
	head      *bundle.Head
	proof     string // the pending proof file (startProof)
	request   rootfs.Request
}

// prepare picks the target slot and has rootfs check the bundle head:
// signatures, compatible, version policy and size. Nothing is written.
// The slot is the daemon's choice, named in the request (Request.Target):
// rootfs writes that one and does not choose again.
func (p *installPart) prepare(ctx context.Context, src source.Source, target string) (*installPlan, error) {
	cfg := p.cfg()
	c, err := p.boot()
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
	slotName := ""
	for _, s := range cfg.Rootfs.Slots {
		if s.Class == "rootfs" && s.Bootname == target {
			slotName = s.Name
		}
	}
	if slotName == "" {
		return nil, fmt.Errorf("rootfs.slots: no rootfs slot with bootname %s", target)
	}
	kr, err := sign.LoadKeyring(cfg.Update.Keyring)
	if err != nil {
		return nil, fmt.Errorf("update.keyring: %w", err)
	}
	inst, err := rootfs.NewInstaller(cfg.Rootfs, p.log.Named("rootfs"))
	if err != nil {
		return nil, err
	}
	inst.SetClock(p.now)
	minV, minSC := p.store.floor()
	policy := rootfs.Policy{Compatible: cfg.Update.Compatible, Threshold: cfg.Update.Threshold,
		MinVersion: minV, MinSecurityCounter: minSC, AllowDowngrade: cfg.Update.AllowDowngrade}
	// Signatures, compatible, version policy and size first: a bundle
	// that is refused must not change the boot environment at all.
	// The signed manifest streams into the slot's proof file on the way.
	pp, err := startProof(cfg.Daemon.StateDir)
	if err != nil {
		return nil, fmt.Errorf("daemon.state_dir: %w", err)
	}
	h, err := rootfs.CheckHeadStream(ctx, src, kr, policy, p.now(), pp)
	if err != nil {
		pp.discard()
		return nil, err
	}
	proof, err := pp.finish(h.Signatures)
	if err != nil {
		return nil, fmt.Errorf("keeping the signed manifest: %w", err)
	}
	return &installPlan{target: target, chooser: c, installer: inst, head: h, proof: proof,
		request: rootfs.Request{Keyring: kr, Policy: policy, Booted: booted, Target: slotName, Head: h}}, nil
}

// refused records a request that ended before anything was written: the
// slots and the boot environment are unchanged; it says why everywhere.
func (p *installPart) refused(err error) {
	kind := installKind(err)
	rec := p.store.load()
	rec.LastError, rec.LastKind = err.Error(), kind
	p.store.save(&rec)
	p.log.Error("install refused", zap.String("event", "refused"), zap.String("kind", kind), zap.Error(err))
	p.publish(api.Event{Type: api.EventError, Kind: kind, Error: err.Error()})
	if rec.Active {
		// An automatic retry's attempt: the retry loop decides.
		p.flow.note("install attempt failed (" + kind + "): " + err.Error())
		return
	}
	p.flow.enter(api.StateIdle, "install refused ("+kind+"): "+err.Error(), entry{Kind: kind, Error: err.Error()})
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
		p.publish(api.Event{Type: api.EventError, Kind: "cancelled", Slot: rec.Bootname, Error: rec.LastError})
		return
	}
	if p.ctx.Err() != nil {
		// The daemon is stopping: the record stays active so the next
		// start resumes from the checkpoint.
		p.log.Warn("install interrupted by shutdown; will resume at next start", zap.String("slot", rec.Bootname))
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
		p.log.Warn("resume failed; the next attempt starts over", zap.Error(err))
		rec.Checkpoint = nil
		p.store.save(rec)
		p.publish(api.Event{Type: api.EventError, Kind: "resume-mismatch", Slot: rec.Bootname, Error: "resume failed, the install starts over: " + err.Error()})
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
		p.log.Error("install failed", zap.String("kind", kind), zap.Error(err))
		if job.auto && transient(err) {
			// The retry loop decides: the record stays resumable.
			p.store.save(rec)
		} else {
			rec.Active = false
			rec.NotBootable[rec.Bootname] = "install failed: " + kind
			p.store.save(rec)
			p.flow.enter(api.StateFailed, "install failed: "+err.Error(), entry{Slot: rec.Bootname, Kind: kind, Error: err.Error()})
		}
		p.publish(api.Event{Type: api.EventError, Slot: rec.Bootname, Kind: kind, Error: err.Error()})
		return
	}
	fault.Point("install.verified")
	err = p.switchTo(rec, plan, res)
	if err != nil {
		err = fmt.Errorf("slot %s verified, but switching the boot to it failed: %w", rec.Bootname, err)
		kind := rootfs.Kind(err)
		p.log.Error("install failed", zap.String("kind", kind), zap.Error(err))
		p.flow.enter(api.StateFailed, err.Error(), entry{Slot: rec.Bootname, Kind: kind, Error: err.Error()})
		p.publish(api.Event{Type: api.EventError, Slot: rec.Bootname, Kind: kind, Error: err.Error()})
		return
	}
	v := res.Manifest.Version
	tries := p.cfg().Boot.PrimaryTries
	p.flow.enter(api.StateInstalled, fmt.Sprintf("release %s verified in slot %s; it boots next (%d tries)", v, rec.Bootname, tries),
		entry{Release: v, Slot: rec.Bootname, Bundle: job.source})
	p.windows.scheduleReboot(v)
	p.publish(api.Event{Type: api.EventDone, Release: v, Slot: rec.Bootname, Bundle: res.Bundle})
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
	cfg := p.cfg()
	if err := saveProof(cfg.Daemon.StateDir, rec.Bootname, plan.proof); err != nil {
		return fmt.Errorf("keeping the signed manifest of slot %s: %w", rec.Bootname, err)
	}
	m := res.Manifest
	rec.Active, rec.Checkpoint = false, nil
	delete(rec.NotBootable, rec.Bootname)
	if rec.Installed == nil {
		rec.Installed = map[string]string{}
	}
	rec.Installed[rec.Bootname] = m.Version
	// The release's MCU firmware, verified by rootfs: fanned out after
	// the commit (the paths the install returned, nothing listed).
	var payloads []string
	for _, m := range res.MCU {
		if m.Path != "" {
			payloads = append(payloads, m.Path)
		}
	}
	notes, err := p.store.announce(rec, m.Version, m.SecurityCounter, payloads)
	if err != nil {
		return err
	}
	fault.Point("install.announced")
	if err := plan.chooser.SetPrimaryNoting(rec.Bootname, cfg.Boot.PrimaryTries, notes); err != nil {
		return err
	}
	fault.Point("install.switched")
	err = p.store.switched()
	fault.Point("install.done")
	return err
}

func (p *installPart) status(s *api.Status) {
	rec := p.store.load()
	cfg := p.cfg()
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
