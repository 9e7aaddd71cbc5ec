package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/rules"
)

// The tests in this file run several sidecars that share one etcd: keys,
// rules and the election of the background worker, against a real
// pouchdb-server.

const etcdTestToken = "etcd-test-admin-token"

// rulesV1 protects $.ssn; rulesV2 also $.phone.
const rulesV1 = `version: 1
routes:
  - name: patients
    match: {methods: [PUT, POST], paths: ["/clinic/*"]}
    encrypt:
      - fields: ["$.ssn"]
        key: pii
decrypt: {keys: [pii]}
`

const rulesV2 = `version: 1
routes:
  - name: patients
    match: {methods: [PUT, POST], paths: ["/clinic/*"]}
    encrypt:
      - fields: ["$.ssn", "$.phone"]
        key: pii
decrypt: {keys: [pii]}
`

// etcdDeployment is the environment shared by every sidecar of one
// deployment, and the files it needs.
type etcdDeployment struct {
	dir    string
	bin    string // the sidecrypt CLI: this test binary under the name "sidecrypt"
	db     *testenv.PouchDB
	etcd   *testenv.Etcd
	common []string
}

func newEtcdDeployment(t *testing.T) *etcdDeployment {
	t.Helper()
	d := &etcdDeployment{dir: t.TempDir()}
	d.etcd = testenv.StartEtcd(t)
	d.db = testenv.StartPouchDB(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// TestMain (script_test.go) runs the CLI when the binary is called
	// "sidecrypt": the same code as the built binary, race detector
	// included.
	d.bin = filepath.Join(d.dir, "sidecrypt")
	if err := os.Symlink(exe, d.bin); err != nil {
		t.Fatal(err)
	}
	d.common = []string{
		"SIDECRYPT_KEYSTORE=etcd://" + d.etcd.Hosts() + "/e2e",
		// No host: the rules live on the keystore's etcd.
		"SIDECRYPT_RULES=etcd:///e2e/rules",
		"SIDECRYPT_MASTER_PASSPHRASE=etcd test passphrase",
		// The software KEK file stands in for an HSM that every sidecar
		// reaches; all sidecars share it.
		"SIDECRYPT_KEK_FILE=" + filepath.Join(d.dir, "kek.json"),
		"SIDECRYPT_UPSTREAM=" + d.db.URL,
		"SIDECRYPT_ADMIN_TOKEN=" + etcdTestToken,
		"SIDECRYPT_AUDIT_LOG=" + filepath.Join(d.dir, "cli-audit.log"),
		"SIDECRYPT_LOG_FORMAT=json",
	}
	return d
}

// cli runs a sidecrypt command with the deployment's environment and
// returns its output and exit code.
func (d *etcdDeployment) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = append(os.Environ(), d.common...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("sidecrypt %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

func (d *etcdDeployment) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, code := d.cli(t, args...)
	if code != 0 {
		t.Fatalf("sidecrypt %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (d *etcdDeployment) writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sidecarEnv is one sidecar's own settings.
func (d *etcdDeployment) sidecarEnv(t *testing.T, i int) (env []string, proxyURL, adminURL string) {
	listen, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	env = append(append([]string{}, d.common...),
		"SIDECRYPT_LISTEN="+listen,
		"SIDECRYPT_ADMIN_LISTEN="+admin,
		fmt.Sprintf("SIDECRYPT_AUDIT_LOG=%s/audit-%d.log", d.dir, i),
		// Each sidecar its own admin socket (the default, next to an
		// etcd keystore, is sidecrypt-data/ in the working directory).
		fmt.Sprintf("SIDECRYPT_ADMIN_SOCKET=%s/admin-%d.sock", d.dir, i),
	)
	return env, "http://" + listen, "http://" + admin
}

// sidecar is a running sidecar, a child process or in-process serve().
type etcdSidecar struct {
	proxy, admin string
	proc         *testenv.Process // nil when in-process
}

func (d *etcdDeployment) startProcess(t *testing.T, i int) *etcdSidecar {
	t.Helper()
	env, proxyURL, adminURL := d.sidecarEnv(t, i)
	cmd := exec.Command(d.bin, "serve")
	cmd.Env = append(os.Environ(), env...)
	p := testenv.Start(t, fmt.Sprintf("sidecrypt serve #%d", i), cmd)
	sc := &etcdSidecar{proxy: proxyURL, admin: adminURL, proc: p}
	sc.waitReady(t)
	return sc
}

func (d *etcdDeployment) startInProcess(t *testing.T, i int) *etcdSidecar {
	t.Helper()
	env, proxyURL, adminURL := d.sidecarEnv(t, i)
	cfg, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- serve(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sidecar %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("sidecar %d did not stop", i)
		}
	})
	sc := &etcdSidecar{proxy: proxyURL, admin: adminURL}
	sc.waitReady(t)
	return sc
}

func (sc *etcdSidecar) waitReady(t *testing.T) {
	t.Helper()
	testenv.WaitHTTP(t, sc.proc, sc.admin+"/healthz", 60*time.Second)
	etcdEventually(t, "sidecar ready", func() bool {
		code, _ := httpDo(t, "GET", sc.admin+"/readyz", "", nil)
		return code == http.StatusOK
	})
}

func etcdEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpDo(t *testing.T, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// field reads one string field of a JSON document.
func field(t *testing.T, doc []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("not a JSON document: %s", doc)
	}
	s, _ := m[name].(string)
	return s
}

func rulesHash(t *testing.T, sc *etcdSidecar) string {
	t.Helper()
	code, body := httpDo(t, "GET", sc.admin+"/v1/rules", etcdTestToken, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/rules: %d %s", code, body)
	}
	var out struct {
		Hash string `json:"hash"`
	}
	_ = json.Unmarshal(body, &out)
	return out.Hash
}

// setUp creates the keys and pushes the first rules, as an operator does
// once for the whole deployment.
func (d *etcdDeployment) setUp(t *testing.T) {
	t.Helper()
	d.mustCLI(t, "keys", "create", "pii")
	out := d.mustCLI(t, "rules", "push", d.writeFile(t, "rules-v1.yaml", rulesV1))
	if !strings.Contains(out, "first push") || !strings.Contains(out, "Stored rules") {
		t.Fatalf("first rules push:\n%s", out)
	}
	// Who pushed is on the record, before any sidecar reloads.
	if log, _ := os.ReadFile(filepath.Join(d.dir, "cli-audit.log")); !strings.Contains(string(log), `"action":"rules.push"`) || !strings.Contains(string(log), `"actor":"cli:`) {
		t.Fatalf("rules push was not audited with its operator:\n%s", log)
	}
	if code, body := httpDo(t, "PUT", d.db.URL+"/clinic", "", nil); code != http.StatusCreated {
		t.Fatalf("create database: %d %s", code, body)
	}
}

// crossReads writes a document through each sidecar and reads it back
// through the next one, checking that pouchdb holds only ciphertext.
func (d *etcdDeployment) crossReads(t *testing.T, sidecars []*etcdSidecar, round string) {
	t.Helper()
	for i, w := range sidecars {
		r := sidecars[(i+1)%len(sidecars)]
		id := fmt.Sprintf("%s-%d", round, i)
		ssn := fmt.Sprintf("078-05-%04d", i)
		doc := fmt.Sprintf(`{"name":"patient %d","ssn":%q}`, i, ssn)
		if code, body := httpDo(t, "PUT", w.proxy+"/clinic/"+id, "", []byte(doc)); code != http.StatusCreated {
			t.Fatalf("write through sidecar %d: %d %s", i, code, body)
		}
		_, raw := httpDo(t, "GET", d.db.URL+"/clinic/"+id, "", nil)
		if stored := field(t, raw, "ssn"); !strings.HasPrefix(stored, fieldcrypt.TokenPrefix) || strings.Contains(string(raw), ssn) {
			t.Fatalf("the datastore holds %s", raw)
		}
		code, got := httpDo(t, "GET", r.proxy+"/clinic/"+id, "", nil)
		if code != http.StatusOK || field(t, got, "ssn") != ssn {
			t.Fatalf("read through sidecar %d of a document written through %d: %d %s", (i+1)%len(sidecars), i, code, got)
		}
	}
}

// TestEtcdTwoServeProcesses runs the real CLI's `sidecrypt serve` twice on
// one etcd: a document written through one is read through the other;
// one rules push reaches both and an invalid one changes nothing; exactly
// one of them leads the background work; a revoke reaches both.
func TestEtcdTwoServeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, pouchdb-server and two sidecars")
	}
	d := newEtcdDeployment(t)
	d.setUp(t)
	a, b := d.startProcess(t, 0), d.startProcess(t, 1)
	sidecars := []*etcdSidecar{a, b}
	d.crossReads(t, sidecars, "first")

	// One push, both sidecars; the push shows what changes.
	out := d.mustCLI(t, "rules", "push", d.writeFile(t, "rules-v2.yaml", rulesV2))
	if !strings.Contains(out, "$.phone newly protected") {
		t.Fatalf("push does not show the change in protection:\n%s", out)
	}
	v2 := rules.HashBytes([]byte(rulesV2))
	for i, sc := range sidecars {
		etcdEventually(t, fmt.Sprintf("sidecar %d loads the pushed rules", i), func() bool { return rulesHash(t, sc) == v2 })
	}
	if code, body := httpDo(t, "PUT", b.proxy+"/clinic/phone", "", []byte(`{"phone":"555-0100"}`)); code != http.StatusCreated {
		t.Fatalf("write under the new rules: %d %s", code, body)
	}
	if _, raw := httpDo(t, "GET", d.db.URL+"/clinic/phone", "", nil); strings.Contains(string(raw), "555-0100") {
		t.Fatalf("a field the pushed rules protect reached the datastore in plaintext: %s", raw)
	}

	// An invalid file is refused by the push; nothing changes anywhere.
	bad := d.writeFile(t, "bad.yaml", "version: 1\nroutes:\n  - name: patients\n    encrypt: [{fields: [\"$.ssn\"], key: pii, mode: sideways}]\n")
	if out, code := d.cli(t, "rules", "push", bad); code != 1 || !strings.Contains(out, "nothing was stored") {
		t.Fatalf("invalid push: exit %d\n%s", code, out)
	}
	if out := d.mustCLI(t, "rules", "push", filepath.Join(d.dir, "rules-v2.yaml")); !strings.Contains(out, "nothing to do") {
		t.Fatalf("pushing the stored rules again:\n%s", out)
	}
	for _, sc := range sidecars {
		if h := rulesHash(t, sc); h != v2 {
			t.Fatalf("rules changed after refused pushes: %s", h)
		}
	}

	// Exactly one sidecar runs the background key work.
	leaders := 0
	for _, sc := range sidecars {
		if strings.Contains(sc.proc.Log.String(), "this sidecar is now the leader") {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d sidecars say they lead, want 1", leaders)
	}

	// A revoke through the CLI reaches both: the token is no longer opened.
	d.mustCLI(t, "keys", "revoke", "pii", "--version", "1", "--compromised", "--reason", "e2e test")
	for i, sc := range sidecars {
		etcdEventually(t, fmt.Sprintf("sidecar %d refuses the revoked key", i), func() bool {
			code, got := httpDo(t, "GET", sc.proxy+"/clinic/first-0", "", nil)
			return code == http.StatusOK && strings.HasPrefix(field(t, got, "ssn"), fieldcrypt.TokenPrefix)
		})
		// And sealing under it fails closed.
		code, body := httpDo(t, "PUT", sc.proxy+"/clinic/after-revoke", "", []byte(`{"ssn":"078-05-1120"}`))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("sidecar %d: write under a revoked key: %d %s", i, code, body)
		}
	}
	if _, raw := httpDo(t, "GET", d.db.URL+"/clinic/after-revoke", "", nil); strings.Contains(string(raw), "078-05-1120") {
		t.Fatal("a refused write reached the datastore")
	}
}

// TestEtcdFiveSidecars runs five sidecars (serve() in this process) on
// one etcd and pouchdb: every document written through one is read
// through another, and a rotation through one is used by all.
func TestEtcdFiveSidecars(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, pouchdb-server and five sidecars")
	}
	d := newEtcdDeployment(t)
	d.setUp(t)
	var sidecars []*etcdSidecar
	for i := 0; i < 5; i++ {
		sidecars = append(sidecars, d.startInProcess(t, i))
	}
	d.crossReads(t, sidecars, "before")

	// Rotate through one sidecar's admin API: every sidecar seals with
	// v2 from then on, and still opens what v1 sealed.
	if code, body := httpDo(t, "POST", sidecars[2].admin+"/v1/keys/pii/rotate", etcdTestToken, []byte(`{}`)); code != http.StatusOK {
		t.Fatalf("rotate: %d %s", code, body)
	}
	for i, sc := range sidecars {
		id := fmt.Sprintf("rotated-%d", i)
		etcdEventually(t, fmt.Sprintf("sidecar %d seals with v2", i), func() bool {
			if code, _ := httpDo(t, "PUT", sc.proxy+"/clinic/"+id, "", []byte(`{"ssn":"078-05-1120"}`)); code != http.StatusCreated {
				return false
			}
			_, raw := httpDo(t, "GET", d.db.URL+"/clinic/"+id, "", nil)
			tok, err := fieldcrypt.ParseTokenInfo([]byte(field(t, raw, "ssn")))
			if err != nil {
				t.Fatalf("stored field is not a token: %s", raw)
			}
			if tok.KeyVersion == 2 {
				return true
			}
			// Sealed with v1 just before this sidecar's watch caught up:
			// write again under a new ID (revisions conflict otherwise).
			id += "x"
			return false
		})
	}
	d.crossReads(t, sidecars, "after")
	for i, sc := range sidecars {
		code, got := httpDo(t, "GET", sc.proxy+"/clinic/before-0", "", nil)
		if code != http.StatusOK || field(t, got, "ssn") != "078-05-0000" {
			t.Fatalf("sidecar %d: a v1 document after the rotation: %d %s", i, code, got)
		}
	}
}

