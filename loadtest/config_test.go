package loadtest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/rules"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"mixed", func(c *Config) { c.Workload = "mixed"; c.Mix = "read=1,query=1" }, ""},
		{"open loop", func(c *Config) { c.Rate = 500 }, ""},
		{"remote upstream", func(c *Config) { c.Upstream = "http://10.1.2.3:5984" }, "not a loopback address"},
		{"remote nginx", func(c *Config) { c.NginxURL = "http://example.com" }, "not a loopback address"},
		{"remote allowed", func(c *Config) { c.Upstream = "http://10.1.2.3:5984"; c.AllowRemote = true }, ""},
		{"localhost", func(c *Config) { c.SidecryptURL = "http://localhost:8080" }, ""},
		{"ipv6 loopback", func(c *Config) { c.SidecryptURL = "http://[::1]:8080" }, ""},
		{"both bounds", func(c *Config) { c.Duration = time.Second; c.Requests = 10 }, "not both"},
		{"unknown workload", func(c *Config) { c.Workload = "scan" }, "unknown workload"},
		{"unknown target", func(c *Config) { c.Targets = []string{"direct", "haproxy"} }, `unknown target "haproxy"`},
		{"zero concurrency", func(c *Config) { c.Concurrency = -1 }, "concurrency"},
		{"rate and percent", func(c *Config) { c.Rate = 5; c.RatePercent = 50 }, "not both"},
		{"percent too big", func(c *Config) { c.RatePercent = 150 }, "between 0% and 100%"},
		{"doc size", func(c *Config) { c.DocSize = "1MiB" }, "doc size"},
		{"bulk size", func(c *Config) { c.BulkSize = 1 << 20 }, "bulk size"},
		{"short round", func(c *Config) { c.Round = time.Millisecond }, "round"},
		{"bad db", func(c *Config) { c.DB = "Bad-Name" }, "database prefix"},
		{"bad upstream", func(c *Config) { c.Upstream = "couch" }, "want builtin, pouchdb or an http:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			tt.mod(&c)
			c.Defaults()
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "loadtest: ") {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPlanRounds(t *testing.T) {
	tests := []struct {
		duration, round time.Duration
		requests        int64
		rounds          int
		length          time.Duration
		counts          []int64
	}{
		{10 * time.Second, 2 * time.Second, 0, 5, 2 * time.Second, nil},
		{12 * time.Second, 3 * time.Second, 0, 4, 3 * time.Second, nil},
		{5 * time.Second, 2 * time.Second, 0, 3, 5 * time.Second / 3, nil},
		{0, time.Second, 10, 4, 0, []int64{3, 3, 2, 2}},
		{0, time.Second, 2, 2, 0, []int64{1, 1}},
	}
	for _, tt := range tests {
		r := &runner{cfg: Config{Duration: tt.duration, Round: tt.round, Requests: tt.requests}}
		rounds, length, counts := r.plan()
		if rounds != tt.rounds || length != tt.length || len(counts) != len(tt.counts) {
			t.Errorf("plan(%v, %v, %d) = %d, %v, %v", tt.duration, tt.round, tt.requests, rounds, length, counts)
			continue
		}
		var total int64
		for i, c := range counts {
			total += c
			if c != tt.counts[i] {
				t.Errorf("plan(%d requests) counts = %v, want %v", tt.requests, counts, tt.counts)
			}
		}
		if tt.requests > 0 && total != tt.requests {
			t.Errorf("counts add up to %d, want %d", total, tt.requests)
		}
	}
}

func TestGoals(t *testing.T) {
	closed := func(direct, nginx, pass, sc float64, errs int64) *Result {
		r := &Result{Settings: Settings{Loop: "closed"}}
		for _, x := range []struct {
			name string
			tput float64
		}{{TargetDirect, direct}, {TargetNginx, nginx}, {TargetPassthrough, pass}, {TargetSidecrypt, sc}} {
			if x.tput > 0 {
				r.Targets = append(r.Targets, TargetResult{Name: x.name, Throughput: x.tput, Latency: Latency{P99: 1000}})
			}
		}
		r.Targets[0].ErrorTotal = errs
		r.Targets[0].Errors = map[string]int64{ErrHTTP5xx: errs}
		r.Ratios = computeRatios(r.Targets)
		return r
	}
	met := func(g Goal) string {
		if g.Met == nil {
			return "n/a"
		}
		return map[bool]string{true: "met", false: "missed"}[*g.Met]
	}
	tests := []struct {
		name   string
		res    *Result
		want   []string
		detail string
	}{
		{"all met", closed(1000, 900, 850, 700, 0), []string{"met", "met", "met"}, "94.4% of nginx"},
		{"missed", closed(1000, 1000, 800, 500, 3), []string{"missed", "missed", "missed"}, "missed by 10.0 points"},
		{"no sidecrypt", closed(1000, 1000, 0, 0, 0), []string{"n/a", "n/a", "met"}, "not measured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			goals := tt.res.Goals()
			var got []string
			var details []string
			for _, g := range goals {
				got = append(got, met(g))
				details = append(details, g.Detail)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("goals = %v, want %v (%v)", got, tt.want, details)
			}
			if !strings.Contains(strings.Join(details, "|"), tt.detail) {
				t.Fatalf("details %q lack %q", details, tt.detail)
			}
		})
	}
	// Open loop: p99 added against direct.
	r := &Result{Settings: Settings{Loop: "open"}, Targets: []TargetResult{
		{Name: TargetDirect, Latency: Latency{P99: 800}},
		{Name: TargetSidecrypt, Latency: Latency{P99: 2300}},
	}}
	r.Ratios = computeRatios(r.Targets)
	g := r.Goals()[0]
	if g.Met == nil || *g.Met || !strings.Contains(g.Detail, "+1.500 ms") || !strings.Contains(g.Detail, "missed by 0.500 ms") {
		t.Fatalf("open-loop goal = %+v", g)
	}
}

