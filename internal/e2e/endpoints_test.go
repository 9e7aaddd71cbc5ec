package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEndpoints exercises every endpoint of the CouchDB profile through
// the sidecar (KEK on SoftHSM2) and against a second pouchdb-server
// directly, then the real clients (clients_test.go) on the same stores.
// For each group of endpoints: the application gets the same answers
// both ways, the relay saw no protected value, and the store, read
// directly, holds none. Each group works in a database of its own.
func TestEndpoints(t *testing.T) {
	st := newStack(t, sidecarConfig{rules: clinicRules, softHSM: true, keys: clinicKeys}, true)

	t.Run("documents", func(t *testing.T) {
		const db = "/clinic-docs"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			seed(tg, db[1:])
			tg.do("get", "GET", db+"/p-ann", "")
			tg.do("put types", "PUT", db+"/p-types", typesDoc)
			tg.do("get types", "GET", db+"/p-types", "")
			tg.do("post with _id", "POST", db, strings.Replace(bobDoc, `"p-bob"`, `"p-bob2"`, 1))
			gen := tg.do("post without _id", "POST", db, `{"type":"patient","name":"Gen Erated","ssn":"222-33-4444","email":"gen@example.com"}`)
			genID := idOf(t, gen.body)
			tg.do("get generated", "GET", db+"/"+genID, "")
			tg.do("delete generated", "DELETE", db+"/"+genID+"?rev="+tg.rev(genID), "")

			rev1 := tg.rev("p-ann")
			tg.do("update", "PUT", db+"/p-ann", withRev(strings.Replace(annDoc, "J45.909 asthma", "J45.909 asthma, controlled", 1), rev1))
			tg.do("stale update", "PUT", db+"/p-ann", withRev(annDoc, rev1), fails())
			tg.do("earlier revision", "GET", db+"/p-ann?rev="+rev1, "")
			tg.do("revision history", "GET", db+"/p-ann?revs=true&revs_info=true", "")
			tg.do("meta", "GET", db+"/p-ann?conflicts=true&deleted_conflicts=true&local_seq=true", "")
			tg.do("head", "HEAD", db+"/p-ann", "")
			tg.do("copy", "COPY", db+"/p-ann", "", header("Destination", "p-ann-copy"))
			copyRev := tg.readRev(db + "/p-ann-copy")
			tg.do("copy over", "COPY", db+"/p-bob", "", header("Destination", "p-ann-copy?rev="+copyRev))
			deleted := tg.readRev(db + "/p-ann-copy")
			tg.do("delete", "DELETE", db+"/p-ann-copy?rev="+deleted, "")
			tg.do("get deleted", "GET", db+"/p-ann-copy", "", fails())
			tg.do("get deleted revision's parent", "GET", db+"/p-ann-copy?rev="+deleted, "")
			tg.do("put with rev in query", "PUT", db+"/p-cy?rev="+tg.rev("p-cy"), strings.Replace(cyDoc, `"ward":"B"`, `"ward":"D"`, 1))
			tg.do("get p-cy", "GET", db+"/p-cy", "")
			tg.do("missing", "GET", db+"/nope", "", fails())
			tg.do("database info", "GET", db, "")
		})
		ann := storeDoc(t, st.store.URL, db[1:], "p-ann")
		assertSealed(t, ann, "name", "ssn", "email", "phone", "diagnosis", "notes")
		assertSealed(t, ann["contact"].(map[string]any), "name", "email")
		assertSealed(t, ann["visits"].([]any)[0].(map[string]any), "diagnosis")
		card := ann["card"].(map[string]any)
		assertSealed(t, card, "number")
		if card["exp"] != "12/29" || ann["ward"] != "B" || ann["age"] != float64(44) {
			t.Errorf("unprotected values must be stored as they are: %v", ann)
		}
		assertSealed(t, storeDoc(t, st.store.URL, db[1:], "p-cy"), "diagnosis") // nulls: encrypt
		bob, bob2 := storeDoc(t, st.store.URL, db[1:], "p-bob"), storeDoc(t, st.store.URL, db[1:], "p-bob2")
		if bob["email"] != bob2["email"] {
			t.Error("a searchable field must seal equal values to equal tokens")
		}
		if bob["name"] == bob2["name"] || bob["ssn"] == bob2["ssn"] {
			t.Error("a random field must seal equal values to different tokens")
		}
		assertSealed(t, storeDoc(t, st.store.URL, db[1:], "p-types"), "ssn", "name", "notes", "email")
		st.checkNoLeaks(t, m, nil, append(patientSecrets, "Gen Erated", "222-33-4444", "gen@example.com"))
	})

	t.Run("bulk_docs", func(t *testing.T) {
		const db = "/clinic-bulk"
		const (
			revA  = "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			revB  = "1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
			revH3 = "3-cccccccccccccccccccccccccccccccc"
			revH2 = "2-dddddddddddddddddddddddddddddddd"
			revH1 = "1-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
		)
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			tg.do("create", "PUT", db, "")
			tg.do("insert", "POST", db+"/_bulk_docs", `{"docs":[`+annDoc+`,`+bobDoc+`,`+cyDoc+`]}`)
			tg.do("update and delete", "POST", db+"/_bulk_docs", `{"docs":[`+
				withRev(strings.Replace(annDoc, "J45.909 asthma", "J45.909 asthma, better", 1), tg.rev("p-ann"))+`,`+
				`{"_id":"p-bob","_rev":"`+tg.rev("p-bob")+`","_deleted":true}]}`)
			tg.do("conflict", "POST", db+"/_bulk_docs", `{"docs":[`+withRev(cyDoc, "1-ffffffffffffffffffffffffffffffff")+`]}`)
			tg.do("new_edits=false", "POST", db+"/_bulk_docs", `{"new_edits":false,"docs":[
			  {"_id":"p-conf","_rev":"`+revA+`","name":"Conflict A Name","ssn":"444-55-6666","email":"conf-a@example.com"},
			  {"_id":"p-conf","_rev":"`+revB+`","name":"Conflict B Name","email":"conf-b@example.com"},
			  {"_id":"p-hist","_rev":"`+revH3+`","_revisions":{"start":3,"ids":["`+revH3[2:]+`","`+revH2[2:]+`","`+revH1[2:]+`"]},
			   "name":"History Name","diagnosis":"History Diagnosis"}]}`)
			tg.do("winner and conflicts", "GET", db+"/p-conf?conflicts=true", "")
			tg.do("the losing revision", "GET", db+"/p-conf?rev="+revA, "")
			tg.do("open_revs=all", "GET", db+"/p-conf?open_revs=all", "", unordered(""))
			tg.do("open_revs list", "GET", db+"/p-conf?open_revs="+jsonQuery(`["`+revA+`","1-99999999999999999999999999999999"]`), "")
			tg.do("open_revs latest with history", "GET", db+"/p-hist?open_revs=all&revs=true&latest=true", "")
			tg.do("history", "GET", db+"/p-hist?revs=true&revs_info=true", "")
			tg.do("deleted", "GET", db+"/p-bob", "", fails())
			tg.do("deleted leaf", "GET", db+"/p-bob?open_revs=all", "")
			tg.do("all", "GET", db+"/_all_docs?include_docs=true&conflicts=true", "")
		}, revA, revB, revH3, revH2, revH1, "1-ffffffffffffffffffffffffffffffff")
		conf := storeDoc(t, st.store.URL, db[1:], "p-conf?rev="+revA)
		assertSealed(t, conf, "name", "ssn", "email")
		st.checkNoLeaks(t, m, nil, append(patientSecrets, "Conflict A Name", "444-55-6666", "conf-a@example.com",
			"Conflict B Name", "conf-b@example.com", "History Name", "History Diagnosis"))
	})

	t.Run("all_docs", func(t *testing.T) {
		const db = "/clinic-all"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			seed(tg, db[1:])
			tg.do("plain", "GET", db+"/_all_docs", "")
			tg.do("include_docs", "GET", db+"/_all_docs?include_docs=true", "")
			tg.do("options", "GET", db+"/_all_docs?include_docs=true&conflicts=true&descending=true&limit=2&skip=1&update_seq=true", "")
			tg.do("keys", "GET", db+"/_all_docs?include_docs=true&keys="+jsonQuery(`["p-cy","p-ann","nope"]`), "")
			tg.do("key", "GET", db+"/_all_docs?include_docs=true&key="+jsonQuery(`"p-bob"`), "")
			tg.do("range", "GET", db+"/_all_docs?include_docs=true&startkey="+jsonQuery(`"p-b"`)+"&endkey="+jsonQuery(`"p-cy"`)+"&inclusive_end=false", "")
			tg.do("start_key spelling", "GET", db+"/_all_docs?include_docs=true&start_key="+jsonQuery(`"p-bob"`), "")
			tg.do("POST keys", "POST", db+"/_all_docs?include_docs=true", `{"keys":["p-cy","p-ann"]}`)
			tg.do("POST keys, options in body", "POST", db+"/_all_docs", `{"keys":["p-bob"],"include_docs":true}`)
			// pouchdb-server serves neither.
			tg.do("_design_docs", "GET", db+"/_design_docs", "", fails())
			tg.do("_local_docs", "GET", db+"/_local_docs", "", fails())
		})
		st.checkNoLeaks(t, m, nil, patientSecrets)
	})

	t.Run("changes", func(t *testing.T) {
		const db = "/clinic-changes"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			seed(tg, db[1:])
			tg.do("normal", "GET", db+"/_changes", "")
			tg.do("include_docs", "GET", db+"/_changes?include_docs=true", "")
			tg.do("all_docs style", "GET", db+"/_changes?style=all_docs&conflicts=true&include_docs=true", "")
			tg.do("since", "GET", db+"/_changes?since=2&include_docs=true", "")
			tg.do("limit descending", "GET", db+"/_changes?limit=1&descending=true&include_docs=true", "")
			tg.do("doc_ids in query", "GET", db+"/_changes?filter=_doc_ids&include_docs=true&doc_ids="+jsonQuery(`["p-ann"]`), "")
			tg.do("doc_ids in body", "POST", db+"/_changes?filter=_doc_ids&include_docs=true", `{"doc_ids":["p-bob"]}`)
			tg.do("longpoll with changes", "GET", db+"/_changes?feed=longpoll&since=0&include_docs=true", "")
			// A long poll that waits, woken by a write.
			tg.doWhile("longpoll woken", "GET", db+"/_changes?feed=longpoll&since=3&include_docs=true&timeout=20000", "", func() {
				tg.do("write during longpoll", "PUT", db+"/p-late", `{"name":"Late Lou","email":"late@example.com","ward":"E"}`)
			})
			// A continuous feed: the three seeds, the late one, and one
			// written while it runs.
			tg.stream("continuous", db+"/_changes?feed=continuous&since=0&include_docs=true&heartbeat=1000", 5, 20*time.Second, func() {
				tg.do("write during continuous", "PUT", db+"/p-live", `{"name":"Live Lee","email":"live@example.com","ward":"E"}`)
			})
			// pouchdb-server does not serve eventsource: it answers with
			// a normal feed. Through the sidecar the answer must be the
			// same.
			tg.do("eventsource", "GET", db+"/_changes?feed=eventsource&since=0&include_docs=true", "")
		})
		st.checkNoLeaks(t, m, nil, append(patientSecrets, "Late Lou", "late@example.com", "Live Lee", "live@example.com"))
	})

	t.Run("bulk_get", func(t *testing.T) {
		const db = "/clinic-bulkget"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			seed(tg, db[1:])
			tg.do("bulk_get", "POST", db+"/_bulk_get", `{"docs":[{"id":"p-ann"},{"id":"p-bob","rev":"`+tg.rev("p-bob")+`"},{"id":"nope"}]}`)
			tg.do("bulk_get revs", "POST", db+"/_bulk_get?revs=true", `{"docs":[{"id":"p-cy"}]}`)
			tg.do("open_revs all", "GET", db+"/p-ann?open_revs=all", "")
			tg.do("open_revs one", "GET", db+"/p-ann?open_revs="+jsonQuery(`["`+tg.rev("p-ann")+`"]`), "")
		})
		st.checkNoLeaks(t, m, nil, patientSecrets)
	})

	t.Run("find", func(t *testing.T) { testFind(t, st) })
	t.Run("index", func(t *testing.T) { testIndex(t, st) })
	t.Run("views", func(t *testing.T) { testViews(t, st) })

	t.Run("local", func(t *testing.T) {
		const db = "/clinic-local"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			tg.do("create", "PUT", db, "")
			tg.do("put local", "PUT", db+"/_local/state", `{"name":"Local Lena","ssn":"333-44-5555","ward":"F"}`)
			tg.do("get local", "GET", db+"/_local/state", "")
			tg.do("update local", "PUT", db+"/_local/state", `{"_rev":"0-1","name":"Local Lena","ssn":"333-44-5555","ward":"G"}`)
			tg.do("get updated local", "GET", db+"/_local/state", "")
			tg.do("escaped slash", "PUT", db+"/_local%2Fother", `{"name":"Local Otto"}`)
			tg.do("get escaped", "GET", db+"/_local/other", "")
			tg.do("delete local", "DELETE", db+"/_local/other?rev=0-1", "")
			tg.do("local not listed", "GET", db+"/_all_docs", "")
		}, "0-1", "0-2")
		assertSealed(t, storeDoc(t, st.store.URL, db[1:], "_local/state"), "name", "ssn")
		st.checkNoLeaks(t, m, []string{"state", "other"}, []string{"Local Lena", "333-44-5555", "Local Otto"})
	})

	t.Run("purge and revs_diff", func(t *testing.T) {
		const db = "/clinic-revs"
		m := st.relay.Mark()
		st.compare(t, func(tg *target) {
			seed(tg, db[1:])
			tg.do("revs_diff", "POST", db+"/_revs_diff", `{"p-ann":["`+tg.rev("p-ann")+`","9-99999999999999999999999999999999"],"nope":["1-11111111111111111111111111111111"]}`)
			// pouchdb-server has neither _missing_revs nor _purge; whatever
			// it answers, the application must get the same answer through
			// the sidecar.
			tg.do("missing_revs", "POST", db+"/_missing_revs", `{"p-ann":["9-99999999999999999999999999999999"]}`, fails())
			tg.do("purge", "POST", db+"/_purge", `{"p-bob":["`+tg.rev("p-bob")+`"]}`, fails())
			tg.do("after purge", "GET", db+"/p-bob", "")
		}, "9-99999999999999999999999999999999", "1-11111111111111111111111111111111")
		st.checkNoLeaks(t, m, nil, patientSecrets)
	})

	t.Run("client nano", func(t *testing.T) { testNano(t, st) })
	t.Run("client PouchDB replication", func(t *testing.T) { testReplication(t, st) })
}

