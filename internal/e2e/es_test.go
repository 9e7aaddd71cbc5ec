package e2e

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/internal/testenv/esfake"
)

// The Elasticsearch profile (issue 14) end to end: the official
// @elastic/elasticsearch client, unmodified, through `sidecrypt serve` in
// front of a recording fake Elasticsearch (internal/testenv/esfake;
// no Elasticsearch server can be installed here), behind the recording
// relay. The same script runs against a second fake directly; the app
// must see exactly the same answers, while neither the relay nor the
// fake ever received a protected value in plaintext.

const esRules = `version: 2
datastore: elasticsearch
collections:
  - name: orders
    fields:
      email:       {key: contact, searchable: true}
      card.number: {key: card, searchable: true}
      ssn:         {key: pii}
      address:     {key: pii}
decrypt:
  keys: [contact, card, pii]
`

var esKeys = []string{"contact", "card", "pii"}

var esSecrets = []string{"ann@example.com", "123-45-6789", "4111111111111111", "Springfield", "12345",
	"bob@example.org", "987-65-4321", "5500005555555559", "4012888888881881", "bob.new@example.org",
	"cy@example.net", "111-22-3333"}

// esStack is a fake Elasticsearch behind the relay behind a sidecar, and
// a second fake for direct comparison.
type esStack struct {
	fake, direct *esfake.Server
	directURL    string
	relay        *testenv.Relay
	sc           *sidecar
}

func newESStack(t *testing.T) *esStack {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the sidecar")
	}
	st := &esStack{fake: esfake.New(), direct: esfake.New()}
	up := httptest.NewServer(st.fake)
	t.Cleanup(up.Close)
	dir := httptest.NewServer(st.direct)
	t.Cleanup(dir.Close)
	st.directURL = dir.URL
	st.relay = testenv.StartRelay(t, up.URL)
	st.sc = startSidecar(t, sidecarConfig{upstream: st.relay.URL, rules: esRules, keys: esKeys})
	return st
}

// checkNoLeaks: the relay's record, what the fake received and what it
// stores hold no secret in any encoding FindPlaintext knows.
func (st *esStack) checkNoLeaks(t *testing.T) {
	t.Helper()
	st.relay.Quiet(20 * time.Millisecond)
	st.relay.AssertNoPlaintext(t, testenv.Mark{}, esSecrets...)
	for what, data := range map[string][]byte{"received": st.fake.Received(), "stored": st.fake.Stored()} {
		if leaks := testenv.FindPlaintext("fake Elasticsearch "+what, data, esSecrets); len(leaks) > 0 {
			t.Errorf("plaintext in what the fake %s: %v", what, leaks)
		}
	}
}

func TestElasticsearchClient(t *testing.T) {
	st := newESStack(t)
	start := time.Now()
	via := runNode(t, "es-client.js", "ES_URL="+st.sc.url)
	direct := runNode(t, "es-client.js", "ES_URL="+st.directURL)
	if !bytes.Equal(via, direct) {
		viaLines, directLines := strings.Split(string(via), "\n"), strings.Split(string(direct), "\n")
		for i := range viaLines {
			if i >= len(directLines) || viaLines[i] != directLines[i] {
				d := ""
				if i < len(directLines) {
					d = directLines[i]
				}
				t.Fatalf("the client got a different answer through the sidecar (line %d)\n  sidecar: %s\n  direct:  %s", i+1, clip([]byte(viaLines[i])), clip([]byte(d)))
			}
		}
		t.Fatalf("the client got different answers:\n%s\n---\n%s", via, direct)
	}
	for _, want := range []string{`"what":"term"`, `"ann@example.com"`, `"4012888888881881"`, `"what":"range","v":{"status":400}`} {
		if !bytes.Contains(via, []byte(want)) {
			t.Errorf("output lacks %s:\n%s", want, via)
		}
	}
	// The fake holds tokens where the app wrote protected values.
	stored := string(st.fake.Stored())
	if !strings.Contains(stored, `"email":"sc2.`) || !strings.Contains(stored, `"card.number":"sc2.`) || !strings.Contains(stored, `"customer":"c-1"`) {
		t.Errorf("stored documents:\n%s", stored)
	}
	// The client sent _bulk as NDJSON with Elasticsearch 8's media type.
	sawBulk := false
	for _, r := range st.fake.Requests() {
		if strings.HasPrefix(r.URI, "/_bulk") {
			sawBulk = strings.Contains(r.Header.Get("Content-Type"), "x-ndjson")
		}
	}
	if !sawBulk {
		t.Error("no NDJSON _bulk request reached the fake")
	}
	st.checkNoLeaks(t)
	t.Logf("two client runs in %v", time.Since(start).Round(time.Millisecond))
}

