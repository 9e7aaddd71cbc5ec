package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/scheduler"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
	"github.com/sidecrypt/sidecrypt/rules"
)

const goodRules = `version: 1
routes:
  - name: patients
    match: {methods: [POST], paths: ["/clinic"]}
    encrypt:
      - fields: ["$.ssn"]
        key: pii
        mode: random
decrypt:
  keys: [pii]
`

// testParams keep Argon2id cheap in tests; production uses argonParams.
var testParams = phc{Time: 1, Memory: 8 * 1024, Threads: 1}

// The principals every fixture has, each with the roles the name says.
var testPrincipals = []struct {
	name  string
	roles []Role
}{
	{"olive", []Role{RoleOperator}},
	{"cora", []Role{RoleCompliance}},
	{"carl", []Role{RoleCompliance}},
	{"audrey", []Role{RoleAuditor}},
	{"sofia", []Role{RoleSecurityOfficer}},
	{"sam", []Role{RoleSecurityOfficer}},
}

type fixture struct {
	srv        *httptest.Server
	api        *Server
	manager    *keystore.Manager
	kek        *keystoretest.FakeKEK
	rec        *keystoretest.Recorder
	rulesFile  string
	source     *rules.FileSource
	tokensFile string
	tokens     map[string]string // principal -> token
	hsmDown    bool
	cached     bool

	mu  sync.Mutex
	now time.Time
}

type fixtureOpts struct {
	legacyToken   string
	noPrincipals  bool
	approvalsFile string
	allowedHosts  []string
	cryptoperiod  time.Duration
}

func newFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{kek: keystoretest.NewFakeKEK(), rec: &keystoretest.Recorder{}, tokens: map[string]string{}, now: time.Now()}
	f.manager, err = keystore.NewManager(keystore.Config{Store: store, KEK: f.kek, Audit: f.rec})
	if err != nil {
		t.Fatal(err)
	}
	f.rulesFile = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(f.rulesFile, []byte(goodRules), 0o644); err != nil {
		t.Fatal(err)
	}
	f.source, err = rules.NewFileSource(f.rulesFile, rules.FileSourceOptions{Recorder: f.rec})
	if err != nil {
		t.Fatal(err)
	}
	var principals *PrincipalSource
	if !o.noPrincipals {
		f.tokensFile = filepath.Join(dir, "principals.yaml")
		for _, p := range testPrincipals {
			tok, err := createToken(f.tokensFile, p.name, p.roles, false, testParams)
			if err != nil {
				t.Fatal(err)
			}
			f.tokens[p.name] = tok
		}
		if principals, err = OpenPrincipals(f.tokensFile, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.api, err = New(Config{
		Keys: f.manager, Rules: f.source, RulesFile: FileRulesWriter(f.rulesFile),
		Rewrap: scheduler.New(f.manager, scheduler.Options{}), Recorder: f.rec, Signer: f.kek,
		Principals: principals, Token: o.legacyToken, AllowedHosts: o.allowedHosts,
		ApprovalsFile: o.approvalsFile, ApprovalTTL: time.Hour, Now: f.clock,
		DefaultCryptoperiod: o.cryptoperiod,
		PingStore:           store.Ping,
		PingHSM: func(context.Context) error {
			if f.hsmDown {
				return hsm.ErrUnavailable
			}
			return nil
		},
		CachedEnough: func([]string) bool { return f.cached },
		Metrics:      http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "# metrics\n") }),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.api)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// req is one request as a test sends it. By default a POST or PUT says
// Content-Type: application/json.
type req struct {
	method, path, body string
	as                 string // principal whose token to send; "" none
	token              string // a raw bearer token instead
	contentType        string // "-" for none
	host, origin       string
}

