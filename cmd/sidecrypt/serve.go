package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/metrics"
	"github.com/sidecrypt/sidecrypt/internal/scheduler"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/proxy"
	"github.com/sidecrypt/sidecrypt/rules"
)

func cmdServe(a *app, args []string) int {
	// The environment is read first because it gives the flags their
	// defaults; a setting it gets wrong is reported after the flags are
	// parsed, so that --help works whatever the environment holds and a
	// flag can correct it.
	cfg, cfgErr := a.config()
	fs := a.flags("serve", `sidecrypt serve [flags]

Runs the proxy. With SIDECRYPT_UPSTREAM set (reverse mode) the application
points its datastore URL at SIDECRYPT_LISTEN; without it (forward mode) the
application sets HTTP_PROXY/HTTPS_PROXY to it, and HTTPS to hosts that the
rules name is intercepted with the CA from 'sidecrypt ca init'.

Request bodies and query parameters that the rules name are encrypted on the
way in; tokens in responses are opened (or masked) on the way out. The admin
API, /metrics, /healthz and /readyz listen on SIDECRYPT_ADMIN_LISTEN.

Signals: SIGTERM/SIGINT drain and stop; SIGHUP reloads the rule file.

Every setting below is also an environment variable (named after each
flag); a flag overrides it. Secrets (SIDECRYPT_HSM_PIN,
SIDECRYPT_MASTER_PASSPHRASE, SIDECRYPT_ADMIN_TOKEN, and their _FILE
variants) come only from the environment: a command line is visible to
every user of the host. See README.md, "Settings".`)
	cfg.BindFlags(fs)
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return a.usageError(fs, "unexpected arguments")
	}
	if cfgErr != nil && cfg.Listen == "" {
		return a.fail(cfgErr) // the environment did not even parse
	}
	if err := cfg.FlagsParsed(fs); err != nil {
		return a.fail(err)
	}
	if cfg.Rules == "" {
		return a.fail(errors.New("no rule file: set SIDECRYPT_RULES or --rules (see docs/RULES.md; examples/rules/ has samples)"))
	}
	log := a.logger(cfg)
	if err := serve(a.ctx, cfg, log); err != nil {
		logStopped(log, err)
		return exitFail
	}
	return exitOK
}

// logStopped logs why serve stopped. A refused rule file gets one line per
// problem, each with its FILE:LINE:COL and hint, rather than one line of
// escaped newlines: it is what an operator reads first after a failed
// start (and `sidecrypt rules lint FILE` prints the same list).
func logStopped(log *slog.Logger, err error) {
	var re *rules.Error
	if !errors.As(err, &re) {
		log.Error("sidecrypt stopped", "err", err)
		return
	}
	n := 0
	for _, d := range re.Diagnostics {
		if !d.IsError() {
			continue
		}
		n++
		attrs := []any{"at", diagPosition(d)}
		if d.Hint != "" {
			attrs = append(attrs, "hint", d.Hint)
		}
		log.Error("rules: "+d.Message, attrs...)
	}
	log.Error("sidecrypt stopped: the rule file is invalid; nothing was served", "rules", re.Source, "errors", n,
		"check", "sidecrypt rules lint "+re.Source)
}

// diagPosition is FILE:LINE:COL, or FILE for a problem of the whole file.
func diagPosition(d rules.Diagnostic) string {
	if d.Line <= 0 {
		return d.File
	}
	return fmt.Sprintf("%s:%d:%d", d.File, d.Line, max(d.Col, 1))
}

// gcPercent is the garbage collector target when GOGC is not set. The
// sidecar's live heap is small (cached keys, rules, buffers of requests in
// flight) and short-lived garbage per request is most of what it
// allocates; collecting at 4x the live heap instead of 2x cuts its CPU per
// request by 4-12% in the load test (wrk, 1 KiB documents, 2026-11-26,
// measured again once settleHeap had removed the start-up KDF's garbage
// from the heap goal), for a few MiB more memory.
// GOGC and GOMEMLIMIT in the environment take precedence; under a
// container memory limit, tuneGC (memlimit.go) also sets a soft memory
// limit so that the larger heap cannot reach it.
const gcPercent = 400

