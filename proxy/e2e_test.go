package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/rules"
)

// The patients the end-to-end tests store. Every value in secrets is
// protected by the clinic rules and must never reach the datastore.
var (
	e2ePatients = map[string]string{
		"p1": `{"_id":"p1","name":"Ada","ssn":"078-05-1120","email":"ada@example.com","age":36,"diagnosis":{"code":"J45","text":"asthma","claim":12345678901234567890,"chronic":true}}`,
		"p3": `{"_id":"p3","name":"Alan","ssn":"457-55-5462","email":"alan@example.com","visits":[{"date":"2026-01-02","diagnosis":"bronchitis"},{"date":"2026-02-03","diagnosis":["otitis",{"left":true}]}]}`,
		"p4": `{"_id":"p4","name":"Edsger","ssn":"512-44-0101","email":"edsger@example.com","diagnosis":null}`,
	}
	e2eGrace   = `{"name":"Grace","ssn":"219-09-9999","email":"grace@example.com","diagnosis":"hypertension","weight":61.5}`
	e2eSecrets = []string{
		"078-05-1120", "ada@example.com", "asthma", "J45", "12345678901234567890",
		"457-55-5462", "alan@example.com", "bronchitis", "otitis",
		"512-44-0101", "edsger@example.com",
		"219-09-9999", "grace@example.com", "hypertension",
		"ada.lovelace@example.com", "078-05-9999",
	}
)

// e2e drives one sidecar in front of one pouchdb-server the way an
// application would, and reads the datastore directly to check it.
type e2e struct {
	t      *testing.T
	app    *http.Client // the application's client (through the sidecar)
	base   string       // the datastore URL the application uses
	direct string       // the datastore itself, bypassing the sidecar
	raw    *http.Client
}

func (e *e2e) do(method, path, body string) (int, []byte) {
	e.t.Helper()
	var hdr http.Header
	var r io.Reader
	if body != "" {
		hdr = http.Header{"Content-Type": {"application/json"}}
		r = strings.NewReader(body)
	}
	status, _, b := do(e.t, e.app, method, e.base+path, hdr, r)
	return status, b
}

func (e *e2e) mustDo(method, path, body string, want int) []byte {
	e.t.Helper()
	status, b := e.do(method, path, body)
	if status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	return b
}

// stored reads a document straight from the datastore and checks that its
// protected fields are tokens and that no protected value appears in it.
func (e *e2e) stored(id string) map[string]any {
	e.t.Helper()
	status, _, b := do(e.t, e.raw, "GET", e.direct+"/clinic/"+id, nil, nil)
	if status != 200 {
		e.t.Fatalf("datastore GET %s: %d %s", id, status, b)
	}
	// Tokens are taken out first, so that "J45" found by chance inside
	// one's base64 is not reported.
	outside := tokenPattern.ReplaceAll(b, []byte(`"TOKEN"`))
	for _, s := range e2eSecrets {
		if bytes.Contains(outside, []byte(s)) {
			e.t.Errorf("datastore holds %q in plaintext: %s", s, b)
		}
	}
	doc := decodeJSON(e.t, b)
	for _, f := range []string{"ssn", "email"} {
		if !isToken(doc[f]) {
			e.t.Errorf("stored %s.%s is not a token: %v", id, f, doc[f])
		}
	}
	if d, ok := doc["diagnosis"]; ok && d != nil && !isToken(d) {
		e.t.Errorf("stored %s.diagnosis is not a token: %v", id, d)
	}
	if visits, ok := doc["visits"].([]any); ok {
		for _, v := range visits {
			if !isToken(v.(map[string]any)["diagnosis"]) {
				e.t.Errorf("stored %s visit diagnosis is not a token: %v", id, v)
			}
		}
	}
	return doc
}

