package sweep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// Errors a sweep stops with.
var (
	// ErrBusy: another live process is sweeping the collection.
	ErrBusy = errors.New("sweep: another process is sweeping this collection")
	// ErrUnfinished: an unfinished sweep of the collection does other
	// work than the one asked for; finish it, or start over (Restart).
	ErrUnfinished = errors.New("sweep: an unfinished sweep of this collection does other work")
	// ErrPaused: the run stopped at a checkpoint because the operator
	// asked for a pause (admin API).
	ErrPaused = errors.New("sweep: paused on request")
	// ErrTakenOver: another process took the run over (a forced start);
	// this one stopped without writing.
	ErrTakenOver = errors.New("sweep: another process took this run over")
	// ErrNeedsApproval: decrypting removed fields writes plaintext back
	// into the store, which needs an approved request (dual control).
	ErrNeedsApproval = errors.New("sweep: decrypting removed fields needs an approved request (dual control)")
	// ErrNoConcurrency: the datastore has no optimistic concurrency, so
	// a rewrite could lose an application's concurrent update.
	ErrNoConcurrency = errors.New("sweep: the datastore offers no optimistic concurrency; a rewrite could lose a concurrent update")
)

// Defaults.
const (
	// DefaultBatch is how many documents one page holds: one _changes
	// request, one _bulk_docs request and one checkpoint per page. Past a
	// few hundred, pouchdb-server's _changes feed is the bottleneck
	// (docs/BENCHMARKS.md); a kill re-reads at most one page.
	DefaultBatch = 500
	// DefaultAttempts bounds the writes of one document that keep losing
	// to concurrent updates; past it the document is counted as failed
	// and left for the next sweep.
	DefaultAttempts = 8
	// StaleAfter is how long a run on another host may go without a
	// checkpoint before it is taken for dead. On this host the process
	// id tells at once.
	StaleAfter = 2 * time.Minute
)

// Rules are the rules in force, as a sweep needs them.
type Rules struct {
	Schema *datastore.Schema
	Hash   string
}

// KeyInfo is what a sweep reads of the keystore before it starts:
// *keystore.Manager.
type KeyInfo interface {
	Get(ctx context.Context, name string) (*keystore.Key, error)
}

// Hooks let the CLI and the metrics follow a sweep. Every field may be
// nil.
type Hooks struct {
	// Progress is called after every page, with the run as checkpointed
	// and the document rate of this process since it started the run.
	Progress func(collection string, run *Run, docsPerSecond float64)
	// Page is called after every page with what it added, and the
	// rule's collection name (pattern), which metrics use as a label.
	Page func(rule string, delta *Counts)
	// Finished is called when a run reaches the end.
	Finished func(st *State)
}

// Config is what a Runner needs.
type Config struct {
	Sweeper datastore.Sweeper
	// Rules returns the rules in force (they may be reloaded between
	// runs; a run uses the rules it started with).
	Rules func() Rules
	// Keys opens and seals (a keycache.Cache, which enforces key states
	// and seal limits).
	Keys    fieldcrypt.Keyring
	KeyInfo KeyInfo
	Notes   Notes
	Audit   audit.Recorder
	Logger  *slog.Logger
	Hooks   Hooks
	// Owner identifies this process in sweep records: "host/pid" by
	// default.
	Owner string
	Now   func() time.Time
	// Batch is the page size (default DefaultBatch); Attempts bounds
	// the writes of one document (DefaultAttempts).
	Batch    int
	Attempts int
}

// Runner sweeps collections.
type Runner struct {
	c Config
}

