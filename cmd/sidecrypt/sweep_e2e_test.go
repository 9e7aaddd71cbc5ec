package main

// End-to-end tests of the store sweep (issue 15) against pouchdb-server:
// the sidecrypt binary (the test binary re-executed) as `serve` in front
// of the store, the application writing through it, and `sidecrypt
// sweep` run by an operator, with the store read directly to check what
// it holds.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

const sweepRules = `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn:   {key: pii}
      name:  {key: pii}
      email: {key: contact, searchable: true}
decrypt:
  keys: [pii, contact]
`

// sweepSidecar prepares a sidecar (not started) whose upstream is
// upstream, with the sweep rules and the keys pii and contact.
func sweepSidecar(t *testing.T, upstream string) *sidecar {
	t.Helper()
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(sweepRules), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSidecar(t, upstream, rulesFile, "SIDECRYPT_LOG_LEVEL=warn")
	s.cli("keys", "create", "pii")
	s.cli("keys", "create", "contact")
	return s
}

// runCLI runs a sidecrypt command with the sidecar's environment and
// returns its exit code, stdout and stderr.
func (s *sidecar) runCLI(args ...string) (int, string, string) {
	s.t.Helper()
	bin, err := exec.LookPath("sidecrypt")
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = s.environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// storeDocs reads every document of db straight from the store.
func storeDocs(t *testing.T, storeURL, db string) map[string]map[string]any {
	t.Helper()
	raw := mustCall(t, "GET", storeURL+"/"+db+"/_all_docs?include_docs=true", "", 200)
	out := map[string]map[string]any{}
	for _, row := range decode(t, raw)["rows"].([]any) {
		doc := row.(map[string]any)["doc"].(map[string]any)
		out[doc["_id"].(string)] = doc
	}
	return out
}

// tokenCounts counts, by key version, the tokens in documents as stored:
// every string anywhere that parses as a token.
func tokenCounts(docs map[string]map[string]any) map[string]int64 {
	out := map[string]int64{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			if fieldcrypt.HasTokenPrefix(x) {
				if info, err := fieldcrypt.ParseTokenInfo([]byte(x)); err == nil {
					out[fmt.Sprintf("%s:%d", info.Key, info.KeyVersion)]++
				}
			}
		}
	}
	for id, d := range docs {
		if !strings.HasPrefix(id, "_design/") {
			walk(d)
		}
	}
	return out
}

// sweepJSON is the part of `sweep --json` the tests read.
type sweepJSON struct {
	Collections []struct {
		Collection string `json:"collection"`
		Run        struct {
			ID     string `json:"id"`
			State  string `json:"state"`
			Counts struct {
				Documents   int64            `json:"documents"`
				Rewritten   int64            `json:"rewritten"`
				Failed      int64            `json:"failed"`
				Conflicts   int64            `json:"conflicts"`
				Reencrypted int64            `json:"reencrypted"`
				Encrypted   int64            `json:"encrypted"`
				Tokens      map[string]int64 `json:"tokens"`
				Plaintext   map[string]int64 `json:"plaintext"`
			} `json:"counts"`
		} `json:"run"`
		Inventory struct {
			Tokens    map[string]int64 `json:"tokens"`
			Plaintext map[string]int64 `json:"plaintext"`
		} `json:"inventory"`
	} `json:"collections"`
}

func (s *sidecar) sweepJSON(args ...string) sweepJSON {
	s.t.Helper()
	code, stdout, stderr := s.runCLI(append([]string{"sweep"}, append(args, "--json")...)...)
	if code != 0 {
		s.t.Fatalf("sweep %v: exit %d\n%s\n%s", args, code, stdout, stderr)
	}
	var out sweepJSON
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || len(out.Collections) != 1 {
		s.t.Fatalf("sweep --json: %v\n%s", err, stdout)
	}
	return out
}

// withoutMeta is a document as the application sees its content.
func withoutMeta(d map[string]any) map[string]any {
	c := maps.Clone(d)
	delete(c, "_id")
	delete(c, "_rev")
	return c
}

