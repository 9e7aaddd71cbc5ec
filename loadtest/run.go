package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Target names, in the order a run measures them.
const (
	TargetDirect      = "direct"                // the upstream, no proxy
	TargetNginx       = "nginx"                 // nginx proxy_pass
	TargetPassthrough = "sidecrypt-passthrough" // sidecrypt, no rule matching
	TargetSidecrypt   = "sidecrypt"             // sidecrypt with the workload's rules
)

// AllTargets lists every target in measuring order.
var AllTargets = []string{TargetDirect, TargetNginx, TargetPassthrough, TargetSidecrypt}

// Config is a load-test run. The zero value of a field means its
// default; Defaults fills them in.
type Config struct {
	// Workload is write, bulk, read, query or mixed. Default write.
	Workload string
	// Mix weights a mixed workload, "write=2,read=6,query=1,bulk=1"
	// (the default).
	Mix string
	// Duration is how long each target is measured (warm-up not
	// included), split into rounds. Default 10s unless Requests is set.
	Duration time.Duration
	// Requests, instead of Duration, is how many requests each target
	// gets, split into up to 4 rounds.
	Requests int64
	// Concurrency is the number of closed-loop workers (default 32), or
	// with Rate the most requests in flight (default 256).
	Concurrency int
	// Rate makes the loop open: requests per second per target, due at
	// fixed times whatever the target does. RatePercent instead sets it
	// to a percentage of the maximum throughput of the last target
	// (sidecrypt when present), measured by a closed-loop calibration.
	Rate        float64
	RatePercent float64
	// DocSize is the document size distribution: "1KiB" (default),
	// "512B..8KiB" or "1KiB:8,16KiB:2".
	DocSize string
	// BulkSize is the number of documents per _bulk_docs. Default 100.
	BulkSize int
	// Seed makes the documents and the request sequence. Default 1.
	Seed uint64
	// Targets to measure; empty means every one that is available.
	Targets []string
	// Commands are further targets: proxies this run starts as child
	// processes (measured like nginx: throughput, latency, CPU per
	// request), e.g. another HTTP engine for the same upstream. They are
	// measured after nginx and before the sidecar targets, whatever
	// Targets says.
	Commands []CommandTarget
	// Upstream is "builtin" (default: memcouch), "pouchdb" or a URL.
	Upstream string
	// NginxURL, PassthroughURL and SidecryptURL name running instances
	// to measure instead of starting them; they must forward to Upstream.
	NginxURL, PassthroughURL, SidecryptURL string
	// Round is the length of one interleaving round. Default 2s.
	Round time.Duration
	// Warmup is sent to each target before measuring. Default 1s; negative
	// for none.
	Warmup time.Duration
	// Timeout bounds each request. Default 10s.
	Timeout time.Duration
	// SetupDocs is how many documents each target gets before read and
	// query workloads. Default 1000.
	SetupDocs int
	// DB prefixes the databases: each target writes to DB_<target>.
	// Default "loadtest".
	DB string
	// Generator is the load generator: "builtin" (the default, this
	// package's Go client, closed or open loop) or "wrk" (closed loop
	// only; see GeneratorWrk).
	Generator string
	// RulesVersion is the rule file version of the sidecar targets: 2
	// (the default: the CouchDB profile, what ships) or 1 (routes and
	// JSONPath). See RulesV2For and RulesV1For.
	RulesVersion int
	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool
	// Executable is the sidecrypt binary, for the built-in upstream and
	// the sidecar children. Empty: the upstream runs in this process and
	// sidecrypt targets need URLs.
	Executable string
	// SidecarExecutable, when set, is the sidecrypt binary whose serve
	// the sidecar targets run instead of Executable's: another build (the
	// previous commit, a release) measured by this build's load test,
	// with the same workload and rule files.
	SidecarExecutable string
	// Engine is the sidecar targets' HTTP engine (SIDECRYPT_ENGINE):
	// nethttp or fasthttp. Empty: sidecrypt's default.
	Engine string
	// PprofDir, when set, receives a CPU profile of each sidecar target
	// taken from its admin listener during its first measured round.
	PprofDir string
	// Progress receives a one-line progress display (a terminal), or nil.
	Progress io.Writer
	// Log receives notes as the run goes (what starts, what is skipped).
	Log io.Writer
	// Command is recorded in the result.
	Command []string
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.Workload == "" {
		c.Workload = "write"
	}
	if c.Mix == "" {
		c.Mix = "write=2,read=6,query=1,bulk=1"
	}
	if c.Duration == 0 && c.Requests == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
		if c.Rate > 0 || c.RatePercent > 0 {
			c.Concurrency = 256
		}
	}
	if c.DocSize == "" {
		c.DocSize = "1KiB"
	}
	if c.BulkSize == 0 {
		c.BulkSize = 100
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Upstream == "" {
		c.Upstream = "builtin"
	}
	if c.Round == 0 {
		c.Round = 2 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.SetupDocs == 0 {
		c.SetupDocs = 1000
	}
	if c.DB == "" {
		c.DB = "loadtest"
	}
	if c.RulesVersion == 0 {
		c.RulesVersion = 2
	}
	if c.Generator == "" {
		c.Generator = GeneratorBuiltin
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Limits that keep a run bounded and sane.
const (
	MaxDuration    = 24 * time.Hour
	MaxConcurrency = 10000
	MaxBulkSize    = 10000
)

// Validate checks the settings without doing any I/O.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := MixFor(c.Workload, c.Mix); err != nil {
		errs = append(errs, err)
	}
	if c.Duration > 0 && c.Requests > 0 {
		add("give --duration or --requests, not both")
	}
	if c.Duration < 0 || c.Duration > MaxDuration {
		add("duration %v: must be between 0 and %v", c.Duration, MaxDuration)
	}
	if c.Requests < 0 {
		add("requests must be positive")
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		add("concurrency %d: must be between 1 and %d", c.Concurrency, MaxConcurrency)
	}
	if c.Rate < 0 || (c.Rate > 0 && c.RatePercent > 0) {
		add("rate: give requests per second or a percentage, not both")
	}
	if c.RatePercent < 0 || c.RatePercent > 100 {
		add("rate %v%%: must be between 0%% and 100%%", c.RatePercent)
	}
	if _, err := ParseSizeDist(c.DocSize); err != nil {
		errs = append(errs, err)
	}
	if c.BulkSize < 1 || c.BulkSize > MaxBulkSize {
		add("bulk size %d: must be between 1 and %d", c.BulkSize, MaxBulkSize)
	}
	if c.Round < 100*time.Millisecond {
		add("round %v: must be at least 100ms", c.Round)
	}
	if c.Timeout <= 0 {
		add("timeout must be positive")
	}
	if c.SetupDocs < 1 {
		add("setup docs must be at least 1")
	}
	switch c.Generator {
	case GeneratorBuiltin:
	case GeneratorWrk:
		if c.Rate > 0 || c.RatePercent > 0 {
			add("wrk drives closed loops only: leave out --rate, or use --generator builtin")
		}
		if c.Requests > 0 {
			add("wrk runs for a duration: give --duration, not --requests")
		}
	default:
		add("load generator %q: want builtin or wrk", c.Generator)
	}
	if c.RulesVersion != 1 && c.RulesVersion != 2 {
		add("rules version %d: want 1 or 2", c.RulesVersion)
	}
	if !dbNameOK(c.DB) {
		add("database prefix %q: lowercase letters, digits and _ only, starting with a letter", c.DB)
	}
	for _, t := range c.Targets {
		if !slices.Contains(AllTargets, t) {
			add("unknown target %q (want %s)", t, strings.Join(AllTargets, ", "))
		}
	}
	for i, ct := range c.Commands {
		if err := ct.check(); err != nil {
			add("%v", err)
		}
		if slices.Contains(AllTargets, ct.Name) || slices.ContainsFunc(c.Commands[:i], func(o CommandTarget) bool { return o.Name == ct.Name }) {
			add("command target %q: the name is taken", ct.Name)
		}
	}
	switch {
	case c.Upstream == "builtin" || c.Upstream == "pouchdb":
	case strings.HasPrefix(c.Upstream, "http://") || strings.HasPrefix(c.Upstream, "https://"):
	default:
		add("upstream %q: want builtin, pouchdb or an http:// URL", c.Upstream)
	}
	for _, u := range []string{c.NginxURL, c.PassthroughURL, c.SidecryptURL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			add("target URL %q: want http:// or https://", u)
		}
	}
	if !c.AllowRemote {
		for _, u := range []string{c.Upstream, c.NginxURL, c.PassthroughURL, c.SidecryptURL} {
			if strings.Contains(u, "://") && !isLoopback(u) {
				add("%s is not a loopback address; a load test sends a lot of traffic, so pass --allow-remote if you mean it", u)
			}
		}
	}
	for i, err := range errs {
		// Parsers' errors carry the package prefix already.
		if msg, ok := strings.CutPrefix(err.Error(), "loadtest: "); ok {
			errs[i] = errors.New(msg)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	return nil
}

func dbNameOK(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// DatabaseFor is the database a target writes to.
func DatabaseFor(prefix, target string) string {
	return prefix + "_" + strings.ReplaceAll(target, "-", "_")
}

// runner holds a run's state.
type runner struct {
	cfg      Config
	mix      Mix
	work     *Workload
	upstream *component
	targets  []*targetState
	started  []*component
	res      *Result
	progress *progress
	wrkBin   string // with Generator wrk
}

type targetState struct {
	name  string
	comp  *component // what serves it (the upstream itself for direct)
	proxy *component // the process to account as "proxy", if local
	ep    endpoint
	db    string
	pool  *Pool
	rec   *Recorder
	seq   sequencer
	secs  float64
	// rounds is each measured round's throughput.
	rounds []float64
	cpu    map[string]float64
	// createdDB is true when this run created the database (and so may
	// drop it from an upstream it did not start).
	createdDB bool
	// wrkScript is the target's wrk script (Generator wrk).
	wrkScript string
}

// Run performs a load test and returns its result. Everything it starts
// is stopped before it returns, also when ctx ends (then the result has
// Interrupted set and covers what was measured).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mix, _ := MixFor(cfg.Workload, cfg.Mix)
	sizes, _ := ParseSizeDist(cfg.DocSize)
	r := &runner{cfg: cfg, mix: mix}
	defer r.cleanup()
	r.res = &Result{
		Started: time.Now().UTC(),
		Command: cfg.Command,
		Machine: machineInfo(),
		Settings: Settings{
			Workload: cfg.Workload, Mix: mix.String(), Loop: "closed", Concurrency: cfg.Concurrency,
			Warmup: max(0, cfg.Warmup).String(), Timeout: cfg.Timeout.String(), DocSize: sizes.String(),
			MeanDocBytes: sizes.Mean(), BulkSize: cfg.BulkSize, Seed: cfg.Seed, Upstream: cfg.Upstream,
			RulesVersion: cfg.RulesVersion, Generator: cfg.Generator, SidecarExecutable: cfg.SidecarExecutable, Engine: cfg.Engine,
		},
	}
	if cfg.Rate > 0 || cfg.RatePercent > 0 {
		r.res.Settings.Loop = "open"
	}
	if mix.uses(OpRead) || mix.uses(OpQuery) {
		r.res.Settings.SetupDocs = cfg.SetupDocs
	}
	r.logf("generating %d documents (%s, seed %d)", corpusSize, sizes, cfg.Seed)
	r.work = NewWorkload(mix, NewGenerator(cfg.Seed, sizes), cfg.Seed, cfg.BulkSize)
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	if len(r.targets) == 0 {
		return nil, errors.New("loadtest: no target to measure")
	}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.prepareWrk(); err != nil {
		return nil, err
	}
	if cfg.Progress != nil {
		r.progress = startProgress(cfg.Progress)
		defer r.progress.stop()
	}
	err := r.measure(ctx)
	r.finish(ctx)
	if err != nil && ctx.Err() == nil {
		return nil, err
	}
	r.res.Interrupted = ctx.Err() != nil
	return r.res, nil
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "loadtest: "+format+"\n", args...)
}

func (r *runner) cleanup() {
	// Stop in reverse order: proxies before the upstream they use.
	for i := len(r.started) - 1; i >= 0; i-- {
		r.started[i].close()
	}
	r.started = nil
}

// wanted reports whether target was asked for, and whether explicitly.
func (r *runner) wanted(target string) (want, explicit bool) {
	if len(r.cfg.Targets) == 0 {
		return true, false
	}
	return slices.Contains(r.cfg.Targets, target), true
}

// skip notes a target left out; an explicitly requested one is an error.
func (r *runner) skip(target string, explicit bool, reason error) error {
	if explicit {
		return fmt.Errorf("loadtest: target %s: %w", target, reason)
	}
	msg := strings.TrimPrefix(reason.Error(), "loadtest: ")
	r.res.Skipped = append(r.res.Skipped, Skipped{Target: target, Reason: firstLine(msg)})
	r.logf("skipping %s: %s", target, msg)
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// start brings up the upstream and the targets.
func (r *runner) start(ctx context.Context) error {
	cfg := r.cfg
	var err error
	switch cfg.Upstream {
	case "builtin":
		r.upstream, err = startBuiltinUpstream(ctx, cfg.Executable)
	case "pouchdb":
		r.upstream, err = startPouchDB(ctx)
	default:
		r.upstream = &component{name: "upstream", url: strings.TrimRight(cfg.Upstream, "/")}
	}
	if err != nil {
		return err
	}
	r.started = append(r.started, r.upstream)
	r.logf("upstream: %s at %s", r.upstream.name, r.upstream.url)

	add := func(name string, comp, proxy *component) {
		r.targets = append(r.targets, &targetState{
			name: name, comp: comp, proxy: proxy, db: DatabaseFor(cfg.DB, name),
			ep: endpoint{base: comp.url, client: newClient(cfg.Concurrency)},
		})
	}
	if want, _ := r.wanted(TargetDirect); want {
		add(TargetDirect, r.upstream, nil)
	}
	if want, explicit := r.wanted(TargetNginx); want {
		if cfg.NginxURL != "" {
			add(TargetNginx, &component{name: "nginx", url: strings.TrimRight(cfg.NginxURL, "/")}, nil)
		} else if bin, ok := lookPath("nginx"); !ok {
			if err := r.skip(TargetNginx, explicit, errors.New("nginx is not installed (apt-get install nginx-light, or give --nginx-url)")); err != nil {
				return err
			}
		} else if comp, workers, err := startNginx(ctx, bin, r.upstream.url); err != nil {
			if err := r.skip(TargetNginx, explicit, err); err != nil {
				return err
			}
		} else {
			r.started = append(r.started, comp)
			r.res.Settings.NginxWorkers = workers
			r.logf("nginx: %s at %s, %d worker processes (= sidecrypt's GOMAXPROCS)", bin, comp.url, workers)
			add(TargetNginx, comp, comp)
		}
	}
	for _, ct := range cfg.Commands {
		r.logf("starting %s: %s", ct.Name, strings.Join(ct.Argv, " "))
		comp, err := startCommand(ctx, ct, r.upstream.url)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		r.started = append(r.started, comp)
		r.logf("%s at %s", ct.Name, comp.url)
		add(ct.Name, comp, comp)
	}
	for _, sc := range []struct {
		name, url, rules string
	}{
		{TargetPassthrough, cfg.PassthroughURL, rulesFor(cfg.RulesVersion, passthroughDB)},
		{TargetSidecrypt, cfg.SidecryptURL, rulesFor(cfg.RulesVersion, DatabaseFor(cfg.DB, TargetSidecrypt))},
	} {
		want, explicit := r.wanted(sc.name)
		if !want {
			continue
		}
		if sc.url != "" {
			add(sc.name, &component{name: sc.name, url: strings.TrimRight(sc.url, "/")}, nil)
			continue
		}
		exe := cfg.Executable
		if cfg.SidecarExecutable != "" {
			exe = cfg.SidecarExecutable
		}
		if err := serveAvailable(exe); err != nil {
			if err := r.skip(sc.name, explicit, fmt.Errorf("sidecrypt serve is not available: %w", err)); err != nil {
				return err
			}
			continue
		}
		r.logf("starting %s (creating keys %s)", sc.name, strings.Join(sidecarKeys, ", "))
		comp, err := startSidecar(ctx, exe, sc.name, r.upstream.url, sc.rules, cfg.Engine)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := r.skip(sc.name, explicit, err); err != nil {
				return err
			}
			continue
		}
		r.started = append(r.started, comp)
		r.logf("%s at %s", sc.name, comp.url)
		add(sc.name, comp, comp)
	}
	for _, t := range r.targets {
		if !cfg.AllowRemote && !isLoopback(t.ep.base) {
			return fmt.Errorf("loadtest: target %s at %s is not a loopback address (pass --allow-remote if you mean it)", t.name, t.ep.base)
		}
	}
	return nil
}

// setup creates each target's database on the upstream and, for reads
// and queries, writes documents through the target so that it reads its
// own (for sidecrypt: encrypted) data.
func (r *runner) setup(ctx context.Context) error {
	up := endpoint{base: r.upstream.url, client: newClient(4)}
	var docs [][]byte
	var emails []string
	needPool := r.mix.uses(OpRead) || r.mix.uses(OpQuery)
	if needPool {
		docs, emails = r.work.setupDocs(r.cfg.SetupDocs)
	}
	for _, t := range r.targets {
		status, body, err := do(ctx, up, "PUT", "/"+t.db, nil)
		switch {
		case err != nil:
			return fmt.Errorf("loadtest: create database %s on the upstream: %w", t.db, err)
		case status == http.StatusCreated || status == http.StatusOK:
			t.createdDB = true
		case status == http.StatusPreconditionFailed: // exists: fine
		default:
			return fmt.Errorf("loadtest: create database %s on the upstream: HTTP %d %s", t.db, status, firstLine(string(body)))
		}
		t.pool = &Pool{}
		if !needPool {
			continue
		}
		r.logf("setup: writing %d documents through %s", len(docs), t.name)
		for start := 0; start < len(docs); start += 100 {
			end := min(start+100, len(docs))
			var b bytes.Buffer
			b.WriteString(`{"docs":[`)
			b.Write(bytes.Join(docs[start:end], []byte(",")))
			b.WriteString("]}")
			status, body, err := do(ctx, t.ep, "POST", "/"+t.db+"/_bulk_docs", b.Bytes())
			if err != nil || status != http.StatusCreated {
				return fmt.Errorf("loadtest: setup of %s: _bulk_docs: HTTP %d %v %s", t.name, status, err, firstLine(string(body)))
			}
			var results []struct {
				ID    string `json:"id"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &results); err != nil || len(results) != end-start {
				return fmt.Errorf("loadtest: setup of %s: unexpected _bulk_docs answer: %s", t.name, firstLine(string(body)))
			}
			for i, res := range results {
				if res.Error != "" {
					return fmt.Errorf("loadtest: setup of %s: document refused: %s", t.name, res.Error)
				}
				t.pool.IDs = append(t.pool.IDs, res.ID)
				t.pool.Emails = append(t.pool.Emails, emails[start+i])
			}
		}
	}
	return nil
}

// do sends one request and returns the status and body (setup and
// housekeeping; measured traffic goes through send).
func do(ctx context.Context, ep endpoint, method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, ep.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := ep.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// plan returns the measured rounds' length or request count per round.
func (r *runner) plan() (rounds int, length time.Duration, counts []int64) {
	if r.cfg.Requests > 0 {
		rounds = int(min(r.cfg.Requests, 4))
		for i := range rounds {
			n := r.cfg.Requests / int64(rounds)
			if int64(i) < r.cfg.Requests%int64(rounds) {
				n++
			}
			counts = append(counts, n)
		}
		return rounds, 0, counts
	}
	rounds = int((r.cfg.Duration + r.cfg.Round - 1) / r.cfg.Round)
	return rounds, r.cfg.Duration / time.Duration(rounds), nil
}

// roundFor builds one round of the given length or count at rate.
func (r *runner) roundFor(length time.Duration, count int64, rate float64) round {
	rd := round{concurrency: r.cfg.Concurrency, rate: rate, timeout: r.cfg.Timeout}
	if rate > 0 {
		if count == 0 {
			count = max(1, int64(rate*length.Seconds()))
		}
		rd.count = count
		span := time.Duration(float64(count) / rate * float64(time.Second))
		rd.grace = max(time.Second, span)
		return rd
	}
	if count > 0 {
		rd.count = count
	} else {
		rd.until = time.Now().Add(length)
	}
	return rd
}

// measure runs calibration, warm-up and the interleaved rounds.
func (r *runner) measure(ctx context.Context) error {
	origin := time.Now()
	for _, t := range r.targets {
		t.rec = NewRecorder(origin)
		t.cpu = make(map[string]float64)
	}
	rounds, length, counts := r.plan()
	r.res.Settings.Rounds = rounds
	if length > 0 {
		r.res.Settings.Duration = r.cfg.Duration.String()
	} else {
		r.res.Settings.Requests = r.cfg.Requests
	}
	rate := r.cfg.Rate
	if r.cfg.RatePercent > 0 {
		ref := r.targets[len(r.targets)-1]
		calib := max(r.cfg.Round, 2*time.Second)
		r.setPhase("calibrating on "+ref.name, calib)
		rec := NewRecorder(time.Now())
		start := time.Now()
		runRound(ctx, ref.ep, round{until: time.Now().Add(calib), concurrency: min(r.cfg.Concurrency, 64), timeout: r.cfg.Timeout}, &sequencer{}, r.builder(ref), rec)
		secs := time.Since(start).Seconds()
		ok, _ := rec.Counts()
		peak := float64(ok) / secs
		rate = peak * r.cfg.RatePercent / 100
		if rate < 1 {
			return fmt.Errorf("loadtest: calibration on %s measured %.1f req/s: too little to run an open loop at %v%% of it", ref.name, peak, r.cfg.RatePercent)
		}
		r.res.Calibration = &Calibration{Target: ref.name, Seconds: secs, Throughput: peak, Percent: r.cfg.RatePercent, Rate: rate}
		r.logf("calibration: %s did %.0f req/s closed-loop; open loop at %.0f req/s (%v%%)", ref.name, peak, rate, r.cfg.RatePercent)
	}
	if rate > 0 {
		r.res.Settings.Rate = rate
	}
	if r.cfg.Warmup > 0 {
		for _, t := range r.targets {
			if ctx.Err() != nil {
				return nil
			}
			r.setPhase("warming up "+t.name, r.cfg.Warmup)
			if r.wrkBin != "" {
				if _, err := r.wrkRound(ctx, t, r.cfg.Warmup, NewRecorder(time.Now())); err != nil {
					return err
				}
				continue
			}
			runRound(ctx, t.ep, r.roundFor(r.cfg.Warmup, 0, rate), &sequencer{}, r.builder(t), NewRecorder(time.Now()))
		}
	}
	total := time.Duration(rounds*len(r.targets)) * length
	r.setPhase("", total)
	for i := range rounds {
		// Rotate the order each round so that no target always follows
		// the same one (caches, GC debt, CPU frequency).
		for k := range r.targets {
			if ctx.Err() != nil {
				return nil
			}
			t := r.targets[(i+k)%len(r.targets)]
			var count int64
			if counts != nil {
				count = counts[i]
			}
			r.progressRound(t, i, rounds)
			var prof chan error
			if i == 0 && r.cfg.PprofDir != "" && t.proxy != nil && t.proxy.adminAddr != "" {
				prof = r.profile(ctx, t, length)
			}
			before := r.cpuNow(t)
			okBefore, _ := t.rec.Counts()
			start := time.Now()
			var wrkCPU float64
			if r.wrkBin != "" {
				var err error
				if wrkCPU, err = r.wrkRound(ctx, t, length, t.rec); err != nil {
					return err
				}
			} else {
				runRound(ctx, t.ep, r.roundFor(length, count, rate), &t.seq, r.builder(t), t.rec)
			}
			secs := time.Since(start).Seconds()
			t.secs += secs
			if okAfter, _ := t.rec.Counts(); secs > 0 && ctx.Err() == nil {
				t.rounds = append(t.rounds, float64(okAfter-okBefore)/secs)
			}
			after := r.cpuNow(t)
			for k, v := range after {
				if b, ok := before[k]; ok {
					t.cpu[k] += v - b
				}
			}
			if r.wrkBin != "" {
				// The load generator is wrk: its CPU, not this
				// process's (which only waited).
				t.cpu["loadgen"] += wrkCPU - (after["loadgen"] - before["loadgen"])
			}
			if prof != nil {
				if err := <-prof; err != nil {
					r.logf("pprof of %s: %v", t.name, err)
				}
			}
		}
	}
	return nil
}

func (r *runner) builder(t *targetState) func(uint64) Request {
	return func(seq uint64) Request { return r.work.Build(seq, t.db, t.pool) }
}

// cpuNow reads the CPU seconds of the processes a target's round is
// accounted to: this process, the upstream and the target's proxy.
func (r *runner) cpuNow(t *targetState) map[string]float64 {
	out := make(map[string]float64)
	if s, err := cpuSeconds(os.Getpid(), false); err == nil {
		out["loadgen"] = s
	}
	if pid := r.upstream.pid(); pid != 0 {
		if s, err := cpuSeconds(pid, r.upstream.group); err == nil {
			out["upstream"] = s
		}
	}
	if pid := t.proxy.pid(); pid != 0 {
		if s, err := cpuSeconds(pid, t.proxy.group); err == nil {
			out["proxy"] = s
		}
	}
	return out
}

// bearer adds an admin token to each request.
type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// profile fetches a CPU profile of a sidecar over the round about to run.
func (r *runner) profile(ctx context.Context, t *targetState, length time.Duration) chan error {
	done := make(chan error, 1)
	secs := max(1, int(length/time.Second))
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.proxy.adminAddr, secs)
		// The admin API answers on TCP only with a credential.
		tr := bearer{token: t.proxy.adminToken, rt: &http.Transport{Proxy: nil}}
		ep := endpoint{base: "", client: &http.Client{Transport: tr}}
		status, body, err := do(ctx, ep, "GET", url, nil)
		switch {
		case err != nil:
			done <- err
		case status != http.StatusOK:
			done <- fmt.Errorf("the admin listener answered HTTP %d (no pprof endpoint?)", status)
		default:
			path := filepath.Join(r.cfg.PprofDir, t.name+".pprof")
			if err := os.MkdirAll(r.cfg.PprofDir, 0o755); err != nil {
				done <- err
				return
			}
			done <- os.WriteFile(path, body, 0o644)
			r.logf("pprof: CPU profile of %s written to %s", t.name, path)
		}
	}()
	return done
}

// finish turns recorders into results and drops databases this run made
// on an upstream it did not start.
func (r *runner) finish(ctx context.Context) {
	r.res.Finished = time.Now().UTC()
	for _, t := range r.targets {
		if t.rec == nil {
			continue
		}
		s := t.rec.snapshot()
		tr := TargetResult{
			Name: t.name, URL: t.ep.base, Database: t.db,
			OK: s.ok, Errors: s.errors, Seconds: t.secs,
			Latency: s.latency, Late: s.late, Clamped: s.clamped,
			Distribution: s.distribution, Series: s.series, Rounds: t.rounds,
		}
		for _, n := range s.errors {
			tr.ErrorTotal += n
		}
		if t.secs > 0 {
			tr.Throughput = float64(s.ok) / t.secs
			if r.mix.uses(OpWrite) || r.mix.uses(OpBulk) {
				tr.DocsPerSecond = float64(s.docs) / t.secs
			}
		}
		reqs := float64(s.ok + tr.ErrorTotal)
		for _, kind := range []string{"proxy", "upstream", "loadgen"} {
			secs, ok := t.cpu[kind]
			if !ok {
				continue
			}
			use := CPUUse{Process: kind, Seconds: secs}
			switch kind {
			case "loadgen":
				use.Name, use.PID = "sidecrypt loadtest", os.Getpid()
				if r.wrkBin != "" {
					use.Name, use.PID = fmt.Sprintf("wrk -t%d -c%d", wrkThreads(r.cfg.Concurrency), r.cfg.Concurrency), 0
				}
				if r.upstream.proc == nil && r.cfg.Upstream == "builtin" {
					use.Name += " (with the built-in upstream)"
				}
			case "upstream":
				use.Name, use.PID = r.upstream.name, r.upstream.pid()
			case "proxy":
				use.Name, use.PID = t.proxy.name, t.proxy.pid()
			}
			if reqs > 0 {
				use.PerKRequests = secs / reqs * 1000
			}
			tr.CPU = append(tr.CPU, use)
		}
		r.res.Targets = append(r.res.Targets, tr)
	}
	r.res.Ratios = computeRatios(r.res.Targets)
	if r.upstream != nil && r.upstream.proc == nil && r.upstream.stop == nil {
		// An upstream we were pointed at: leave it as we found it.
		up := endpoint{base: r.upstream.url, client: newClient(1)}
		for _, t := range r.targets {
			if t.createdDB {
				do(context.WithoutCancel(ctx), up, "DELETE", "/"+t.db, nil)
			}
		}
	}
}

func (r *runner) setPhase(label string, d time.Duration) {
	if r.progress != nil {
		r.progress.phase(label, d)
	}
}

func (r *runner) progressRound(t *targetState, i, rounds int) {
	if r.progress != nil {
		r.progress.round(t.name, i, rounds, t.rec)
	}
}

// machineInfo describes this machine.
func machineInfo() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}
	m.addHostInfo()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