func (f *fixture) send(t *testing.T, r req) (int, map[string]any, http.Header) {
	t.Helper()
	hr, err := http.NewRequest(r.method, f.srv.URL+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case r.contentType == "-":
	case r.contentType != "":
		hr.Header.Set("Content-Type", r.contentType)
	case r.method == "POST" || r.method == "PUT":
		hr.Header.Set("Content-Type", "application/json")
	}
	tok := r.token
	if r.as != "" {
		tok = f.tokens[r.as]
		if tok == "" {
			t.Fatalf("no token for %q", r.as)
		}
	}
	if tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	if r.host != "" {
		hr.Host = r.host
	}
	if r.origin != "" {
		hr.Header.Set("Origin", r.origin)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", r.method, r.path, b)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// call sends as a principal and fails unless the status is want.
func (f *fixture) call(t *testing.T, as, method, path, body string, want int) map[string]any {
	t.Helper()
	status, out, _ := f.send(t, req{method: method, path: path, body: body, as: as})
	if status != want {
		t.Fatalf("%s %s as %s: %d %v, want %d", method, path, as, status, out, want)
	}
	return out
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (f *fixture) createKey(t *testing.T, name string, versions int) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.manager.Create(ctx, name, 0, false); err != nil {
		t.Fatal(err)
	}
	for v := 2; v <= versions; v++ {
		if _, err := f.manager.Rotate(ctx, name, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) state(t *testing.T, name string, v uint32) keystore.State {
	t.Helper()
	k, err := f.manager.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return k.Lookup(v).State
}

func hasCORS(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			return true
		}
	}
	return false
}

// TestBrowserAttacksFail reproduces finding 1 of issue 13: a web page in
// the operator's browser sent two text/plain POSTs (CORS "simple"
// requests, no preflight) to the loopback admin API, which needed no
// token, and revoked pii v2 and destroyed v1. Each step of that attack
// now fails on its own.
func TestBrowserAttacksFail(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 2)
	revoke := req{method: "POST", path: "/v1/keys/pii/versions/2/revoke", body: `{"reason":"x"}`, contentType: "text/plain;charset=UTF-8", origin: "http://evil.example"}
	destroy := req{method: "POST", path: "/v1/keys/pii/versions/1/destroy", body: `{"confirm":"pii"}`, contentType: "text/plain", origin: "http://evil.example"}
	for _, tc := range []struct {
		name     string
		mutate   func(r req) req
		want     int
		wantCode string
	}{
		// What the page sends: no credentials, text/plain, its Origin.
		{"as the page sends it", func(r req) req { return r }, 403, "browser_refused"},
		// Even a caller holding a token is refused with the page's
		// Origin, or with a text/plain body.
		{"with a token, from a page", func(r req) req { r.as = "olive"; r.contentType = ""; return r }, 403, "browser_refused"},
		{"with a token, text/plain", func(r req) req { r.as = "olive"; r.origin = ""; return r }, 415, "unsupported_media_type"},
		{"with a token, no Content-Type", func(r req) req { r.as = "sofia"; r.origin = ""; r.contentType = "-"; return r }, 415, "unsupported_media_type"},
		{"a form post", func(r req) req {
			r.origin, r.contentType = "", "application/x-www-form-urlencoded"
			return r
		}, 415, "unsupported_media_type"},
		// And without the browser's marks, no credentials: 401.
		{"no credentials", func(r req) req { r.origin = ""; r.contentType = ""; return r }, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []req{revoke, destroy} {
				status, out, h := f.send(t, tc.mutate(r))
				if status != tc.want || errCode(out) != tc.wantCode {
					t.Fatalf("%s: %d %v, want %d %s", r.path, status, out, tc.want, tc.wantCode)
				}
				if hasCORS(h) {
					t.Fatalf("CORS headers in the answer: %v", h)
				}
			}
		})
	}
	if s := f.state(t, "pii", 2); s != keystore.StateActive {
		t.Fatalf("pii v2 is %s after the attack", s)
	}
	if s := f.state(t, "pii", 1); s == keystore.StateDestroyed {
		t.Fatal("pii v1 was destroyed by the attack")
	}
	// A preflight gets no CORS headers either, so a browser never sends
	// the real request.
	status, _, h := f.send(t, req{method: "OPTIONS", path: "/v1/keys/pii/versions/2/revoke", origin: "http://evil.example"})
	if status < 400 || hasCORS(h) {
		t.Fatalf("preflight: %d %v", status, h)
	}
	if n := len(f.rec.Find("admin.denied")); n < 12 {
		t.Fatalf("%d admin.denied events, want one per refused call", n)
	}
}