// serve runs every part of the sidecar until ctx ends.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	tuneGC(log)
	m := metrics.New()
	env, err := openKeyEnv(ctx, cfg, log, true, m.InstrumentHSM)
	if err != nil {
		return err
	}
	defer env.Close()
	auditLog := recordCounting{env.audit, m}
	ctx = audit.WithActor(ctx, "serve")

	cache := keycache.New(env.manager, keycache.OptionsFromConfig(cfg))
	defer cache.Close()
	m.RegisterKeyCache(cache.Stats)
	m.RegisterKeystore(env.manager.IntegrityFailures)
	m.RegisterAudit(env.audit.Stats)
	m.ZeroKnownLabels(nil)
	if n, err := env.manager.Verify(ctx); err != nil {
		log.Error("keystore records failed their integrity check: the keys they hold are refused (503) until restored; unsealed records need 'sidecrypt keys seal-records' (docs/KEYS.md)", "keys_ok", n, "err", err)
	}

	// A rule file, or (etcd://) one rule file that every sidecar watches.
	src, rulesWriter, closeRules, err := openRuleSource(ctx, cfg, env.store, log, auditLog, rules.Hooks{
		Loaded: func(p *rules.Plan, at time.Time, _ time.Duration) {
			m.RulesReloads.Inc()
			m.SetRules(p.Hash, at)
			m.ZeroKnownLabels(planKeyNames(p))
		},
		Refused: func(error) { m.RulesReloadFailures.Inc() },
	})
	if err != nil {
		return err
	}
	defer closeRules()
	m.RegisterMaskFallbacks(src.Stats().HashMaskFallbacks)
	checkRuleKeys(ctx, log, env.manager, src.Current())
	if plan := src.Current(); cfg.Upstream == "" && plan != nil && plan.Schema != nil && len(plan.Schema.Hosts) == 0 {
		return fmt.Errorf("forward mode (SIDECRYPT_UPSTREAM is empty) needs the datastore named in the rule file: add hosts: [\"host:port\"] to %s, so that the sidecar recognises the datastore by every name and address and refuses everything else", cfg.Rules)
	}

	// Responses whose tokens do not open are audited per route and 10 s,
	// not one fsync'd event each (audit_aggregate.go).
	proxyAudit := newOpenFailureAggregator(auditLog, keystore.DenialWindow)
	defer proxyAudit.Flush()
	pcfg := proxy.Config{
		Rules: src, Keys: cache, Audit: proxyAudit, Observer: m.ProxyObserver(), Logger: log,
		MaxBody: int64(cfg.MaxBody), MaxDepth: cfg.MaxDepth, UpstreamTimeout: cfg.UpstreamTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		StandardTransport: cfg.UpstreamTransport == "standard",
		Engine:            cfg.Engine,
		PassThrough:       cfg.PassThrough,
	}
	if cfg.AdminListen != "" && cfg.AdminListen != "off" {
		// Forward mode must never reach the admin API, whatever a client
		// calls it.
		pcfg.Guard = append(pcfg.Guard, cfg.AdminListen)
	}
	if pcfg.UpstreamTLS, err = proxy.UpstreamTLSConfig(cfg.UpstreamCA); err != nil {
		return err
	}
	var probe *upstreamProbe
	if cfg.Upstream != "" {
		u, err := url.Parse(cfg.Upstream)
		if err != nil {
			return fmt.Errorf("SIDECRYPT_UPSTREAM: %w", err)
		}
		pcfg.Upstream = u
		probe = newUpstreamProbe(u, log)
	} else {
		ca, err := proxy.LoadCA(cfg.CADir)
		if err != nil {
			return fmt.Errorf("forward mode (SIDECRYPT_UPSTREAM is empty) intercepts HTTPS with a local CA: %w (create it with `sidecrypt ca init`)", err)
		}
		pcfg.CA = ca
	}
	p, err := proxy.New(pcfg)
	if err != nil {
		return err
	}

	// With an etcd keystore, one elected sidecar does the background work.
	elector, err := newElector(env.store, log)
	if err != nil {
		return err
	}
	sched := scheduler.New(env.manager, scheduler.Options{
		RewrapRate: cfg.RewrapRate,
		Leader:     leaderFunc(elector),
		Logger:     log,
		Hooks: scheduler.Hooks{
			Rotated:        func(key, trigger string) { m.Rotations.WithLabelValues(key, trigger).Inc() },
			RewrapProgress: func(done, total int) { m.RewrapPending.Set(float64(total - done)) },
			RewrapVersion: func(ok bool) {
				if ok {
					m.RewrapDone.Inc()
					m.RewrapLastProgress.SetToCurrentTime()
				} else {
					m.RewrapErrors.Inc()
				}
			},
			Retirable: func(n int) { m.KEKRetirable.Set(float64(n)) },
		},
	})

	// Listeners first, so that a port in use fails before anything runs.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy listener: %w", err)
	}
	// The store sweep's background jobs, run by the same leader.
	sweeps := newSweepJobs(cfg, env, cache, src, leaderFunc(elector), m, log)
	var pingUpstream func(context.Context) error
	if probe != nil {
		pingUpstream = probe.Ready
	}
	adm, err := openAdmin(cfg, env, src, rulesWriter, sched, adminSweeps(sweeps), m, cache, auditLog, pingUpstream, log)
	if err != nil {
		ln.Close()
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				log.Error(name+" stopped", "err", err)
			}
		}()
	}
	goRun("rules watcher", src.Run)
	if probe != nil {
		goRun("upstream probe", probe.Run)
	}
	goRun("key cache watcher", func(ctx context.Context) error { return cache.Run(ctx, env.store) })
	goRun("scheduler", runWhileLeader(elector, withSweeps(sched.Run, sweeps)))
	if adm != nil {
		goRun("admin API", func(ctx context.Context) error { return adm.api.Serve(ctx, adm.tcp, adm.unix) })
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	goRun("SIGHUP handler", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				log.Info("SIGHUP: reloading rules", "file", cfg.Rules)
				_ = src.Reload(audit.WithActor(ctx, "signal:SIGHUP"))
			}
		}
	})

	desc := env.provider.Describe()
	settleHeap()
	mode := "forward"
	if pcfg.Upstream != nil {
		mode = "reverse"
	}
	log.Info("sidecrypt serving",
		"version", version, "mode", mode, "engine", p.Engine(), "listen", ln.Addr().String(), "upstream", redactURL(pcfg.Upstream),
		"admin", cfg.AdminListen, "admin_socket", cfg.AdminSocket, "rules", cfg.Rules, "rules_hash", src.Current().Hash,
		"keystore", cfg.Keystore, "hsm", desc.Kind, "audit_log", cfg.AuditLog)
	_ = auditLog.Record(ctx, audit.Event{Action: "serve.start", Rules: src.Current().Hash,
		Details: map[string]string{"mode": mode, "engine": p.Engine(), "listen": ln.Addr().String(), "hsm": desc.Kind, "version": version}})

	err = p.Serve(ctx, ln)
	stop()
	wg.Wait()
	// Refusals still being counted go to the audit log now.
	env.manager.FlushDenials()
	proxyAudit.Flush()
	_ = auditLog.Record(context.WithoutCancel(ctx), audit.Event{Action: "serve.stop", Rules: src.Current().Hash})
	log.Info("sidecrypt stopped")
	return err
}