// TestSweepCompromisedVersionWhileAppWrites takes a compromised key
// version out of the store while the application keeps writing through
// the sidecar: no update of the application is lost, the store never
// holds a protected value in plaintext (polled directly during the
// sweep, and every byte it received checked through the relay), a dry
// run's counts match the store, and the version is destroyed with a
// count of zero.
func TestSweepCompromisedVersionWhileAppWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	db := testenv.StartPouchDB(t)
	relay := testenv.StartRelay(t, db.URL)
	s := sweepSidecar(t, relay.URL)
	s.start()
	mustCall(t, "PUT", s.url+"/clinic", "", 201)

	const n = 300
	var docs []string
	for i := range n {
		docs = append(docs, fmt.Sprintf(`{"_id":"p%03d","name":"name#%03d","ssn":"ssn#p%03d#0","email":"p%03d@example.org","n":0,"ward":"B"}`, i, i, i, i))
	}
	mustCall(t, "POST", s.url+"/clinic/_bulk_docs", `{"docs":[`+strings.Join(docs, ",")+`]}`, 201)
	mark := relay.Mark()

	// The incident: pii v1 is compromised. Rotate, revoke it, and let it
	// decrypt for the sweep only (audited).
	s.cli("keys", "rotate", "pii")
	s.cli("keys", "revoke", "pii", "--version", "1", "--compromised", "--reason", "laptop stolen")
	s.cli("keys", "override", "pii", "--version", "1", "--for", "1h", "--reason", "sweep it away")

	// The inventory before: a dry run counts exactly what the store holds.
	before := s.sweepJSON("clinic", "--dry-run")
	direct := tokenCounts(storeDocs(t, db.URL, "clinic"))
	if got := before.Collections[0].Inventory.Tokens; !reflect.DeepEqual(got, direct) || got["pii:1"] != 2*n || got["contact:1"] != n {
		t.Fatalf("dry run counts %v; the store holds %v", got, direct)
	}

	// The application: read-modify-write through the sidecar, retrying
	// its own conflicts, as a CouchDB app does. last holds each
	// document's last successful write.
	var mu sync.Mutex
	last := map[string]map[string]any{}
	for i := range n {
		last[fmt.Sprintf("p%03d", i)] = map[string]any{"name": fmt.Sprintf("name#%03d", i), "ssn": fmt.Sprintf("ssn#p%03d#0", i),
			"email": fmt.Sprintf("p%03d@example.org", i), "n": json.Number("0"), "ward": "B"}
	}
	ctx, stop := context.WithCancel(context.Background())
	var writes, conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				id := fmt.Sprintf("p%03d", (k*7+w*131)%n)
				status, b := call(t, "GET", s.url+"/clinic/"+id, "")
				if status != 200 {
					t.Errorf("app read %s: %d %s", id, status, b)
					return
				}
				doc := decode(t, b)
				seq := writes.Load() + 1
				doc["ssn"] = fmt.Sprintf("ssn#%s#%d", id, seq)
				doc["n"] = json.Number(fmt.Sprint(seq))
				body, _ := json.Marshal(doc)
				status, b = call(t, "PUT", s.url+"/clinic/"+id, string(body))
				switch status {
				case 201:
					writes.Add(1)
					mu.Lock()
					last[id] = withoutMeta(doc)
					mu.Unlock()
				case 409:
					conflicts.Add(1)
				default:
					t.Errorf("app write %s: %d %s", id, status, b)
					return
				}
			}
		}()
	}
	// The store, polled directly all along: never a protected value in
	// plaintext.
	wg.Add(1)
	var polls atomic.Int64
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			raw := mustCall(t, "GET", db.URL+"/clinic/_all_docs?include_docs=true", "", 200)
			for _, secret := range []string{"ssn#", "name#", "@example.org"} {
				if bytes.Contains(raw, []byte(secret)) {
					t.Errorf("the store holds plaintext (%q) during the sweep", secret)
					return
				}
			}
			polls.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	res := s.sweepJSON("clinic", "--from", "pii:1", "--rate", "40", "--batch", "20")
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	c := res.Collections[0].Run.Counts
	t.Logf("sweep: %d documents in %v, %d rewritten, %d values re-encrypted, %d conflicts with the app retried; the app wrote %d times (%d of its own conflicts); %d store polls",
		c.Documents, took.Round(time.Millisecond), c.Rewritten, c.Reencrypted, c.Conflicts, writes.Load(), conflicts.Load(), polls.Load())
	// Documents the app rewrote after the walk started are not walked
	// again (the app wrote them under pii v2 through the sidecar); the
	// store check below counts every one.
	if c.Failed != 0 || c.Documents+writes.Load() < n || writes.Load() == 0 {
		t.Fatalf("sweep counts %+v", c)
	}
	if c.Conflicts == 0 {
		t.Log("note: the sweep met no concurrent write this time")
	}

	// No lost update: what the app reads is its last successful write.
	for id, want := range last {
		got := withoutMeta(decode(t, mustCall(t, "GET", s.url+"/clinic/"+id, "", 200)))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s reads %v; the app last wrote %v", id, got, want)
		}
	}
	// Nothing is left under the compromised version, and a dry run says
	// exactly what the store holds.
	direct = tokenCounts(storeDocs(t, db.URL, "clinic"))
	if direct["pii:1"] != 0 || direct["pii:2"] != 2*n {
		t.Fatalf("the store holds %v after the sweep", direct)
	}
	after := s.sweepJSON("clinic", "--dry-run")
	if got := after.Collections[0].Inventory.Tokens; !reflect.DeepEqual(got, direct) {
		t.Fatalf("dry run counts %v; the store holds %v", got, direct)
	}
	relay.AssertNoPlaintext(t, mark, "ssn#", "name#", "@example.org")

	// keys status and keys destroy show the count, 0.
	if _, out, _ := s.runCLI("keys", "status"); !matches(out, "pii v1 compromised 0") {
		t.Fatalf("keys status:\n%s", out)
	}
	code, out, errOut := s.runCLI("keys", "destroy", "pii", "--version", "1", "--yes", "--reason", "compromised, swept")
	if code != 0 || !strings.Contains(errOut, "The last sweeps found no value sealed under pii v1") || !strings.Contains(out, "destroyed pii v1") {
		t.Fatalf("keys destroy: %d\n%s\n%s", code, out, errOut)
	}
	// And the application does not notice.
	got := decode(t, mustCall(t, "GET", s.url+"/clinic/p007", "", 200))
	if got["name"] != "name#007" {
		t.Fatalf("after the destroy the app reads %v", got)
	}
}