// idOf returns the id in a write answer.
func idOf(t *testing.T, body []byte) string {
	t.Helper()
	var w struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &w); err != nil || w.ID == "" {
		t.Fatalf("no id in %s", body)
	}
	return w.ID
}

// withRev adds a _rev member to a JSON object.
func withRev(doc, rev string) string {
	return `{"_rev":"` + rev + `",` + strings.TrimPrefix(strings.TrimSpace(doc), "{")
}

// refused sends a request through the sidecar and checks that it is
// refused with status and code, and that nothing reached the store.
func (st *stack) refused(t *testing.T, status int, code, method, path, body string, headers ...string) {
	t.Helper()
	m := st.relay.Mark()
	r := send(t, method, st.sc.url+path, body, headers...)
	if r.status != status || errorCode(r.body) != code {
		t.Errorf("%s %s: %d %s, want %d %s", method, path, r.status, clip(r.body), status, code)
	}
	st.relay.AssertNothingForwarded(t, m)
}

// testFind: Mango selectors with every operator at any nesting. Equality
// on the searchable field finds the same documents as a direct query;
// comparisons that cannot work on ciphertext are refused.
func testFind(t *testing.T, st *stack) {
	const db = "/clinic-find"
	m := st.relay.Mark()
	selectors := []string{
		`{"email":"ann@example.com"}`,
		`{"email":{"$eq":"bob@example.org"}}`,
		`{"email":{"$in":["ann@example.com","cy@example.net","nobody@example.com"]}}`,
		`{"email":{"$ne":"ann@example.com"}}`,
		`{"email":{"$nin":["ann@example.com","bob@example.org"]}}`,
		`{"email":{"$exists":true},"ward":"B"}`,
		`{"$and":[{"email":"ann@example.com"},{"ward":"B"}]}`,
		`{"$or":[{"email":"ann@example.com"},{"email":"bob@example.org"}]}`,
		`{"$nor":[{"email":"ann@example.com"},{"ward":"C"}]}`,
		`{"$not":{"email":"ann@example.com"}}`,
		`{"$not":{"email":{"$eq":"cy@example.net"}}}`,
		`{"$and":[{"$or":[{"email":"ann@example.com"},{"$and":[{"email":{"$in":["bob@example.org"]}},{"ward":"C"}]}]},{"age":{"$gt":18}}]}`,
		`{"$and":[{"$nor":[{"email":"ann@example.com"}]},{"$or":[{"$not":{"ward":"B"}},{"email":{"$in":["cy@example.net"]}}]}]}`,
		`{"$nor":[{"$or":[{"email":"ann@example.com"}]}]}`,
		`{"contact":{"email":"kin@example.net"}}`,
		`{"contact.email":"kin@example.net"}`,
		`{"aliases":{"$elemMatch":{"email":"ann.alias@example.com"}}}`,
		`{"aliases":{"$allMatch":{"email":{"$in":["ann.alias@example.com"]}}}}`,
		`{"$or":[{"ward":"C"},{"email":"cy@example.net"}],"age":{"$lt":50}}`,
		`{"type":"patient","name":{"$exists":true}}`,
		`{"diagnosis":{"$exists":true}}`,
	}
	st.compare(t, func(tg *target) {
		seed(tg, db[1:])
		for _, sel := range selectors {
			tg.do("_find "+sel, "POST", db+"/_find", `{"selector":`+sel+`}`, unordered("docs"))
		}
		// Operators inside a field that CouchDB knows and pouchdb-find
		// does not: sealed and forwarded, refused by the store alike.
		for _, sel := range []string{
			`{"email":{"$not":{"$eq":"cy@example.net"}}}`,
			`{"ward":{"$in":["B","C"]},"email":{"$or":[{"$eq":"ann@example.com"},{"$eq":"bob@example.org"}]}}`,
		} {
			tg.do("_find "+sel, "POST", db+"/_find", `{"selector":`+sel+`}`, fails())
		}
		tg.do("_find with fields", "POST", db+"/_find", `{"selector":{"email":"ann@example.com"},"fields":["_id","name","email","card.number","contact"]}`)
		tg.do("_find with sort, limit, skip", "POST", db+"/_find", `{"selector":{"_id":{"$gt":null}},"sort":[{"_id":"desc"}],"limit":2,"skip":1}`)
		for _, sel := range selectors[:3] {
			tg.do("_explain "+sel, "POST", db+"/_explain", `{"selector":`+sel+`}`, echo("selector"))
		}
	})
	// Comparisons that cannot work on encrypted fields are refused, and
	// nothing reaches the store.
	for _, sel := range []string{
		`{"email":{"$gt":"a"}}`,
		`{"email":{"$gte":"a","$lte":"z"}}`,
		`{"email":{"$lt":"z"}}`,
		`{"email":{"$regex":"^ann"}}`,
		`{"email":{"$mod":[2,0]}}`,
		`{"email":{"$size":1}}`,
		`{"ssn":"123-45-6789"}`,
		`{"ssn":{"$in":["123-45-6789"]}}`,
		`{"name":{"$ne":"Ann Example"}}`,
		`{"$or":[{"ward":"B"},{"ssn":{"$eq":"123-45-6789"}}]}`,
		`{"$and":[{"ward":"B"},{"$nor":[{"email":{"$regex":"ann"}}]}]}`,
		`{"$not":{"diagnosis":"J45.909 asthma"}}`,
		`{"notes.text":"inhaler twice daily"}`,
		`{"notes":{"text":"inhaler twice daily"}}`,
		`{"card.number":{"$eq":"4111111111111111"}}`,
		`{"contact":{"$elemMatch":{"name":"Kin Example"}}}`,
		`{"visits":{"$elemMatch":{"diagnosis":{"$eq":"R05 cough visit"}}}}`,
	} {
		t.Run("refused "+sel, func(t *testing.T) {
			st.refused(t, http.StatusBadRequest, "unsupported_query", "POST", db+"/_find", `{"selector":`+sel+`}`)
			st.refused(t, http.StatusBadRequest, "unsupported_query", "POST", db+"/_explain", `{"selector":`+sel+`}`)
		})
	}
	st.checkNoLeaks(t, m, nil, patientSecrets)
}