// checkRuleKeys warns, at start, about keys that the rules seal with but
// that do not exist or have no active primary: requests on those routes
// (or collections) will be refused (503) until an operator creates or
// rotates them.
func checkRuleKeys(ctx context.Context, log *slog.Logger, m *keystore.Manager, p *rules.Plan) {
	for _, w := range ruleKeyWarnings(ctx, m, p) {
		log.Warn(w.msg, "key", w.key, "where", w.where, "err", w.err, "fix", w.fix)
	}
}

// ruleKeyWarning is one problem with a key the rules seal with, for
// serve's start-up log and `rules lint --keys`.
type ruleKeyWarning struct {
	key, where, msg, fix string
	err                  error
}

// ruleKeyWarnings checks each key the plan seals with against the
// keystore: it must have a usable primary, and (issue 12) a cryptoperiod,
// so that more than its seal limit rotates it. A key sealed only in
// deterministic mode is still warned about: rotating it splits equality
// lookups across versions, which is a choice to write down, not a default.
func ruleKeyWarnings(ctx context.Context, m *keystore.Manager, p *rules.Plan) []ruleKeyWarning {
	var out []ruleKeyWarning
	for _, k := range planSealKeys(p) {
		if _, err := m.Primary(ctx, k.name); err != nil {
			out = append(out, ruleKeyWarning{key: k.name, where: k.where, err: err,
				msg: "a rule seals with a key that cannot be used: requests that need it will be refused (503) until it can",
				fix: "sidecrypt keys create " + k.name})
			continue
		}
		key, err := m.Get(ctx, k.name)
		if err == nil && key.Cryptoperiod == 0 {
			msg := "a rule seals with a key that has no cryptoperiod: only its seal limit rotates it"
			if k.random {
				msg += " (it seals random-mode fields: NIST SP 800-57 asks for a cryptoperiod; 90d is the default for new keys)"
			} else {
				msg += " (it seals searchable fields only: rotating it splits equality lookups across versions, so leaving it without one may be deliberate)"
			}
			out = append(out, ruleKeyWarning{key: k.name, where: k.where, msg: msg,
				fix: "sidecrypt keys cryptoperiod " + k.name + " 90d (or POST /v1/keys/" + k.name + "/cryptoperiod on the admin API)"})
		}
	}
	return out
}

