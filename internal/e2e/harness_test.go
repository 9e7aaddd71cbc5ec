package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// sidecar is one `sidecrypt serve` process.
type sidecar struct {
	t         *testing.T
	dir       string
	url       string // http://127.0.0.1:PORT, the proxy listener
	adminURL  string
	token     string
	rulesFile string
	env       []string
	proc      *testenv.Process
}

// sidecarConfig says how to run a sidecar.
type sidecarConfig struct {
	upstream string // reverse mode when set; forward mode when empty
	rules    string // the rule file's text
	// softHSM: the KEK lives on a fresh SoftHSM2 token; otherwise the
	// software provider holds it.
	softHSM bool
	// keys are created through the admin API once the sidecar is up.
	keys []string
	env  []string // more SIDECRYPT_ settings
}

const adminToken = "e2e-admin-token"

func startSidecar(t *testing.T, cfg sidecarConfig) *sidecar {
	t.Helper()
	dir := t.TempDir()
	listen, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	s := &sidecar{t: t, dir: dir, url: "http://" + listen, adminURL: "http://" + admin, token: adminToken,
		rulesFile: filepath.Join(dir, "rules.yaml")}
	if err := os.WriteFile(s.rulesFile, []byte(cfg.rules), 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = []string{
		"SIDECRYPT_LISTEN=" + listen,
		"SIDECRYPT_ADMIN_LISTEN=" + admin,
		"SIDECRYPT_ADMIN_TOKEN=" + s.token,
		"SIDECRYPT_UPSTREAM=" + cfg.upstream,
		"SIDECRYPT_RULES=" + s.rulesFile,
		"SIDECRYPT_KEYSTORE=" + filepath.Join(dir, "keys.db"),
		"SIDECRYPT_AUDIT_LOG=" + filepath.Join(dir, "audit.log"),
		"SIDECRYPT_LOG_LEVEL=debug",
	}
	if cfg.softHSM {
		tok := testenv.UseSoftHSM(t).InitToken(t, "e2e")
		s.env = append(s.env, "SIDECRYPT_HSM="+tok.URI(""), "SIDECRYPT_HSM_PIN="+tok.PIN)
	} else {
		s.env = append(s.env, "SIDECRYPT_HSM=software", "SIDECRYPT_MASTER_PASSPHRASE=end-to-end test passphrase")
	}
	if e := os.Getenv("SIDECRYPT_TEST_ENGINE"); e != "" && cfg.upstream != "" {
		// make test runs the suite on each reverse-mode engine.
		s.env = append(s.env, "SIDECRYPT_ENGINE="+e)
	}
	s.env = append(s.env, cfg.env...)
	if cfg.upstream == "" {
		s.run("ca", "init")
	}
	cmd := exec.Command(sidecryptBin, "serve")
	cmd.Env = s.environ()
	// Registered first, so it runs after the process has stopped: a
	// sidecar built with -race reports data races on its stderr.
	t.Cleanup(func() {
		if s.proc != nil && strings.Contains(s.proc.Log.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in sidecrypt serve:\n%s", s.proc.Log.String())
		}
	})
	s.proc = testenv.Start(t, "sidecrypt serve", cmd)
	testenv.WaitHTTP(t, s.proc, s.adminURL+"/healthz", 60*time.Second)
	for _, k := range cfg.keys {
		s.admin("POST", "/v1/keys", `{"name":"`+k+`"}`, http.StatusCreated)
	}
	return s
}

// environ is this process's environment without SIDECRYPT_ settings
// (other than the tests' own) and without proxy settings, plus the
// sidecar's.
func (s *sidecar) environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "SIDECRYPT_") && !strings.HasPrefix(name, "SIDECRYPT_TEST_"):
		case strings.EqualFold(name, "HTTP_PROXY"), strings.EqualFold(name, "HTTPS_PROXY"), strings.EqualFold(name, "NO_PROXY"):
		default:
			out = append(out, kv)
		}
	}
	return append(out, s.env...)
}

// run runs a sidecrypt command with the sidecar's environment.
func (s *sidecar) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(sidecryptBin, args...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("sidecrypt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// admin calls the admin API and fails the test unless the status is want.
func (s *sidecar) admin(method, path, body string, want int) []byte {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.adminURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
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

// httpClient never uses a proxy from the environment and never asks for
// compressed answers (what the application sees is compared byte for
// byte with a direct connection).
var httpClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 4},
	Timeout:   60 * time.Second,
}

// stack is a protected store behind a recording relay behind a sidecar,
// and, when asked for, a second store that the same requests go to
// directly, for comparison.
type stack struct {
	store  *testenv.PouchDB // what the sidecar protects
	relay  *testenv.Relay   // between the sidecar and store
	sc     *sidecar
	direct *testenv.PouchDB // nil unless asked for
}

func newStack(t *testing.T, cfg sidecarConfig, withDirect bool) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	st := &stack{store: testenv.StartPouchDB(t)}
	if withDirect {
		st.direct = testenv.StartPouchDB(t)
	}
	st.relay = testenv.StartRelay(t, st.store.URL)
	cfg.upstream = st.relay.URL
	st.sc = startSidecar(t, cfg)
	return st
}

// checkNoLeaks asserts that no secret reached the store through the
// relay since m, and that the store, read directly, holds none.
func (st *stack) checkNoLeaks(t *testing.T, m testenv.Mark, localIDs []string, secrets []string) {
	t.Helper()
	st.relay.Quiet(20 * time.Millisecond)
	st.relay.AssertNoPlaintext(t, m, secrets...)
	testenv.AssertStoreHoldsNoPlaintext(t, st.store.URL, localIDs, nil, secrets...)
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("not a JSON object (%d): %v: %s", r.status, err, r.body)
	}
	return v
}

// send sends one request; headers are name, value pairs. A JSON body
// gets Content-Type application/json unless a header sets one.
func send(t *testing.T, method, url, body string, headers ...string) *response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// sendNoFail is send for goroutines: a transport error becomes status 0.
func sendNoFail(method, url, body string, headers ...string) *response {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return &response{header: http.Header{}, body: []byte(err.Error())}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return &response{header: http.Header{}, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func must(t *testing.T, want int, method, url, body string, headers ...string) *response {
	t.Helper()
	r := send(t, method, url, body, headers...)
	if r.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, r.status, r.body, want)
	}
	return r
}

// errorCode returns the sidecar's refusal code from an error body
// ({"error": {"code": ...}}), or "" for any other body.
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// isToken reports whether v is a sidecrypt field token (format 1, sc1.,
// or format 2, sc2.).
func isToken(v any) bool {
	s, ok := v.(string)
	return ok && (strings.HasPrefix(s, "sc1.") || strings.HasPrefix(s, "sc2."))
}

// storeDoc reads a document from the store directly.
func storeDoc(t *testing.T, storeURL, db, id string) map[string]any {
	t.Helper()
	return must(t, 200, "GET", storeURL+"/"+db+"/"+id, "").json(t)
}

// assertSealed fails unless each named member of the stored document is
// a token.
func assertSealed(t *testing.T, doc map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		v, ok := doc[f]
		if !ok {
			t.Errorf("stored %v lacks %s", doc["_id"], f)
			continue
		}
		if !isToken(v) {
			t.Errorf("stored %v: %s is %v, want a token", doc["_id"], f, v)
		}
	}
}