// testIndex: Mango indexes keep their names and field names, so a second
// createIndex with the same definition finds the first.
func testIndex(t *testing.T, st *stack) {
	const db = "/clinic-index"
	m := st.relay.Mark()
	st.compare(t, func(tg *target) {
		seed(tg, db[1:])
		created := tg.do("create", "POST", db+"/_index", `{"index":{"fields":["email"]},"name":"by-email"}`)
		tg.do("create again", "POST", db+"/_index", `{"index":{"fields":["email"]},"name":"by-email"}`)
		ddoc := idOf(t, created.body)
		tg.do("create in a named ddoc", "POST", db+"/_index", `{"index":{"fields":["ward","email"]},"name":"by-ward-email","ddoc":"patients-idx","type":"json"}`)
		tg.do("list", "GET", db+"/_index", "")
		tg.do("find using it", "POST", db+"/_find", `{"selector":{"email":"bob@example.org"},"use_index":"`+ddoc+`"}`)
		tg.do("explain using it", "POST", db+"/_explain", `{"selector":{"email":"bob@example.org"},"use_index":"`+ddoc+`"}`, echo("selector"))
		tg.do("find by ward and email", "POST", db+"/_find", `{"selector":{"ward":"B","email":"ann@example.com"},"use_index":["patients-idx","by-ward-email"]}`)
		// pouchdb-server fails to delete an index by either spelling.
		tg.do("delete", "DELETE", db+"/_index/patients-idx/json/by-ward-email", "", fails())
		tg.do("delete, design spelling", "DELETE", db+"/_index/_design/patients-idx/json/by-ward-email", "", fails())
		tg.do("list after delete", "GET", db+"/_index", "")
	})
	st.checkNoLeaks(t, m, nil, patientSecrets)
	// The index's name and fields are stored as written.
	idx := must(t, 200, "GET", st.store.URL+db+"/_index", "")
	if n := strings.Count(string(idx.body), `"name":"by-email"`); n != 1 || !strings.Contains(string(idx.body), `{"email":"asc"}`) {
		t.Errorf("the store's index list: %s", idx.body)
	}
	// A partial filter selector is a selector too: sealed like one, or
	// refused; never forwarded in plaintext.
	pm := st.relay.Mark()
	r := send(t, "POST", st.sc.url+db+"/_index", `{"index":{"fields":["ward"],"partial_filter_selector":{"email":"ann@example.com"}},"name":"ann-only"}`)
	t.Logf("partial_filter_selector on a searchable field: %d %s", r.status, r.body)
	st.relay.AssertNoPlaintext(t, pm, "ann@example.com")
	st.refused(t, http.StatusBadRequest, "unsupported_query", "POST", db+"/_index", `{"index":{"fields":["ward"],"partial_filter_selector":{"ssn":"123-45-6789"}},"name":"ssn-only"}`)
	// An index on a field of a protected value cannot work.
	r = send(t, "POST", st.sc.url+db+"/_index", `{"index":{"fields":["notes.text"]},"name":"by-notes-text"}`)
	t.Logf("index on a field inside a protected value: %d %s", r.status, r.body)
}

