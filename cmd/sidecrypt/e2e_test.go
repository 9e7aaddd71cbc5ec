package main

// End-to-end tests of the sidecrypt binary: `sidecrypt serve` (the test
// binary re-executed as the CLI, see TestMain) in front of a real
// pouchdb-server, with the real keystore, software KEK provider, key cache,
// audit log and admin API, driven the way an application and an operator
// would drive them. The proxy package has the protocol-level end-to-end
// tests in both modes; these prove the parts fit together.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// sidecar is one `sidecrypt serve` process and the environment it and the
// CLI share.
type sidecar struct {
	t        *testing.T
	dir      string
	env      []string
	url      string // proxy, http://127.0.0.1:PORT
	adminURL string
	token    string
	proc     *testenv.Process
}

func newSidecar(t *testing.T, upstream, rulesFile string, extra ...string) *sidecar {
	t.Helper()
	dir := t.TempDir()
	listen, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	s := &sidecar{t: t, dir: dir, url: "http://" + listen, adminURL: "http://" + admin, token: "e2e-admin-token"}
	s.env = append([]string{
		"SIDECRYPT_LISTEN=" + listen,
		"SIDECRYPT_ADMIN_LISTEN=" + admin,
		"SIDECRYPT_ADMIN_TOKEN=" + s.token,
		"SIDECRYPT_UPSTREAM=" + upstream,
		"SIDECRYPT_RULES=" + rulesFile,
		"SIDECRYPT_KEYSTORE=" + filepath.Join(dir, "data", "keys.db"),
		"SIDECRYPT_MASTER_PASSPHRASE=end-to-end test passphrase",
		"SIDECRYPT_LOG_LEVEL=debug",
	}, extra...)
	return s
}

// environ is the process environment without the caller's own SIDECRYPT_
// settings, plus the sidecar's.
func (s *sidecar) environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDECRYPT_") || strings.HasPrefix(kv, "SIDECRYPT_TEST_") {
			out = append(out, kv)
		}
	}
	return append(out, s.env...)
}