type sealKey struct {
	name, where string
	random      bool // some field seals with it in random mode
}

// planSealKeys lists the keys a plan seals with, each once, with the
// first route (version 1) or collection (version 2) that uses it.
func planSealKeys(p *rules.Plan) []sealKey {
	var out []sealKey
	at := map[string]int{}
	add := func(name, where string, random bool) {
		if name == "" {
			return
		}
		if i, ok := at[name]; ok {
			out[i].random = out[i].random || random
			return
		}
		at[name] = len(out)
		out = append(out, sealKey{name, where, random})
	}
	if p == nil {
		return nil
	}
	for _, rt := range p.Routes {
		for _, name := range rt.Keys {
			add(name, "route "+rt.Name, false)
		}
		for _, f := range rt.Fields {
			add(f.Key, "route "+rt.Name, f.Mode != fieldcrypt.ModeDeterministic)
		}
		for _, q := range rt.Query {
			add(q.Key, "route "+rt.Name, q.Mode != fieldcrypt.ModeDeterministic)
		}
	}
	if p.Schema != nil {
		for _, c := range p.Schema.Collections {
			for _, f := range c.Fields {
				add(f.Key, "collection "+c.Name, f.Mode != fieldcrypt.ModeDeterministic)
			}
		}
	}
	return out
}

// planKeyNames lists every key name a plan uses: to seal, open or mask.
func planKeyNames(p *rules.Plan) []string {
	var names []string
	for _, k := range planSealKeys(p) {
		names = append(names, k.name)
	}
	if p != nil {
		names = append(append(names, p.DecryptKeys...), p.MaskKeys...)
	}
	return names
}

// redactURL drops credentials and the query from a URL for logging.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

// recordCounting counts audit write failures in metrics. An audit failure
// is logged by the caller; it never turns into a forwarded plaintext.
type recordCounting struct {
	l *audit.Log
	m *metrics.Metrics
}

func (r recordCounting) Record(ctx context.Context, e audit.Event) error {
	err := r.l.Record(ctx, e)
	if err != nil {
		r.m.AuditErrors.Inc()
	}
	return err
}