// TestRulesCompile checks the generated rule files with the real rules
// compiler, and that the sidecrypt target's rules protect what the
// workload sends while the passthrough's match none of it: version 1 by
// route, version 2 by the CouchDB profile's classification.
func TestRulesCompile(t *testing.T) {
	db := DatabaseFor("loadtest", TargetSidecrypt)
	plan, diags, err := rules.Compile("loadtest", []byte(RulesV1For(db)))
	if err != nil {
		t.Fatalf("rules do not compile: %v %v", err, diags)
	}
	for _, d := range diags {
		t.Errorf("diagnostic: %v", d)
	}
	for _, tc := range []struct {
		method, path, route string
	}{
		{"POST", "/" + db, "loadtest-write"},
		{"POST", "/" + db + "/_bulk_docs", "loadtest-write"},
		{"POST", "/" + db + "/_find", "loadtest-find"},
		{"GET", "/" + db + "/someid", ""},
		{"POST", "/" + DatabaseFor("loadtest", TargetDirect), ""},
	} {
		got := ""
		if r := plan.Match(rules.Request{Method: tc.method, Path: tc.path, ContentType: "application/json"}); r != nil {
			got = r.Name
		}
		if got != tc.route {
			t.Errorf("%s %s matched route %q, want %q", tc.method, tc.path, got, tc.route)
		}
	}
	pass, _, err := rules.Compile("passthrough", []byte(RulesV1For(passthroughDB)))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range AllTargets {
		for _, suffix := range []string{"", "/_bulk_docs", "/_find"} {
			if r := pass.Match(rules.Request{Method: "POST", Path: "/" + DatabaseFor("loadtest", target) + suffix, ContentType: "application/json"}); r != nil {
				t.Errorf("passthrough rules match %s%s", target, suffix)
			}
		}
	}
}

// TestRulesV2Classify checks the version 2 rule files against the CouchDB
// profile: every request of every workload is one the profile lets through
// on the sidecrypt target's database, with the body sealed where documents
// or compared values travel and responses opened where documents come back;
// on the passthrough target nothing is protected.
func TestRulesV2Classify(t *testing.T) {
	db := DatabaseFor("loadtest", TargetSidecrypt)
	plan, diags, err := rules.Compile("loadtest", []byte(RulesFor(db)))
	if err != nil || plan.Profile == nil {
		t.Fatalf("rules do not compile to a profile: %v %v", err, diags)
	}
	for _, d := range diags {
		t.Errorf("diagnostic: %v", d)
	}
	w := NewWorkload(Mix{1, 1, 1, 1}, NewGenerator(1, SizeDist{sizes: []int{1024}, weights: []int{1}}), 1, 3)
	pool := &Pool{IDs: []string{"0c1f3a9e2b7d4c5a"}, Emails: []string{"ada.lovelace.1@example.org"}}
	want := map[Op]datastore.BodyRule{OpWrite: datastore.BodyEncrypt, OpBulk: datastore.BodyEncrypt, OpRead: datastore.BodyNone, OpQuery: datastore.BodyTransform}
	seen := map[Op]bool{}
	for seq := range uint64(64) {
		req := w.Build(seq, db, pool)
		path, query, _ := strings.Cut(req.Path, "?")
		op := plan.Profile.Classify(&datastore.Request{Method: req.Method, Path: path, RawQuery: query,
			Header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}, HasBody: req.Body != nil})
		if op.Refusal != nil {
			t.Fatalf("%s %s refused: %v", req.Method, req.Path, op.Refusal)
		}
		if op.Collection == nil || op.Body != want[req.Op] {
			t.Errorf("%s %s: collection %v, body rule %d, want %d", req.Method, req.Path, op.Collection != nil, op.Body, want[req.Op])
		}
		if req.Op == OpRead && op.Response != datastore.ResponseBound {
			t.Errorf("%s %s: response rule %d, want bound decryption", req.Method, req.Path, op.Response)
		}
		seen[req.Op] = true
	}
	if len(seen) != int(numOps) {
		t.Errorf("only %d of %d operations built", len(seen), numOps)
	}
	pass, _, err := rules.Compile("passthrough", []byte(RulesFor(passthroughDB)))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range AllTargets {
		for _, suffix := range []string{"", "/_bulk_docs", "/_find", "/someid"} {
			op := pass.Profile.Classify(&datastore.Request{Method: "POST", Path: "/" + DatabaseFor("loadtest", target) + suffix, Header: http.Header{}, HasBody: true})
			if op.Protected() {
				t.Errorf("passthrough rules protect %s%s", target, suffix)
			}
		}
	}
}

// TestSummaryNamesEngine: a run whose sidecars were put on another HTTP
// engine says so in its one-line summary (text and markdown headers), so
// that two tables from different engines cannot be taken for one.
func TestSummaryNamesEngine(t *testing.T) {
	r := &Result{Settings: Settings{Workload: "write", Loop: "closed", Concurrency: 4, DocSize: "1KiB", Rounds: 3, Duration: "3s", Upstream: "builtin"}}
	if s := r.Summary(); strings.Contains(s, "engine") {
		t.Errorf("no engine chosen, summary %q names one", s)
	}
	r.Settings.Engine = "fasthttp"
	if s := r.Summary(); !strings.HasSuffix(s, ", sidecars on the fasthttp engine") {
		t.Errorf("summary %q does not name the fasthttp engine", s)
	}
}
