package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// Unmodified real clients, driven from node scripts in testdata/clients:
// the official CouchDB client (nano) and PouchDB replication. Each runs
// once through the sidecar and once against a second store directly;
// the two runs must give the application the same answers. They run in
// TestEndpoints, on its stores and sidecar.

// runNode runs a script from testdata/clients with the npm packages that
// scripts/deps.sh installs (scripts/pouchdb/package.json) and returns its
// standard output.
func runNode(t *testing.T, script string, env ...string) []byte {
	t.Helper()
	node, ok := testenv.LookPath("node")
	if !ok {
		testenv.Missing(t, "node", "apt-get install nodejs")
	}
	modules := filepath.Join(testenv.RepoRoot(), ".deps", "pouchdb", "node_modules")
	for _, pkg := range []string{"nano", "pouchdb-core", "pouchdb-adapter-memory", "pouchdb-adapter-http", "pouchdb-replication"} {
		if _, err := os.Stat(filepath.Join(modules, pkg, "package.json")); err != nil {
			testenv.Missing(t, "the npm package "+pkg, "scripts/deps.sh")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(testenv.RepoRoot(), "testdata", "clients", script))
	var clean []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if u := strings.ToUpper(name); u == "HTTP_PROXY" || u == "HTTPS_PROXY" || u == "NO_PROXY" || u == "NODE_OPTIONS" {
			continue
		}
		clean = append(clean, kv)
	}
	cmd.Env = append(append(clean, "NODE_PATH="+modules), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s (%s): %v\n%s", script, strings.Join(env, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// sameOutput compares two runs of a client script, normalised like the
// endpoint answers.
func sameOutput(t *testing.T, what string, viaSidecar, direct []byte) {
	t.Helper()
	a := canonical(normalizeAll(viaSidecar, nil, nil))
	b := canonical(normalizeAll(direct, nil, nil))
	if a != b {
		t.Errorf("%s: the client got different answers through the sidecar\n  sidecar: %s\n  direct:  %s", what, clip([]byte(a)), clip([]byte(b)))
	}
}

var nanoSecrets = []string{"Nano Ann", "555-12-3456", "nano.ann@example.com", "R05 nano cough",
	"Nano Bob", "555-98-7654", "nano.bob@example.com", "Nano Cy", "nano.cy@example.com"}

// testNano: the official CouchDB client, unmodified: insert, get, bulk,
// view with {key} and {keys} (nano JSON-encodes them; the encoded key
// must find the document), createIndex twice (one index: its name and
// fields reach the store as written), find by the searchable field.
func testNano(t *testing.T, st *stack) {
	const db = "clinic-nano"
	m := st.relay.Mark()
	must(t, 201, "PUT", st.sc.url+"/"+db, "")
	must(t, 201, "PUT", st.direct.URL+"/"+db, "")
	createDesignDirectly(t, st.store.URL, db, "_design/patients", patientsDesign)
	createDesignDirectly(t, st.direct.URL, db, "_design/patients", patientsDesign)

	via := runNode(t, "nano.js", "COUCH_URL="+st.sc.url, "COUCH_DB="+db)
	direct := runNode(t, "nano.js", "COUCH_URL="+st.direct.URL, "COUCH_DB="+db)
	sameOutput(t, "nano", via, direct)

	st.checkNoLeaks(t, m, nil, nanoSecrets)
	assertSealed(t, storeDoc(t, st.store.URL, db, "nano-ann"), "name", "ssn", "email", "diagnosis")
	assertSealed(t, storeDoc(t, st.store.URL, db, "nano-cy"), "diagnosis") // null, sealed
	idx := must(t, 200, "GET", st.store.URL+"/"+db+"/_index", "")
	if strings.Count(string(idx.body), `"name":"nano-by-email"`) != 1 {
		t.Errorf("the store should hold one index nano-by-email: %s", idx.body)
	}
}

var replicationSecrets = []string{"Rep Ann", "600-11-2222", "rep.ann@example.com", "Rep Kin", "rep.kin@example.com",
	"Rep Visit Dx", "Rep Bob", "600-33-4444", "rep.bob@example.com", "Rep Bob Dx", "Rep Gone", "600-55-6666",
	"Rep Ann Dx v2", "Rep Ann Dx v3", "Rep Conflict A", "rep.conf.a@example.com", "Rep Conflict B",
	"rep.conf.b@example.com", "Rep Phone 0199", "Rep Live", "600-77-8888", "rep.live@example.com"}

// testReplication: PouchDB (core, memory and http adapters,
// replication), unmodified, replicates a local database with plaintext
// documents up through the sidecar into a protected database and down
// again. The store holds ciphertext, the copy that came down plaintext
// equal to the one that went up (revisions, history and conflicts
// included), and a live pull works through the sidecar.
func testReplication(t *testing.T, st *stack) {
	const db = "clinic-rep"
	m := st.relay.Mark()
	via := runNode(t, "replicate.js", "COUCH_URL="+st.sc.url, "COUCH_DB="+db)
	direct := runNode(t, "replicate.js", "COUCH_URL="+st.direct.URL, "COUCH_DB="+db)
	sameOutput(t, "replication", via, direct)
	var out struct {
		Docs []struct {
			Doc map[string]any `json:"doc"`
		} `json:"docs"`
	}
	if err := json.Unmarshal(via, &out); err != nil || len(out.Docs) < 3 {
		t.Fatalf("replication output: %v %s", err, via)
	}
	for _, row := range out.Docs {
		if row.Doc["_id"] == "rep-ann" && row.Doc["ssn"] != "600-11-2222" {
			t.Errorf("the local copy must hold plaintext: %v", row.Doc)
		}
	}

	st.checkNoLeaks(t, m, nil, replicationSecrets)
	ann := storeDoc(t, st.store.URL, db, "rep-ann")
	assertSealed(t, ann, "name", "ssn", "email", "diagnosis")
	assertSealed(t, ann["contact"].(map[string]any), "name", "email")
	assertSealed(t, storeDoc(t, st.store.URL, db, "rep-conf?rev=1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "name", "email")

	// Known gap, logged rather than failed: PouchDB derives a revision id
	// from the document it writes (deterministic_revs, on by default:
	// MD5 of the JSON text, plaintext included), and replication stores
	// it as is (new_edits=false). The store therefore keeps an unsalted
	// hash of each plaintext revision, against which a guess at a
	// low-entropy value (an SSN, given the other fields) can be checked
	// offline. The sidecar cannot change revision ids without breaking
	// replication.
	bob := must(t, 200, "GET", st.store.URL+"/"+db+"/rep-bob?revs=true", "").json(t)
	guess := `{"_id":"rep-bob","type":"patient","name":"Rep Bob","ssn":"600-33-4444","email":"rep.bob@example.com","ward":"C","diagnosis":"Rep Bob Dx"}`
	sum := md5.Sum([]byte(guess))
	if ids, _ := bob["_revisions"].(map[string]any)["ids"].([]any); slices.Contains(ids, any(hex.EncodeToString(sum[:]))) {
		t.Logf("KNOWN GAP: the store holds MD5(plaintext document) as a revision id of rep-bob (PouchDB deterministic_revs through replication): a guessed SSN can be confirmed offline")
	}
}
