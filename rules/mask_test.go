package rules

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func newKey(t testing.TB, name string, version uint32) *fieldcrypt.DataKey {
	t.Helper()
	material := make([]byte, fieldcrypt.DataKeySize)
	if _, err := rand.Read(material); err != nil {
		t.Fatal(err)
	}
	k, err := fieldcrypt.NewDataKey(name, version, material)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLast4(t *testing.T) {
	tests := []struct {
		name string
		typ  fieldcrypt.Type
		in   string
		want string
	}{
		{"card number string", fieldcrypt.TypeString, `"4111 1111 1111 1234"`, `"***1234"`},
		{"card number digits", fieldcrypt.TypeString, `"4111111111111234"`, `"***1234"`},
		{"number", fieldcrypt.TypeNumber, `4111111111111234`, `"***1234"`},
		{"escaped", fieldcrypt.TypeString, `"abcdefg\u00e9"`, `"***efgé"`},
		{"multi-byte", fieldcrypt.TypeString, `"日本語のテキストです"`, `"***ストです"`},
		{"short string shows nothing", fieldcrypt.TypeString, `"1234567"`, `"***"`},
		{"four characters show nothing", fieldcrypt.TypeString, `"1234"`, `"***"`},
		{"bool", fieldcrypt.TypeBool, `true`, `"***"`},
		{"object", fieldcrypt.TypeObject, `{"a":"12345678"}`, `"***"`},
		{"null", fieldcrypt.TypeNull, `null`, `"***"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendLast4(nil, tt.typ, []byte(tt.in)))
			if got != tt.want {
				t.Errorf("last4(%s) = %s, want %s", tt.in, got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("not JSON: %s", got)
			}
		})
	}
}

func TestHashMask(t *testing.T) {
	ctx := context.Background()
	stats := &Stats{}
	m := newMaskRule(MaskHash).masker(stats)
	v1, v2 := newKey(t, "contact", 1), newKey(t, "contact", 2)
	ring := fieldcrypt.NewStaticKeyring(v1, v2)
	hash := func(ring fieldcrypt.Keyring, ver uint32, typ fieldcrypt.Type, text string) string {
		out, err := m(ctx, nil, fieldcrypt.TokenInfo{Key: "contact", KeyVersion: ver, Type: typ}, []byte(text), ring)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	a := hash(ring, 1, fieldcrypt.TypeString, `"ann@example.com"`)
	if !strings.HasPrefix(a, `"`+HashMaskPrefix) || len(a) != len(`"`+HashMaskPrefix)+43+1 {
		t.Fatalf("hash mask %s: want \"hmac-sha256:<43 base64url chars>\"", a)
	}
	if strings.Contains(a, "ann@") { // "@" is not base64url, so no chance match
		t.Fatal("hash mask reveals the value")
	}
	tests := []struct {
		name  string
		other string
		same  bool
	}{
		{"stable across key versions (joins survive rotation)", hash(ring, 2, fieldcrypt.TypeString, `"ann@example.com"`), true},
		{"same value spelled with an escape", hash(ring, 1, fieldcrypt.TypeString, `"ann@example.co\u006d"`), true},
		{"different value", hash(ring, 1, fieldcrypt.TypeString, `"bob@example.com"`), false},
		{"string and number kept apart", hash(ring, 1, fieldcrypt.TypeNumber, `1`), hash(ring, 1, fieldcrypt.TypeString, `"1"`) == hash(ring, 1, fieldcrypt.TypeNumber, `1`)},
		{"keyed: another key gives another hash", hash(fieldcrypt.NewStaticKeyring(newKey(t, "contact", 1)), 1, fieldcrypt.TypeString, `"ann@example.com"`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.other == a) != tt.same {
				t.Errorf("got %s vs %s, want same=%v", tt.other, a, tt.same)
			}
		})
	}
	// Version 1 unavailable: the full mask, counted.
	before := stats.HashMaskFallbacks()
	got := hash(fieldcrypt.NewStaticKeyring(v2), 2, fieldcrypt.TypeString, `"ann@example.com"`)
	if got != `"***"` || stats.HashMaskFallbacks() != before+1 {
		t.Errorf("without v1: %s, fallbacks %d", got, stats.HashMaskFallbacks())
	}
	// Zeroed key: the same.
	z := newKey(t, "contact", 1)
	z.Zero()
	if got := hash(fieldcrypt.NewStaticKeyring(z), 1, fieldcrypt.TypeString, `"x"`); got != `"***"` {
		t.Errorf("zeroed v1: %s", got)
	}
}

func TestLiteralMasks(t *testing.T) {
	for spec, want := range map[string]string{MaskFull: `"***"`, "[redacted]": `"[redacted]"`, `say "no"`: `"say \"no\""`, "": `""`} {
		r := newMaskRule(spec)
		out, err := r.masker(&Stats{})(context.Background(), []byte("x"), fieldcrypt.TokenInfo{}, []byte(`"secret"`), nil)
		if err != nil || string(out) != "x"+want {
			t.Errorf("mask %q: %s, %v; want %s", spec, out, err, want)
		}
	}
}

const e2eRules = `version: 1
routes:
  - name: write
    match: {methods: [POST], paths: ["/db/_bulk_docs", "/db/*"]}
    encrypt:
      - fields: ["$.docs[*].ssn", "$.ssn"]
        key: pii
      - fields: ["$.docs[*].email", "$.email"]
        key: contact
        mode: deterministic
      - fields: ["$.docs[*].card", "$.card"]
        key: card
      - fields: ["$.docs[*].notes", "$.notes"]
        key: notes
decrypt:
  keys: [pii]
  mask: {card: last4, contact: hash}
`

// TestEncryptDecryptPolicy runs the compiled plan end to end: what the
// datastore receives has every protected field as a token, and what the
// app gets back is opened, masked or left as the policy says.
func TestEncryptDecryptPolicy(t *testing.T) {
	ctx := context.Background()
	p := mustCompile(t, e2eRules)
	ring := fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1), newKey(t, "contact", 1), newKey(t, "card", 1), newKey(t, "notes", 1))
	body := `{"docs":[{"_id":"p1","name":"Ann","ssn":"123-45-6789","email":"ann@example.com","card":"4111111111111234","notes":"allergic"},
	                   {"_id":"p2","name":"Bob","ssn":"987-65-4321","email":"ann@example.com","card":4000000000009999,"notes":null}]}`
	r := p.Match(Request{Method: "POST", Path: "/db/_bulk_docs"})
	if r == nil {
		t.Fatal("no route")
	}
	stored, _, err := r.Body.EncryptBytes(ctx, []byte(body), ring, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"123-45-6789", "987-65-4321", "ann@example.com", "4111111111111234", "4000000000009999", "allergic"} {
		if bytes.Contains(stored, []byte(secret)) {
			t.Errorf("datastore would see %q: %s", secret, stored)
		}
	}
	var docs struct{ Docs []map[string]any }
	if err := json.Unmarshal(stored, &docs); err != nil {
		t.Fatal(err)
	}
	if docs.Docs[0]["email"] != docs.Docs[1]["email"] {
		t.Error("deterministic email: equal values should give equal tokens")
	}
	if docs.Docs[1]["notes"] != nil {
		t.Error("nulls: leave is the default")
	}
	if docs.Docs[0]["name"] != "Ann" {
		t.Error("unprotected field changed")
	}

	seen, _, err := p.Decryptor.DecryptBytes(ctx, stored, ring, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(seen, &docs); err != nil {
		t.Fatal(err)
	}
	d0, d1 := docs.Docs[0], docs.Docs[1]
	if d0["ssn"] != "123-45-6789" || d1["ssn"] != "987-65-4321" {
		t.Errorf("opened key: ssn = %v, %v", d0["ssn"], d1["ssn"])
	}
	if d0["card"] != "***1234" || d1["card"] != "***9999" {
		t.Errorf("last4: card = %v, %v", d0["card"], d1["card"])
	}
	h, _ := d0["email"].(string)
	if !strings.HasPrefix(h, HashMaskPrefix) || d1["email"] != h {
		t.Errorf("hash: email = %v, %v (equal values must hash alike)", d0["email"], d1["email"])
	}
	if n, _ := d0["notes"].(string); !strings.HasPrefix(n, fieldcrypt.TokenPrefix) {
		t.Errorf("key not in the policy must stay a token: notes = %v", d0["notes"])
	}
}
