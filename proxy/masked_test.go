package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	_ "github.com/sidecrypt/sidecrypt/datastore/couchdb"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/rules"
)

const maskedRules = `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn: {key: pii}
      card_number: {key: card}
      code: {key: card}
      accounts.iban: {key: iban}
decrypt:
  keys: [pii]
  mask: {card: last4, iban: "[hidden]"}
`

const openingRules = `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn: {key: pii}
      card_number: {key: card}
      code: {key: card}
      accounts.iban: {key: iban}
decrypt:
  keys: [pii, card, iban]
`

// Issue 19: an app shown a card number masked ("***1111") that saves the
// record again must not replace the card number by "***1111". Two
// sidecars share one pouchdb-server and one keyring: the app's, which
// masks, and an auditor's, which opens.
func TestMaskedValueWrittenBack(t *testing.T) {
	db := testenv.StartPouchDB(t)
	up := mustURL(t, db.URL)
	keys := fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1), newKey(t, "card", 1), newKey(t, "iban", 1))
	maskPlan, diags, err := rules.Compile("mask.yaml", []byte(maskedRules))
	if err != nil {
		t.Fatal(err, diags)
	}
	openPlan, diags, err := rules.Compile("open.yaml", []byte(openingRules))
	if err != nil {
		t.Fatal(err, diags)
	}
	app := startProxy(t, Config{Upstream: up, Rules: newStaticRules(maskPlan), Keys: keys})
	auditor := startProxy(t, Config{Upstream: up, Rules: newStaticRules(openPlan), Keys: keys})
	c := client(t)
	json_ := http.Header{"Content-Type": {"application/json"}}
	req := func(p *testProxy, method, path, body string) (int, map[string]any) {
		t.Helper()
		var rd *strings.Reader
		var status int
		var b []byte
		if body != "" {
			rd = strings.NewReader(body)
			status, _, b = do(t, c, method, p.URL.String()+path, json_, rd)
		} else {
			status, _, b = do(t, c, method, p.URL.String()+path, nil, nil)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return status, m
	}
	if s, _ := req(app, "PUT", "/clinic", ""); s != 201 {
		t.Fatalf("create db: %d", s)
	}
	const card = "4111111111111111"
	s, m := req(app, "PUT", "/clinic/p1", `{"ssn":"078-05-1120","card_number":"`+card+`","code":"12345678","accounts":[{"iban":"DE44500105175407324931"}],"ward":"A"}`)
	if s != 201 {
		t.Fatalf("write: %d %v", s, m)
	}
	readBack := func(id string) map[string]any {
		t.Helper()
		s, m := req(auditor, "GET", "/clinic/"+id, "")
		if s != 200 {
			t.Fatalf("auditor read %s: %d %v", id, s, m)
		}
		return m
	}

	t.Run("single read-modify-write keeps the stored values", func(t *testing.T) {
		_, doc := req(app, "GET", "/clinic/p1", "")
		if doc["card_number"] != "***1111" || doc["code"] != "***5678" {
			t.Fatalf("app sees %v", doc)
		}
		doc["ward"] = "B"
		b, _ := json.Marshal(doc)
		if s, m := req(app, "PUT", "/clinic/p1", string(b)); s != 201 {
			t.Fatalf("write back: %d %v", s, m)
		}
		got := readBack("p1")
		if got["card_number"] != card || got["code"] != "12345678" || got["ward"] != "B" {
			t.Errorf("after write-back the auditor reads %v", got)
		}
		acc := got["accounts"].([]any)[0].(map[string]any)
		if acc["iban"] != "DE44500105175407324931" {
			t.Errorf("iban lost: %v", got["accounts"])
		}
	})

	t.Run("a different value is new data", func(t *testing.T) {
		_, doc := req(app, "GET", "/clinic/p1", "")
		doc["card_number"] = "5500005555555559"
		doc["code"] = "***9999" // looks like a mask, is not this one
		b, _ := json.Marshal(doc)
		if s, m := req(app, "PUT", "/clinic/p1", string(b)); s != 201 {
			t.Fatalf("write: %d %v", s, m)
		}
		got := readBack("p1")
		if got["card_number"] != "5500005555555559" || got["code"] != "***9999" {
			t.Errorf("auditor reads %v", got)
		}
	})

	t.Run("rev in the query instead of the body", func(t *testing.T) {
		_, doc := req(app, "GET", "/clinic/p1", "")
		rev := doc["_rev"].(string)
		delete(doc, "_rev")
		doc["ward"] = "C"
		b, _ := json.Marshal(doc)
		if s, m := req(app, "PUT", "/clinic/p1?rev="+rev, string(b)); s != 201 {
			t.Fatalf("write: %d %v", s, m)
		}
		if got := readBack("p1"); got["card_number"] != "5500005555555559" {
			t.Errorf("auditor reads %v", got)
		}
	})

	t.Run("bulk read-modify-write", func(t *testing.T) {
		for _, id := range []string{"b1", "b2"} {
			if s, m := req(app, "PUT", "/clinic/"+id, `{"card_number":"3782822463100`+id[1:]+`5","ward":"A"}`); s != 201 {
				t.Fatalf("write %s: %d %v", id, s, m)
			}
		}
		var docs []map[string]any
		for _, id := range []string{"b1", "b2"} {
			_, d := req(app, "GET", "/clinic/"+id, "")
			d["ward"] = "Z"
			docs = append(docs, d)
		}
		docs = append(docs, map[string]any{"_id": "b3", "card_number": "***0005"}) // new: new data
		b, _ := json.Marshal(map[string]any{"docs": docs})
		status, _, out := do(t, c, "POST", app.URL.String()+"/clinic/_bulk_docs", json_, strings.NewReader(string(b)))
		if status != 201 {
			t.Fatalf("bulk: %d %s", status, out)
		}
		for id, want := range map[string]string{"b1": "378282246310015", "b2": "378282246310025", "b3": "***0005"} {
			if got := readBack(id); got["card_number"] != want || (id != "b3" && got["ward"] != "Z") {
				t.Errorf("%s: auditor reads %v, want card %s", id, got, want)
			}
		}
	})

	t.Run("a stale revision is the store's conflict, and nothing is lost", func(t *testing.T) {
		_, stale := req(app, "GET", "/clinic/p1", "")
		_, fresh := req(app, "GET", "/clinic/p1", "")
		fresh["ward"] = "D"
		b, _ := json.Marshal(fresh)
		if s, _ := req(app, "PUT", "/clinic/p1", string(b)); s != 201 {
			t.Fatal("fresh write failed")
		}
		stale["ward"] = "E"
		b, _ = json.Marshal(stale)
		if s, m := req(app, "PUT", "/clinic/p1", string(b)); s != 409 {
			t.Errorf("stale write: %d %v", s, m)
		}
		if got := readBack("p1"); got["card_number"] != "5500005555555559" || got["ward"] != "D" {
			t.Errorf("auditor reads %v", got)
		}
	})

	t.Run("concurrent writers", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					_, doc := req(app, "GET", "/clinic/p1", "")
					doc["ward"] = string(rune('F' + i))
					b, _ := json.Marshal(doc)
					req(app, "PUT", "/clinic/p1", string(b)) // 201 or 409
				}
			}()
		}
		wg.Wait()
		if got := readBack("p1"); got["card_number"] != "5500005555555559" || got["code"] != "***9999" {
			t.Errorf("after concurrent writes the auditor reads %v", got)
		}
	})

	t.Run("a revision that is gone is refused", func(t *testing.T) {
		before := readBack("p1")
		s, m := req(app, "PUT", "/clinic/p1", `{"_rev":"1-00000000000000000000000000000000","card_number":"***9999"}`)
		if s != 409 || m["error"].(map[string]any)["code"] != "masked_value_write" {
			t.Fatalf("got %d %v", s, m)
		}
		if after := readBack("p1"); after["_rev"] != before["_rev"] {
			t.Error("the refused write reached the store")
		}
	})

	t.Run("the store down is refused", func(t *testing.T) {
		_, doc := req(app, "GET", "/clinic/p1", "")
		b, _ := json.Marshal(doc)
		db.Proc.Stop()
		s, m := req(app, "PUT", "/clinic/p1", string(b))
		if s != 409 || m["error"].(map[string]any)["code"] != "masked_value_write" {
			t.Fatalf("got %d %v", s, m)
		}
	})
}
