package elasticsearch

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

// orders is the protected collection most tests use.
//
//	ssn          any depth, random (pii)
//	email        any depth, searchable (contact)
//	card.number  dotted, searchable (card)
//	address      any depth, random (pii): an object sealed whole
//	phone        any depth, searchable, nulls encrypted (contact)
func orders() *datastore.Collection {
	det, rnd := fieldcrypt.ModeDeterministic, fieldcrypt.ModeRandom
	return &datastore.Collection{
		Name: "orders",
		Fields: []*datastore.Field{
			{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: rnd},
			{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: det, Searchable: true},
			{Name: "card.number", Path: []string{"card", "number"}, Key: "card", Mode: det, Searchable: true},
			{Name: "address", Path: []string{"address"}, AnyDepth: true, Key: "pii", Mode: rnd},
			{Name: "phone", Path: []string{"phone"}, AnyDepth: true, Key: "contact", Mode: det, Searchable: true, EncryptNull: true},
		},
	}
}

// tenants is a pattern collection.
func tenants() *datastore.Collection {
	return &datastore.Collection{
		Name:   "tenant-*",
		Fields: []*datastore.Field{{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom}},
	}
}

func testSchema(allow ...string) *datastore.Schema {
	return &datastore.Schema{Datastore: Name, Collections: []*datastore.Collection{orders(), tenants()}, Allow: allow}
}

func newProfile(t testing.TB, allow ...string) *Profile {
	t.Helper()
	p, err := New(testSchema(allow...))
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Profile)
}

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
	return fieldcrypt.NewStaticKeyring(testKey(t, "pii"), testKey(t, "contact"), testKey(t, "card"))
}

// tok returns the deterministic token, quoted, of a value (JSON text).
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

// run classifies a request and runs its body rule on body, as the proxy
// would: the line transformer line by line, or the transform whole.
func run(t testing.TB, p *Profile, method, path, query, body string) (string, error) {
	t.Helper()
	op := p.Classify(request(method, path, query, true))
	if op.Refusal != nil {
		return "", op.Refusal
	}
	ctx := context.Background()
	switch op.Body {
	case datastore.BodyNDJSON:
		lt := op.Lines(ctx, &datastore.LinesEnv{Keys: keyring(t)})
		var out []byte
		rest := body
		for rest != "" {
			line := rest
			if i := strings.IndexByte(rest, '\n'); i >= 0 {
				line = rest[:i+1]
			}
			rest = rest[len(line):]
			o, err := lt.Line([]byte(line))
			if err != nil {
				return "", err
			}
			out = append(out, o...)
		}
		o, err := lt.End()
		if err != nil {
			return "", err
		}
		return string(append(out, o...)), nil
	case datastore.BodyTransform:
		out, err := op.Transform(ctx, []byte(body), keyring(t))
		return string(out), err
	case datastore.BodyPass, datastore.BodyJSON, datastore.BodyNone:
		return body, nil
	}
	t.Fatalf("%s %s: body rule %v", method, path, op.Body)
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