func (s *sidecar) start() {
	s.t.Helper()
	bin, err := exec.LookPath("sidecrypt")
	if err != nil {
		s.t.Fatalf("the test binary is not on PATH as sidecrypt: %v", err)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = s.environ()
	s.proc = testenv.Start(s.t, "sidecrypt serve", cmd)
	testenv.WaitHTTP(s.t, s.proc, s.adminURL+"/healthz", 60*time.Second)
}

// cli runs a sidecrypt command with the sidecar's environment and returns
// its standard output; it fails the test if the command fails.
func (s *sidecar) cli(args ...string) string {
	s.t.Helper()
	bin, _ := exec.LookPath("sidecrypt")
	cmd := exec.Command(bin, args...)
	cmd.Env = s.environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("sidecrypt %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// admin calls the admin API and fails the test unless the status is want.
func (s *sidecar) admin(method, path, body string, want int) []byte {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.adminURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("admin %s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	return b
}

// call sends a request and returns status and body.
func call(t *testing.T, method, u, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func mustCall(t *testing.T, method, u, body string, want int) []byte {
	t.Helper()
	status, b := call(t, method, u, body)
	if status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, u, status, b, want)
	}
	return b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

// waitFor polls cond until it holds or 20 seconds pass. It is for effects
// that propagate (a destroy seen by the running sidecar), never a timing
// assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for: %s", what)
}

func isToken(v any) bool {
	s, ok := v.(string)
	return ok && strings.HasPrefix(s, "sc2.")
}

// The values the clinic rules protect; none may ever reach the store.
var patientSecrets = []string{
	"Ann Example", "123-45-6789", "ann@example.com", "+1 555 0100", "1980-02-29",
	"J45.909 asthma", "inhaler twice daily", "4111111111111111",
	"Bob Sample", "987-65-4321", "bob@example.org", "E11.9 diabetes",
}

const patientAnn = `{"type":"patient","name":"Ann Example","ssn":"123-45-6789","email":"ann@example.com",
 "phone":"+1 555 0100","birth_date":"1980-02-29","diagnosis":"J45.909 asthma",
 "notes":{"text":"inhaler twice daily","dose_ug":12345678901234567890,"ratio":0.1000},
 "card_number":"4111111111111111","ward":"B"}`

// TestServeEndToEnd drives the binary as an application and an operator
// would: keys made through the admin API, writes and reads through the
// sidecar, the store read directly after every write, then rotation,
// crypto-shredding and revocation on the live sidecar, and finally the
// audit log verified.
func TestServeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	db := testenv.StartPouchDB(t)
	rulesFile := filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml")
	s := newSidecar(t, db.URL, rulesFile)
	s.start()
	for _, k := range []string{"pii", "phi", "contact", "card"} {
		s.admin("POST", "/v1/keys", `{"name":"`+k+`"}`, http.StatusCreated)
	}

	// What the store holds may never contain a protected value.
	checkStore := func(what string) map[string]map[string]any {
		t.Helper()
		raw := mustCall(t, "GET", db.URL+"/clinic/_all_docs?include_docs=true", "", 200)
		for _, secret := range patientSecrets {
			if bytes.Contains(raw, []byte(secret)) {
				t.Fatalf("%s: plaintext %q reached the datastore", what, secret)
			}
		}
		docs := map[string]map[string]any{}
		for _, row := range decode(t, raw)["rows"].([]any) {
			doc := row.(map[string]any)["doc"].(map[string]any)
			docs[doc["_id"].(string)] = doc
			for _, f := range []string{"name", "ssn", "email", "phone", "birth_date", "diagnosis", "notes", "card_number"} {
				if v, ok := doc[f]; ok && !isToken(v) {
					t.Fatalf("%s: %s.%s stored as %v, want a token", what, doc["_id"], f, v)
				}
			}
		}
		return docs
	}

	mustCall(t, "PUT", s.url+"/clinic", "", 201)
	mustCall(t, "PUT", s.url+"/clinic/p-ann", patientAnn, 201)
	checkStore("after PUT")
	mustCall(t, "POST", s.url+"/clinic/_bulk_docs", `{"docs":[
	  {"_id":"p-bob","type":"patient","name":"Bob Sample","ssn":"987-65-4321","email":"bob@example.org","diagnosis":"E11.9 diabetes","ward":"C"},
	  {"_id":"p-cy","type":"patient","name":"Cy","ssn":"111-22-3333","email":"cy@example.net"}]}`, 201)
	stored := checkStore("after _bulk_docs")

	// The application reads its plaintext back, types intact: the
	// protected object's big integer and decimal come back byte for byte.
	got := mustCall(t, "GET", s.url+"/clinic/p-ann", "", 200)
	for _, want := range []string{`"ssn":"123-45-6789"`, `"diagnosis":"J45.909 asthma"`,
		`"notes":{"text":"inhaler twice daily","dose_ug":12345678901234567890,"ratio":0.1000}`,
		`"card_number":"***1111"` /* masked, last4 */, `"ward":"B"`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Fatalf("read through the sidecar lacks %s:\n%s", want, got)
		}
	}

	// Equality search on the deterministically encrypted email, in the
	// three shapes CouchDB accepts (leaves: true keeps the operators).
	for query, want := range map[string]int{
		`{"selector":{"email":"bob@example.org"}}`:                            1,
		`{"selector":{"email":{"$eq":"bob@example.org"}}}`:                    1,
		`{"selector":{"email":{"$in":["bob@example.org","cy@example.net"]}}}`: 2,
	} {
		found := decode(t, mustCall(t, "POST", s.url+"/clinic/_find", query, 200))
		docs := found["docs"].([]any)
		if len(docs) != want || docs[0].(map[string]any)["name"] == nil {
			t.Fatalf("_find %s: %v", query, found)
		}
	}
	changes := mustCall(t, "GET", s.url+"/clinic/_changes?include_docs=true", "", 200)
	if !bytes.Contains(changes, []byte("Bob Sample")) || bytes.Contains(changes, []byte(`"sc2.`)) {
		t.Fatalf("_changes not decrypted: %s", changes)
	}

	// An update with _rev: the new value is encrypted too, and differs.
	rev := stored["p-bob"]["_rev"].(string)
	mustCall(t, "PUT", s.url+"/clinic/p-bob", `{"_rev":"`+rev+`","type":"patient","name":"Bob Sample","ssn":"987-65-4321","email":"bob@example.org","diagnosis":"E11.9 diabetes, controlled","ward":"C"}`, 201)
	after := checkStore("after update")
	if after["p-bob"]["diagnosis"] == stored["p-bob"]["diagnosis"] {
		t.Fatal("the updated diagnosis has the same token as before")
	}

	// Rotation: phi v2 becomes primary; a new patient's diagnosis uses it.
	s.admin("POST", "/v1/keys/phi/rotate", "", 200)
	waitFor(t, "new writes under phi v2", func() bool {
		mustCall(t, "PUT", s.url+"/clinic/p-dee-"+fmt.Sprint(time.Now().UnixNano()), `{"diagnosis":"Z00.0 checkup"}`, 201)
		raw := mustCall(t, "GET", db.URL+"/clinic/_all_docs?include_docs=true", "", 200)
		// Header: format 2, random, "phi", version 2; the 14th character
		// holds the version's last 2 bits (10) and 4 bits of the nonce.
		return regexp.MustCompile(`"sc2\.AgEDcGhpAAAAA[g-v]`).Match(raw)
	})

	// Crypto-shredding: destroying phi v1 from the CLI (another process)
	// makes Ann's diagnosis unreadable through the running sidecar, while
	// her other fields, under other keys, still read, and so do
	// diagnoses under phi v2. The store itself is unchanged.
	s.cli("keys", "destroy", "phi", "--version", "1", "--yes", "--reason", "end-to-end test")
	waitFor(t, "the destroyed version to stop decrypting", func() bool {
		doc := decode(t, mustCall(t, "GET", s.url+"/clinic/p-ann", "", 200))
		return isToken(doc["diagnosis"])
	})
	doc := decode(t, mustCall(t, "GET", s.url+"/clinic/p-ann", "", 200))
	if doc["ssn"] != "123-45-6789" || doc["email"] != "ann@example.com" {
		t.Fatalf("records under other keys must still read: %v", doc)
	}
	list := mustCall(t, "GET", s.url+"/clinic/_all_docs?include_docs=true", "", 200)
	if !bytes.Contains(list, []byte(`"Z00.0 checkup"`)) {
		t.Fatalf("diagnoses under phi v2 must still read: %s", list)
	}

	// Revoking pii v1 as compromised stops it decrypting at once, and,
	// since it was the primary, writes that need pii are refused (fail
	// closed) without reaching the store.
	s.admin("POST", "/v1/keys/pii/versions/1/revoke", `{"compromised":true,"reason":"end-to-end test"}`, 200)
	waitFor(t, "the compromised version to stop decrypting", func() bool {
		return isToken(decode(t, mustCall(t, "GET", s.url+"/clinic/p-ann", "", 200))["ssn"])
	})
	before := mustCall(t, "GET", db.URL+"/clinic/_all_docs", "", 200)
	status, body := call(t, "PUT", s.url+"/clinic/p-eve", `{"name":"Eve Refused","ssn":"000-00-0000"}`)
	if status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"code":"key_unavailable"`)) {
		t.Fatalf("write under a key with no primary: %d %s", status, body)
	}
	if afterRefusal := mustCall(t, "GET", db.URL+"/clinic/_all_docs", "", 200); !bytes.Equal(before, afterRefusal) {
		t.Fatal("a refused request changed the datastore")
	}

	// Metrics saw all of it, labelled by key and route, never by content.
	metrics := mustCall(t, "GET", s.adminURL+"/metrics", "", 200)
	for _, want := range []string{
		`sidecrypt_fields_total{key="pii",op="encrypt"}`,
		`sidecrypt_fields_total{key="pii",op="decrypt"}`,
		`sidecrypt_fields_total{key="card",op="mask"}`,
		`sidecrypt_requests_total{outcome="forwarded",route="couchdb.doc"}`,
		`sidecrypt_refusals_total{reason="key_unavailable"}`,
		`sidecrypt_token_open_failures_total{key="phi"}`,
		`sidecrypt_keycache_unwraps_total`,
		`sidecrypt_hsm_operation_duration_seconds_count{op="unwrap"}`,
		`sidecrypt_rules_info{hash="sha256:`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, secret := range patientSecrets {
		if bytes.Contains(metrics, []byte(secret)) {
			t.Fatalf("a field value appears in the metrics: %q", secret)
		}
	}

	// Stop the sidecar (a clean drain writes the final checkpoint) and
	// verify the audit trail it and the CLI wrote together.
	s.proc.Stop()
	out := s.cli("audit", "verify")
	if !strings.Contains(out, ": OK") || !strings.Contains(out, "MACs checked") {
		t.Fatalf("audit verify: %s", out)
	}
	auditLog, _ := os.ReadFile(filepath.Join(s.dir, "data", "audit.log"))
	for _, want := range []string{`"action":"key.destroy"`, `"actor":"cli:`, `"action":"key.revoke"`, `"action":"request.refused"`, `"action":"serve.stop"`} {
		if !bytes.Contains(auditLog, []byte(want)) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	for _, secret := range patientSecrets {
		if bytes.Contains(auditLog, []byte(secret)) {
			t.Fatalf("a field value appears in the audit log: %q", secret)
		}
	}
}

// TestRewrapResumesAfterKill9: the background re-wrap after a KEK
// rotation is killed with SIGKILL half way; the restarted sidecar finishes
// it, and every data key version still unwraps.
func TestRewrapResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sidecar twice")
	}
	rulesFile := filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml")
	// Nothing is proxied in this test; the upstream is never called.
	s := newSidecar(t, "http://127.0.0.1:9", rulesFile, "SIDECRYPT_REWRAP_RATE=12")
	s.start()
	const keys = 30
	for i := range keys {
		s.admin("POST", "/v1/keys", fmt.Sprintf(`{"name":"k%02d"}`, i), http.StatusCreated)
		if i%3 == 0 {
			s.admin("POST", fmt.Sprintf("/v1/keys/k%02d/rotate", i), "", http.StatusOK)
		}
	}
	const versions = keys + keys/3
	s.admin("POST", "/v1/kek/rotate", "", http.StatusOK)

	type status struct {
		Running bool `json:"running"`
		Done    int  `json:"done"`
		Total   int  `json:"total"`
	}
	rewrap := func() status {
		var st status
		_ = json.Unmarshal(s.admin("GET", "/v1/rewrap", "", 200), &st)
		return st
	}
	waitFor(t, "the re-wrap to be under way", func() bool { st := rewrap(); return st.Done >= 8 })
	if st := rewrap(); st.Done >= versions {
		t.Fatalf("the re-wrap finished before the kill (%+v); lower SIDECRYPT_REWRAP_RATE", st)
	}
	s.proc.Kill()

	s.start()
	underKEK := func(v int) int {
		var list struct {
			Keys []struct {
				Versions []struct {
					KEK   int    `json:"kek_version"`
					State string `json:"state"`
				} `json:"versions"`
			} `json:"keys"`
		}
		_ = json.Unmarshal(s.admin("GET", "/v1/keys", "", 200), &list)
		n := 0
		for _, k := range list.Keys {
			for _, ver := range k.Versions {
				if ver.KEK == v {
					n++
				}
			}
		}
		return n
	}
	if n := underKEK(1); n == 0 || n == versions {
		t.Fatalf("after the kill %d of %d versions are still under KEK v1; the test needs a half-done job", n, versions)
	}
	waitFor(t, "the restarted sidecar to finish the re-wrap", func() bool { return underKEK(2) == versions })
	s.proc.Stop()

	// Every version unwraps: a backup opens each one, and fails if any
	// cannot be unwrapped.
	id := filepath.Join(s.dir, "recovery.key")
	s.cli("keys", "recovery-keygen", "--out", id)
	out := s.cli("keys", "backup", "--out", filepath.Join(s.dir, "backup.json"), "--recipient", id+".pub")
	if !strings.Contains(out, fmt.Sprintf("%d version(s) with material", versions)) {
		t.Fatalf("backup after the resumed re-wrap: %s", out)
	}
	if out := s.cli("kek", "list", "--json"); !strings.Contains(out, `"retirable": true`) {
		t.Errorf("KEK v1 should be reported retirable:\n%s", out)
	}
}

