package main

// sidecrypt sweep: rewrite a collection in place (datastore/sweep), from
// the command line, talking to the datastore directly (SIDECRYPT_UPSTREAM)
// with the same environment as serve.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/sweep"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/proxy"
	"github.com/sidecrypt/sidecrypt/rules"
)

// keyVersionList collects --from values: "pii:3", "pii:3,contact:1".
type keyVersionList []sweep.KeyVersion

func (l *keyVersionList) String() string { return "" }
func (l *keyVersionList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		kv, err := sweep.ParseKeyVersion(part)
		if err != nil {
			return err
		}
		*l = append(*l, kv)
	}
	return nil
}

// removedList collects --removed-fields: "nickname:pii,card.cvv:card".
type removedList []sweep.FieldSpec

func (l *removedList) String() string { return "" }
func (l *removedList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		i := strings.LastIndexByte(part, ':')
		if i <= 0 || i == len(part)-1 {
			return fmt.Errorf("%q is not FIELD:KEY (the field as the rule file named it, and the key that protected it)", part)
		}
		name, key := strings.TrimSpace(part[:i]), strings.TrimSpace(part[i+1:])
		path, err := rules.SplitFieldName(name)
		if err != nil {
			return fmt.Errorf("%q: %v", name, err)
		}
		*l = append(*l, sweep.FieldSpec{Name: name, Path: path, Key: key})
	}
	return nil
}

func cmdSweep(a *app, args []string) int {
	fs := a.flags("sweep", `sidecrypt sweep COLLECTION [--dry-run] [--from KEY:VERSION] [--rate N] [--json]
               [--decrypt-removed --approval ID] [--removed-fields FIELD:KEY,...]

Rewrites the documents of a protected collection in place, through its
datastore profile, talking to the datastore directly (SIDECRYPT_UPSTREAM)
with the rules (SIDECRYPT_RULES), keys and HSM that serve uses:

  - values sealed under a version that is not the key's primary (or only
    those of the versions named with --from) are sealed again under the
    primary: same key, same mode, same place;
  - plaintext in protected fields (data from before sidecrypt) is
    encrypted exactly as the proxy encrypts a document written through it;
  - with --decrypt-removed, values of fields whose protection was removed
    are written back in plaintext; that needs a request approved by a
    second person (dual control): POST /v1/sweeps on a running sidecar,
    'sidecrypt approvals approve ID', then --approval ID here.

Each write is conditional on the document's revision (CouchDB _rev): an
application writing at the same time loses nothing, and nothing is ever
in plaintext in the store. The sweep checkpoints after every page into the
keystore: stopped at any point (^C, kill -9), the same command resumes
where it stopped. COLLECTION may be a pattern ("tenant-*").

The datastore keeps earlier revisions of each rewritten document (old
tokens, legacy plaintext) until it is compacted: --compact asks it to drop
them when the sweep is done.

--dry-run writes nothing and counts values per key version and plaintext
values per field: the inventory to check before 'keys destroy' (which
shows the last count). Progress goes to stderr; the result to stdout.`+envHelp+`
SIDECRYPT_UPSTREAM (the datastore) and SIDECRYPT_RULES (a version 2 rule file).`)
	dry := fs.Bool("dry-run", false, "count values per key version and plaintext per field; write nothing")
	var from keyVersionList
	fs.Var(&from, "from", "re-encrypt only values of these versions: KEY:VERSION (repeatable, or comma-separated); default every version that is not the primary")
	rateFlag := fs.Float64("rate", 0, "documents per second at most (0: as fast as the datastore answers)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	decrypt := fs.Bool("decrypt-removed", false, "write values of fields whose protection was removed back in plaintext (needs --approval)")
	approval := fs.String("approval", "", "the approved dual-control request that allows --decrypt-removed")
	var removed removedList
	fs.Var(&removed, "removed-fields", "fields whose protection was removed, FIELD:KEY (default: those the last sweep's rules protected and the rules in force do not)")
	restart := fs.Bool("restart", false, "drop an unfinished sweep of the collection and start over")
	force := fs.Bool("force", false, "take over a sweep that another process seems to be running")
	batch := fs.Int("batch", 0, "documents per page (default 500)")
	compact := fs.Bool("compact", false, "when done, have the datastore drop earlier revisions of documents, which still hold the old values (CouchDB: POST /{db}/_compact, admin rights)")
	allowLost := fs.Bool("allow-lost-updates", false, "sweep a datastore without optimistic concurrency (a concurrent update by the application may be lost)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one COLLECTION (or pattern)")
	}
	if *decrypt && *approval == "" {
		return a.usageError(fs, "--decrypt-removed writes protected values back in plaintext: it needs --approval ID, a request approved by a second person (POST /v1/sweeps {\"decrypt_removed\": true} on a running sidecar, then 'sidecrypt approvals approve ID')")
	}
	if *decrypt && *dry {
		return a.usageError(fs, "--dry-run and --decrypt-removed do not go together (a dry run counts the values of removed fields anyway)")
	}
	if *rateFlag < 0 {
		return a.usageError(fs, "--rate must be positive")
	}
	spec := sweep.Spec{DryRun: *dry, From: from, DecryptRemoved: *decrypt, Removed: removed, Rate: *rateFlag, Grant: *approval, Compact: *compact}
	req := sweep.Request{Spec: spec, Runner: sweep.RunnerCLI, Restart: *restart, Force: *force, AllowNoConcurrency: *allowLost}
	return a.runSweep(pos[0], req, *batch, *asJSON)
}

