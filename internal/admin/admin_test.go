package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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

type fixture struct {
	srv       *httptest.Server
	manager   *keystore.Manager
	kek       *keystoretest.FakeKEK
	rec       *keystoretest.Recorder
	rulesFile string
	source    *rules.FileSource
	hsmDown   bool
	cached    bool
}

func newFixture(t *testing.T, token string, loopback bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{kek: keystoretest.NewFakeKEK(), rec: &keystoretest.Recorder{}}
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
	api := New(Config{
		Keys: f.manager, Rules: f.source, RulesFile: FileRulesWriter(f.rulesFile),
		Rewrap: scheduler.New(f.manager, scheduler.Options{}), Recorder: f.rec,
		Token: token, Loopback: loopback,
		PingStore: store.Ping,
		PingHSM: func(context.Context) error {
			if f.hsmDown {
				return hsm.ErrUnavailable
			}
			return nil
		},
		CachedEnough: func([]string) bool { return f.cached },
	})
	f.srv = httptest.NewServer(api)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", method, path, b)
		}
	}
	return resp.StatusCode, out
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestAuthentication(t *testing.T) {
	const token = "s3cret-admin-token"
	f := newFixture(t, token, true)
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "guess", http.StatusUnauthorized},
		{"token prefix", token[:5], http.StatusUnauthorized},
		{"right token", token, http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := f.do(t, "POST", "/v1/keys", tc.token, `{"name":"pii"}`)
			if status != tc.want {
				t.Fatalf("status %d (%v), want %d", status, out, tc.want)
			}
		})
	}
	// Only the authenticated call created a key, and refusals were audited
	// without the presented token.
	keys, _ := f.manager.List(context.Background())
	if len(keys) != 1 {
		t.Fatalf("%d keys exist after one authorised create", len(keys))
	}
	denied := 0
	for _, e := range f.rec.Events() {
		if e.Action == "admin.denied" {
			denied++
			b, _ := json.Marshal(e)
			if strings.Contains(string(b), "guess") {
				t.Fatalf("audit event carries the presented token: %s", b)
			}
		}
	}
	if denied != 3 {
		t.Fatalf("%d admin.denied events, want 3", denied)
	}
	// Health and metrics-style endpoints need no token.
	if status, _ := f.do(t, "GET", "/healthz", "", ""); status != http.StatusOK {
		t.Fatalf("healthz: %d", status)
	}
}

func TestNoTokenOffLoopbackDisablesAPI(t *testing.T) {
	f := newFixture(t, "", false)
	status, out := f.do(t, "POST", "/v1/keys", "", `{"name":"pii"}`)
	if status != http.StatusForbidden || errCode(out) != "admin_disabled" {
		t.Fatalf("status %d %v, want 403 admin_disabled", status, out)
	}
	if keys, _ := f.manager.List(context.Background()); len(keys) != 0 {
		t.Fatal("a key was created through a disabled API")
	}
	if status, _ := f.do(t, "GET", "/readyz", "", ""); status != http.StatusOK {
		t.Fatalf("readyz must stay available: %d", status)
	}
}

func TestNoTokenOnLoopbackIsOpen(t *testing.T) {
	f := newFixture(t, "", true)
	if status, out := f.do(t, "POST", "/v1/keys", "", `{"name":"pii","cryptoperiod":"90d"}`); status != http.StatusCreated {
		t.Fatalf("status %d %v", status, out)
	}
	k, err := f.manager.Get(context.Background(), "pii")
	if err != nil || k.Cryptoperiod != 90*24*time.Hour {
		t.Fatalf("key %+v %v", k, err)
	}
	created := f.rec.Find("key.create")
	if len(created) != 1 || created[0].Actor != "admin:loopback" {
		t.Fatalf("key.create events %+v, want one by admin:loopback", created)
	}
}

