package rest

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func customers() *datastore.Collection {
	det, rnd := fieldcrypt.ModeDeterministic, fieldcrypt.ModeRandom
	return &datastore.Collection{Name: "/customers", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: rnd},
		{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: det, Searchable: true},
		{Name: "card.number", Path: []string{"card", "number"}, Key: "card", Mode: det, Searchable: true},
		{Name: "address", Path: []string{"address"}, AnyDepth: true, Key: "pii", Mode: rnd},
	}}
}

func newProfile(t testing.TB) *Profile {
	t.Helper()
	p, err := New(&datastore.Schema{Datastore: Name, Collections: []*datastore.Collection{customers(),
		{Name: "/api/*/patients", Fields: []*datastore.Field{{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Profile)
}

func testKey(t testing.TB, name string) *fieldcrypt.DataKey {
	m := make([]byte, 0, fieldcrypt.DataKeySize)
	for i := 0; len(m) < fieldcrypt.DataKeySize; i++ {
		s := sha256.Sum256([]byte(name + string(rune('0'+i))))
		m = append(m, s[:]...)
	}
	k, err := fieldcrypt.NewDataKey(name, 1, m[:fieldcrypt.DataKeySize])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyring(t testing.TB) *fieldcrypt.StaticKeyring {
	return fieldcrypt.NewStaticKeyring(testKey(t, "pii"), testKey(t, "contact"), testKey(t, "card"))
}

func classify(p *Profile, method, path, query string, body bool) *datastore.Operation {
	return p.Classify(&datastore.Request{Method: method, Path: path, RawQuery: query, Header: http.Header{}, HasBody: body})
}

func code(op *datastore.Operation) string {
	if op.Refusal == nil {
		return ""
	}
	return op.Refusal.Code
}

func TestClassify(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		method, path, query string
		body                bool
		ep                  string
		rule                datastore.BodyRule
		code                string
	}{
		{"GET", "/customers", "", false, EpCollection, datastore.BodyNone, ""},
		{"POST", "/customers", "", true, EpCollection, datastore.BodyEncrypt, ""},
		{"PUT", "/customers/1", "", true, EpItem, datastore.BodyEncrypt, ""},
		{"PATCH", "/customers/1", "", true, EpItem, datastore.BodyEncrypt, ""},
		{"DELETE", "/customers/1", "", false, EpItem, datastore.BodyNone, ""},
		{"GET", "/Customers", "", false, EpCollection, datastore.BodyNone, ""},
		{"POST", "/CUSTOMERS/", "", true, EpCollection, datastore.BodyEncrypt, ""},
		{"POST", "/cust%6Fmers", "", true, EpCollection, datastore.BodyEncrypt, ""},
		{"PUT", "/customers/a%2Fb", "", true, EpItem, datastore.BodyEncrypt, ""},
		{"POST", "/api/v1/patients", "", true, EpCollection, datastore.BodyEncrypt, ""},
		{"POST", "/posts", "", true, EpOther, datastore.BodyPass, ""},
		{"GET", "/customers/1/orders", "", false, EpNested, datastore.BodyNone, ""},
		{"POST", "/customers/1/orders", "", true, EpNested, 0, datastore.CodeUnprotected},
		{"POST", "/posts/1/customers", "", true, EpNested, 0, datastore.CodeUnprotected},
		{"GET", "/posts/1/customers", "email=x", false, EpNested, 0, datastore.CodeUnprotected},
		{"POST", "/customers/1", "", true, EpItem, 0, datastore.CodeUnprotected},
		{"post", "/customers", "", true, EpCollection, 0, datastore.CodeUnprotected},
		{"POST", "/customers%2F1", "", true, EpPath, 0, datastore.CodeBadRequest},
		{"POST", "//customers", "", true, EpPath, 0, datastore.CodeBadRequest},
		{"POST", "/x/%2e%2e/customers", "", true, EpPath, 0, datastore.CodeBadRequest},
		{"GET", "/customers", "q=ann", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "email_like=ann", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "email_gte=a", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "ssn=1", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "address.city=x", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "_sort=email", false, EpCollection, 0, datastore.CodeUnsupportedQuery},
		{"GET", "/customers", "email%5B%5D=x", false, EpCollection, 0, datastore.CodeBadRequest},
		{"GET", "/customers", "_sort=name&_page=2&ward_like=B", false, EpCollection, datastore.BodyNone, ""},
	} {
		t.Run(tc.method+" "+tc.path+"?"+tc.query, func(t *testing.T) {
			op := classify(p, tc.method, tc.path, tc.query, tc.body)
			if code(op) != tc.code {
				t.Fatalf("refusal %q (%v), want %q", code(op), op.Refusal, tc.code)
			}
			if op.Refusal != nil && !strings.HasPrefix(op.Refusal.Message, "rest: ") {
				t.Errorf("message %q", op.Refusal.Message)
			}
			if op.Endpoint != tc.ep {
				t.Errorf("endpoint %q, want %q", op.Endpoint, tc.ep)
			}
			if tc.code == "" && op.Body != tc.rule {
				t.Errorf("body rule %v, want %v", op.Body, tc.rule)
			}
		})
	}
}

func TestQuerySealed(t *testing.T) {
	p := newProfile(t)
	op := classify(p, "GET", "/customers", "email=ann%40example.com&ward=B&email=bob@example.com&card.number=4111&email_ne=x&_page=1", false)
	if op.Refusal != nil || op.Query == nil {
		t.Fatalf("%+v", op)
	}
	out, err := op.Query(context.Background(), "email=ann%40example.com&ward=B&email=bob@example.com&card.number=4111&email_ne=x&_page=1", keyring(t))
	if err != nil {
		t.Fatal(err)
	}
	tok := func(key, v string) string {
		b, err := fieldcrypt.SealString(testKey(t, key), fieldcrypt.ModeDeterministic, v)
		if err != nil {
			t.Fatal(err)
		}
		return url.QueryEscape(string(b))
	}
	want := "email=" + tok("contact", "ann@example.com") + "&ward=B&email=" + tok("contact", "bob@example.com") +
		"&card.number=" + tok("card", "4111") + "&email_ne=" + tok("contact", "x") + "&_page=1"
	if out != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	// The token of ?email=x is the token the document encryptor stores.
	enc := classify(p, "POST", "/customers", "", true)
	doc, _, err := enc.Encryptor.EncryptBytes(context.Background(), []byte(`{"email":"ann@example.com","card.number":"4111","ssn":"123-45-6789"}`), keyring(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	unq, _ := url.QueryUnescape(tok("contact", "ann@example.com"))
	if !strings.Contains(string(doc), unq) || strings.Contains(string(doc), "4111") || strings.Contains(string(doc), "123-45") {
		t.Errorf("document %s", doc)
	}
}

func TestPreserve(t *testing.T) {
	p := newProfile(t)
	op := classify(p, "PUT", "/customers/1", "", true)
	if op.Preserve == nil {
		t.Fatal("no Preserve hook")
	}
	fetched := ""
	env := &datastore.WriteEnv{
		Keys:      keyring(t),
		Masked:    func(k string) bool { return k == "card" },
		Candidate: func(k string, text []byte) bool { return strings.Contains(string(text), "***") },
		Shown:     func(ctx context.Context, tok []byte) ([]byte, bool) { return []byte(`"***1111"`), true },
		Fetch: func(ctx context.Context, method, path, q string, body []byte) (int, []byte, error) {
			fetched = method + " " + path
			stored, _ := fieldcrypt.SealString(testKey(t, "card"), fieldcrypt.ModeDeterministic, "4111111111111111")
			return 200, []byte(`{"id":1,"card":{"number":"` + string(stored) + `"}}`), nil
		},
	}
	out, err := op.Preserve(context.Background(), []byte(`{"id":1,"card":{"number":"***1111"}}`), env)
	if err != nil {
		t.Fatal(err)
	}
	if fetched != "GET /customers/1" || strings.Contains(string(out), "***") || !strings.Contains(string(out), "sc2.") {
		t.Errorf("fetched %q, out %s", fetched, out)
	}
	env.Fetch = func(ctx context.Context, method, path, q string, body []byte) (int, []byte, error) {
		return 0, nil, errors.New("down")
	}
	if _, err := op.Preserve(context.Background(), []byte(`{"card":{"number":"***1111"}}`), env); err == nil {
		t.Error("no refusal with the store down")
	}
}

func TestCoverage(t *testing.T) {
	for _, r := range newProfile(t).Coverage(customers()) {
		if r.Endpoint == "" || r.Request == "" || r.Treatment == "" || r.Why == "" || r.Refused != strings.HasPrefix(r.Treatment, "refused") {
			t.Errorf("row %+v", r)
		}
	}
}
