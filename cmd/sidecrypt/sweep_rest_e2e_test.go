package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

const sweepRESTRules = `version: 2
datastore: rest
collections:
  - name: /customers
    fields:
      email: {key: contact, searchable: true}
      name:  {key: pii}
      ssn:   {key: pii}
decrypt:
  keys: [contact, pii]
`

// startSweepJSONServer runs json-server (the REST profile's reference
// store) on a database file holding records.
func startSweepJSONServer(t *testing.T, records string) string {
	t.Helper()
	bin := filepath.Join(testenv.RepoRoot(), ".deps", "pouchdb", "node_modules", ".bin", "json-server")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "json-server", "scripts/deps.sh")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "db.json")
	if err := os.WriteFile(db, []byte(`{"customers": [`+records+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--quiet", db)
	cmd.Dir = dir
	p := testenv.Start(t, "json-server", cmd)
	testenv.WaitHTTP(t, p, "http://"+addr+"/db", 60*time.Second)
	return "http://" + addr
}

// TestSweepRESTJSONServer sweeps a REST store (json-server): legacy
// plaintext records are counted, refused to be rewritten until the
// operator accepts that json-server has no conditional writes, then
// encrypted and still found by an equality lookup; a rotation moves every
// value to the new version; the dry runs match the store.
func TestSweepRESTJSONServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts json-server and the sidecar")
	}
	const n = 300
	var recs []string
	for i := 1; i <= n; i++ {
		recs = append(recs, fmt.Sprintf(`{"id":%d,"name":"Customer %d","email":"c%d@legacy.example","ssn":"900-00-%04d","tier":"gold"}`, i, i, i, i))
	}
	store := startSweepJSONServer(t, strings.Join(recs, ","))
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(sweepRESTRules), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSidecar(t, store, rulesFile, "SIDECRYPT_LOG_LEVEL=warn")
	s.cli("keys", "create", "pii")
	s.cli("keys", "create", "contact")
	s.start()

	records := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		var list []map[string]any
		if err := json.Unmarshal(mustCall(t, "GET", store+"/customers", "", 200), &list); err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			out[fmt.Sprint(r["id"])] = r
		}
		return out
	}

	inv := s.sweepJSON("/customers", "--dry-run")
	if got, want := inv.Collections[0].Inventory.Plaintext, map[string]int64{"name": n, "email": n, "ssn": n}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dry run plaintext %v, want %v", got, want)
	}
	code, _, stderr := s.runCLI("sweep", "/customers")
	if code == 0 || !strings.Contains(stderr, "no optimistic concurrency") {
		t.Fatalf("a sweep of a store without conditional writes: %d %s", code, stderr)
	}
	res := s.sweepJSON("/customers", "--allow-lost-updates")
	if c := res.Collections[0].Run.Counts; c.Documents != n || c.Rewritten != n || c.Encrypted != 3*n || c.Failed != 0 {
		t.Fatalf("counts %+v", c)
	}
	stored := records()
	raw, _ := json.Marshal(stored)
	for _, leak := range []string{"Customer ", "@legacy.example", "900-00-"} {
		if strings.Contains(string(raw), leak) {
			t.Fatalf("plaintext %q left in the store", leak)
		}
	}
	if got := tokenCounts(stored); got["pii:1"] != 2*n || got["contact:1"] != n {
		t.Fatalf("the store holds %v", got)
	}
	d := decode(t, mustCall(t, "GET", s.url+"/customers/42", "", 200))
	if d["name"] != "Customer 42" || d["ssn"] != "900-00-0042" || d["email"] != "c42@legacy.example" {
		t.Fatalf("through the sidecar: %v", d)
	}
	found := mustCall(t, "GET", s.url+"/customers?email="+url.QueryEscape("c42@legacy.example"), "", 200)
	if !strings.Contains(string(found), `"id": 42`) && !strings.Contains(string(found), `"id":42`) {
		t.Fatalf("lookup by a migrated email: %s", found)
	}

	s.cli("keys", "rotate", "pii")
	s.sweepJSON("/customers", "--allow-lost-updates")
	stored = records()
	if got := tokenCounts(stored); got["pii:1"] != 0 || got["pii:2"] != 2*n {
		t.Fatalf("after the rotation sweep the store holds %v", got)
	}
	after := s.sweepJSON("/customers", "--dry-run")
	if got := after.Collections[0].Inventory.Tokens; !reflect.DeepEqual(got, tokenCounts(stored)) {
		t.Fatalf("dry run %v, store %v", got, tokenCounts(stored))
	}
}