// TestDNSRebindingFails reproduces the other half of finding 1: a request
// whose Host is a foreign name (a page on a DNS name rebound to
// 127.0.0.1) replaced the rules with `routes: []`.
func TestDNSRebindingFails(t *testing.T) {
	f := newFixture(t, fixtureOpts{allowedHosts: []string{"sidecar.internal"}})
	before := f.source.Current().Hash
	_, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	empty := "version: 1\nroutes: []\n"
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.2:" + port, "127.0.0.1:1"} {
		status, out, _ := f.send(t, req{method: "PUT", path: "/v1/rules", body: empty, as: "cora", contentType: "application/yaml", host: host})
		if status != http.StatusMisdirectedRequest || errCode(out) != "host_refused" {
			t.Fatalf("Host %s: %d %v, want 421 host_refused", host, status, out)
		}
	}
	if f.source.Current().Hash != before {
		t.Fatal("the rules changed through a foreign Host")
	}
	// The listener's own address, localhost on loopback, and a
	// configured name are accepted.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "sidecar.internal", "SIDECAR.internal:" + port} {
		if status, out, _ := f.send(t, req{method: "GET", path: "/v1/whoami", as: "cora", host: host}); status != 200 {
			t.Fatalf("Host %s: %d %v", host, status, out)
		}
	}
	// Health, readiness and metrics do not check Host: a probe may use
	// any name.
	if status, _, _ := f.send(t, req{method: "GET", path: "/healthz", host: "anything.example"}); status != 200 {
		t.Fatalf("healthz with another Host: %d", status)
	}
}

// TestTCPNeedsCredentials: no API endpoint answers on TCP without a
// credential; health, readiness and metrics do.
func TestTCPNeedsCredentials(t *testing.T) {
	for _, o := range []fixtureOpts{{}, {noPrincipals: true}, {noPrincipals: true, legacyToken: "legacy-admin-token-0123456789"}} {
		f := newFixture(t, o)
		for _, rt := range f.api.routeTable() {
			method, path, _ := strings.Cut(rt.pattern, " ")
			path = concretePath(path)
			status, out, h := f.send(t, req{method: method, path: path, body: "{}", token: "sct_000000000000_wrong"})
			if status != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s with a wrong token: %d %v", rt.pattern, status, out)
			}
			if status, out, _ := f.send(t, req{method: method, path: path, body: "{}"}); status != http.StatusUnauthorized {
				t.Fatalf("%s without credentials: %d %v", rt.pattern, status, out)
			}
		}
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			if status, _, _ := f.send(t, req{method: "GET", path: p}); status != 200 {
				t.Fatalf("%s: %d", p, status)
			}
		}
	}
}

func concretePath(p string) string {
	r := strings.NewReplacer("{name}", "pii", "{version}", "1", "{id}", "0123456789ab")
	return r.Replace(p)
}

// policy is who may call what, written out independently of routeTable:
// TestRouteRoles fails when the two disagree, and when a route is added
// without a line here.
var policy = map[string][]Role{
	"GET /v1/whoami":                                   AllRoles,
	"GET /v1/keys":                                     AllRoles,
	"POST /v1/keys":                                    {RoleOperator},
	"GET /v1/keys/{name}":                              AllRoles,
	"POST /v1/keys/{name}/rotate":                      {RoleOperator},
	"POST /v1/keys/{name}/cryptoperiod":                {RoleOperator},
	"POST /v1/keys/{name}/versions/{version}/activate": {RoleOperator},
	"POST /v1/keys/{name}/versions/{version}/revoke":   {RoleOperator},
	"POST /v1/keys/{name}/versions/{version}/destroy":  {RoleSecurityOfficer},
	"POST /v1/keys/{name}/versions/{version}/override": {RoleSecurityOfficer},
	"GET /v1/kek":                                      AllRoles,
	"POST /v1/kek/rotate":                              {RoleOperator},
	"POST /v1/kek/{version}/retire":                    {RoleOperator},
	"GET /v1/rewrap":                                   AllRoles,
	"POST /v1/rewrap":                                  {RoleOperator},
	"GET /v1/rules":                                    AllRoles,
	"POST /v1/rules/validate":                          {RoleCompliance},
	"POST /v1/rules/diff":                              {RoleCompliance, RoleAuditor},
	"PUT /v1/rules":                                    {RoleCompliance},
	"GET /v1/audit":                                    {RoleAuditor},
	"GET /v1/audit/verify":                             {RoleAuditor},
	"GET /v1/approvals":                                AllRoles,
	"GET /v1/approvals/{id}":                           AllRoles,
	// Checked against the request inside (TestDualControl*): any
	// principal reaches the handler.
	"POST /v1/approvals/{id}/approve": AllRoles,
	"POST /v1/approvals/{id}/reject":  AllRoles,
	"GET /debug/pprof/":               {RoleOperator},
	"GET /debug/pprof/cmdline":        {RoleOperator},
	"GET /debug/pprof/profile":        {RoleOperator},
	"GET /debug/pprof/symbol":         {RoleOperator},
	"GET /debug/pprof/trace":          {RoleOperator},

	// The store sweep (sweeps.go): an inventory is for auditors too.
	"GET /v1/sweeps":                      AllRoles,
	"GET /v1/sweeps/{collection}":         AllRoles,
	"POST /v1/sweeps":                     {RoleOperator},
	"POST /v1/sweeps/inventory":           {RoleOperator, RoleAuditor},
	"POST /v1/sweeps/{collection}/pause":  {RoleOperator},
	"POST /v1/sweeps/{collection}/resume": {RoleOperator},
}

