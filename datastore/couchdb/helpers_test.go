package couchdb

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// clinic is the protected collection most tests use.
//
//	ssn          any depth, random (pii)
//	patient.name dotted, random (phi)
//	email        any depth, searchable (contact)
//	phone        any depth, searchable, nulls encrypted (contact)
//	diagnosis    any depth, random, nulls encrypted (phi)
//	address      any depth, random (pii): an object sealed whole
//	accounts.iban dotted, searchable (pii)
//	meta\.tag    one member named "meta.tag", searchable (contact)
func clinic() *datastore.Collection {
	det, rnd := fieldcrypt.ModeDeterministic, fieldcrypt.ModeRandom
	return &datastore.Collection{
		Name: "clinic",
		Fields: []*datastore.Field{
			{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: rnd},
			{Name: "patient.name", Path: []string{"patient", "name"}, Key: "phi", Mode: rnd},
			{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: det, Searchable: true},
			{Name: "phone", Path: []string{"phone"}, AnyDepth: true, Key: "contact", Mode: det, Searchable: true, EncryptNull: true},
			{Name: "diagnosis", Path: []string{"diagnosis"}, AnyDepth: true, Key: "phi", Mode: rnd, EncryptNull: true},
			{Name: "address", Path: []string{"address"}, AnyDepth: true, Key: "pii", Mode: rnd},
			{Name: "accounts.iban", Path: []string{"accounts", "iban"}, Key: "pii", Mode: det, Searchable: true},
			{Name: `meta\.tag`, Path: []string{"meta.tag"}, Key: "contact", Mode: det, Searchable: true},
		},
		Views: map[string]datastore.ViewKey{
			"app/by_email":      {Fields: []string{"email"}},
			"app/by_email_date": {Fields: []string{"email", "date"}, Array: true},
			"app/by_ssn":        {Fields: []string{"ssn"}},
			"app/by_ward":       {Fields: []string{"ward"}},
			"app/by_city":       {Fields: []string{"address.city"}},
			"app/by_ward_phone": {Fields: []string{"ward", "phone"}, Array: true},
			"app/by_tag":        {Fields: []string{`meta\.tag`}},
		},
	}
}

// open is a protected collection whose file allows attachments and
// design documents.
func open() *datastore.Collection {
	return &datastore.Collection{
		Name:        "tenant-*",
		Fields:      []*datastore.Field{{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom}},
		Attachments: datastore.PolicyAllow,
		DesignDocs:  datastore.PolicyAllow,
	}
}

// records is a protected database whose CouchDB name has a slash, which
// pouchdb-server drops: /orgrecords reaches it there.
func records() *datastore.Collection {
	return &datastore.Collection{
		Name:   "org/records",
		Fields: []*datastore.Field{{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom}},
	}
}

func testSchema(allow ...string) *datastore.Schema {
	return &datastore.Schema{Datastore: "couchdb", Collections: []*datastore.Collection{clinic(), open(), records()}, Allow: allow}
}

func newProfile(t testing.TB, allow ...string) *Profile {
	t.Helper()
	p, err := New(testSchema(allow...))
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Profile)
}

// testKey derives a fixed key per name, so tokens are reproducible.
func testKey(t testing.TB, name string) *fieldcrypt.DataKey {
	t.Helper()
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
	return fieldcrypt.NewStaticKeyring(testKey(t, "pii"), testKey(t, "phi"), testKey(t, "contact"), testKey(t, "card"))
}

// tok returns the deterministic token, quoted, that a value (JSON text)
// of the named key seals to.
func tok(t testing.TB, key, jsonText string) string {
	t.Helper()
	typ := map[byte]fieldcrypt.Type{'"': fieldcrypt.TypeString, '{': fieldcrypt.TypeObject, '[': fieldcrypt.TypeArray, 't': fieldcrypt.TypeBool, 'f': fieldcrypt.TypeBool, 'n': fieldcrypt.TypeNull}[jsonText[0]]
	if typ == 0 {
		typ = fieldcrypt.TypeNumber
	}
	b, err := fieldcrypt.SealValue(testKey(t, key), fieldcrypt.ModeDeterministic, typ, []byte(jsonText))
	if err != nil {
		t.Fatal(err)
	}
	return `"` + string(b) + `"`
}

// expand replaces each ⟨key:json⟩ in s by tok(key, json).
func expand(t testing.TB, s string) string {
	t.Helper()
	for {
		i := strings.Index(s, "⟨")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i:], "⟩")
		key, val, _ := strings.Cut(s[i+len("⟨"):i+j], ":")
		s = s[:i] + tok(t, key, val) + s[i+j+len("⟩"):]
	}
}

func request(method, path, query string, body bool, hdr ...string) *datastore.Request {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Add(hdr[i], hdr[i+1])
	}
	return &datastore.Request{Method: method, Path: path, RawQuery: query, Header: h, HasBody: body}
}

// transform classifies a request and runs its body transform, or its
// body check (a BodyJSON body is forwarded as it came).
func transform(t testing.TB, p *Profile, method, path, query, body string) (string, error) {
	t.Helper()
	op := p.Classify(request(method, path, query, true))
	if op.Refusal != nil {
		return "", op.Refusal
	}
	switch {
	case op.Body == datastore.BodyTransform && op.Transform != nil:
		out, err := op.Transform(context.Background(), []byte(body), keyring(t))
		return string(out), err
	case op.Body == datastore.BodyJSON && op.Check != nil:
		if err := op.Check([]byte(body)); err != nil {
			return "", err
		}
		return body, nil
	}
	t.Fatalf("%s %s: body rule %v, want a transform or a check", method, path, op.Body)
	return "", nil
}

func refusalCode(err error) string {
	var r *datastore.Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

const (
	codeUnprotected = datastore.CodeUnprotected
	codeUnsupported = datastore.CodeUnsupportedQuery
	codeBad         = datastore.CodeBadRequest
)