// sweepEnv is what a sweep opens: the key environment, a key cache, the
// rules and the datastore's Sweeper.
type sweepEnv struct {
	*keyEnv
	cache   *keycache.Cache
	rules   ruleSource
	closeRs func()
	profile datastore.SweepProfile
	target  datastore.SweepTarget
}

func (e *sweepEnv) Close() {
	if e.closeRs != nil {
		e.closeRs()
	}
	if e.cache != nil {
		e.cache.Close()
	}
	if e.keyEnv != nil {
		e.keyEnv.Close()
	}
}

// sweepTarget is how the sweep reaches the datastore: SIDECRYPT_UPSTREAM,
// with SIDECRYPT_UPSTREAM_CA for HTTPS.
func sweepTarget(cfg config.Config) (datastore.SweepTarget, error) {
	if cfg.Upstream == "" {
		return datastore.SweepTarget{}, errors.New("the sweep talks to the datastore directly: set SIDECRYPT_UPSTREAM to its URL (as for serve in reverse mode)")
	}
	u, err := url.Parse(cfg.Upstream)
	if err != nil || u.Host == "" {
		return datastore.SweepTarget{}, fmt.Errorf("SIDECRYPT_UPSTREAM is not a URL: %v", err)
	}
	tc, err := proxy.UpstreamTLSConfig(cfg.UpstreamCA)
	if err != nil {
		return datastore.SweepTarget{}, err
	}
	tr := &http.Transport{Proxy: nil, TLSClientConfig: tc, MaxIdleConnsPerHost: 4, ResponseHeaderTimeout: max(cfg.UpstreamTimeout, 2*time.Minute)}
	return datastore.SweepTarget{Base: u, Client: &http.Client{Transport: tr}}, nil
}

// sweepProfile returns the profile of the rules in force, which must be a
// version 2 file whose datastore can be swept.
func sweepProfile(p *rules.Plan) (datastore.SweepProfile, error) {
	if p == nil || p.Schema == nil || p.Profile == nil {
		return nil, errors.New("the sweep needs a version 2 rule file (datastore:, collections:): version 1 routes say nothing of where documents are stored")
	}
	sp, ok := p.Profile.(datastore.SweepProfile)
	if !ok {
		return nil, fmt.Errorf("the %s profile cannot sweep a store yet", p.Profile.Name())
	}
	return sp, nil
}

func (a *app) openSweep(log *slog.Logger) (*sweepEnv, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	if cfg.Rules == "" {
		return nil, errors.New("no rule file: set SIDECRYPT_RULES (the sweep applies the same version 2 rules as serve)")
	}
	target, err := sweepTarget(cfg)
	if err != nil {
		return nil, err
	}
	if isSoftware(cfg) && cfg.MasterPassphrase == "" {
		return nil, errors.New("SIDECRYPT_MASTER_PASSPHRASE is not set: the software KEK provider (SIDECRYPT_HSM=software) seals its key file with it")
	}
	ke, err := openKeyEnv(a.ctx, cfg, log, false, nil)
	if err != nil {
		return nil, err
	}
	e := &sweepEnv{keyEnv: ke, target: target}
	e.rules, _, e.closeRs, err = openRuleSource(a.ctx, cfg, ke.store, log, nil, rules.Hooks{})
	if err != nil {
		e.Close()
		return nil, err
	}
	if e.profile, err = sweepProfile(e.rules.Current()); err != nil {
		e.Close()
		return nil, err
	}
	e.cache = keycache.New(ke.manager, keycache.OptionsFromConfig(cfg))
	return e, nil
}

// runner builds a Runner on the environment.
func (e *sweepEnv) runner(log *slog.Logger, hooks sweep.Hooks, batch int) (*sweep.Runner, error) {
	sw, err := e.profile.Sweeper(e.target)
	if err != nil {
		return nil, err
	}
	return sweep.NewRunner(sweep.Config{
		Sweeper: sw,
		Rules: func() sweep.Rules {
			p := e.rules.Current()
			return sweep.Rules{Schema: p.Schema, Hash: p.Hash}
		},
		Keys: e.cache, KeyInfo: e.manager, Notes: e.manager, Audit: e.audit, Logger: log, Hooks: hooks, Batch: batch,
	})
}