// TestRouteRoles calls every route as a principal holding each role
// alone: it is refused (403 forbidden) exactly when the policy says so.
func TestRouteRoles(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 1)
	as := map[Role]string{RoleOperator: "olive", RoleCompliance: "cora", RoleAuditor: "audrey", RoleSecurityOfficer: "sofia"}
	var seen []string
	for _, rt := range f.api.routeTable() {
		seen = append(seen, rt.pattern)
		want, ok := policy[rt.pattern]
		if !ok {
			t.Errorf("route %s is not in the policy table", rt.pattern)
			continue
		}
		var got []Role
		if rt.roles == nil {
			got = AllRoles
		} else {
			got = rt.roles
		}
		if !sameRoles(got, want) {
			t.Errorf("%s: route allows %v, policy says %v", rt.pattern, got, want)
		}
		for _, role := range AllRoles {
			t.Run(rt.pattern+"/"+string(role), func(t *testing.T) {
				method, path, _ := strings.Cut(rt.pattern, " ")
				path = concretePath(path)
				body, ct := "{}", ""
				if strings.Contains(path, "/v1/rules") {
					body, ct = goodRules, "application/yaml"
				}
				if strings.HasSuffix(path, "/profile") || strings.HasSuffix(path, "/trace") {
					path += "?seconds=1"
				}
				status, out, _ := f.send(t, req{method: method, path: path, body: body, as: as[role], contentType: ct})
				allowed := slices.Contains(want, role)
				switch {
				case allowed && (status == 401 || status == 403 && errCode(out) == "forbidden"):
					t.Fatalf("%s refused to %s: %d %v", rt.pattern, role, status, out)
				case !allowed && (status != 403 || errCode(out) != "forbidden"):
					t.Fatalf("%s answered %s: %d %v, want 403 forbidden", rt.pattern, role, status, out)
				}
			})
		}
	}
	for p := range policy {
		if !slices.Contains(seen, p) {
			t.Errorf("policy names %s, which is not a route", p)
		}
	}
}

func sameRoles(a, b []Role) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestAuditNamesThePrincipal: events of API calls name the principal,
// never a token or a fragment of its hash, and state-changing calls
// leave an admin.call event with how the caller got in.
func TestAuditNamesThePrincipal(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.call(t, "olive", "POST", "/v1/keys", `{"name":"pii"}`, http.StatusCreated)
	created := f.rec.Find("key.create")
	if len(created) != 1 || created[0].Actor != "admin:olive" {
		t.Fatalf("key.create %+v, want actor admin:olive", created)
	}
	calls := f.rec.Find("admin.call")
	if len(calls) != 1 || calls[0].Actor != "admin:olive" || calls[0].Details["auth"] != "token" || calls[0].Details["via"] != "tcp" || calls[0].Details["status"] != "201" {
		t.Fatalf("admin.call %+v", calls)
	}
	f.send(t, req{method: "POST", path: "/v1/keys", body: `{"name":"x"}`, token: f.tokens["olive"] + "x"})
	for _, e := range f.rec.Events() {
		b, _ := json.Marshal(e)
		for _, tok := range f.tokens {
			if strings.Contains(string(b), tok) || strings.Contains(string(b), tok[4:16]) && e.Action == "admin.denied" {
				t.Fatalf("audit event carries a token or its id: %s", b)
			}
		}
	}
}

func TestLegacyTokenIsOnePrincipalWithEveryRole(t *testing.T) {
	const token = "legacy-admin-token-0123456789"
	f := newFixture(t, fixtureOpts{legacyToken: token, noPrincipals: true})
	status, out, _ := f.send(t, req{method: "GET", path: "/v1/whoami", token: token})
	if status != 200 || out["principal"] != "admin" || out["method"] != "legacy-token" || len(out["roles"].([]any)) != 4 {
		t.Fatalf("whoami: %d %v", status, out)
	}
	for _, bad := range []string{"", "guess", token[:5], token + "x"} {
		if status, _, _ := f.send(t, req{method: "POST", path: "/v1/keys", body: `{"name":"pii"}`, token: bad}); status != 401 {
			t.Fatalf("token %q: %d", bad, status)
		}
	}
	if status, _, _ := f.send(t, req{method: "POST", path: "/v1/keys", body: `{"name":"pii"}`, token: token}); status != 201 {
		t.Fatal(status)
	}
	if e := f.rec.Find("key.create"); len(e) != 1 || e[0].Actor != "admin:admin" {
		t.Fatalf("%+v", e)
	}
}