// testViews: JSON-encoded key, keys, startkey and endkey on a declared
// view are sealed like the field; view rows come back opened. The design
// document is written into both stores directly.
func testViews(t *testing.T, st *stack) {
	const db = "/clinic-views"
	m := st.relay.Mark()
	var rows = unordered("rows") // rows sorted by a sealed key come in ciphertext order
	st.compare(t, func(tg *target) {
		seed(tg, db[1:])
		storeURL := st.store.URL
		if tg.name == "direct" {
			storeURL = st.direct.URL
		}
		createDesignDirectly(t, storeURL, db[1:], "_design/patients", patientsDesign)
		v := db + "/_design/patients/_view/"
		tg.do("all rows", "GET", v+"by_email", "", rows)
		tg.do("key", "GET", v+"by_email?key="+jsonQuery(`"ann@example.com"`), "")
		tg.do("key include_docs", "GET", v+"by_email?include_docs=true&key="+jsonQuery(`"bob@example.org"`), "")
		tg.do("key spelled with %40", "GET", v+"by_email?key=%22cy%40example.net%22", "")
		tg.do("keys in query", "GET", v+"by_email?keys="+jsonQuery(`["cy@example.net","ann@example.com","nobody@example.com"]`), "")
		tg.do("keys in body", "POST", v+"by_email", `{"keys":["bob@example.org","ann@example.com"]}`)
		tg.do("keys in body, include_docs", "POST", v+"by_email?include_docs=true", `{"keys":["bob@example.org"]}`)
		tg.do("equal start and end", "GET", v+"by_email?startkey="+jsonQuery(`"ann@example.com"`)+"&endkey="+jsonQuery(`"ann@example.com"`), "")
		tg.do("compound key", "GET", v+"by_ward_email?key="+jsonQuery(`["B","ann@example.com"]`), "")
		tg.do("compound keys", "POST", v+"by_ward_email", `{"keys":[["C","bob@example.org"],["B","cy@example.net"]]}`)
		tg.do("compound range on the plaintext prefix", "GET", v+"by_ward_email?startkey="+jsonQuery(`["B"]`)+"&endkey="+jsonQuery(`["B",{}]`), "", rows)
		tg.do("undeclared view, no key", "GET", v+"by_ward?include_docs=true", "")
		tg.do("reduce view rows", "GET", v+"count_by_email?reduce=false", "", rows)
		tg.do("reduce view grouped", "GET", v+"count_by_email?group=true", "", rows)
		tg.do("changes filtered by a view", "GET", db+"/_changes?filter=_view&view=patients/by_email", "")
		tg.do("design document read", "GET", db+"/_design/patients", "")
	})
	v := db + "/_design/patients/_view/"
	for _, q := range []string{
		"by_email?startkey=" + jsonQuery(`"a"`) + "&endkey=" + jsonQuery(`"z"`),
		"by_email?start_key=" + jsonQuery(`"a"`),
		"by_email?endkey=" + jsonQuery(`"ann@example.com"`),
		"by_ward_email?startkey=" + jsonQuery(`["B","a"]`) + "&endkey=" + jsonQuery(`["B","z"]`),
	} {
		st.refused(t, http.StatusBadRequest, "unsupported_query", "GET", v+q, "")
	}
	// A key on a view the rules do not declare cannot be sealed: refused.
	r := send(t, "GET", st.sc.url+v+"by_ward?key="+jsonQuery(`"ann@example.com"`), "")
	if r.status < 400 {
		t.Errorf("key lookup on an undeclared view: %d %s", r.status, r.body)
	}
	st.checkNoLeaks(t, m, nil, patientSecrets)
}