// TestElasticsearchRefusals: requests the profile refuses reach nothing.
func TestElasticsearchRefusals(t *testing.T) {
	st := newESStack(t)
	must(t, 200, "PUT", st.sc.url+"/orders", `{}`)
	nd := []string{"Content-Type", "application/x-ndjson"}
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		{"range on a searchable field", "POST", "/orders/_search", `{"query":{"range":{"email":{"gte":"ann@example.com"}}}}`, nil, 400, "unsupported_query"},
		{"prefix in a bool", "POST", "/orders/_search", `{"query":{"bool":{"should":[{"prefix":{"card.number":"4111111111111111"}}]}}}`, nil, 400, "unsupported_query"},
		{"aggregation", "POST", "/orders/_search", `{"aggs":{"a":{"terms":{"field":"email"}}},"query":{"term":{"email":"ann@example.com"}}}`, nil, 400, "unsupported_query"},
		{"sort", "POST", "/orders/_search", `{"sort":["email"],"query":{"term":{"email":"ann@example.com"}}}`, nil, 400, "unsupported_query"},
		{"query_string", "POST", "/orders/_search", `{"query":{"query_string":{"query":"email:ann@example.com"}}}`, nil, 400, "unsupported_query"},
		{"q parameter", "GET", "/orders/_search?q=email:ann@example.com", "", nil, 400, "unsupported_query"},
		{"source parameter", "GET", "/orders/_search?source=%7B%22query%22%3A%7B%22term%22%3A%7B%22email%22%3A%22ann%40example.com%22%7D%7D%7D&source_content_type=application/json", "", nil, 403, "unprotected_operation"},
		{"update script", "POST", "/orders/_update/o-1", `{"script":{"source":"ctx._source.ssn=params.s","params":{"s":"123-45-6789"}}}`, nil, 403, "unprotected_operation"},
		{"pipeline", "PUT", "/orders/_doc/x?pipeline=p", `{"ssn":"123-45-6789"}`, nil, 403, "unprotected_operation"},
		{"reindex into protected", "POST", "/_reindex", `{"source":{"index":"plain"},"dest":{"index":"orders"}}`, nil, 403, "unprotected_operation"},
		{"bulk without final newline", "POST", "/_bulk", "{\"index\":{\"_index\":\"orders\"}}\n{\"ssn\":\"123-45-6789\"}", nd, 400, "bad_request"},
		{"bulk source array", "POST", "/_bulk", "{\"index\":{\"_index\":\"orders\"}}\n[{\"ssn\":\"123-45-6789\"}]\n", nd, 400, "bad_request"},
		{"bulk two values on a line", "POST", "/_bulk", "{\"index\":{\"_index\":\"orders\"}}\n{\"a\":1} {\"ssn\":\"123-45-6789\"}\n", nd, 400, "invalid_json"},
		{"bulk one bad line of many", "POST", "/_bulk", "{\"index\":{\"_index\":\"orders\",\"_id\":\"ok\"}}\n{\"email\":\"ann@example.com\"}\n{\"index\":{\"_index\":\"orders\",\"pipeline\":\"p\"}}\n{\"ssn\":\"123-45-6789\"}\n", nd, 403, "unprotected_operation"},
		{"write to a wildcard", "PUT", "/ord*/_doc/1", `{"ssn":"123-45-6789"}`, nil, 400, "bad_request"},
		{"escaped endpoint", "POST", "/orders/%5Fbulk", "{\"index\":{}}\n{\"ssn\":\"123-45-6789\"}\n", nd, 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := st.relay.Mark()
			before := len(st.fake.Requests())
			r := send(t, tc.method, st.sc.url+tc.path, tc.body, tc.hdr...)
			if r.status != tc.status || errorCode(r.body) != tc.code {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			st.relay.Quiet(10 * time.Millisecond)
			st.relay.AssertNothingForwarded(t, m)
			if n := len(st.fake.Requests()); n != before {
				t.Errorf("the fake received %d requests", n-before)
			}
			for _, s := range esSecrets {
				if strings.Contains(string(r.body), s) {
					t.Errorf("the refusal quotes a value: %s", r.body)
				}
			}
		})
	}
	st.checkNoLeaks(t)
}