func TestKeyLifecycleThroughAPI(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		return f.call(t, "olive", method, path, body, want)
	}
	call("POST", "/v1/keys", `{"name":"pii","cryptoperiod":"90d"}`, http.StatusCreated)
	call("POST", "/v1/keys", `{"name":"pii"}`, http.StatusConflict)
	call("POST", "/v1/keys", `{"name":"pii","colour":"red"}`, http.StatusBadRequest)
	k, err := f.manager.Get(context.Background(), "pii")
	if err != nil || k.Cryptoperiod != 90*24*time.Hour {
		t.Fatalf("key %+v %v", k, err)
	}
	// The cryptoperiod of an existing key: changed, audited; bad values
	// and unknown keys refused without a change.
	call("POST", "/v1/keys/pii/cryptoperiod", `{"cryptoperiod":"30d"}`, http.StatusOK)
	call("POST", "/v1/keys/pii/cryptoperiod", `{"cryptoperiod":"-1h"}`, http.StatusBadRequest)
	call("POST", "/v1/keys/pii/cryptoperiod", `{"cryptoperiod":"soon"}`, http.StatusBadRequest)
	call("POST", "/v1/keys/pii/cryptoperiod", `{}`, http.StatusBadRequest)
	call("POST", "/v1/keys/nope/cryptoperiod", `{"cryptoperiod":"30d"}`, http.StatusNotFound)
	if k, err := f.manager.Get(context.Background(), "pii"); err != nil || k.Cryptoperiod != 30*24*time.Hour {
		t.Fatalf("after POST cryptoperiod: %+v %v", k, err)
	}
	if e := f.rec.Find("key.cryptoperiod"); len(e) != 2 || e[0].Outcome != "ok" || e[0].Details["previous"] != (90*24*time.Hour).String() || e[1].Key != "nope" || e[1].Outcome == "ok" {
		t.Fatalf("cryptoperiod change audited as %+v", e)
	}
	out := call("POST", "/v1/keys/pii/rotate", "", http.StatusOK)
	if out["primary"].(float64) != 2 {
		t.Fatalf("rotate: %v", out)
	}
	call("POST", "/v1/keys/pii/versions/1/revoke", `{"compromised":true,"reason":"laptop stolen"}`, http.StatusOK)
	// An invalid transition is a 409 naming what is allowed.
	out = call("POST", "/v1/keys/pii/versions/1/activate", "", http.StatusConflict)
	if errCode(out) != "not_allowed" {
		t.Fatalf("%v", out)
	}
	call("GET", "/v1/keys/nope", "", http.StatusNotFound)
	call("POST", "/v1/keys/pii/versions/x/revoke", `{}`, http.StatusBadRequest)
	call("POST", "/v1/keys/pii/versions/1/explode", `{}`, http.StatusNotFound)
	// The listing never carries wrapped key material.
	hr, _ := http.NewRequest("GET", f.srv.URL+"/v1/keys", nil)
	hr.Header.Set("Authorization", "Bearer "+f.tokens["audrey"])
	r, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || strings.Contains(string(raw), "wrapped") {
		t.Fatalf("key listing: %d %s", r.StatusCode, raw)
	}
	// KEK rotation and re-wrap.
	call("POST", "/v1/kek/rotate", "", http.StatusOK)
	call("POST", "/v1/kek/2/retire", "", http.StatusConflict) // current
	call("GET", "/v1/rewrap", "", http.StatusOK)
}

