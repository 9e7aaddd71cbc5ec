package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	_ "github.com/sidecrypt/sidecrypt/datastore/couchdb"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/rules"
)

const oracleRules = `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn: {key: pii}
      email: {key: contact, searchable: true}
      card: {key: card}
decrypt:
  keys: [pii, contact]
  mask: {card: last4}
`

// Issue 12, finding 1: someone who can read the store (a leaked backup)
// and has an ordinary account must not be able to read another person's
// values back through the sidecar by pasting their tokens into fields of
// their own, in a query, or (with write access to the store) anywhere a
// response carries them.
func TestNoDecryptionOracle(t *testing.T) {
	db := testenv.StartPouchDB(t)
	up := mustURL(t, db.URL)
	keys := fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1), newKey(t, "contact", 1), newKey(t, "card", 1))
	plan, diags, err := rules.Compile("oracle.yaml", []byte(oracleRules))
	if err != nil {
		t.Fatal(err, diags)
	}
	app := startProxy(t, Config{Upstream: up, Rules: newStaticRules(plan), Keys: keys})
	c := client(t)
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	via := func(method, path, body string) (int, []byte) {
		t.Helper()
		var status int
		var b []byte
		if body == "" {
			status, _, b = do(t, c, method, app.URL.String()+path, nil, nil)
		} else {
			status, _, b = do(t, c, method, app.URL.String()+path, jsonHdr, strings.NewReader(body))
		}
		return status, b
	}
	direct := func(method, path, body string) (int, []byte) {
		t.Helper()
		var status int
		var b []byte
		if body == "" {
			status, _, b = do(t, c, method, db.URL+path, nil, nil)
		} else {
			status, _, b = do(t, c, method, db.URL+path, jsonHdr, strings.NewReader(body))
		}
		return status, b
	}
	for _, p := range []string{"/clinic", "/scratch"} {
		if s, b := direct("PUT", p, ""); s != 201 {
			t.Fatalf("create %s: %d %s", p, s, b)
		}
	}
	if s, b := via("PUT", "/clinic/victim", `{"ssn":"078-05-1120","email":"victim@example.com","card":"4111111111111111"}`); s != 201 {
		t.Fatalf("victim write: %d %s", s, b)
	}
	// The attacker reads the store directly (a leaked backup).
	_, raw := direct("GET", "/clinic/victim", "")
	var stored map[string]any
	json.Unmarshal(raw, &stored)
	ssnTok, emailTok, cardTok := stored["ssn"].(string), stored["email"].(string), stored["card"].(string)
	if !fieldcrypt.HasTokenPrefix(ssnTok) || !fieldcrypt.HasTokenPrefix(emailTok) {
		t.Fatalf("store holds %s", raw)
	}

	t.Run("pasted into fields of the attacker's own document", func(t *testing.T) {
		for _, body := range []string{
			`{"notes":"` + ssnTok + `"}`,           // a free-text field
			`{"ssn":"` + ssnTok + `"}`,             // the same field
			`{"email":"` + ssnTok + `"}`,           // another protected field (mode downgrade)
			`{"deep":[{"x":"` + emailTok + `"}]}`,  // nested
			`{"notes":"\u0073` + ssnTok[1:] + `"}`, // spelled with an escape
			`{"notes":"` + cardTok + `"}`,          // a masked key: the mask is an oracle too
		} {
			s, b := via("PUT", "/clinic/attacker", body)
			if s != 403 || errorCode(t, b) != CodeTokenNotAllowed {
				t.Errorf("%s: %d %s", body, s, b)
			}
		}
		if s, _ := direct("GET", "/clinic/attacker", ""); s != 404 {
			t.Error("a refused write reached the store")
		}
	})

	t.Run("in a query", func(t *testing.T) {
		s, b := via("POST", "/clinic/_find", `{"selector":{"email":"`+emailTok+`"}}`)
		if s != 403 || errorCode(t, b) != CodeTokenNotAllowed {
			t.Errorf("_find by a copied token: %d %s", s, b)
		}
	})

	t.Run("planted in the store where no field of its key is", func(t *testing.T) {
		// An attacker who can also write to the store puts the tokens
		// where the sidecar would never have put them.
		planted := `{"notes":"` + ssnTok + `","email":"` + ssnTok + `","list":["` + emailTok + `"],"x":{"ssn2":"` + ssnTok + `"}}`
		if s, b := direct("PUT", "/clinic/planted", planted); s != 201 {
			t.Fatalf("plant: %d %s", s, b)
		}
		if s, b := direct("PUT", "/scratch/planted", `{"ssn":"`+ssnTok+`","email":"`+emailTok+`"}`); s != 201 {
			t.Fatalf("plant: %d %s", s, b)
		}
		for _, path := range []string{"/clinic/planted", "/scratch/planted", "/clinic/_all_docs?include_docs=true", "/clinic/_changes?include_docs=true", "/scratch/_all_docs?include_docs=true"} {
			s, b := via("GET", path, "")
			if s != 200 {
				t.Fatalf("%s: %d %s", path, s, b)
			}
			if path == "/clinic/_all_docs?include_docs=true" || path == "/clinic/_changes?include_docs=true" {
				// The victim's own document is in these, opened as it
				// should be; count the openings.
				if n := strings.Count(string(b), "078-05-1120"); n != 1 {
					t.Errorf("%s: the SSN appears %d times, want once (the victim's own field): %s", path, n, b)
				}
				continue
			}
			if strings.Contains(string(b), "078-05-1120") || strings.Contains(string(b), "victim@example.com") {
				t.Errorf("%s opened a planted token: %s", path, b)
			}
		}
	})

	t.Run("the victim's own document still opens", func(t *testing.T) {
		s, b := via("GET", "/clinic/victim", "")
		if s != 200 || !strings.Contains(string(b), `"ssn":"078-05-1120"`) || !strings.Contains(string(b), `"card":"***1111"`) {
			t.Errorf("%d %s", s, b)
		}
		s, b = via("POST", "/clinic/_find", `{"selector":{"email":"victim@example.com"}}`)
		if s != 200 || !strings.Contains(string(b), `"ssn":"078-05-1120"`) {
			t.Errorf("_find: %d %s", s, b)
		}
	})
}