// TestServeForwardMode: the application sets HTTP_PROXY; writes through
// the forward proxy are encrypted in the store.
func TestServeForwardMode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	db := testenv.StartPouchDB(t)
	// Forward mode must be told which host is the datastore: the clinic
	// rules plus hosts.
	clinic, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dbURL, _ := url.Parse(db.URL)
	rulesFile := filepath.Join(t.TempDir(), "clinic-forward.yaml")
	withHosts := strings.Replace(string(clinic), "datastore: couchdb\n", "datastore: couchdb\nhosts: [\""+dbURL.Host+"\"]\n", 1)
	if err := os.WriteFile(rulesFile, []byte(withHosts), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSidecar(t, "", rulesFile)
	s.cli("ca", "init")
	s.start()
	for _, k := range []string{"pii", "phi", "contact", "card"} {
		s.admin("POST", "/v1/keys", `{"name":"`+k+`"}`, http.StatusCreated)
	}
	proxyURL, _ := url.Parse(s.url)
	app := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	do := func(method, u, body string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := app.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s via forward proxy: %d %s", method, u, resp.StatusCode, b)
		}
		return b
	}
	do("PUT", db.URL+"/clinic", "", 201)
	do("PUT", db.URL+"/clinic/p-ann", patientAnn, 201)
	raw := mustCall(t, "GET", db.URL+"/clinic/p-ann", "", 200)
	for _, secret := range patientSecrets {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("plaintext %q reached the datastore through the forward proxy", secret)
		}
	}
	if got := do("GET", db.URL+"/clinic/p-ann", "", 200); !bytes.Contains(got, []byte(`"ssn":"123-45-6789"`)) {
		t.Fatalf("read through the forward proxy: %s", got)
	}
}

// TestDemo runs `sidecrypt demo` (what make demo runs) to completion: it
// fails itself if any protected value reaches the datastore.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	pouch, ok := testenv.PouchDBPath()
	if !ok {
		testenv.Missing(t, "pouchdb-server", "scripts/deps.sh")
	}
	s := newSidecar(t, "", "")
	out := s.cli("demo", "--pouchdb", pouch, "--rules", filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml"))
	for _, want := range []string{"The datastore holds tokens only", "Search still works", `"ssn": "123-45-6789"`, `"ssn": "sc2.`, ": OK", "Stopped everything"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}