// TestDualControlDestroy: a destroy is a request until a second security
// officer approves it; the requester cannot, nor can another role; the
// audit log shows request, approval and the destroy by both.
func TestDualControlDestroy(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 2) // v1 deactivated by the rotation

	// Refused at request time: no confirm, a version that still encrypts.
	f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"reason":"end of life"}`, 400)
	f.call(t, "sofia", "POST", "/v1/keys/pii/versions/2/destroy", `{"confirm":"pii"}`, 409)

	out := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"end of life"}`, http.StatusAccepted)
	ap := out["approval"].(map[string]any)
	id := ap["id"].(string)
	if ap["requested_by"] != "sofia" || ap["required_role"] != "security-officer" || !strings.Contains(out["message"].(string), "approvals approve "+id) {
		t.Fatalf("request: %v", out)
	}
	if f.state(t, "pii", 1) == keystore.StateDestroyed {
		t.Fatal("destroyed on request, before approval")
	}
	list := f.call(t, "audrey", "GET", "/v1/approvals", "", 200)["approvals"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != id {
		t.Fatalf("list: %v", list)
	}

	out = f.call(t, "sofia", "POST", "/v1/approvals/"+id+"/approve", "", http.StatusForbidden)
	if errCode(out) != "same_principal" {
		t.Fatalf("self-approval: %v", out)
	}
	out = f.call(t, "olive", "POST", "/v1/approvals/"+id+"/approve", "", http.StatusForbidden)
	if errCode(out) != "forbidden" {
		t.Fatalf("approval by an operator: %v", out)
	}
	if f.state(t, "pii", 1) == keystore.StateDestroyed {
		t.Fatal("destroyed without a valid approval")
	}
	out = f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", "", 200)
	if out["applied"] != true || out["approved_by"] != "sam" {
		t.Fatalf("approve: %v", out)
	}
	if f.state(t, "pii", 1) != keystore.StateDestroyed {
		t.Fatal("not destroyed after approval")
	}
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", "", 404)

	// The record: requested by sofia, approved by sam, done by both.
	if e := f.rec.Find("approval.request"); len(e) != 1 || e[0].Actor != "admin:sofia" || e[0].Details["id"] != id {
		t.Fatalf("approval.request %+v", e)
	}
	if e := f.rec.Find("approval.approve"); len(e) != 1 || e[0].Actor != "admin:sam" {
		t.Fatalf("approval.approve %+v", e)
	}
	d := f.rec.Find("key.destroy")
	if len(d) != 1 || d[0].Actor != "admin:sofia+sam" || !strings.Contains(d[0].Reason, "end of life [dual control "+id+": requested by sofia, approved by sam]") {
		t.Fatalf("key.destroy %+v", d)
	}
	if e := f.rec.Find("approval.apply"); len(e) != 1 || e[0].Outcome != "ok" {
		t.Fatalf("approval.apply %+v", e)
	}
}

func TestDualControlOverrideAndExpiry(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 2)
	f.call(t, "olive", "POST", "/v1/keys/pii/versions/1/revoke", `{"compromised":true,"reason":"leak"}`, 200)
	// Only a compromised version takes an override.
	f.call(t, "sofia", "POST", "/v1/keys/pii/versions/2/override", `{"for":"1h","reason":"x"}`, 409)
	out := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/override", `{"for":"2h","reason":"read data out"}`, 202)
	id := out["approval"].(map[string]any)["id"].(string)

	// Not approved within the hour: it expires, and is recorded.
	f.advance(61 * time.Minute)
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", "", 404)
	if e := f.rec.Find("approval.expire"); len(e) != 1 || e[0].Details["id"] != id {
		t.Fatalf("approval.expire %+v", e)
	}
	if len(f.rec.Find("key.override")) != 0 {
		t.Fatal("an expired request was applied")
	}

	out = f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/override", `{"for":"2h","reason":"read data out"}`, 202)
	id = out["approval"].(map[string]any)["id"].(string)
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", "", 200)
	k, _ := f.manager.Get(context.Background(), "pii")
	if until := k.Lookup(1).OverrideUntil; until.Sub(f.clock()) < 119*time.Minute {
		t.Fatalf("override until %v, want 2h from approval", until)
	}
	if e := f.rec.Find("key.override"); len(e) != 1 || e[0].Actor != "admin:sofia+sam" {
		t.Fatalf("%+v", e)
	}
}

func TestRejectAndWithdraw(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 2)
	ask := func() string {
		out := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii"}`, 202)
		return out["approval"].(map[string]any)["id"].(string)
	}
	id := ask()
	f.call(t, "olive", "POST", "/v1/approvals/"+id+"/reject", `{"reason":"no"}`, 403)
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/reject", `{"reason":"not today"}`, 200)
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", "", 404)
	id = ask()
	out := f.call(t, "sofia", "POST", "/v1/approvals/"+id+"/reject", "", 200)
	if out["withdrawn"] != true {
		t.Fatalf("%v", out)
	}
	if e := f.rec.Find("approval.reject"); len(e) != 2 || e[0].Actor != "admin:sam" || e[1].Details["what"] != "withdrawn" {
		t.Fatalf("%+v", e)
	}
	if f.state(t, "pii", 1) == keystore.StateDestroyed {
		t.Fatal("destroyed")
	}
}