// TestElasticsearchNoOracle: a token copied where the rules do not put
// it stays closed in answers (the fake is written directly, as an
// attacker with access to the datastore would), and one sent through the
// sidecar in an unprotected field is refused.
func TestElasticsearchNoOracle(t *testing.T) {
	st := newESStack(t)
	must(t, 201, "PUT", st.sc.url+"/orders/_doc/a?refresh=true", `{"email":"ann@example.com","ssn":"123-45-6789"}`)
	var stored struct {
		Source map[string]any `json:"_source"`
	}
	direct := httptest.NewServer(st.fake)
	defer direct.Close()
	if err := json.Unmarshal(must(t, 200, "GET", direct.URL+"/orders/_doc/a", "").body, &stored); err != nil {
		t.Fatal(err)
	}
	ssnTok, _ := stored.Source["ssn"].(string)
	emailTok, _ := stored.Source["email"].(string)
	if !isToken(ssnTok) || !isToken(emailTok) {
		t.Fatalf("stored %v", stored.Source)
	}
	// Copied into a free-text field, into another field, into an
	// unprotected index.
	must(t, 201, "PUT", direct.URL+"/orders/_doc/b", `{"note":"`+ssnTok+`","email":"`+ssnTok+`"}`)
	must(t, 201, "PUT", direct.URL+"/logs/_doc/c", `{"email":"`+emailTok+`"}`)
	for _, path := range []string{"/orders/_doc/b", "/logs/_doc/c"} {
		r := must(t, 200, "GET", st.sc.url+path, "")
		if bytes.Contains(r.body, []byte("123-45-6789")) || bytes.Contains(r.body, []byte("ann@example.com")) {
			t.Errorf("%s: a copied token was opened: %s", path, r.body)
		}
	}
	r := must(t, 200, "POST", st.sc.url+"/orders/_search", `{"query":{"ids":{"values":["a","b"]}}}`)
	// Document a's own values open; b's copies stay tokens.
	if bytes.Count(r.body, []byte("ann@example.com")) != 1 || bytes.Count(r.body, []byte("123-45-6789")) != 1 || bytes.Count(r.body, []byte(ssnTok)) != 2 {
		t.Errorf("search: %s", r.body)
	}
	// Sent through the sidecar where no rule puts it: refused.
	m := st.relay.Mark()
	r = send(t, "PUT", st.sc.url+"/orders/_doc/d", `{"note":"`+emailTok+`"}`)
	if r.status != 403 || errorCode(r.body) != "token_not_allowed" {
		t.Errorf("token in an unprotected field: %d %s", r.status, r.body)
	}
	r = send(t, "POST", st.sc.url+"/_bulk", "{\"index\":{\"_index\":\"orders\"}}\n{\"ssn\":\""+emailTok+"\"}\n", "Content-Type", "application/x-ndjson")
	if r.status != 403 || errorCode(r.body) != "token_not_allowed" {
		t.Errorf("token of another field in a bulk source: %d %s", r.status, r.body)
	}
	st.relay.Quiet(10 * time.Millisecond)
	st.relay.AssertNothingForwarded(t, m)
}