// sameDoc compares a document read through the sidecar with the one
// written, ignoring the fields the datastore adds.
func sameDoc(t testing.TB, got map[string]any, want string) {
	t.Helper()
	w := decodeJSON(t, []byte(want))
	g := make(map[string]any, len(got))
	for k, v := range got {
		if k != "_rev" && (k != "_id" || w["_id"] != nil) {
			g[k] = v
		}
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		t.Errorf("read back\n got %s\nwant %s", gb, want)
	}
}

func docOf(t testing.TB, b []byte) map[string]any { return decodeJSON(t, b) }

func TestEndToEndPouchDB(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests need pouchdb-server; skipped with -short")
	}
	for _, mode := range []string{"reverse", "forward-http", "forward-https"} {
		t.Run(mode, func(t *testing.T) {
			db := testenv.StartPouchDB(t)
			keys := &switchKeyring{inner: testKeyring(t), err: fmt.Errorf("keycache: unwrap: %w", hsm.ErrUnavailable)}
			e := &e2e{t: t, direct: db.URL, raw: client(t)}
			var proxyFor func(plan *rules.Plan) *testProxy
			switch mode {
			case "reverse":
				proxyFor = func(plan *rules.Plan) *testProxy {
					return startProxy(t, Config{Upstream: mustURL(t, db.URL), Rules: rules.Static(plan), Keys: keys})
				}
				tp := proxyFor(clinicPlan(t))
				e.app, e.base = client(t), tp.URL.String()
			case "forward-http":
				ca, _ := InitCA(t.TempDir(), false)
				proxyFor = func(plan *rules.Plan) *testProxy {
					return startProxy(t, Config{Rules: rules.Static(plan), Keys: keys, CA: ca})
				}
				tp := proxyFor(hostsPlan(t, "127.0.0.1"))
				e.app, e.base = forwardClient(t, tp.URL, nil), db.URL
			case "forward-https":
				// An HTTPS front for the datastore, as a hosted CouchDB
				// would have; the application trusts only sidecrypt's CA.
				// (No transparent compression in the front: pouchdb-server
				// would then buffer change feeds in its gzip stream.)
				rp := httputil.NewSingleHostReverseProxy(mustURL(t, db.URL))
				rp.Transport = &http.Transport{DisableCompression: true}
				front := httptest.NewTLSServer(rp)
				t.Cleanup(front.Close)
				ca, _ := InitCA(t.TempDir(), false)
				upTLS := &tls.Config{RootCAs: poolOf(front.Certificate())}
				proxyFor = func(plan *rules.Plan) *testProxy {
					return startProxy(t, Config{Rules: rules.Static(plan), Keys: keys, CA: ca, UpstreamTLS: upTLS})
				}
				tp := proxyFor(hostsPlan(t, "127.0.0.1"))
				e.app, e.base = forwardClient(t, tp.URL, poolOf(ca.Certificate())), front.URL
			}
			runClinicFlows(t, e, keys, proxyFor)
		})
	}
}