// TestDualControlRules: a rule change whose diff is flagged (a route
// removed, a key opened) waits for a second compliance principal; one
// that only adds protection is applied at once.
func TestDualControlRules(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	before := f.source.Current().Hash
	put := func(as, body string, want int) map[string]any {
		t.Helper()
		status, out, _ := f.send(t, req{method: "PUT", path: "/v1/rules", body: body, as: as, contentType: "application/yaml"})
		if status != want {
			t.Fatalf("PUT as %s: %d %v, want %d", as, status, out, want)
		}
		return out
	}
	// Validation and the diff report change nothing.
	status, out, _ := f.send(t, req{method: "POST", path: "/v1/rules/validate", body: "version: 1\nroutes:\n  - name: x\n    mtach: {}\n", as: "cora", contentType: "application/yaml"})
	if status != 200 || out["valid"] != false {
		t.Fatalf("validate: %d %v", status, out)
	}
	status, out, _ = f.send(t, req{method: "POST", path: "/v1/rules/diff", body: "version: 1\nroutes: []\n", as: "audrey", contentType: "application/yaml"})
	if status != 200 || out["dual_control"] != true || !strings.Contains(out["summary"].(string), "REMOVED") {
		t.Fatalf("diff: %d %v", status, out)
	}
	// An invalid PUT is refused; the file and the rules in force stay.
	out = put("cora", "version: 9\n", 400)
	if errCode(out) != "invalid_rules" {
		t.Fatalf("%v", out)
	}
	// Adding protection is not flagged: applied at once.
	out = put("cora", strings.Replace(goodRules, `["$.ssn"]`, `["$.ssn", "$.name"]`, 1), 200)
	if out["applied"] != true {
		t.Fatalf("%v", out)
	}
	before = f.source.Current().Hash

	// The attack from finding 1: every route dropped. Now a request.
	out = put("cora", "version: 1\nroutes: []\n", http.StatusAccepted)
	ap := out["approval"].(map[string]any)
	id := ap["id"].(string)
	if ap["kind"] != "rules.put" || ap["required_role"] != "compliance" || len(ap["changes"].([]any)) == 0 {
		t.Fatalf("rules request: %v", out)
	}
	if f.source.Current().Hash != before {
		t.Fatal("a flagged rule change was applied without approval")
	}
	// The full request shows the file to approve.
	if out := f.call(t, "carl", "GET", "/v1/approvals/"+id, "", 200); out["rules"] != "version: 1\nroutes: []\n" {
		t.Fatalf("%v", out)
	}
	f.call(t, "cora", "POST", "/v1/approvals/"+id+"/approve", "", 403)
	f.call(t, "carl", "POST", "/v1/approvals/"+id+"/approve", "", 200)
	if f.source.Current().Hash == before || len(f.source.Current().Routes) != 0 {
		t.Fatal("the approved change is not in force")
	}
	reloads := f.rec.Find("rules.reload")
	if len(reloads) != 2 || reloads[1].Actor != "admin:cora+carl" {
		t.Fatalf("rules.reload %+v", reloads)
	}

	// A request made on top of other rules is not applied once those
	// changed: the reviewed diff no longer says what it would do.
	out = put("cora", goodRules, http.StatusAccepted) // opens pii again: flagged
	id = out["approval"].(map[string]any)["id"].(string)
	put("cora", "version: 1\nroutes: []\n# a comment\n", 200)
	out = f.call(t, "carl", "POST", "/v1/approvals/"+id+"/approve", "", 409)
	if errCode(out) != "rules_changed" {
		t.Fatalf("%v", out)
	}
}