func (a *app) runSweep(pattern string, req sweep.Request, batch int, asJSON bool) int {
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	log := a.quietLogger(cfg)
	env, err := a.openSweep(log)
	if err != nil {
		return a.fail(err)
	}
	defer env.Close()
	bar := newSweepBar(a.stderr, req.DryRun)
	r, err := env.runner(log, sweep.Hooks{Progress: bar.update}, batch)
	if err != nil {
		return a.fail(err)
	}
	ctx := audit.WithActor(a.ctx, cliActor())
	cols := []string{pattern}
	if strings.Contains(pattern, "*") {
		if cols, err = r.Sweeper().Collections(ctx, pattern); err != nil {
			return a.fail(err)
		}
		if len(cols) == 0 {
			return a.fail(fmt.Errorf("no collection of the datastore matches %q", pattern))
		}
	}
	var states []*sweep.State
	var failures []string
	for _, col := range cols {
		if prev, err := sweep.LoadState(ctx, env.manager, col); err == nil && !req.Restart {
			run := prev.Sweep
			if req.DryRun {
				run = prev.DryRun
			}
			if run != nil && run.State != sweep.StateDone && run.State != sweep.StateQueued {
				fmt.Fprintf(a.stderr, "sweep %s: resuming the run started %s (%s) from its checkpoint: %d document(s) done\n",
					col, formatTime(run.Started), run.State, run.Counts.Documents)
			}
		}
		bar.start(col)
		st, err := r.Sweep(ctx, col, req)
		bar.finish()
		if st != nil && err == nil {
			states = append(states, st)
		}
		if err != nil {
			switch {
			case errors.Is(err, context.Canceled):
				return a.fail(fmt.Errorf("%s: interrupted; the checkpoint is saved: run the same command again to resume", col))
			case errors.Is(err, sweep.ErrPaused):
				return a.fail(fmt.Errorf("%s: paused through the admin API at a checkpoint; run the same command again to resume", col))
			}
			return a.fail(fmt.Errorf("%s: %w", col, err))
		}
		run := st.Sweep
		if req.DryRun {
			run = st.DryRun
		}
		if !req.DryRun && (run.Counts.Failed > 0 || run.Counts.Blocked > 0 || len(run.Counts.Unopenable) > 0) {
			failures = append(failures, col)
		}
	}
	if asJSON {
		if code := a.printJSON(map[string]any{"collections": sweepViews(states, req.DryRun)}); code != exitOK {
			return code
		}
	} else {
		for _, st := range states {
			a.printSweep(ctx, env.manager, st, req.DryRun)
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(a.stderr, "sidecrypt: some values could not be rewritten in %s (see above); they stay as they were: fix the cause and run the sweep again\n", strings.Join(failures, ", "))
		return exitFail
	}
	return exitOK
}

// sweepView is a collection's result as --json prints it.
type sweepView struct {
	Collection string           `json:"collection"`
	Rule       string           `json:"rule"`
	Run        *sweep.Run       `json:"run"`
	Inventory  *sweep.Inventory `json:"inventory"`
}

func sweepViews(states []*sweep.State, dry bool) []sweepView {
	out := []sweepView{}
	for _, st := range states {
		run := st.Sweep
		if dry {
			run = st.DryRun
		}
		out = append(out, sweepView{Collection: st.Collection, Rule: st.Rule, Run: run, Inventory: st.Last})
	}
	return out
}

// printSweep prints one collection's result for people.
func (a *app) printSweep(ctx context.Context, m *keystore.Manager, st *sweep.State, dry bool) {
	run := st.Sweep
	if dry {
		run = st.DryRun
	}
	c := run.Counts
	took := run.Finished.Sub(run.Started).Round(time.Second)
	w := a.stdout
	if dry {
		fmt.Fprintf(w, "%s: inventory of %d document(s) (dry run: nothing was written)\n", st.Collection, c.Documents)
		fmt.Fprintf(w, "  a sweep would change %d value(s): %d re-encrypted under the primary, %d encrypted", c.Values(), c.Reencrypted, c.Encrypted)
		if c.Decrypted > 0 {
			fmt.Fprintf(w, ", %d decrypted", c.Decrypted)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "%s: swept %d document(s) in %s: %d rewritten, %d failed, %d conflict(s) with the application retried\n",
			st.Collection, c.Documents, took, c.Rewritten, c.Failed, c.Conflicts)
		fmt.Fprintf(w, "  values: %d re-encrypted under the primary, %d encrypted, %d decrypted\n", c.Reencrypted, c.Encrypted, c.Decrypted)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  KEY VERSION\tSTATE\tVALUES")
	states := map[string]*keystore.Key{}
	for _, k := range slices.Sorted(maps.Keys(c.Tokens)) {
		kv, _ := sweep.ParseKeyVersion(k)
		state := "?"
		key, ok := states[kv.Key]
		if !ok {
			key, _ = m.Get(ctx, kv.Key)
			states[kv.Key] = key
		}
		if key != nil {
			if v := key.Lookup(kv.Version); v != nil {
				state = string(v.State)
				if key.Primary == kv.Version {
					state += " (primary)"
				}
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", k, state, c.Tokens[k])
	}
	if len(c.Tokens) == 0 {
		fmt.Fprintln(tw, "  (none)\t\t0")
	}
	tw.Flush()
	label := "plaintext left in protected fields"
	if dry {
		label = "plaintext in protected fields"
	}
	printCounts(w, label, c.Plaintext)
	printCounts(w, "could not be opened (left as they were)", c.Unopenable)
	printCounts(w, "tokens in fields whose protection was removed (--decrypt-removed with an approval writes them back in plaintext)", c.Removed)
	printCounts(w, "tokens of another key or mode in protected fields (left; the sidecar never opens them there)", c.Misplaced)
	printCounts(w, "documents skipped", c.Skipped)
	if !dry && c.Rewritten > 0 {
		if run.Compacted.IsZero() {
			fmt.Fprintf(w, "  earlier revisions of the %d rewritten document(s) still hold their old values until the database is compacted: run with --compact (or POST /{db}/_compact)\n", c.Rewritten)
		} else {
			fmt.Fprintf(w, "  compaction requested %s: earlier revisions are being dropped\n", formatTime(run.Compacted))
		}
	}
	if c.Blocked > 0 {
		fmt.Fprintf(w, "  %d document(s) hold plaintext and a token that cannot be opened in protected fields: not encrypted (sealing would hide that token inside a new one); restore or destroy that version, then sweep again\n", c.Blocked)
	}
}

func printCounts(w io.Writer, label string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	fmt.Fprintf(w, "  %s: %s\n", label, strings.Join(parts, ", "))
}

// sweepBar draws the progress of a sweep on stderr: a bar redrawn in
// place on a terminal, a line every few seconds otherwise (the style of
// 'keys rewrap').
type sweepBar struct {
	w     io.Writer
	tty   bool
	dry   bool
	col   string
	last  time.Time
	drawn bool
	now   func() time.Time
}

func newSweepBar(w io.Writer, dry bool) *sweepBar {
	f, ok := w.(*os.File)
	return &sweepBar{w: w, tty: ok && term.IsTerminal(int(f.Fd())), dry: dry, now: time.Now}
}

func (b *sweepBar) start(col string) { b.col, b.last, b.drawn = col, time.Time{}, false }

func (b *sweepBar) update(col string, run *sweep.Run, perSecond float64) {
	now := b.now()
	every := 2 * time.Second
	if b.tty {
		every = 200 * time.Millisecond
	}
	if run.State != sweep.StateDone && now.Sub(b.last) < every {
		return
	}
	b.last = now
	line := formatProgress(col, run, perSecond, b.dry)
	if b.tty {
		fmt.Fprintf(b.w, "\r\x1b[K%s", line)
		b.drawn = true
		return
	}
	fmt.Fprintln(b.w, line)
}

func (b *sweepBar) finish() {
	if b.tty && b.drawn {
		fmt.Fprintln(b.w)
	}
}

// formatProgress is one progress line: documents, values, rate, ETA.
func formatProgress(col string, run *sweep.Run, perSecond float64, dry bool) string {
	c := run.Counts
	const width = 24
	bar, pct, total := "", "", "?"
	if run.Total > 0 {
		f := min(1, float64(c.Documents)/float64(run.Total))
		if run.State == sweep.StateDone {
			f = 1
		}
		n := int(f * width)
		bar = "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] "
		pct = fmt.Sprintf("%3.0f%%  ", f*100)
		total = fmt.Sprint(run.Total)
	}
	eta := "-"
	if perSecond > 0 && run.Total > c.Documents && run.State != sweep.StateDone {
		eta = (time.Duration(float64(run.Total-c.Documents)/perSecond*float64(time.Second)) + time.Second/2).Truncate(time.Second).String()
	}
	if run.State == sweep.StateDone {
		eta = "done"
	}
	verb := "values"
	if dry {
		verb = "values to change"
	}
	return fmt.Sprintf("sweep %s: %s%s%d/%s docs  %d %s (%d re-encrypted, %d encrypted, %d decrypted)  %.0f docs/s  ETA %s",
		col, bar, pct, c.Documents, total, c.Values(), verb, c.Reencrypted, c.Encrypted, c.Decrypted, perSecond, eta)
}