// TestEtcdServeOutage: a sidecar whose etcd goes away keeps serving with
// its cached keys and reports not-ready, refuses (fail closed) once they
// expire, and recovers on its own when etcd is back.
func TestEtcdServeOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, pouchdb-server and a sidecar")
	}
	d := newEtcdDeployment(t)
	const ttl = 3 * time.Second
	d.common = append(d.common, "SIDECRYPT_CACHE_TTL="+ttl.String())
	d.setUp(t)
	sc := d.startInProcess(t, 0)
	ssn := "078-05-1120"
	put := func(id string) int {
		code, _ := httpDo(t, "PUT", sc.proxy+"/clinic/"+id, "", []byte(fmt.Sprintf(`{"ssn":%q}`, ssn)))
		return code
	}
	read := func(id string) string {
		_, got := httpDo(t, "GET", sc.proxy+"/clinic/"+id, "", nil)
		return field(t, got, "ssn")
	}
	if code := put("warm"); code != http.StatusCreated {
		t.Fatalf("write: %d", code)
	}
	if read("warm") != ssn {
		t.Fatal("read back failed")
	}
	warmed := time.Now()

	etcdMember := d.etcd.Members[0]
	etcdMember.Stop()
	if time.Since(warmed) < ttl-time.Second {
		if code := put("during"); code != http.StatusCreated {
			t.Fatalf("write with cached keys during the outage: %d", code)
		}
		if got := read("during"); got != ssn {
			t.Fatalf("read with cached keys during the outage: %q", got)
		}
	} else {
		t.Log("machine too slow to check serving within the TTL; checking the rest")
	}
	etcdEventually(t, "not ready while etcd is down", func() bool {
		code, body := httpDo(t, "GET", sc.admin+"/readyz", "", nil)
		return code == http.StatusServiceUnavailable && strings.Contains(string(body), "keystore")
	})
	etcdEventually(t, "writes fail closed once the cached key expires", func() bool { return put("late") == http.StatusServiceUnavailable })
	if got := read("warm"); got == ssn || !strings.HasPrefix(got, fieldcrypt.TokenPrefix) {
		t.Fatalf("read after the TTL during the outage gave %q, want the token", got)
	}
	if _, raw := httpDo(t, "GET", d.db.URL+"/clinic/late", "", nil); strings.Contains(string(raw), ssn) {
		t.Fatal("a refused write reached the datastore")
	}

	etcdMember.Restart(t)
	etcdEventually(t, "ready again when etcd is back", func() bool {
		code, _ := httpDo(t, "GET", sc.admin+"/readyz", "", nil)
		return code == http.StatusOK
	})
	etcdEventually(t, "writes work again", func() bool { return put("after") == http.StatusCreated })
	if got := read("after"); got != ssn {
		t.Fatalf("read after recovery: %q", got)
	}
}