// NewRunner returns a Runner.
func NewRunner(c Config) (*Runner, error) {
	if c.Sweeper == nil || c.Rules == nil || c.Keys == nil || c.Notes == nil {
		return nil, errors.New("sweep: a Sweeper, the rules, a keyring and a note store are required")
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Owner == "" {
		c.Owner = DefaultOwner()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	return &Runner{c: c}, nil
}

// Sweeper returns the runner's datastore access.
func (r *Runner) Sweeper() datastore.Sweeper { return r.c.Sweeper }

// DefaultOwner is "host/pid".
func DefaultOwner() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}

// ownerAlive reports whether the process that owns a run may still be
// running it.
func ownerAlive(owner string, heartbeat, now time.Time) bool {
	host, pid, ok := strings.Cut(owner, "/")
	if myHost, _ := os.Hostname(); ok && host == myHost {
		if n, err := strconv.Atoi(pid); err == nil && n > 0 {
			if n == os.Getpid() {
				return true
			}
			err := syscall.Kill(n, 0)
			return err == nil || errors.Is(err, syscall.EPERM)
		}
	}
	return now.Sub(heartbeat) < StaleAfter
}

// Request asks for one sweep of one concrete collection.
type Request struct {
	Spec
	// Runner is RunnerCLI or RunnerJob.
	Runner string
	// Restart drops an unfinished run of the same kind and starts over.
	Restart bool
	// Force takes over a run that another process seems to be running.
	Force bool
	// AllowNoConcurrency accepts a datastore without optimistic
	// concurrency (a rewrite may then lose a concurrent update).
	AllowNoConcurrency bool
}

// slot returns the state's run of the request's kind.
func slot(st *State, dry bool) **Run {
	if dry {
		return &st.DryRun
	}
	return &st.Sweep
}

// Sweep runs (or resumes) a sweep of collection to its end, and returns
// the collection's state. On an error the run is checkpointed and marked
// interrupted (or paused), so that the same request resumes it.
func (r *Runner) Sweep(ctx context.Context, collection string, req Request) (*State, error) {
	rules := r.c.Rules()
	col := rules.Schema.Match(collection)
	if col == nil {
		if !req.DryRun && !req.DecryptRemoved {
			return nil, fmt.Errorf("sweep: the rules in force protect no collection named %q: nothing to encrypt or rotate (a dry run still counts its tokens)", collection)
		}
		col = &datastore.Collection{Name: collection}
	}
	info := r.c.Sweeper.Info()
	if !req.DryRun && info.Concurrency == "" && !req.AllowNoConcurrency {
		return nil, ErrNoConcurrency
	}
	if !req.DryRun {
		if err := r.precheck(ctx, col, req.From); err != nil {
			return nil, err
		}
	}
	st, run, resumed, err := r.claim(ctx, collection, col, rules, req)
	if err != nil {
		return st, err
	}
	pl, err := newPlan(col, run.Options.From, runRemoved(run), run.Options.DecryptRemoved)
	if err != nil {
		return st, r.stop(ctx, st, run, err)
	}
	action := "sweep.start"
	if resumed {
		action = "sweep.resume"
	}
	r.record(ctx, action, collection, rules.Hash, run, "ok", "")
	r.c.Logger.Info("sweep: "+strings.TrimPrefix(action, "sweep."), "collection", collection, "run", run.ID, "dry_run", run.Options.DryRun,
		"from", fmt.Sprint(run.Options.From), "decrypt_removed", run.Options.DecryptRemoved, "walk", info.Walk, "concurrency", info.Concurrency)
	return r.loop(ctx, st, run, col, pl, rules)
}

// precheck refuses, before anything is written, a sweep whose keys
// cannot do the work: a collection key without a primary, a --from
// version that is the primary, unknown, destroyed, or compromised without
// an override.
func (r *Runner) precheck(ctx context.Context, col *datastore.Collection, from []KeyVersion) error {
	for _, name := range col.Keys() {
		if _, err := r.c.Keys.SealKey(ctx, name); err != nil {
			return fmt.Errorf("sweep: key %q cannot seal (%w): plaintext in its fields and its old tokens could not be sealed again; 'sidecrypt keys rotate %s' makes a primary version", name, err, name)
		}
	}
	for _, kv := range from {
		if r.c.KeyInfo == nil {
			break
		}
		k, err := r.c.KeyInfo.Get(ctx, kv.Key)
		if err != nil {
			return fmt.Errorf("sweep: --from %s: %w", kv, err)
		}
		v := k.Lookup(kv.Version)
		switch {
		case v == nil:
			return fmt.Errorf("sweep: --from %s: key %q has no version %d", kv, kv.Key, kv.Version)
		case k.Primary == kv.Version:
			return fmt.Errorf("sweep: --from %s is the primary version: its values are sealed under it already (rotate the key first: 'sidecrypt keys rotate %s')", kv, kv.Key)
		case v.State == keystore.StateDestroyed:
			return fmt.Errorf("sweep: --from %s is destroyed: its values can never be opened again, so they cannot be sealed again either (a dry run counts them)", kv)
		case v.State == keystore.StateCompromised && !v.OverrideUntil.After(r.c.Now()):
			return fmt.Errorf("sweep: --from %s is compromised and may not decrypt; the sweep must open its values to seal them again: 'sidecrypt keys override %s --version %d --for 4h --reason ...' (audited) allows it for the sweep's duration", kv, kv.Key, kv.Version)
		}
		if _, err := r.c.Keys.SealKey(ctx, kv.Key); err != nil {
			return fmt.Errorf("sweep: --from %s: key %q cannot seal: %w", kv, kv.Key, err)
		}
	}
	return nil
}

func runRemoved(run *Run) []FieldSpec { return run.Options.Removed }

// removedFields are the fields the rules protected when the collection
// was last swept, or that an earlier sweep found removed and left
// tokens in, and that the rules in force do not protect.
func removedFields(st *State, col *datastore.Collection) []FieldSpec {
	var out []FieldSpec
	for _, f := range append(slices.Clone(st.Fields), st.Removed...) {
		if !protects(col, f.Name) && !slices.ContainsFunc(out, func(g FieldSpec) bool { return g.Name == f.Name }) {
			out = append(out, f)
		}
	}
	return out
}

func protects(col *datastore.Collection, name string) bool {
	return slices.ContainsFunc(col.Fields, func(g *datastore.Field) bool { return g.Name == name })
}

// claim takes the collection's run of the request's kind: resumes an
// unfinished one that does the same work, or starts a new one.
func (r *Runner) claim(ctx context.Context, collection string, col *datastore.Collection, rules Rules, req Request) (*State, *Run, bool, error) {
	now := r.c.Now()
	var run *Run
	resumed := false
	st, err := Update(ctx, r.c.Notes, collection, func(st *State) error {
		st.Collection = collection
		st.Rule = col.Name
		cur := *slot(st, req.DryRun)
		run, resumed = nil, false
		if cur != nil && cur.State == StateRunning && cur.Owner != r.c.Owner && ownerAlive(cur.Owner, cur.Heartbeat, now) && !req.Force {
			return fmt.Errorf("%w (%s since %s, last checkpoint %s); wait for it, pause it, or take it over with --force",
				ErrBusy, cur.Owner, cur.Started.UTC().Format(time.RFC3339), cur.Heartbeat.UTC().Format(time.RFC3339))
		}
		spec := req.Spec
		if len(spec.Removed) == 0 {
			spec.Removed = removedFields(st, col)
		}
		if cur != nil && cur.State != StateDone && !req.Restart {
			if !cur.Options.same(spec) {
				return fmt.Errorf("%w (started %s with %s); run it to its end with the same options, or start over with --restart",
					ErrUnfinished, cur.Started.UTC().Format(time.RFC3339), describeSpec(cur.Options))
			}
			run = cur
			run.Options.Rate = req.Rate
			run.Options.Compact = req.Compact
			resumed = cur.Cursor != "" || cur.Counts.Documents > 0
		} else {
			run = &Run{ID: newID(), Options: spec, Started: now, Total: -1}
			resumed = false
		}
		if spec.DecryptRemoved {
			if err := checkGrant(st, run.Options, now); err != nil {
				return err
			}
		}
		if run.Actor == "" {
			run.Actor = audit.ActorFrom(ctx)
		}
		run.Runner = req.Runner
		run.Owner = r.c.Owner
		run.State = StateRunning
		run.Heartbeat = now
		run.Error = ""
		if st.Desired == "pause" && req.Runner != RunnerJob {
			st.Desired = ""
		}
		*slot(st, req.DryRun) = run
		return nil
	})
	if err != nil {
		return st, nil, false, err
	}
	if run.Total < 0 && !resumed {
		if n, err := r.c.Sweeper.Count(ctx, collection); err == nil {
			run.Total = n
		}
	}
	return st, run, resumed, nil
}

// checkGrant checks that an approved, unexpired grant allows decrypting
// every removed field of the run.
func checkGrant(st *State, spec Spec, now time.Time) error {
	g := st.Grant
	switch {
	case len(spec.Removed) == 0:
		return errors.New("sweep: --decrypt-removed, but no field of the collection had its protection removed (name them with --removed-fields FIELD:KEY)")
	case g == nil || spec.Grant == "" || g.ID != spec.Grant:
		return fmt.Errorf("%w: ask for one with POST /v1/sweeps {\"collection\": %q, \"decrypt_removed\": true, ...}; another principal approves it ('sidecrypt approvals approve ID'); then pass --approval ID", ErrNeedsApproval, st.Collection)
	case !now.Before(g.Expires):
		return fmt.Errorf("%w: approval %s expired at %s", ErrNeedsApproval, g.ID, g.Expires.UTC().Format(time.RFC3339))
	}
	for _, f := range spec.Removed {
		if !slices.ContainsFunc(g.Fields, func(h FieldSpec) bool { return h.Name == f.Name && h.Key == f.Key }) {
			return fmt.Errorf("%w: approval %s does not cover field %q (key %s)", ErrNeedsApproval, g.ID, f.Name, f.Key)
		}
	}
	return nil
}

func describeSpec(s Spec) string {
	var parts []string
	if s.DryRun {
		parts = append(parts, "--dry-run")
	}
	if len(s.From) > 0 {
		var fs []string
		for _, kv := range s.From {
			fs = append(fs, kv.String())
		}
		parts = append(parts, "--from "+strings.Join(fs, ","))
	}
	if s.DecryptRemoved {
		parts = append(parts, "--decrypt-removed")
	}
	if len(s.Removed) > 0 {
		var fs []string
		for _, f := range s.Removed {
			fs = append(fs, f.Name+":"+f.Key)
		}
		parts = append(parts, "removed fields "+strings.Join(fs, ","))
	}
	if len(parts) == 0 {
		return "no options"
	}
	return strings.Join(parts, " ")
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loop walks the collection page by page from the run's cursor.
func (r *Runner) loop(ctx context.Context, st *State, run *Run, col *datastore.Collection, pl *plan, rules Rules) (*State, error) {
	limit := r.c.Batch
	var lim *rate.Limiter
	if run.Options.Rate > 0 {
		// Pages of about two seconds' worth, so that checkpoints (and
		// a pause) come often at a low rate.
		limit = max(1, min(limit, int(run.Options.Rate*2)))
		lim = rate.NewLimiter(rate.Limit(run.Options.Rate), limit)
	}
	prim := r.primaries(ctx)
	start := r.c.Now()
	startDocs := run.Counts.Documents
	for {
		if err := ctx.Err(); err != nil {
			return st, r.stop(ctx, st, run, err)
		}
		page, err := r.c.Sweeper.Scan(ctx, st.Collection, run.Cursor, limit)
		if err != nil {
			return st, r.stop(ctx, st, run, err)
		}
		if lim != nil && len(page.Docs) > 0 {
			if err := lim.WaitN(ctx, min(len(page.Docs), limit)); err != nil {
				return st, r.stop(ctx, st, run, err)
			}
		}
		delta := &Counts{}
		for reason, n := range page.Skipped {
			incN(&delta.Skipped, reason, int64(n))
		}
		perr := r.page(ctx, st.Collection, page.Docs, pl, prim, run.Options.DryRun, delta)
		mergeCounts(&run.Counts, delta)
		if r.c.Hooks.Page != nil {
			// What was written is counted, whatever happens next.
			r.c.Hooks.Page(st.Rule, delta)
		}
		if perr != nil {
			return st, r.stop(ctx, st, run, perr)
		}
		if len(page.Cursor) > datastore.MaxCursorLen {
			return st, r.stop(ctx, st, run, fmt.Errorf("sweep: the datastore's cursor is %d bytes, more than %d", len(page.Cursor), datastore.MaxCursorLen))
		}
		run.Cursor = page.Cursor
		run.Heartbeat = r.c.Now()
		if page.Done {
			run.State = StateDone
			run.Finished = run.Heartbeat
			st.Last = inventoryOf(run, rules.Hash)
			if !run.Options.DryRun {
				st.Fields = specsOf(col)
				st.RulesHash = rules.Hash
				st.Removed = nil
				for _, f := range run.Options.Removed {
					if run.Counts.Removed[f.Name] > 0 && !protects(col, f.Name) {
						st.Removed = append(st.Removed, f)
					}
				}
				if run.Options.DecryptRemoved {
					st.Grant = nil
				}
			}
		}
		if err := r.checkpoint(ctx, &st, run); err != nil {
			if errors.Is(err, ErrPaused) || errors.Is(err, ErrTakenOver) {
				r.record(ctx, "sweep.stop", st.Collection, rules.Hash, run, "ok", err.Error())
				return st, err
			}
			return st, r.stop(ctx, st, run, err)
		}
		if r.c.Hooks.Progress != nil {
			docs := float64(run.Counts.Documents - startDocs)
			var ps float64
			if el := r.c.Now().Sub(start).Seconds(); el > 0 {
				ps = docs / el
			}
			r.c.Hooks.Progress(st.Collection, run, ps)
		}
		if page.Done {
			r.record(ctx, "sweep.finish", st.Collection, rules.Hash, run, outcomeOf(run), "")
			if run.Options.Compact && !run.Options.DryRun {
				if err := r.compact(ctx, &st, run, rules.Hash); err != nil {
					return st, err
				}
			}
			r.c.Logger.Info("sweep: done", "collection", st.Collection, "run", run.ID, "documents", run.Counts.Documents,
				"rewritten", run.Counts.Rewritten, "values", run.Counts.Values(), "failed", run.Counts.Failed)
			if r.c.Hooks.Finished != nil {
				r.c.Hooks.Finished(st)
			}
			return st, nil
		}
	}
}

// compact asks the datastore to drop earlier document versions, which
// still hold what the sweep replaced, and records when it accepted.
func (r *Runner) compact(ctx context.Context, stp **State, run *Run, rulesHash string) error {
	c, ok := r.c.Sweeper.(datastore.Compactor)
	if !ok {
		r.c.Logger.Info("sweep: this datastore keeps no earlier document versions to compact", "collection", (*stp).Collection)
		return nil
	}
	if err := c.Compact(ctx, (*stp).Collection); err != nil {
		r.record(ctx, "sweep.compact", (*stp).Collection, rulesHash, run, "error", err.Error())
		return fmt.Errorf("sweep: the sweep is done, but compacting failed (earlier revisions still hold the old values; compact the database by hand): %w", err)
	}
	run.Compacted = r.c.Now()
	r.record(ctx, "sweep.compact", (*stp).Collection, rulesHash, run, "ok", "")
	return r.checkpoint(ctx, stp, run)
}

func outcomeOf(run *Run) string {
	if run.Counts.Failed > 0 || run.Counts.Blocked > 0 || len(run.Counts.Unopenable) > 0 {
		return "error"
	}
	return "ok"
}

// primaries caches each key's primary version for the run: the sweep
// decides from it which tokens to seal again. A key rotated during the
// sweep leaves tokens of the version that was primary at the start,
// which the next sweep moves.
func (r *Runner) primaries(ctx context.Context) func(string) (uint32, error) {
	cache := map[string]uint32{}
	errs := map[string]error{}
	return func(name string) (uint32, error) {
		if v, ok := cache[name]; ok {
			return v, nil
		}
		if err, ok := errs[name]; ok {
			return 0, err
		}
		k, err := r.c.Keys.SealKey(ctx, name)
		if err != nil {
			errs[name] = err
			return 0, err
		}
		cache[name] = k.Version()
		return k.Version(), nil
	}
}

// pending is one document on its way to being written.
type pending struct {
	doc     datastore.StoredDoc
	out     *Outcome
	attempt int
}

// page processes the documents of one page: computes each one's
// rewrite, writes the changed ones, and retries those that lost to a
// concurrent update on their newer version.
func (r *Runner) page(ctx context.Context, collection string, docs []datastore.StoredDoc, pl *plan, prim func(string) (uint32, error), dry bool, c *Counts) error {
	var todo []*pending
	for _, d := range docs {
		c.Documents++
		p, err := r.prepare(ctx, pl, d, prim, dry, c)
		if err != nil {
			return err
		}
		if p != nil {
			todo = append(todo, p)
		}
	}
	for len(todo) > 0 {
		batch := make([]datastore.StoredDoc, len(todo))
		for i, p := range todo {
			batch[i] = datastore.StoredDoc{ID: p.doc.ID, Version: p.doc.Version, Body: p.out.Body}
		}
		results, werr := r.c.Sweeper.Write(ctx, collection, batch)
		if werr != nil && ctx.Err() != nil {
			return werr
		}
		var again []*pending
		for i, p := range todo {
			p.attempt++
			var res datastore.WriteResult
			if werr == nil && i < len(results) {
				res = results[i]
			} else {
				// The whole call failed: the document may or may not
				// be written; read it again.
				res = datastore.WriteResult{Conflict: true}
			}
			switch {
			case res.Conflict:
				c.Conflicts++
				if p.attempt >= r.c.Attempts {
					r.c.Logger.Warn("sweep: a document kept changing under the sweep; it is left for the next sweep", "collection", collection, "attempts", p.attempt)
					r.failed(ctx, pl, p.doc, prim, c)
					continue
				}
				fresh, err := r.c.Sweeper.Get(ctx, collection, p.doc.ID)
				if errors.Is(err, datastore.ErrNoDocument) {
					incN(&c.Skipped, "deleted", 1)
					continue
				}
				if err != nil {
					if werr != nil {
						return fmt.Errorf("%w (and reading the document again: %v)", werr, err)
					}
					return err
				}
				q, err := r.prepare(ctx, pl, *fresh, prim, dry, c)
				if err != nil {
					return err
				}
				if q != nil {
					q.attempt = p.attempt
					again = append(again, q)
				}
			case res.Err != nil:
				r.c.Logger.Warn("sweep: the datastore refused a rewritten document; it is left as it was", "collection", collection, "err", res.Err)
				r.failed(ctx, pl, p.doc, prim, c)
			default:
				c.Rewritten++
				c.add(p.out)
			}
		}
		if len(again) > 0 {
			// A short pause lets the application's burst of writes to
			// the same documents settle.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(len(again)) * time.Millisecond):
			}
		}
		todo = again
	}
	return nil
}

// prepare computes one document's rewrite; it returns nil when there is
// nothing to write (the counts are added then).
func (r *Runner) prepare(ctx context.Context, pl *plan, d datastore.StoredDoc, prim func(string) (uint32, error), dry bool, c *Counts) (*pending, error) {
	var out *Outcome
	var err error
	if dry {
		out, err = pl.inventory(ctx, d.Body, prim)
	} else {
		out, err = pl.apply(ctx, d.Body, r.c.Keys, prim)
	}
	var de *errDocument
	if errors.As(err, &de) {
		incN(&c.Skipped, "unreadable", 1)
		c.Failed++
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if dry || out.Body == nil {
		c.add(out)
		return nil, nil
	}
	return &pending{doc: d, out: out}, nil
}

// failed counts a document that stays as it was.
func (r *Runner) failed(ctx context.Context, pl *plan, d datastore.StoredDoc, prim func(string) (uint32, error), c *Counts) {
	c.Failed++
	if o, err := pl.inventory(ctx, d.Body, prim); err == nil {
		o.Reencrypted, o.Encrypted, o.Decrypted = 0, 0, 0
		// What it still holds in plaintext stays in plaintext.
		c.add(o)
	}
}

// checkpoint writes the run into the collection's state. When another
// writer changed the state meanwhile (the admin API asking for a pause, a
// forced take-over), it reads it again and decides.
func (r *Runner) checkpoint(ctx context.Context, stp **State, run *Run) error {
	st := *stp
	for attempt := 1; ; attempt++ {
		*slot(st, run.Options.DryRun) = run
		err := st.save(ctx, r.c.Notes)
		if err == nil {
			*stp = st
			return nil
		}
		if !errors.Is(err, keystore.ErrConflict) || attempt >= 20 {
			return err
		}
		fresh, err := LoadState(ctx, r.c.Notes, st.Collection)
		if err != nil {
			return err
		}
		cur := *slot(fresh, run.Options.DryRun)
		if cur == nil || cur.ID != run.ID || cur.Owner != run.Owner {
			return ErrTakenOver
		}
		if run.State == StateDone {
			fresh.Last = st.Last
			if !run.Options.DryRun {
				fresh.Fields, fresh.RulesHash, fresh.Removed = st.Fields, st.RulesHash, st.Removed
			}
			if run.Options.DecryptRemoved {
				fresh.Grant = nil
			}
		}
		st = fresh
		if st.Desired == "pause" && run.State == StateRunning {
			run.State = StatePaused
			*slot(st, run.Options.DryRun) = run
			if err := st.save(ctx, r.c.Notes); err != nil {
				return err
			}
			*stp = st
			return ErrPaused
		}
	}
}

// stop checkpoints an interrupted run (with a context that outlives a
// cancelled one) and returns cause.
func (r *Runner) stop(ctx context.Context, st *State, run *Run, cause error) error {
	run.State = StateInterrupted
	run.Error = cause.Error()
	run.Heartbeat = r.c.Now()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.checkpoint(wctx, &st, run); err != nil && !errors.Is(err, ErrPaused) {
		r.c.Logger.Error("sweep: could not record the checkpoint of an interrupted sweep; it resumes from the one before", "collection", st.Collection, "err", err)
	}
	r.record(wctx, "sweep.stop", st.Collection, "", run, "error", cause.Error())
	return cause
}

// record writes an audit event with the run's counts (numbers only).
func (r *Runner) record(ctx context.Context, action, collection, rulesHash string, run *Run, outcome, reason string) {
	d := map[string]string{
		"collection": collection, "run": run.ID, "runner": run.Runner, "dry_run": strconv.FormatBool(run.Options.DryRun),
		"documents": strconv.FormatInt(run.Counts.Documents, 10), "rewritten": strconv.FormatInt(run.Counts.Rewritten, 10),
		"reencrypted": strconv.FormatInt(run.Counts.Reencrypted, 10), "encrypted": strconv.FormatInt(run.Counts.Encrypted, 10),
		"decrypted": strconv.FormatInt(run.Counts.Decrypted, 10), "failed": strconv.FormatInt(run.Counts.Failed, 10),
	}
	if len(run.Options.From) > 0 {
		d["from"] = describeSpec(Spec{From: run.Options.From})
	}
	if run.Options.DecryptRemoved {
		d["decrypt_removed"] = describeSpec(Spec{Removed: run.Options.Removed})
		d["approval"] = run.Options.Grant
	}
	for _, k := range slices.Sorted(maps.Keys(run.Counts.Tokens)) {
		d["tokens."+k] = strconv.FormatInt(run.Counts.Tokens[k], 10)
	}
	if err := r.c.Audit.Record(ctx, audit.Event{Action: action, Rules: rulesHash, Outcome: outcome, Reason: reason, Details: d}); err != nil {
		r.c.Logger.Error("sweep: audit write failed", "action", action, "err", err)
	}
}

func incN(m *map[string]int64, k string, n int64) {
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[k] += n
}

// mergeCounts adds d to c.
func mergeCounts(c, d *Counts) {
	c.Documents += d.Documents
	c.Rewritten += d.Rewritten
	c.Failed += d.Failed
	c.Conflicts += d.Conflicts
	c.Blocked += d.Blocked
	c.Reencrypted += d.Reencrypted
	c.Encrypted += d.Encrypted
	c.Decrypted += d.Decrypted
	for _, pair := range []struct{ dst, src *map[string]int64 }{
		{&c.Skipped, &d.Skipped}, {&c.Tokens, &d.Tokens}, {&c.Plaintext, &d.Plaintext},
		{&c.Unopenable, &d.Unopenable}, {&c.Removed, &d.Removed}, {&c.Misplaced, &d.Misplaced},
	} {
		for k, n := range *pair.src {
			incN(pair.dst, k, n)
		}
	}
}
