package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// The REST profile (issue 14) end to end against json-server 0.17, the
// profile's reference store: every request runs through the sidecar
// (behind the recording relay) and against a second json-server directly;
// the application must get the same bodies, the relay must have seen no
// protected value, and json-server's db.json must hold none.

const restRules = `version: 2
datastore: rest
collections:
  - name: /customers
    fields:
      email:       {key: contact, searchable: true}
      ssn:         {key: pii}
      card.number: {key: card, searchable: true}
decrypt:
  keys: [contact, pii, card]
`

var restSecrets = []string{"ann@example.com", "123-45-6789", "4111111111111111", "bob@example.org", "987-65-4321",
	"5500005555555559", "cy@example.net", "111-22-3333", "ann.new@example.com"}

// jsonServer is a running json-server with its database file.
type jsonServer struct {
	url, db string
}

func startJSONServer(t *testing.T) *jsonServer {
	t.Helper()
	bin := filepath.Join(testenv.RepoRoot(), ".deps", "pouchdb", "node_modules", ".bin", "json-server")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "json-server", "scripts/deps.sh")
	}
	if _, ok := testenv.LookPath("node"); !ok {
		testenv.Missing(t, "node", "apt-get install nodejs")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "db.json")
	if err := os.WriteFile(db, []byte(`{"customers": [], "posts": [{"id": 1, "title": "hello"}], "orders": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--quiet", db)
	cmd.Dir = dir
	p := testenv.Start(t, "json-server", cmd)
	testenv.WaitHTTP(t, p, "http://"+addr+"/db", 60*time.Second)
	return &jsonServer{url: "http://" + addr, db: db}
}

func TestRESTJSONServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts json-server and the sidecar")
	}
	start := time.Now()
	store, direct := startJSONServer(t), startJSONServer(t)
	relay := testenv.StartRelay(t, store.url)
	sc := startSidecar(t, sidecarConfig{upstream: relay.URL, rules: restRules, keys: []string{"contact", "pii", "card"}})

	steps := []struct{ method, path, body string }{
		{"POST", "/customers", `{"name":"Ann","email":"ann@example.com","ssn":"123-45-6789","card":{"number":"4111111111111111","exp":"12/29"},"tier":"gold"}`},
		{"POST", "/customers", `{"name":"Bob","email":"bob@example.org","ssn":"987-65-4321","card":{"number":"5500005555555559"},"tier":"silver"}`},
		{"POST", "/customers", `{"name":"Cy","email":"cy@example.net","ssn":"111-22-3333","tier":"gold"}`},
		{"GET", "/customers", ""},
		{"GET", "/customers/1", ""},
		{"GET", "/customers?email=ann@example.com", ""},
		{"GET", "/customers?email=ann%40example.com&email=bob@example.org", ""},
		{"GET", "/customers?card.number=5500005555555559", ""},
		{"GET", "/customers?email_ne=ann@example.com&tier=gold", ""},
		{"GET", "/customers?tier=gold&_sort=name&_order=desc&_page=1&_limit=5", ""},
		{"GET", "/customers?email=nobody@example.com", ""},
		{"PATCH", "/customers/1", `{"email":"ann.new@example.com"}`},
		{"GET", "/customers?email=ann.new@example.com", ""},
		{"PUT", "/customers/2", `{"name":"Bob","email":"bob@example.org","ssn":"987-65-4321","tier":"bronze"}`},
		{"GET", "/customers/2", ""},
		{"GET", "/customers/1/orders", ""},
		{"DELETE", "/customers/3", ""},
		{"GET", "/db", ""},
	}
	for _, s := range steps {
		via := send(t, s.method, sc.url+s.path, s.body)
		dir := send(t, s.method, direct.url+s.path, s.body)
		if via.status != dir.status || canonJSON(t, via.body) != canonJSON(t, dir.body) {
			t.Fatalf("%s %s: through the sidecar %d %s\n  directly %d %s", s.method, s.path, via.status, clip(via.body), dir.status, clip(dir.body))
		}
		if via.status >= 300 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, via.status, via.body)
		}
	}
	// The filters found what they find directly.
	var found []map[string]any
	_ = json.Unmarshal(send(t, "GET", sc.url+"/customers?email=ann.new@example.com", "").body, &found)
	if len(found) != 1 || found[0]["name"] != "Ann" {
		t.Errorf("filter by the searchable field found %v", found)
	}

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"q", "GET", "/customers?q=ann@example.com", "", 400, "unsupported_query"},
		{"like", "GET", "/customers?email_like=ann", "", 400, "unsupported_query"},
		{"range", "GET", "/customers?email_gte=ann@example.com", "", 400, "unsupported_query"},
		{"sort", "GET", "/customers?_sort=email", "", 400, "unsupported_query"},
		{"random field", "GET", "/customers?ssn=123-45-6789", "", 400, "unsupported_query"},
		{"brackets", "GET", "/customers?email[]=ann@example.com", "", 400, "bad_request"},
		{"nested write into protected", "POST", "/posts/1/customers", `{"ssn":"123-45-6789"}`, 403, "unprotected_operation"},
		{"nested write under protected", "POST", "/customers/1/orders", `{"ssn":"123-45-6789"}`, 403, "unprotected_operation"},
		{"escaped slash", "POST", "/customers%2F1", `{"ssn":"123-45-6789"}`, 400, "bad_request"},
		{"form body", "POST", "/customers", "ssn=123-45-6789", 415, "unsupported_media_type"},
		{"method override", "POST", "/customers/1", `{"ssn":"123-45-6789"}`, 403, "unprotected_operation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := relay.Mark()
			var hdr []string
			switch tc.name {
			case "form body":
				hdr = []string{"Content-Type", "application/x-www-form-urlencoded"}
			case "method override":
				hdr = []string{"X-HTTP-Method-Override", "PUT"}
			}
			r := send(t, tc.method, sc.url+tc.path, tc.body, hdr...)
			if r.status != tc.status || errorCode(r.body) != tc.code {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			relay.Quiet(10 * time.Millisecond)
			relay.AssertNothingForwarded(t, m)
		})
	}

	relay.Quiet(20 * time.Millisecond)
	relay.AssertNoPlaintext(t, testenv.Mark{}, restSecrets...)
	db, err := os.ReadFile(store.db)
	if err != nil {
		t.Fatal(err)
	}
	if leaks := testenv.FindPlaintext("db.json", db, restSecrets); len(leaks) > 0 {
		t.Errorf("json-server's db.json holds plaintext: %v", leaks)
	}
	if !strings.Contains(string(db), `"email": "sc2.`) || !strings.Contains(string(db), `"tier": "gold"`) {
		t.Errorf("db.json:\n%s", db)
	}
	t.Logf("json-server comparison in %v", time.Since(start).Round(time.Millisecond))
}

// canonJSON re-encodes a JSON body with sorted members, so that bodies
// compare as values.
func canonJSON(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
