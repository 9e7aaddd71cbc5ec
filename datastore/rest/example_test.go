package rest_test

import (
	"fmt"

	"github.com/sidecrypt/sidecrypt/datastore"
	_ "github.com/sidecrypt/sidecrypt/datastore/rest" // registers "rest"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func ExampleProfile_Classify() {
	profile, err := datastore.New(&datastore.Schema{
		Datastore: "rest",
		Collections: []*datastore.Collection{{
			Name: "/customers",
			Fields: []*datastore.Field{
				{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
				{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
			},
		}},
	})
	if err != nil {
		panic(err)
	}
	rules := map[datastore.BodyRule]string{datastore.BodyPass: "pass", datastore.BodyNone: "no body", datastore.BodyEncrypt: "encrypt documents"}
	for _, r := range []struct{ method, path, query string }{
		{"POST", "/customers", ""},
		{"PATCH", "/Customers/17", ""},
		{"GET", "/customers", "email=ann@example.com&email=bob@example.org"},
		{"GET", "/customers", "q=ann"},
		{"GET", "/customers", "email_like=ann"},
		{"POST", "/posts/1/customers", ""},
		{"POST", "/posts", ""},
	} {
		op := profile.Classify(&datastore.Request{Method: r.method, Path: r.path, RawQuery: r.query, HasBody: r.method != "GET"})
		what := rules[op.Body]
		if op.Refusal != nil {
			what = "refused: " + op.Refusal.Code
		} else if op.Query != nil {
			what += ", query sealed"
		}
		fmt.Printf("%-5s %-19s %-15s %s\n", r.method, r.path, op.Endpoint, what)
	}
	// Output:
	// POST  /customers          rest.collection encrypt documents
	// PATCH /Customers/17       rest.item       encrypt documents
	// GET   /customers          rest.collection no body, query sealed
	// GET   /customers          rest.collection refused: unsupported_query
	// GET   /customers          rest.collection refused: unsupported_query
	// POST  /posts/1/customers  rest.nested     refused: unprotected_operation
	// POST  /posts              rest.other      pass
}