func runClinicFlows(t *testing.T, e *e2e, keys *switchKeyring, proxyFor func(*rules.Plan) *testProxy) {
	e.mustDo("PUT", "/clinic", "", 201)

	// PUT one document, POST one, and _bulk_docs two.
	e.mustDo("PUT", "/clinic/p1", e2ePatients["p1"], 201)
	e.stored("p1")
	var posted struct{ ID, Rev string }
	json.Unmarshal(e.mustDo("POST", "/clinic", e2eGrace, 201), &posted)
	if posted.ID == "" {
		t.Fatal("POST returned no id")
	}
	e.stored(posted.ID)
	bulk := `{"docs":[` + e2ePatients["p3"] + `,` + e2ePatients["p4"] + `]}`
	e.mustDo("POST", "/clinic/_bulk_docs", bulk, 201)
	e.stored("p3")
	if d := e.stored("p4"); d["diagnosis"] != nil {
		t.Errorf("a null diagnosis was encrypted: %v", d["diagnosis"])
	}
	all := map[string]string{"p1": e2ePatients["p1"], "p3": e2ePatients["p3"], "p4": e2ePatients["p4"], posted.ID: e2eGrace}

	t.Run("GET", func(t *testing.T) {
		for id, want := range all {
			sameDoc(t, docOf(t, e.mustDo("GET", "/clinic/"+id, "", 200)), want)
		}
		// Types survive: a number past 2^53 inside an encrypted object.
		d := docOf(t, e.mustDo("GET", "/clinic/p1", "", 200))
		if d["diagnosis"].(map[string]any)["claim"] != json.Number("12345678901234567890") {
			t.Errorf("claim came back as %v", d["diagnosis"])
		}
	})
	t.Run("_all_docs include_docs", func(t *testing.T) {
		var res struct {
			Rows []struct{ Doc map[string]any }
		}
		dec := json.NewDecoder(bytes.NewReader(e.mustDo("GET", "/clinic/_all_docs?include_docs=true", "", 200)))
		dec.UseNumber()
		if err := dec.Decode(&res); err != nil || len(res.Rows) != len(all) {
			t.Fatalf("rows %d, err %v", len(res.Rows), err)
		}
		for _, row := range res.Rows {
			sameDoc(t, row.Doc, all[row.Doc["_id"].(string)])
		}
	})
	t.Run("_find by deterministic email", func(t *testing.T) {
		b := e.mustDo("POST", "/clinic/_find", `{"selector":{"email":"alan@example.com"}}`, 200)
		var res struct{ Docs []map[string]any }
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&res); err != nil || len(res.Docs) != 1 {
			t.Fatalf("_find: %s (%v)", b, err)
		}
		sameDoc(t, res.Docs[0], e2ePatients["p3"])
	})
	t.Run("protected query parameter", func(t *testing.T) {
		// The datastore ignores the parameter; what matters is that it
		// is accepted and that the response is decrypted.
		b := e.mustDo("GET", "/clinic/_all_docs?email=ada%40example.com&include_docs=true&limit=1", "", 200)
		if bytes.Contains(b, []byte(fieldcrypt.TokenPrefix)) || !bytes.Contains(b, []byte(`"ssn":"`)) {
			t.Errorf("response not decrypted: %s", b)
		}
	})
	t.Run("_changes include_docs", func(t *testing.T) {
		b := e.mustDo("GET", "/clinic/_changes?include_docs=true", "", 200)
		var res struct {
			Results []struct{ Doc map[string]any }
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&res); err != nil || len(res.Results) != len(all) {
			t.Fatalf("_changes: %s (%v)", b, err)
		}
		for _, r := range res.Results {
			sameDoc(t, r.Doc, all[r.Doc["_id"].(string)])
		}
	})
	t.Run("_changes continuous", func(t *testing.T) {
		var info struct {
			UpdateSeq json.Number `json:"update_seq"`
		}
		json.Unmarshal(e.mustDo("GET", "/clinic", "", 200), &info)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// The heartbeat makes the datastore send its headers (and blank
		// lines) at once instead of with the first change.
		req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/clinic/_changes?feed=continuous&include_docs=true&heartbeat=500&since="+info.UpdateSeq.String(), nil)
		resp, err := e.app.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// A write after the feed opened arrives as one decrypted line
		// while the feed stays open.
		e.mustDo("PUT", "/clinic/p9", `{"ssn":"078-05-9999","email":"ada.lovelace@example.com"}`, 201)
		e.stored("p9")
		br := bufio.NewReader(resp.Body)
		line := "\n"
		for strings.TrimSpace(line) == "" {
			if line, err = br.ReadString('\n'); err != nil {
				t.Fatalf("feed: %v", err)
			}
		}
		var change struct {
			ID  string
			Doc map[string]any
		}
		if err := json.Unmarshal([]byte(line), &change); err != nil || change.ID != "p9" {
			t.Fatalf("feed line %q (%v)", line, err)
		}
		if change.Doc["ssn"] != "078-05-9999" || change.Doc["email"] != "ada.lovelace@example.com" {
			t.Errorf("feed line not decrypted: %s", line)
		}
	})
	t.Run("update with _rev", func(t *testing.T) {
		cur := docOf(t, e.mustDo("GET", "/clinic/p1", "", 200))
		upd := strings.Replace(e2ePatients["p1"], `"ssn":"078-05-1120"`, fmt.Sprintf(`"_rev":%q,"ssn":"078-05-9999"`, cur["_rev"]), 1)
		e.mustDo("PUT", "/clinic/p1", upd, 201)
		stored := e.stored("p1")
		if stored["_rev"] == cur["_rev"] {
			t.Error("revision unchanged")
		}
		got := docOf(t, e.mustDo("GET", "/clinic/p1", "", 200))
		if got["ssn"] != "078-05-9999" {
			t.Errorf("updated ssn reads back as %v", got["ssn"])
		}
		e.mustDo("PUT", "/clinic/p1", upd, 409) // stale _rev: the datastore's own answer
	})
	t.Run("decrypt list omits contact", func(t *testing.T) {
		tp := proxyFor(planForMode(t, e, "keys: [pii, contact]", "keys: [pii]"))
		got := docOf(t, readVia(t, e, tp, "/clinic/p3"))
		if got["ssn"] != "457-55-5462" || !isToken(got["email"]) {
			t.Errorf("want ssn opened, email a token: %v", got)
		}
	})
	t.Run("mask pii", func(t *testing.T) {
		tp := proxyFor(planForMode(t, e, "keys: [pii, contact]", "keys: [contact]\n  mask: {pii: \"***\"}"))
		b := readVia(t, e, tp, "/clinic/p3")
		got := docOf(t, b)
		if got["ssn"] != "***" || got["email"] != "alan@example.com" || bytes.Contains(b, []byte("bronchitis")) {
			t.Errorf("want pii masked, email opened: %s", b)
		}
	})
	t.Run("HSM unreachable", func(t *testing.T) {
		keys.failing.Store(true)
		defer keys.failing.Store(false)
		status, b := e.do("PUT", "/clinic/p5", `{"ssn":"078-05-9999"}`)
		if status != 503 || errorCode(t, b) != CodeKeyUnavailable {
			t.Fatalf("got %d %s", status, b)
		}
		status, b = e.do("POST", "/clinic/_bulk_docs", `{"docs":[{"_id":"p6","ssn":"078-05-9999"}]}`)
		if status != 503 {
			t.Fatalf("bulk: got %d %s", status, b)
		}
		for _, id := range []string{"p5", "p6"} {
			if status, _, _ := do(t, e.raw, "GET", e.direct+"/clinic/"+id, nil, nil); status != 404 {
				t.Errorf("datastore has %s (status %d) after a refused write", id, status)
			}
		}
		// Reads still answer; tokens that cannot be opened stay tokens.
		got := docOf(t, e.mustDo("GET", "/clinic/p3", "", 200))
		if !isToken(got["ssn"]) {
			t.Errorf("with no keys, ssn reads as %v", got["ssn"])
		}
	})
}

// planForMode is the clinic plan with an edit, host-restricted in forward
// mode.
func planForMode(t testing.TB, e *e2e, old, new string) *rules.Plan {
	if e.base == e.direct || strings.HasPrefix(e.base, "https://") {
		return hostsPlan(t, "127.0.0.1", old, new)
	}
	return clinicPlan(t, old, new)
}

// readVia reads a path through another sidecar in the same mode as e.
func readVia(t testing.TB, e *e2e, tp *testProxy, path string) []byte {
	t.Helper()
	var c *http.Client
	base := e.base
	switch {
	case e.base == e.direct:
		c = forwardClient(t, tp.URL, nil)
	case strings.HasPrefix(e.base, "https://"):
		c = forwardClient(t, tp.URL, poolOf(tp.fw.ca.Certificate()))
	default:
		c, base = client(t), tp.URL.String()
	}
	status, _, b := do(t, c, "GET", base+path, nil, nil)
	if status != 200 {
		t.Fatalf("GET %s: %d %s", path, status, b)
	}
	return b
}