// TestSweepResumesAfterKill kills a CLI sweep with SIGKILL half way and
// runs it again: it resumes from its checkpoint and writes no document
// twice (every document is at its second revision: one write by the
// sweep), and the store ends with no plaintext.
func TestSweepResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server")
	}
	db := testenv.StartPouchDB(t)
	s := sweepSidecar(t, db.URL)
	const n = 3000
	legacy(t, db.URL, "clinic", n)

	bin, _ := exec.LookPath("sidecrypt")
	cmd := exec.Command(bin, "sweep", "clinic", "--rate", "600", "--batch", "50")
	cmd.Env = s.environ()
	p := testenv.Start(t, "sidecrypt sweep", cmd)
	waitFor(t, "the sweep to be a quarter done", func() bool {
		if p.Exited() {
			t.Fatalf("the sweep ended before it was killed:\n%s", p.Log.String())
		}
		return encryptedDocs(t, db.URL) >= n/4
	})
	p.Kill()
	done := encryptedDocs(t, db.URL)
	if done >= n {
		t.Fatalf("the sweep was done (%d) before the kill", done)
	}
	t.Logf("killed with %d of %d documents encrypted", done, n)

	code, stdout, stderr := s.runCLI("sweep", "clinic")
	if code != 0 || !strings.Contains(stderr, "resuming the run started") {
		t.Fatalf("resume: %d\n%s\n%s", code, stdout, stderr)
	}
	docs := storeDocs(t, db.URL, "clinic")
	for id, d := range docs {
		if !isToken(d["ssn"]) || !isToken(d["name"]) || !isToken(d["email"]) {
			t.Fatalf("%s is not encrypted: %v", id, d)
		}
		if rev := d["_rev"].(string); !strings.HasPrefix(rev, "2-") {
			t.Fatalf("%s is at revision %s: the sweep wrote it more than once", id, rev)
		}
	}
	if len(docs) != n {
		t.Fatalf("%d documents", len(docs))
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "data", "audit.log"))
	if !bytes.Contains(log, []byte(`"action":"sweep.resume"`)) {
		t.Fatal("the resume is not in the audit log")
	}
}

// legacy writes n documents of plaintext straight into the store: data
// from before sidecrypt.
func legacy(t *testing.T, storeURL, db string, n int) {
	t.Helper()
	mustCall(t, "PUT", storeURL+"/"+db, "", 201)
	for from := 0; from < n; from += 1000 {
		var docs []string
		for i := from; i < min(n, from+1000); i++ {
			docs = append(docs, fmt.Sprintf(`{"_id":"l%05d","name":"Legacy Name %d","ssn":"%03d-%02d-%04d","email":"user%d@legacy.example","visits":%d,"ward":"W%d"}`,
				i, i, i%1000, i%100, i, i, i%17, i%5))
		}
		mustCall(t, "POST", storeURL+"/"+db+"/_bulk_docs", `{"docs":[`+strings.Join(docs, ",")+`]}`, 201)
	}
}

