package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// maskingRules: the application's sidecar may open every key but card,
// which it shows as the last four digits.
const maskingRules = `version: 2
datastore: couchdb
collections:
  - name: "clinic*"
    fields:
      name:        {key: pii}
      card.number: {key: card, tags: [pci-dss-3.5.1]}
decrypt:
  keys: [pii]
  mask: {card: last4}
`

// openingRules: an auditor's sidecar on the same keys opens the card key.
var openingRules = strings.Replace(maskingRules, "  keys: [pii]\n  mask: {card: last4}\n", "  keys: [pii, card]\n", 1)

// TestMaskedWriteBackNano: issue 19 with the official CouchDB client,
// unmodified. An application shown a card number masked ("***1111")
// reads a record, changes another field and saves it (db.insert), then
// does the same for two records with db.fetch and db.bulk, one of them
// with a new card number. Read through a second sidecar that opens the
// card key (same keystore and KEK), every record holds its original card
// number, except the one given a new number, which holds that; the other
// fields carry the application's changes. The mask never reaches the
// store, nor does a card number in plaintext.
func TestMaskedWriteBackNano(t *testing.T) {
	st := newStack(t, sidecarConfig{rules: maskingRules, keys: []string{"pii", "card"}}, false)
	auditor := startSidecar(t, sidecarConfig{rules: openingRules, upstream: st.relay.URL, env: []string{
		"SIDECRYPT_KEYSTORE=" + filepath.Join(st.sc.dir, "keys.db"),
		"SIDECRYPT_KEK_FILE=" + filepath.Join(st.sc.dir, "kek.json"),
		// Its own admin socket (the default sits next to the keystore).
		"SIDECRYPT_ADMIN_SOCKET=" + filepath.Join(t.TempDir(), "admin.sock"),
	}})
	const db = "clinic-masked"
	must(t, 201, "PUT", st.sc.url+"/"+db, "")

	m := st.relay.Mark()
	runNode(t, "nano-masked.js", "COUCH_URL="+st.sc.url, "COUCH_DB="+db)

	want := map[string]struct{ card, ward string }{
		"mask-ann": {"4111111111111111", "E"},
		"mask-bob": {"5500005555555559", "F"},
		"mask-cy":  {"4000056655665556", "G"}, // a new number is new data
	}
	for id, w := range want {
		doc := must(t, 200, "GET", auditor.url+"/"+db+"/"+id, "").json(t)
		card, _ := doc["card"].(map[string]any)
		if card["number"] != w.card || doc["ward"] != w.ward {
			t.Errorf("%s read through the opening sidecar: card.number %v, ward %v; want %s, %s", id, card["number"], doc["ward"], w.card, w.ward)
		}
		if card["exp"] == nil {
			t.Errorf("%s lost card.exp: %v", id, doc)
		}
		stored := storeDoc(t, st.store.URL, db, id)
		assertSealed(t, stored["card"].(map[string]any), "number")
		assertSealed(t, stored, "name")
	}
	secrets := []string{"4111111111111111", "5500005555555559", "4012888888881881", "4000056655665556",
		"***1111", "***5559", "***1881", "***5556", "Mask Ann", "Mask Bob", "Mask Cy"}
	st.checkNoLeaks(t, m, nil, secrets)

	// The application itself still sees the mask.
	doc := must(t, 200, "GET", st.sc.url+"/"+db+"/mask-ann", "").json(t)
	if card, _ := doc["card"].(map[string]any); card["number"] != "***1111" {
		t.Errorf("the application reads card.number %v, want ***1111", card["number"])
	}
}
