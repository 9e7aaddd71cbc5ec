package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Jobs runs sweeps in the background of `sidecrypt serve`, as the admin
// API asks (start, pause, resume, status). The requests are written into
// the collections' sweep notes in the keystore, which every sidecar of a
// deployment shares; the one sidecar that leads (the etcd election, or
// the only one) picks queued runs up and sweeps them one at a time. A
// leader that stops leading (or shuts down) stops at a checkpoint, and
// the next leader resumes from it. A pause is a note change too: the
// running sweep sees it at its next checkpoint, within a page.
type Jobs struct {
	c      JobsConfig
	kick   chan struct{}
	mu     sync.Mutex
	active string // collection being swept by this process, "" when idle
	// retryAt backs off runs that stopped on an error.
	retryAt map[string]time.Time
	backoff map[string]time.Duration
}

// JobsConfig configures Jobs.
type JobsConfig struct {
	// Open builds a Runner on the rules in force and the datastore.
	Open func() (*Runner, error)
	// Notes is the keystore.
	Notes Notes
	// Leader reports whether this process may sweep now; nil: always.
	Leader func() bool
	// Interval between looks for queued runs. Default 5s.
	Interval time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// NewJobs returns the background sweeps' controller.
func NewJobs(c JobsConfig) *Jobs {
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Leader == nil {
		c.Leader = func() bool { return true }
	}
	return &Jobs{c: c, kick: make(chan struct{}, 1), retryAt: map[string]time.Time{}, backoff: map[string]time.Duration{}}
}

// StartRequest asks for background sweeps.
type StartRequest struct {
	// Collection is a concrete collection, or a pattern ("tenant-*")
	// that names every matching one.
	Collection string
	Spec
	// Restart drops an unfinished run of the same kind.
	Restart bool
}

// Start queues a sweep of each collection the request names and returns
// their states. The leader starts them within Interval.
func (j *Jobs) Start(ctx context.Context, req StartRequest) ([]*State, error) {
	r, err := j.c.Open()
	if err != nil {
		return nil, err
	}
	cols := []string{req.Collection}
	if strings.Contains(req.Collection, "*") {
		if cols, err = r.Sweeper().Collections(ctx, req.Collection); err != nil {
			return nil, err
		}
		if len(cols) == 0 {
			return nil, fmt.Errorf("sweep: no collection of the datastore matches %q", req.Collection)
		}
	}
	rules := r.c.Rules()
	var out []*State
	for _, name := range cols {
		col := rules.Schema.Match(name)
		if col == nil && !req.DryRun && !req.DecryptRemoved {
			return out, fmt.Errorf("sweep: the rules in force protect no collection named %q: nothing to encrypt or rotate (a dry run still counts its tokens)", name)
		}
		st, err := Update(ctx, j.c.Notes, name, func(st *State) error {
			st.Collection = name
			if col != nil {
				st.Rule = col.Name
			}
			cur := *slot(st, req.DryRun)
			if cur != nil && cur.State != StateDone && !req.Restart {
				if cur.State == StateRunning && ownerAlive(cur.Owner, cur.Heartbeat, j.c.Now()) {
					return fmt.Errorf("%w (%s)", ErrBusy, cur.Owner)
				}
				return fmt.Errorf("%w (%s, started %s with %s): resume it, or start over with restart",
					ErrUnfinished, cur.State, cur.Started.UTC().Format(time.RFC3339), describeSpec(cur.Options))
			}
			*slot(st, req.DryRun) = &Run{ID: newID(), Runner: RunnerJob, State: StateQueued, Options: req.Spec,
				Started: j.c.Now(), Total: -1, Actor: audit.ActorFrom(ctx)}
			st.Desired = "run"
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("sweep: %s: %w", name, err)
		}
		out = append(out, st)
	}
	j.Trigger()
	return out, nil
}

// Pause asks the collection's background sweeps to stop at their next
// checkpoint; queued ones do not start.
func (j *Jobs) Pause(ctx context.Context, collection string) (*State, error) {
	return Update(ctx, j.c.Notes, collection, func(st *State) error {
		if st.Sweep == nil && st.DryRun == nil {
			return fmt.Errorf("sweep: %q has never been swept", collection)
		}
		st.Desired = "pause"
		for _, r := range []*Run{st.Sweep, st.DryRun} {
			if r != nil && (r.State == StateQueued || r.State == StateInterrupted) {
				r.State = StatePaused
			}
		}
		return nil
	})
}

// Resume lets the collection's paused or interrupted background sweeps
// go on from their checkpoints.
func (j *Jobs) Resume(ctx context.Context, collection string) (*State, error) {
	st, err := Update(ctx, j.c.Notes, collection, func(st *State) error {
		n := 0
		for _, r := range []*Run{st.Sweep, st.DryRun} {
			if r != nil && r.Runner == RunnerJob && (r.State == StatePaused || r.State == StateInterrupted) {
				r.State = StateQueued
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("sweep: %q has no paused or interrupted background sweep (a `sidecrypt sweep` run is resumed by running it again)", collection)
		}
		st.Desired = "run"
		return nil
	})
	if err == nil {
		j.mu.Lock()
		delete(j.retryAt, collection)
		delete(j.backoff, collection)
		j.mu.Unlock()
		j.Trigger()
	}
	return st, err
}

// Approve records an approved grant to decrypt removed fields of a
// collection (dual control, from the admin API's approvals). When queue
// is set, a background sweep that uses it is queued too.
func (j *Jobs) Approve(ctx context.Context, collection string, g Grant, queue *Spec) (*State, error) {
	st, err := Update(ctx, j.c.Notes, collection, func(st *State) error {
		st.Collection = collection
		st.Grant = &g
		if queue != nil {
			cur := st.Sweep
			if cur != nil && cur.State == StateRunning && ownerAlive(cur.Owner, cur.Heartbeat, j.c.Now()) {
				return fmt.Errorf("%w (%s)", ErrBusy, cur.Owner)
			}
			spec := *queue
			spec.Grant = g.ID
			spec.DecryptRemoved = true
			st.Sweep = &Run{ID: newID(), Runner: RunnerJob, State: StateQueued, Options: spec, Started: j.c.Now(), Total: -1, Actor: audit.ActorFrom(ctx)}
			st.Desired = "run"
		}
		return nil
	})
	if err == nil && queue != nil {
		j.Trigger()
	}
	return st, err
}

// Get returns one collection's state.
func (j *Jobs) Get(ctx context.Context, collection string) (*State, error) {
	st, err := LoadState(ctx, j.c.Notes, collection)
	if err == nil && st.Sweep == nil && st.DryRun == nil && st.Last == nil {
		return nil, fmt.Errorf("sweep: %q has never been swept: %w", collection, ErrNever)
	}
	return st, err
}

// ErrNever: the collection has no sweep record.
var ErrNever = errors.New("no sweep record")

// List returns every collection's state.
func (j *Jobs) List(ctx context.Context) ([]*State, error) { return ListStates(ctx, j.c.Notes) }

// Active returns the collection this process is sweeping, or "".
func (j *Jobs) Active() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.active
}

// Trigger asks Run to look for queued sweeps now.
func (j *Jobs) Trigger() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// Run looks for queued, interrupted or orphaned background sweeps once
// at start and then every Interval (or at once after Trigger), and runs
// them one at a time while this process leads, until ctx ends.
func (j *Jobs) Run(ctx context.Context) error {
	t := time.NewTicker(j.c.Interval)
	defer t.Stop()
	for {
		for j.c.Leader() && ctx.Err() == nil && j.runNext(ctx) {
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-j.kick:
		}
	}
}

// runNext runs the next sweep that is due, if any, and reports whether
// it ran one.
func (j *Jobs) runNext(ctx context.Context) (ran bool) {
	defer func() {
		if p := recover(); p != nil {
			j.c.Logger.Error("sweep: panic recovered in a background sweep; it resumes from its checkpoint", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			ran = false
		}
	}()
	states, err := ListStates(ctx, j.c.Notes)
	if err != nil {
		j.c.Logger.Error("sweep: reading the sweep records failed", "err", err)
	}
	now := j.c.Now()
	for _, st := range states {
		if st.Desired == "pause" {
			continue
		}
		for _, run := range []*Run{st.Sweep, st.DryRun} {
			if run == nil || run.Runner != RunnerJob || !j.due(st.Collection, run, now) {
				continue
			}
			j.runOne(ctx, st.Collection, run)
			return true
		}
	}
	return false
}

// due reports whether a background run should be started or resumed.
func (j *Jobs) due(collection string, run *Run, now time.Time) bool {
	switch run.State {
	case StateQueued:
	case StateInterrupted:
		j.mu.Lock()
		at := j.retryAt[collection]
		j.mu.Unlock()
		if now.Before(at) {
			return false
		}
	case StateRunning:
		// Its owner died (or lost leadership without a checkpoint).
		if ownerAlive(run.Owner, run.Heartbeat, now) {
			return false
		}
	default:
		return false
	}
	return true
}

func (j *Jobs) runOne(ctx context.Context, collection string, run *Run) {
	r, err := j.c.Open()
	if err != nil {
		j.failed(collection, err)
		return
	}
	j.mu.Lock()
	j.active = collection
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.active = ""
		j.mu.Unlock()
	}()
	actor := "sweep"
	if run.Actor != "" {
		actor = "sweep:" + run.Actor
	}
	_, err = r.Sweep(audit.WithActor(ctx, actor), collection, Request{Spec: run.Options, Runner: RunnerJob})
	switch {
	case err == nil:
		j.mu.Lock()
		delete(j.retryAt, collection)
		delete(j.backoff, collection)
		j.mu.Unlock()
	case errors.Is(err, ErrPaused), errors.Is(err, ErrTakenOver), errors.Is(err, ErrBusy), ctx.Err() != nil:
		j.c.Logger.Info("sweep: background sweep stopped", "collection", collection, "reason", err)
	default:
		j.failed(collection, err)
	}
}

// failed backs a collection's run off after an error: 30s, doubling up
// to 10 minutes, so that a datastore outage does not spin.
func (j *Jobs) failed(collection string, err error) {
	j.mu.Lock()
	d := j.backoff[collection]
	d = min(max(2*d, 30*time.Second), 10*time.Minute)
	j.backoff[collection] = d
	j.retryAt[collection] = j.c.Now().Add(d)
	j.mu.Unlock()
	j.c.Logger.Error("sweep: background sweep stopped on an error; it resumes from its checkpoint", "collection", collection, "retry_in", d, "err", err)
	// A run that failed before it could checkpoint (its runner could not
	// even be built) is marked so that the retry waits.
	_, _ = Update(context.Background(), j.c.Notes, collection, func(st *State) error {
		if st.Sweep != nil && st.Sweep.Runner == RunnerJob && st.Sweep.State == StateQueued {
			st.Sweep.State, st.Sweep.Error = StateInterrupted, err.Error()
		}
		if st.DryRun != nil && st.DryRun.Runner == RunnerJob && st.DryRun.State == StateQueued {
			st.DryRun.State, st.DryRun.Error = StateInterrupted, err.Error()
		}
		return nil
	})
}

// Progress summarises a run for status displays: the fraction done (from
// the datastore's estimate; -1 when unknown), documents per second over
// the run, and the time left at that rate.
func Progress(run *Run, now time.Time) (fraction, perSecond float64, left time.Duration) {
	fraction = -1
	if run.Total > 0 {
		fraction = min(1, float64(run.Counts.Documents)/float64(run.Total))
	}
	end := run.Heartbeat
	if run.State == StateRunning {
		end = now
	}
	if el := end.Sub(run.Started).Seconds(); el > 0 && run.Counts.Documents > 0 {
		perSecond = float64(run.Counts.Documents) / el
		if run.Total > run.Counts.Documents && run.State != StateDone {
			left = time.Duration(float64(run.Total-run.Counts.Documents) / perSecond * float64(time.Second)).Round(time.Second)
		}
	}
	if run.State == StateDone {
		fraction = 1
	}
	return fraction, perSecond, left
}