func encryptedDocs(t *testing.T, storeURL string) int {
	raw := mustCall(t, "GET", storeURL+"/clinic/_all_docs?include_docs=true", "", 200)
	return bytes.Count(raw, []byte(`"ssn":"sc2.`))
}

// TestSweepMigratesLegacyPlaintext brings 10,000 documents written before
// sidecrypt under protection: a dry run counts their plaintext per field
// as the store holds it, the sweep encrypts every value exactly as the
// proxy would (searchable fields stay searchable), the application reads
// them back unchanged, and a dry run after finds no plaintext. The sweep
// rate is logged for docs/BENCHMARKS.md.
func TestSweepMigratesLegacyPlaintext(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	db := testenv.StartPouchDB(t)
	s := sweepSidecar(t, db.URL)
	s.start()
	const n = 10000
	legacy(t, db.URL, "clinic", n)

	start := time.Now()
	inv := s.sweepJSON("clinic", "--dry-run")
	t.Logf("SWEEP RATE: dry run of %d documents in %v: %.0f documents/s", n, time.Since(start).Round(time.Millisecond), n/time.Since(start).Seconds())
	want := map[string]int64{"ssn": n, "name": n, "email": n}
	if got := inv.Collections[0].Inventory.Plaintext; !reflect.DeepEqual(got, want) {
		t.Fatalf("dry run plaintext %v, want %v", got, want)
	}
	if len(inv.Collections[0].Inventory.Tokens) != 0 {
		t.Fatalf("dry run tokens %v", inv.Collections[0].Inventory.Tokens)
	}

	oldRev := storeDocs(t, db.URL, "clinic")["l00042"]["_rev"].(string)
	start = time.Now()
	res := s.sweepJSON("clinic", "--compact")
	took := time.Since(start)
	c := res.Collections[0].Run.Counts
	t.Logf("SWEEP RATE: migration of %d documents (%d values encrypted) in %v: %.0f documents/s, %.0f values/s (the whole command: keys, HSM, checkpoints)",
		c.Documents, c.Encrypted, took.Round(time.Millisecond), float64(c.Documents)/took.Seconds(), float64(c.Encrypted)/took.Seconds())
	if c.Documents != n || c.Rewritten != n || c.Encrypted != 3*n || c.Failed != 0 {
		t.Fatalf("counts %+v", c)
	}
	stored := storeDocs(t, db.URL, "clinic")
	raw, _ := json.Marshal(stored)
	for _, leak := range []string{"Legacy Name", "@legacy.example", `"ssn":"0`} {
		if bytes.Contains(raw, []byte(leak)) {
			t.Fatalf("plaintext %q left in the store", leak)
		}
	}
	if got := tokenCounts(stored); got["pii:1"] != 2*n || got["contact:1"] != n {
		t.Fatalf("the store holds %v", got)
	}
	// The legacy revision, plaintext, is gone once compacted.
	waitFor(t, "compaction to drop the plaintext revision", func() bool {
		status, _ := call(t, "GET", db.URL+"/clinic/l00042?rev="+oldRev, "")
		return status == http.StatusNotFound
	})
	// The application reads its data as it was, through the sidecar.
	for _, i := range []int{0, 1, 4999, 9999} {
		d := decode(t, mustCall(t, "GET", s.url+fmt.Sprintf("/clinic/l%05d", i), "", 200))
		if d["name"] != fmt.Sprintf("Legacy Name %d", i) || d["ssn"] != fmt.Sprintf("%03d-%02d-%04d", i%1000, i%100, i) ||
			d["email"] != fmt.Sprintf("user%d@legacy.example", i) || d["visits"] != json.Number(fmt.Sprint(i%17)) {
			t.Fatalf("l%05d reads %v", i, d)
		}
	}
	// Searchable stays searchable: the migrated email is found by an
	// equality query sealed by the proxy.
	found := decode(t, mustCall(t, "POST", s.url+"/clinic/_find", `{"selector":{"email":"user4242@legacy.example"}}`, 200))
	if docs := found["docs"].([]any); len(docs) != 1 || docs[0].(map[string]any)["_id"] != "l04242" {
		t.Fatalf("_find on a migrated email: %v", found)
	}
	after := s.sweepJSON("clinic", "--dry-run")
	if p := after.Collections[0].Inventory.Plaintext; len(p) != 0 {
		t.Fatalf("plaintext left: %v", p)
	}
	if got := after.Collections[0].Inventory.Tokens; !reflect.DeepEqual(got, tokenCounts(stored)) {
		t.Fatalf("dry run %v, store %v", got, tokenCounts(stored))
	}

	// Rotation: every pii value moves to v2.
	s.cli("keys", "rotate", "pii")
	start = time.Now()
	res = s.sweepJSON("clinic")
	took = time.Since(start)
	c = res.Collections[0].Run.Counts
	t.Logf("SWEEP RATE: rotation of %d documents (%d values re-encrypted) in %v: %.0f documents/s, %.0f values/s",
		c.Documents, c.Reencrypted, took.Round(time.Millisecond), float64(c.Documents)/took.Seconds(), float64(c.Reencrypted)/took.Seconds())
	if got := tokenCounts(storeDocs(t, db.URL, "clinic")); got["pii:1"] != 0 || got["pii:2"] != 2*n || c.Reencrypted != 2*n {
		t.Fatalf("after the rotation sweep the store holds %v (counts %+v)", got, c)
	}
}