func TestKeyLifecycleThroughAPI(t *testing.T) {
	const token = "t"
	f := newFixture(t, token, true)
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		status, out := f.do(t, method, path, token, body)
		if status != want {
			t.Fatalf("%s %s: %d %v, want %d", method, path, status, out, want)
		}
		return out
	}
	call("POST", "/v1/keys", `{"name":"pii"}`, http.StatusCreated)
	call("POST", "/v1/keys", `{"name":"pii"}`, http.StatusConflict)
	call("POST", "/v1/keys", `{"name":"pii","colour":"red"}`, http.StatusBadRequest)
	out := call("POST", "/v1/keys/pii/rotate", "", http.StatusOK)
	if out["primary"].(float64) != 2 {
		t.Fatalf("rotate: %v", out)
	}
	call("POST", "/v1/keys/pii/versions/1/revoke", `{"compromised":true,"reason":"laptop stolen"}`, http.StatusOK)
	// Destroy needs the key's name as confirmation.
	out = call("POST", "/v1/keys/pii/versions/1/destroy", `{"reason":"end of life"}`, http.StatusBadRequest)
	if !strings.Contains(out["error"].(map[string]any)["message"].(string), "confirm") {
		t.Fatalf("destroy without confirm: %v", out)
	}
	call("POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"end of life"}`, http.StatusOK)
	if _, err := f.manager.Unwrap(context.Background(), "pii", 1); !errors.Is(err, keystore.ErrDestroyed) {
		t.Fatalf("destroyed version still unwraps: %v", err)
	}
	// An invalid transition is a 409 naming what is allowed.
	out = call("POST", "/v1/keys/pii/versions/1/activate", "", http.StatusConflict)
	if errCode(out) != "not_allowed" {
		t.Fatalf("%v", out)
	}
	call("GET", "/v1/keys/nope", "", http.StatusNotFound)
	call("POST", "/v1/keys/pii/versions/x/revoke", `{}`, http.StatusBadRequest)
	// The listing never carries wrapped key material.
	status, _ := f.do(t, "GET", "/v1/keys", token, "")
	if status != http.StatusOK {
		t.Fatal(status)
	}
	resp, _ := http.NewRequest("GET", f.srv.URL+"/v1/keys", nil)
	resp.Header.Set("Authorization", "Bearer "+token)
	r, _ := http.DefaultClient.Do(resp)
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if strings.Contains(string(raw), "wrapped") {
		t.Fatalf("key listing exposes wrapped material: %s", raw)
	}
	// KEK rotation and re-wrap.
	call("POST", "/v1/kek/rotate", "", http.StatusOK)
	call("POST", "/v1/kek/2/retire", "", http.StatusConflict) // current
	call("GET", "/v1/rewrap", "", http.StatusOK)
}

func TestRulesEndpoints(t *testing.T) {
	const token = "t"
	f := newFixture(t, token, true)
	before := f.source.Current().Hash

	// Validate reports diagnostics without changing anything.
	status, out := f.do(t, "POST", "/v1/rules/validate", token, "version: 1\nroutes:\n  - name: x\n    mtach: {}\n")
	if status != http.StatusOK || out["valid"] != false {
		t.Fatalf("validate: %d %v", status, out)
	}
	// An invalid PUT is refused; the file and the rules in force stay.
	status, out = f.do(t, "PUT", "/v1/rules", token, "version: 2\n")
	if status != http.StatusBadRequest || errCode(out) != "invalid_rules" {
		t.Fatalf("invalid put: %d %v", status, out)
	}
	if got, _ := os.ReadFile(f.rulesFile); string(got) != goodRules {
		t.Fatal("an invalid PUT changed the rule file")
	}
	if f.source.Current().Hash != before {
		t.Fatal("an invalid PUT changed the rules in force")
	}
	// A valid PUT is stored and applied, and audited as a reload.
	newRules := strings.Replace(goodRules, `["$.ssn"]`, `["$.ssn", "$.name"]`, 1)
	status, out = f.do(t, "PUT", "/v1/rules", token, newRules)
	if status != http.StatusOK || out["applied"] != true {
		t.Fatalf("put: %d %v", status, out)
	}
	if f.source.Current().Hash == before {
		t.Fatal("rules in force did not change")
	}
	reloads := f.rec.Find("rules.reload")
	if len(reloads) != 1 || reloads[0].Outcome != "ok" || !strings.HasPrefix(reloads[0].Actor, "admin:") {
		t.Fatalf("rules.reload events %+v, want one by the admin caller", reloads)
	}
	status, out = f.do(t, "GET", "/v1/rules", token, "")
	if status != http.StatusOK || out["hash"] != f.source.Current().Hash {
		t.Fatalf("get: %d %v", status, out)
	}
}

func TestReadiness(t *testing.T) {
	f := newFixture(t, "t", true)
	if status, _ := f.do(t, "GET", "/readyz", "", ""); status != http.StatusOK {
		t.Fatalf("ready: %d", status)
	}
	// HSM down and keys not cached: not ready.
	f.hsmDown = true
	status, out := f.do(t, "GET", "/readyz", "", "")
	if status != http.StatusServiceUnavailable || out["ready"] != false {
		t.Fatalf("HSM down: %d %v", status, out)
	}
	// HSM down but every key the rules need is cached: still ready.
	f.cached = true
	if status, out := f.do(t, "GET", "/readyz", "", ""); status != http.StatusOK {
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
