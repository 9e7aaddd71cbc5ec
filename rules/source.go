package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Source supplies the Plan in force. Implementations swap whole Plans
// atomically; see FileSource.Current for the per-request contract.
type Source interface {
	// Current returns the plan in force. Call it once per request and use
	// that plan for the whole request.
	Current() *Plan
}

// Static is a Source whose plan never changes; for tests and one-shot
// tools.
func Static(p *Plan) Source { return staticSource{p} }

type staticSource struct{ p *Plan }

func (s staticSource) Current() *Plan { return s.p }

// Hooks let a metrics layer observe a FileSource without this package
// importing one. Each is optional and is called synchronously, after the
// event, from the goroutine that loaded the file; they must be quick.
type Hooks struct {
	// Loaded is called after a plan was put in force (at start and on
	// every successful reload) with how long parsing and compiling took.
	Loaded func(p *Plan, at time.Time, took time.Duration)
	// Refused is called when a changed file was refused and the last
	// good plan stayed in force.
	Refused func(err error)
}

// FileSourceOptions configure NewFileSource. The zero value is usable.
type FileSourceOptions struct {
	// Logger receives reload outcomes; nil discards them.
	Logger *slog.Logger
	// Recorder receives an audit event for every load and refusal; nil
	// records nothing.
	Recorder audit.Recorder
	// Hooks observe loads and refusals.
	Hooks Hooks
	// Stats is shared by every plan the source compiles; nil makes one.
	Stats *Stats
	// PollInterval is how often Run checks the file. Default 1s.
	PollInterval time.Duration
	// Debounce is how long the file must stay unchanged before Run loads
	// it, so that an editor's several writes are loaded once. Default
	// 200ms.
	Debounce time.Duration
}

// Status is a snapshot of a FileSource, for metrics and health checks.
type Status struct {
	Hash     string        // of the plan in force
	LoadedAt time.Time     // when it was put in force
	LoadTook time.Duration // how long parsing and compiling it took
	Reloads  uint64        // successful loads since start, the first included
	Failures uint64        // refused reloads since start
	// LastError is the most recent refusal since the last successful
	// load, or nil.
	LastError error
}

// FileSource is a Source backed by a rule file that it reloads when the
// file changes (Run) or when asked (Reload, on SIGHUP).
//
// A reload parses and validates the whole file and swaps the plan in one
// atomic store; an invalid file is refused, the last good plan stays in
// force, and the refusal is logged (with the diagnostics, which quote the
// rule file and never a request), counted and audited.
type FileSource struct {
	path  string
	opt   FileSourceOptions
	log   *slog.Logger
	plan  atomic.Pointer[Plan]
	stats *Stats

	mu       sync.Mutex // serialises loads; guards the fields below
	status   Status
	lastSeen []byte // content of the last load attempt, for Run
}

