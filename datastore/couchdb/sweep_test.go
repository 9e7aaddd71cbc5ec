package couchdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func couch(t *testing.T, method, u, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func sweeperFor(t *testing.T, storeURL string, cols ...*datastore.Collection) datastore.Sweeper {
	t.Helper()
	p, err := New(&datastore.Schema{Datastore: Name, Collections: cols})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(storeURL)
	sw, err := p.(datastore.SweepProfile).Sweeper(datastore.SweepTarget{Base: u})
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// walk runs a walk to its end from cursor and returns every document.
func walk(t *testing.T, sw datastore.Sweeper, db, cursor string, limit int) ([]datastore.StoredDoc, map[string]int, string) {
	t.Helper()
	var docs []datastore.StoredDoc
	skipped := map[string]int{}
	for range 1000 {
		page, err := sw.Scan(context.Background(), db, cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Docs) > limit*2 {
			t.Fatalf("a page of %d documents for limit %d", len(page.Docs), limit)
		}
		docs = append(docs, page.Docs...)
		for k, n := range page.Skipped {
			skipped[k] += n
		}
		cursor = page.Cursor
		if page.Done {
			return docs, skipped, cursor
		}
	}
	t.Fatal("the walk never ended")
	return nil, nil, ""
}

func TestSweeperAgainstPouchDB(t *testing.T) {
	db := testenv.StartPouchDB(t)
	base := db.URL + "/clinic"
	if s, b := couch(t, "PUT", base, ""); s != 201 {
		t.Fatalf("create db: %d %s", s, b)
	}
	var docs []string
	for i := range 25 {
		docs = append(docs, fmt.Sprintf(`{"_id":"d%02d","ssn":"plain %d"}`, i, i))
	}
	docs = append(docs, `{"_id":"a/b c","ssn":"odd id"}`, `{"_id":"_design/app","views":{}}`, `{"_id":"gone","ssn":"x"}`)
	if s, b := couch(t, "POST", base+"/_bulk_docs", `{"docs":[`+strings.Join(docs, ",")+`]}`); s != 201 {
		t.Fatalf("bulk: %d %s", s, b)
	}
	_, b := couch(t, "GET", base+"/gone", "")
	var gone struct {
		Rev string `json:"_rev"`
	}
	json.Unmarshal(b, &gone)
	if s, b := couch(t, "DELETE", base+"/gone?rev="+gone.Rev, ""); s != 200 {
		t.Fatalf("delete: %d %s", s, b)
	}
	// A document in conflict: two branches written as replication would.
	if s, b := couch(t, "POST", base+"/_bulk_docs", `{"new_edits":false,"docs":[
		{"_id":"conf","_rev":"1-aaaa","ssn":"branch a"},
		{"_id":"conf","_rev":"1-bbbb","ssn":"branch b"}]}`); s != 201 {
		t.Fatalf("conflict: %d %s", s, b)
	}
	if s, b := couch(t, "PUT", db.URL+"/other", ""); s != 201 {
		t.Fatalf("create db: %d %s", s, b)
	}

	sw := sweeperFor(t, db.URL, clinic())
	if cols, err := sw.Collections(context.Background(), "cli*"); err != nil || !slices.Equal(cols, []string{"clinic"}) {
		t.Fatalf("Collections = %v, %v", cols, err)
	}
	if n, err := sw.Count(context.Background(), "clinic"); err != nil || n < 27 {
		t.Fatalf("Count = %d, %v", n, err)
	}
	got, skipped, _ := walk(t, sw, "clinic", "", 7)
	ids := map[string][]string{}
	for _, d := range got {
		ids[d.ID] = append(ids[d.ID], d.Version)
		var body map[string]any
		if err := json.Unmarshal(d.Body, &body); err != nil || body["_id"] != d.ID || body["_rev"] != d.Version {
			t.Fatalf("document %s: body %s", d.ID, d.Body)
		}
	}
	if len(ids) != 27 || len(ids["conf"]) != 2 || ids["a/b c"] == nil || ids["_design/app"] != nil || ids["gone"] != nil {
		t.Fatalf("walk returned %v", ids)
	}
	if skipped["design"] != 1 || skipped["deleted"] != 1 {
		t.Fatalf("skipped = %v", skipped)
	}

	// Write: conditional on _rev.
	d := got[0]
	for _, g := range got {
		if g.ID == "a/b c" {
			d = g
		}
	}
	newBody := strings.Replace(string(d.Body), `"odd id"`, `"rewritten"`, 1)
	res, err := sw.Write(context.Background(), "clinic", []datastore.StoredDoc{{ID: d.ID, Version: d.Version, Body: []byte(newBody)}})
	if err != nil || res[0].Conflict || res[0].Err != nil || !strings.HasPrefix(res[0].Version, "2-") {
		t.Fatalf("Write = %+v, %v", res, err)
	}
	res, err = sw.Write(context.Background(), "clinic", []datastore.StoredDoc{{ID: d.ID, Version: d.Version, Body: []byte(newBody)}})
	if err != nil || !res[0].Conflict {
		t.Fatalf("a stale write = %+v, %v", res, err)
	}
	fresh, err := sw.Get(context.Background(), "clinic", "a/b c")
	if err != nil || fresh.Version != res[0].Version && !strings.HasPrefix(fresh.Version, "2-") || !strings.Contains(string(fresh.Body), "rewritten") {
		t.Fatalf("Get = %+v, %v", fresh, err)
	}
	if _, err := sw.Get(context.Background(), "clinic", "gone"); !errors.Is(err, datastore.ErrNoDocument) {
		t.Fatalf("Get of a deleted document: %v", err)
	}
	// Each branch of a conflict is written on its own.
	var leaves []datastore.StoredDoc
	for _, g := range got {
		if g.ID == "conf" {
			g.Body = []byte(strings.Replace(string(g.Body), `"branch`, `"swept branch`, 1))
			leaves = append(leaves, g)
		}
	}
	res, err = sw.Write(context.Background(), "clinic", leaves)
	if err != nil || res[0].Conflict || res[1].Conflict || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("writing both leaves: %+v, %v", res, err)
	}
	_, b = couch(t, "GET", base+"/conf?open_revs=all", "")
	if strings.Count(string(b), "swept branch") != 2 {
		t.Fatalf("leaves after the write: %s", b)
	}
}

// A walk resumed from a checkpoint in another process skips nothing, and
// stops at the sequence the database had when it started.
func TestSweeperResumesAndStopsAtItsStart(t *testing.T) {
	db := testenv.StartPouchDB(t)
	base := db.URL + "/clinic"
	couch(t, "PUT", base, "")
	var docs []string
	for i := range 30 {
		docs = append(docs, fmt.Sprintf(`{"_id":"d%02d","n":%d}`, i, i))
	}
	couch(t, "POST", base+"/_bulk_docs", `{"docs":[`+strings.Join(docs, ",")+`]}`)
	sw := sweeperFor(t, db.URL, clinic())
	page, err := sw.Scan(context.Background(), "clinic", "", 10)
	if err != nil || len(page.Docs) != 10 || page.Done {
		t.Fatalf("first page: %d docs, done %v, %v", len(page.Docs), page.Done, err)
	}
	seen := map[string]bool{}
	for _, d := range page.Docs {
		seen[d.ID] = true
	}
	// Meanwhile the application changes documents on both sides of the
	// checkpoint and adds one.
	for _, id := range []string{"d02", "d25"} {
		_, b := couch(t, "GET", base+"/"+id, "")
		var doc map[string]any
		json.Unmarshal(b, &doc)
		doc["n"] = 100
		nb, _ := json.Marshal(doc)
		if s, b := couch(t, "PUT", base+"/"+id, string(nb)); s != 201 {
			t.Fatalf("update: %d %s", s, b)
		}
	}
	couch(t, "PUT", base+"/late", `{"n":1}`)
	// Another process (a new Sweeper) continues from the cursor.
	rest, _, _ := walk(t, sweeperFor(t, db.URL, clinic()), "clinic", page.Cursor, 10)
	for _, d := range rest {
		seen[d.ID] = true
	}
	for i := range 30 {
		if id := fmt.Sprintf("d%02d", i); !seen[id] && id != "d25" {
			t.Errorf("%s never returned", id)
		}
	}
	if seen["late"] {
		t.Error("a document created after the walk started was returned; the walk should stop at its start")
	}
}
