package datastore

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, name string
		want      bool
	}{
		{"clinic", "clinic", true},
		{"clinic", "clinic2", false},
		{"clinic", "Clinic", false},
		{"clinic-*", "clinic-", true},
		{"clinic-*", "clinic-a/b", true},
		{"clinic-*", "clinic", false},
		{"*-records", "a-records", true},
		{"t-*-r", "t-x-y-r", true},
		{"t-*-r", "t-x-y-rr", false},
		{"*", "", true},
		{"**", "x", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"*a", "ba", true},
		{"*a", "ab", false},
		{"", "", true},
		{"", "a", false},
	} {
		if got := Glob(c.pat, c.name); got != c.want {
			t.Errorf("Glob(%q, %q) = %v", c.pat, c.name, got)
		}
	}
}

// A pattern with many stars against a long name that almost matches must
// not take exponential time (a request path chooses the name).
func TestGlobIsNotExponential(t *testing.T) {
	pat := strings.Repeat("a*", 30) + "b"
	name := strings.Repeat("a", 5000)
	if Glob(pat, name) {
		t.Fatal("matched")
	}
}

func testCollection() *Collection {
	return &Collection{Name: "clinic", Fields: []*Field{
		{Name: "name", Path: []string{"name"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
		{Name: "patient.name", Path: []string{"patient", "name"}, Key: "phi", Mode: fieldcrypt.ModeRandom},
		{Name: "card", Path: []string{"card"}, AnyDepth: true, Key: "card", Mode: fieldcrypt.ModeRandom},
		{Name: "accounts.iban", Path: []string{"accounts", "iban"}, Key: "pii", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
	}}
}

func TestFieldAt(t *testing.T) {
	c := testCollection()
	for _, tc := range []struct {
		path   string
		field  string
		inside bool
	}{
		{"name", "name", false},
		{"a.b.name", "name", false},
		{"patient.name", "patient.name", false},
		{"patient.name.first", "patient.name", true},
		{"card.number", "card", true},
		{"x.card", "card", false},
		{"accounts.iban", "accounts.iban", false},
		{"accounts", "", false},
		{"iban", "", false},
		{"ward", "", false},
	} {
		f, inside := c.FieldAt(strings.Split(tc.path, "."))
		got := ""
		if f != nil {
			got = f.Name
		}
		if got != tc.field || inside != tc.inside {
			t.Errorf("FieldAt(%s) = %q, %v; want %q, %v", tc.path, got, inside, tc.field, tc.inside)
		}
	}
}

// DocumentRules must mean what FieldAt means: the dotted path wins over
// the single name at one place, arrays are transparent, an outer
// protected value is sealed whole.
func TestDocumentRulesAgreeWithFieldAt(t *testing.T) {
	c := testCollection()
	rules, err := c.DocumentRules()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]*fieldcrypt.DataKey{}
	for _, n := range []string{"pii", "phi", "card"} {
		k, err := fieldcrypt.NewDataKey(n, 1, make([]byte, fieldcrypt.DataKeySize))
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k
	}
	kr := fieldcrypt.NewStaticKeyring(keys["pii"], keys["phi"], keys["card"])
	enc, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	doc := `{"patient":{"name":"P"},"name":"N","x":[{"name":"M"}],"card":{"number":"4111"},"accounts":[{"iban":"DE1"}],"ward":"B"}`
	var events []fieldcrypt.FieldEvent
	out, _, err := enc.EncryptBytes(context.Background(), []byte(doc), kr, &fieldcrypt.CallOptions{OnField: func(e fieldcrypt.FieldEvent) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range events {
		got[e.Path] = e.Key
	}
	want := map[string]string{
		"$.patient.name": "phi", "$.name": "pii", "$.x[0].name": "pii", "$.card": "card", "$.accounts[0].iban": "pii",
	}
	for p, k := range want {
		if got[p] != k {
			t.Errorf("%s sealed with %q, want %q (all: %v)", p, got[p], k, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("sealed %v, want %v", got, want)
	}
	// Tokens are taken out first, so that "DE1" found by chance inside
	// one's base64 is not reported.
	outside := regexp.MustCompile(`"sc2\.[A-Za-z0-9_-]+"`).ReplaceAllString(string(out), `"TOKEN"`)
	for _, plain := range []string{`"P"`, `"N"`, `"M"`, `4111`, `DE1`} {
		if strings.Contains(outside, plain) {
			t.Errorf("%s left in %s", plain, out)
		}
	}
	if !strings.Contains(string(out), `"ward":"B"`) {
		t.Errorf("unprotected field changed: %s", out)
	}
}