// NewFileSource loads path and returns a source serving it. An invalid or
// unreadable file is an error: a proxy must not start without its rules.
func NewFileSource(path string, opt FileSourceOptions) (*FileSource, error) {
	if opt.PollInterval <= 0 {
		opt.PollInterval = time.Second
	}
	if opt.Debounce <= 0 {
		opt.Debounce = 200 * time.Millisecond
	}
	s := &FileSource{path: path, opt: opt, stats: opt.Stats, log: opt.Logger}
	if s.stats == nil {
		s.stats = &Stats{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	data, err := readRuleFile(path)
	if err != nil {
		return nil, err
	}
	if err := s.load(context.Background(), data, "start"); err != nil {
		return nil, err
	}
	return s, nil
}

// Current returns the plan in force; never nil once NewFileSource has
// succeeded.
//
// Contract for callers: take Current() once per request and use that one
// plan for matching, encrypting the request and decrypting its response.
// A reload during the request then cannot mix old and new rules within
// it. Plans are immutable and safe for concurrent use.
func (s *FileSource) Current() *Plan { return s.plan.Load() }

// Path returns the watched file.
func (s *FileSource) Path() string { return s.path }

// Status returns counters and the state of the last load.
func (s *FileSource) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Stats returns the counters shared by the plans this source compiled.
func (s *FileSource) Stats() *Stats { return s.stats }

// Reload reads the file and, if its content changed, puts it in force.
// Serve calls it on SIGHUP. It returns the refusal (an *Error for an
// invalid file) while the last good plan stays in force; an unchanged
// file is not an error and does nothing.
func (s *FileSource) Reload(ctx context.Context) error {
	data, err := readRuleFile(s.path)
	if err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.refuse(ctx, err, "reload")
		return err
	}
	return s.load(ctx, data, "reload")
}

// load compiles data and swaps it in. trigger names the cause in logs.
func (s *FileSource) load(ctx context.Context, data []byte, trigger string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSeen = data
	old := s.plan.Load()
	if old != nil && old.Hash == HashBytes(data) {
		s.status.LastError = nil
		return nil
	}
	start := time.Now()
	plan, diags, err := CompileWith(s.path, data, CompileOptions{Stats: s.stats})
	took := time.Since(start)
	if err != nil {
		if old == nil {
			return err // at start: the caller refuses to run
		}
		s.refuse(ctx, err, trigger)
		return err
	}
	summary := "initial load"
	action := "rules.load"
	details := map[string]string{"source": s.path, "new_hash": plan.Hash, "trigger": trigger}
	flagged := 0
	if old != nil {
		action = "rules.reload"
		diff := Compare(old, plan)
		summary, flagged = diff.Summary(), diff.Flagged()
		details["old_hash"] = old.Hash
	}
	details["diff"] = summary
	if s.opt.Recorder != nil {
		ev := audit.Event{Time: time.Now().UTC(), Actor: actorOf(ctx), Action: action, Rules: plan.Hash, Outcome: "ok", Details: details}
		if rerr := s.opt.Recorder.Record(ctx, ev); rerr != nil {
			// A rule change that cannot be audited does not happen: the
			// audit trail is what a compliance reviewer relies on.
			err := fmt.Errorf("rules: %s: not put in force, the audit log refused the event: %w", s.path, rerr)
			if old == nil {
				return err
			}
			s.refuse(ctx, err, trigger)
			return err
		}
	}
	s.plan.Store(plan)
	now := time.Now()
	s.status.Hash, s.status.LoadedAt, s.status.LoadTook = plan.Hash, now, took
	s.status.Reloads++
	s.status.LastError = nil
	_, warnings := CountDiagnostics(diags)
	attrs := []any{"source", s.path, "hash", plan.Hash, "routes", len(plan.Routes), "warnings", warnings, "took", took, "trigger", trigger}
	switch {
	case flagged > 0:
		// Protection removed or weakened (what dual control guards in
		// the admin API): worth a WARN, whoever made the change.
		attrs = append(attrs, "old_hash", old.Hash, "diff", summary, "flagged", flagged)
		s.log.Warn("rules: reloaded, and the change removes or weakens protection", attrs...)
	case old != nil:
		attrs = append(attrs, "old_hash", old.Hash, "diff", summary)
		s.log.Info("rules: reloaded", attrs...)
	default:
		s.log.Info("rules: loaded", attrs...)
	}
	for _, d := range diags {
		s.log.Warn("rules: "+d.Message, "source", s.path, "line", d.Line, "col", d.Col, "hint", d.Hint)
	}
	if s.opt.Hooks.Loaded != nil {
		s.opt.Hooks.Loaded(plan, now, took)
	}
	return nil
}

// refuse records a refused reload. s.mu is held.
func (s *FileSource) refuse(ctx context.Context, err error, trigger string) {
	s.status.Failures++
	s.status.LastError = err
	cur := s.plan.Load()
	attrs := []any{"source", s.path, "kept_hash", cur.Hash, "trigger", trigger}
	var re *Error
	if errors.As(err, &re) {
		var diags []string
		for _, d := range re.Diagnostics {
			if d.IsError() {
				diags = append(diags, d.String())
			}
		}
		attrs = append(attrs, "errors", diags)
	} else {
		attrs = append(attrs, "err", err.Error())
	}
	s.log.Error("rules: reload refused, the last good rules stay in force", attrs...)
	if s.opt.Recorder != nil {
		ev := audit.Event{Time: time.Now().UTC(), Actor: actorOf(ctx), Action: "rules.reload", Rules: cur.Hash, Outcome: "error",
			Reason: "invalid rule file refused; last good rules stay in force", Details: map[string]string{"source": s.path, "trigger": trigger, "error": err.Error()}}
		if rerr := s.opt.Recorder.Record(ctx, ev); rerr != nil {
			s.log.Error("rules: audit event for a refused reload failed", "err", rerr)
		}
	}
	if s.opt.Hooks.Refused != nil {
		s.opt.Hooks.Refused(err)
	}
}

// Run watches the file until ctx ends, reloading it when its content
// changes. It polls: every PollInterval it reads the file (a rule file is
// a few kilobytes) and compares the bytes with the last ones it tried, so
// it sees in-place writes, atomic renames and Kubernetes ConfigMap symlink
// swaps alike, on any filesystem, and an invalid file is refused once,
// not once per poll. A change is loaded once it has been stable for
// Debounce. Panics are recovered and logged; Run keeps going.
func (s *FileSource) Run(ctx context.Context) error {
	if audit.ActorFrom(ctx) == "unknown" {
		ctx = audit.WithActor(ctx, "proxy:rules-watcher")
	}
	t := time.NewTicker(s.opt.PollInterval)
	defer t.Stop()
	for {
		s.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll does one check, with panics contained.
func (s *FileSource) poll(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("rules: watcher panic recovered", "panic", fmt.Sprint(r))
		}
	}()
	data, changed := s.readChanged()
	if !changed {
		return
	}
	// Debounce: wait until two reads Debounce apart agree.
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.opt.Debounce):
		}
		again, err := readRuleFile(s.path)
		if err != nil {
			data = nil
			break
		}
		if bytes.Equal(again, data) {
			break
		}
		data = again
	}
	if data == nil {
		// Unreadable (being replaced, or removed): refuse it once.
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.lastSeen != nil {
			s.lastSeen = nil
			s.refuse(ctx, fmt.Errorf("rules: %s: unreadable, keeping the last good rules", s.path), "watch")
		}
		return
	}
	_ = s.load(ctx, data, "watch")
}

// readChanged reads the file and reports whether it differs from the last
// content tried.
func (s *FileSource) readChanged() ([]byte, bool) {
	data, err := readRuleFile(s.path)
	s.mu.Lock()
	last := s.lastSeen
	s.mu.Unlock()
	if err != nil {
		return nil, last != nil
	}
	return data, last == nil || !bytes.Equal(data, last)
}

// actorOf attributes an event to the context's actor, or to the proxy
// itself (loading at start, or a caller that set none).
func actorOf(ctx context.Context) string {
	if a := audit.ActorFrom(ctx); a != "unknown" {
		return a
	}
	return "proxy"
}

var (
	_ Source = (*FileSource)(nil)
	_ Source = staticSource{}
)