// TestApprovalsSurviveRestart: pending requests are kept in a file, each
// sealed with the HSM's audit key; one changed by hand is dropped and
// recorded.
func TestApprovalsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log.approvals")
	f := newFixture(t, fixtureOpts{approvalsFile: path})
	f.createKey(t, "pii", 2)
	id1 := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii"}`, 202)["approval"].(map[string]any)["id"].(string)
	id2 := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"again"}`, 202)["approval"].(map[string]any)["id"].(string)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("approvals file: %v %v", fi, err)
	}
	// Someone edits the file: the second request now claims sam asked.
	b, _ := os.ReadFile(path)
	var doc approvalsFile
	json.Unmarshal(b, &doc)
	for _, a := range doc.Pending {
		if a.ID == id2 {
			a.RequestedBy = "sam"
		}
	}
	b, _ = json.Marshal(doc)
	os.WriteFile(path, b, 0o600)

	api, err := New(Config{Keys: f.manager, Rules: f.source, Recorder: f.rec, Signer: f.kek, ApprovalsFile: path, Now: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	list := api.approvals.list(context.Background())
	if len(list) != 1 || list[0].ID != id1 {
		t.Fatalf("after a restart: %+v", list)
	}
	if e := f.rec.Find("approval.tampered"); len(e) != 1 || e[0].Details["id"] != id2 {
		t.Fatalf("approval.tampered %+v", e)
	}
	// Expired while the sidecar was down: dropped at start, recorded.
	f.advance(2 * time.Hour)
	if _, err := New(Config{Keys: f.manager, Rules: f.source, Recorder: f.rec, Signer: f.kek, ApprovalsFile: path, Now: f.clock}); err != nil {
		t.Fatal(err)
	}
	if e := f.rec.Find("approval.expire"); len(e) != 1 || e[0].Details["id"] != id1 {
		t.Fatalf("approval.expire %+v", e)
	}
}

func TestReadiness(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	if status, _, _ := f.send(t, req{method: "GET", path: "/readyz"}); status != http.StatusOK {
		t.Fatalf("ready: %d", status)
	}
	// HSM down and keys not cached: not ready.
	f.hsmDown = true
	status, out, _ := f.send(t, req{method: "GET", path: "/readyz"})
	if status != http.StatusServiceUnavailable || out["ready"] != false {
		t.Fatalf("HSM down: %d %v", status, out)
	}
	// HSM down but every key the rules need is cached: still ready.
	f.cached = true
	if status, out, _ := f.send(t, req{method: "GET", path: "/readyz"}); status != http.StatusOK {
		t.Fatalf("HSM down, keys cached: %d %v", status, out)
	}
}

func TestParsePeriod(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90d": 90 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "1h30m": 90 * time.Minute, "0.5d": 12 * time.Hour,
	} {
		if got, err := ParsePeriod(in); err != nil || got != want {
			t.Errorf("ParsePeriod(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "ninety days", "1y"} {
		if _, err := ParsePeriod(bad); err == nil {
			t.Errorf("ParsePeriod(%q) accepted", bad)
		}
	}
}

// shortFile is a temporary file whose writes come up short, as on a full
// disk: half the bytes reach it. lie makes Write report all of them.
type shortFile struct {
	*os.File
	lie bool
}

func (s shortFile) Write(p []byte) (int, error) {
	n, err := s.File.Write(p[:len(p)/2])
	if s.lie {
		return len(p), err
	}
	return n, err
}

// TestRulesFileShortWrite is the admin item of issue 12: a short write of
// the rule file was ignored and a truncated (still valid) file put in
// place. Now the temporary file must hold every byte before it replaces
// the rule file.
func TestRulesFileShortWrite(t *testing.T) {
	for _, lie := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "rules.yaml")
		os.WriteFile(path, []byte(goodRules), 0o640)
		orig := createTemp
		createTemp = func(dir, pattern string) (tempFile, error) {
			f, err := os.CreateTemp(dir, pattern)
			return shortFile{f, lie}, err
		}
		err := FileRulesWriter(path).WriteRules(context.Background(), []byte(strings.Replace(goodRules, "$.ssn", "$.ssn2", 1)))
		createTemp = orig
		if err == nil || !strings.Contains(err.Error(), "short write") {
			t.Fatalf("lie=%v: a short write was not an error: %v", lie, err)
		}
		if got, _ := os.ReadFile(path); string(got) != goodRules {
			t.Fatalf("lie=%v: the rule file was replaced by %q", lie, got)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".rules.yaml-*")); len(left) != 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}
	// A whole write replaces the file and keeps its mode.
	path := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(path, []byte("x"), 0o640)
	if err := FileRulesWriter(path).WriteRules(context.Background(), []byte(goodRules)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

var _ = errors.New

// TestApprovedOnce: two approvals of one request at the same moment do
// it once; the other finds nothing pending.
func TestApprovedOnce(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.createKey(t, "pii", 2)
	id := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii"}`, 202)["approval"].(map[string]any)["id"].(string)
	statuses := make(chan int, 2)
	for range 2 {
		go func() {
			status, _, _ := f.send(t, req{method: "POST", path: "/v1/approvals/" + id + "/approve", as: "sam"})
			statuses <- status
		}()
	}
	got := []int{<-statuses, <-statuses}
	slices.Sort(got)
	if got[0] != 200 || got[1] != 404 {
		t.Fatalf("statuses %v, want one 200 and one 404", got)
	}
	if n := len(f.rec.Find("key.destroy")); n != 1 {
		t.Fatalf("%d key.destroy events", n)
	}
}
