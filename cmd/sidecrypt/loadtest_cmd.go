package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/loadtest"
	"github.com/sidecrypt/sidecrypt/loadtest/memcouch"
)

const loadtestUsage = `sidecrypt loadtest [flags]
       sidecrypt loadtest upstream --listen ADDR

Measures throughput and latency of the same workload against several
targets in one run, interleaved in short rounds so that machine noise hits
all of them alike:

  direct                 the datastore itself
  nginx                  nginx with proxy_pass (started here if installed)
  sidecrypt-passthrough  sidecrypt whose rules match none of the traffic
  sidecrypt              sidecrypt encrypting 4 fields of every document

The tool starts what it needs on free loopback ports (a built-in in-memory
CouchDB-compatible upstream, nginx with a generated config, two
'sidecrypt serve' children of this binary with throwaway keys) and stops
all of it at the end or on Ctrl-C. Each target writes to its own database,
<db>_<target>. With no flags it measures a 1 KiB document write workload
for 10s per target.

Results: a table on stdout (or --json), --report FILE.html for a
self-contained page with charts, --markdown FILE for docs.

'sidecrypt loadtest upstream' runs the built-in upstream alone.`

func cmdLoadtest(a *app, args []string) int {
	if len(args) > 0 && args[0] == "upstream" {
		return cmdLoadtestUpstream(a, args[1:])
	}
	fs := a.flags("loadtest", loadtestUsage)
	var (
		cfg        loadtest.Config
		rate       string
		targets    string
		seed       uint64
		jsonOut    bool
		reportFile string
		mdFile     string
	)
	fs.StringVar(&cfg.Workload, "workload", "write", "write, bulk, read, query or mixed")
	fs.StringVar(&cfg.Mix, "mix", "write=2,read=6,query=1,bulk=1", "weights of a mixed workload")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured time per target (default 10s unless --requests)")
	fs.Int64Var(&cfg.Requests, "requests", 0, "requests per target, instead of --duration")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "closed loop: workers (default 32); with --rate: most requests in flight (default 256)")
	fs.StringVar(&rate, "rate", "", "open loop: requests per second per target, or N% of sidecrypt's measured maximum (e.g. 50%)")
	fs.StringVar(&cfg.DocSize, "doc-size", "1KiB", "document size: 1KiB, a range 512B..8KiB, or weights 1KiB:8,16KiB:2 (200B..64KiB)")
	fs.IntVar(&cfg.BulkSize, "bulk-size", 100, "documents per _bulk_docs request")
	fs.Uint64Var(&seed, "seed", 1, "seed of the documents and the request sequence")
	fs.StringVar(&targets, "targets", "", "comma-separated: direct,nginx,sidecrypt-passthrough,sidecrypt (default: all that are available)")
	fs.StringVar(&cfg.Upstream, "upstream", "builtin", "datastore: builtin, pouchdb, or a URL")
	fs.StringVar(&cfg.NginxURL, "nginx-url", "", "measure this running nginx instead of starting one (must proxy to --upstream)")
	fs.StringVar(&cfg.PassthroughURL, "passthrough-url", "", "measure this running sidecrypt with no matching rules instead of starting one")
	fs.StringVar(&cfg.SidecryptURL, "sidecrypt-url", "", "measure this running sidecrypt instead of starting one (its rules must cover /<db>_sidecrypt)")
	fs.DurationVar(&cfg.Round, "round", 2*time.Second, "length of one interleaving round")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured load per target before the rounds (0 for none)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&cfg.SetupDocs, "setup-docs", 1000, "documents written per target before read and query workloads")
	fs.StringVar(&cfg.DB, "db", "loadtest", "database name prefix")
	fs.StringVar(&cfg.Generator, "generator", "builtin", "load generator: builtin (closed or open loop) or wrk (closed loop, apt-get install wrk)")
	fs.IntVar(&cfg.RulesVersion, "rules-version", 2, "rule file version of the sidecrypt targets: 2 (CouchDB profile) or 1 (routes)")
	fs.Func("target-cmd", "another target: NAME=COMMAND, a proxy started with {listen} and {upstream} replaced (repeatable; e.g. the engine probe of make bench)", func(v string) error {
		ct, err := loadtest.ParseCommandTarget(v)
		if err != nil {
			return err
		}
		cfg.Commands = append(cfg.Commands, ct)
		return nil
	})
	fs.StringVar(&cfg.Engine, "engine", "", "the sidecrypt targets' HTTP engine: nethttp or fasthttp (SIDECRYPT_ENGINE; default: sidecrypt's)")
	fs.StringVar(&cfg.SidecarExecutable, "sidecar-exe", "", "run the sidecrypt targets from this sidecrypt binary (another build) instead of this one")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow targets that are not loopback addresses")
	fs.StringVar(&cfg.PprofDir, "pprof", "", "directory for CPU profiles of the sidecrypt targets (from their admin listener)")
	fs.BoolVar(&jsonOut, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&reportFile, "report", "", "write a self-contained HTML report to this file")
	fs.StringVar(&mdFile, "markdown", "", "write the result as Markdown to this file")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(a.stderr, "sidecrypt loadtest: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = -1 // Config's zero means "default"; the flag's 0 means none
	}
	cfg.Seed = seed
	if seed == 0 {
		fmt.Fprintln(a.stderr, "sidecrypt loadtest: --seed must not be 0")
		return exitUsage
	}
	if rate != "" {
		if p, ok := strings.CutSuffix(rate, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil || v <= 0 {
				fmt.Fprintf(a.stderr, "sidecrypt loadtest: --rate %q: want requests per second or a percentage like 50%%\n", rate)
				return exitUsage
			}
			cfg.RatePercent = v
		} else {
			v, err := strconv.ParseFloat(rate, 64)
			if err != nil || v <= 0 {
				fmt.Fprintf(a.stderr, "sidecrypt loadtest: --rate %q: want requests per second or a percentage like 50%%\n", rate)
				return exitUsage
			}
			cfg.Rate = v
		}
	}
	if targets != "" && targets != "all" {
		for t := range strings.SplitSeq(targets, ",") {
			cfg.Targets = append(cfg.Targets, strings.TrimSpace(t))
		}
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt: %v\n", err)
		return exitUsage
	}
	if exe, err := os.Executable(); err == nil {
		cfg.Executable = exe
	}
	cfg.Log = a.stderr
	// A bar redrawn in place on a terminal; elsewhere a line per phase
	// and per round (loadtest/progress.go).
	cfg.Progress = a.stderr
	cfg.Command = append([]string{"sidecrypt", "loadtest"}, args...)

	res, err := loadtest.Run(a.ctx, cfg)
	if err != nil {
		return a.fail(err)
	}
	if jsonOut {
		err = res.WriteJSON(a.stdout)
	} else {
		err = res.WriteText(a.stdout)
	}
	if err != nil {
		return a.fail(err)
	}
	for _, out := range []struct {
		file  string
		write func(io.Writer) error
	}{{reportFile, res.WriteHTML}, {mdFile, res.WriteMarkdown}} {
		if out.file == "" {
			continue
		}
		var buf bytes.Buffer
		if err := out.write(&buf); err != nil {
			return a.fail(err)
		}
		if err := os.WriteFile(out.file, buf.Bytes(), 0o644); err != nil {
			return a.fail(fmt.Errorf("loadtest: %w", err))
		}
		fmt.Fprintf(a.stderr, "loadtest: wrote %s\n", out.file)
	}
	if res.Interrupted {
		fmt.Fprintln(a.stderr, "sidecrypt: loadtest interrupted")
		return exitFail
	}
	return exitOK
}

func cmdLoadtestUpstream(a *app, args []string) int {
	fs := a.flags("loadtest upstream", `sidecrypt loadtest upstream --listen ADDR

Serves the built-in upstream: an in-memory datastore speaking the subset of
the CouchDB API that the load test uses (see the memcouch package). It
prints "listening on http://ADDR" once ready and runs until interrupted.
Port 0 picks a free port.`)
	listen := fs.String("listen", "127.0.0.1:5984", "address to listen on")
	allowRemote := fs.Bool("allow-remote", false, "allow listening on an address other than loopback")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt loadtest upstream: --listen %q: want host:port\n", *listen)
		return exitUsage
	}
	if ip := net.ParseIP(host); !*allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(a.stderr, "sidecrypt loadtest upstream: %s is not a loopback address; it keeps no data safe, so pass --allow-remote if you mean it\n", host)
		return exitUsage
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return a.fail(fmt.Errorf("loadtest upstream: %w", err))
	}
	srv := &http.Server{Handler: memcouch.New(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(a.stdout, "listening on http://%s\n", l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return a.fail(fmt.Errorf("loadtest upstream: %w", err))
		}
	case <-a.ctx.Done():
		srv.Close()
	}
	return exitOK
}
