package couchdb

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// A searchable field with pad: the lookup must be sealed with the same
// padding as the stored value, or equality queries would silently miss.
func TestPaddedSearchableLookupMatchesStored(t *testing.T) {
	pad, err := fieldcrypt.ParsePadding("32,64")
	if err != nil {
		t.Fatal(err)
	}
	c := &datastore.Collection{Name: "padded", Fields: []*datastore.Field{
		{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: fieldcrypt.ModeDeterministic, Searchable: true, Pad: pad},
	}}
	prof, err := New(&datastore.Schema{Datastore: Name, Collections: []*datastore.Collection{c}})
	if err != nil {
		t.Fatal(err)
	}
	p := prof.(*Profile)
	stored, err := encrypt(t, p, "PUT", "/padded/doc", `{"email":"ann@example.com"}`)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]string
	if err := json.Unmarshal([]byte(stored), &doc); err != nil {
		t.Fatal(err)
	}
	unpadded, _ := fieldcrypt.SealString(testKey(t, "contact"), fieldcrypt.ModeDeterministic, "ann@example.com")
	if doc["email"] == string(unpadded) || len(doc["email"]) <= len(unpadded) {
		t.Fatalf("the stored token is not padded: %s", doc["email"])
	}
	op := p.Classify(request("POST", "/padded/_find", "", true))
	if op.Transform == nil {
		t.Fatalf("_find: %+v", op)
	}
	out, err := op.Transform(context.Background(), []byte(`{"selector":{"email":"ann@example.com"}}`), keyring(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), doc["email"]) {
		t.Errorf("lookup %s does not carry the stored token %s", out, doc["email"])
	}
}