// TestSweepThroughAdminAPI runs a background sweep on serve: started,
// paused and resumed through the admin API, its progress and inventory
// read back, its metrics exported.
func TestSweepThroughAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server and the sidecar")
	}
	db := testenv.StartPouchDB(t)
	s := sweepSidecar(t, db.URL)
	s.start()
	const n = 600
	legacy(t, db.URL, "clinic", n)

	// Pages of 2 s worth (120 documents): a pause lands at the next one.
	s.admin("POST", "/v1/sweeps", `{"collection":"clinic","rate":60}`, http.StatusAccepted)
	waitFor(t, "the background sweep to start", func() bool { return encryptedDocs(t, db.URL) >= 50 })
	s.admin("POST", "/v1/sweeps/clinic/pause", `{}`, http.StatusOK)
	var st map[string]any
	waitFor(t, "the pause to reach the running sweep", func() bool {
		st = decode(t, s.admin("GET", "/v1/sweeps/clinic", "", http.StatusOK))
		return st["sweep"].(map[string]any)["state"] == "paused"
	})
	paused := encryptedDocs(t, db.URL)
	time.Sleep(500 * time.Millisecond)
	if now := encryptedDocs(t, db.URL); now != paused || now >= n {
		t.Fatalf("a paused sweep went on: %d then %d of %d", paused, now, n)
	}
	s.admin("POST", "/v1/sweeps/clinic/resume", `{}`, http.StatusOK)
	waitFor(t, "the background sweep to finish", func() bool {
		st = decode(t, s.admin("GET", "/v1/sweeps/clinic", "", http.StatusOK))
		return st["sweep"].(map[string]any)["state"] == "done"
	})
	last := st["last"].(map[string]any)
	if plain, _ := last["plaintext"].(map[string]any); len(plain) != 0 || last["tokens"].(map[string]any)["pii:1"] != json.Number(fmt.Sprint(2*n)) {
		t.Fatalf("inventory %v", last)
	}
	if encryptedDocs(t, db.URL) != n {
		t.Fatal("not every document is encrypted")
	}
	metrics := string(mustCall(t, "GET", s.adminURL+"/metrics", "", 200))
	for _, want := range []string{
		fmt.Sprintf(`sidecrypt_sweep_values_total{action="encrypted",collection="clinic"} %d`, 3*n),
		`sidecrypt_sweep_values_remaining{key="pii",version="1"} 1200`,
		`sidecrypt_sweep_running 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// An inventory (dry run) is open to auditors; here the admin token.
	s.admin("POST", "/v1/sweeps/inventory", `{"collection":"clinic"}`, http.StatusAccepted)
	waitFor(t, "the inventory", func() bool {
		st = decode(t, s.admin("GET", "/v1/sweeps/clinic", "", http.StatusOK))
		dr, _ := st["dry_run"].(map[string]any)
		return dr != nil && dr["state"] == "done"
	})
	if names := slices.Sorted(maps.Keys(st["last"].(map[string]any)["tokens"].(map[string]any))); !slices.Equal(names, []string{"contact:1", "pii:1"}) {
		t.Fatalf("inventory tokens %v", names)
	}
}
