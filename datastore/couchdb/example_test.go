package couchdb_test

import (
	"fmt"

	"github.com/sidecrypt/sidecrypt/datastore"
	_ "github.com/sidecrypt/sidecrypt/datastore/couchdb" // registers "couchdb"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func ExampleProfile_Classify() {
	schema := &datastore.Schema{
		Datastore: "couchdb",
		Collections: []*datastore.Collection{{
			Name: "clinic",
			Fields: []*datastore.Field{
				{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
				{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
			},
		}},
	}
	profile, err := datastore.New(schema)
	if err != nil {
		panic(err)
	}
	rules := map[datastore.BodyRule]string{
		datastore.BodyPass: "pass", datastore.BodyNone: "no body", datastore.BodyOpaque: "opaque",
		datastore.BodyJSON: "JSON, unchanged", datastore.BodyEncrypt: "encrypt documents", datastore.BodyTransform: "transform",
	}
	for _, r := range []struct{ method, path, query string }{
		{"PUT", "/clinic/a%2Fb", ""},
		{"POST", "/clinic/_bulk_docs", "new_edits=false"},
		{"POST", "/clinic/_find", ""},
		{"GET", "/clinic/_all_docs", "include_docs=true"},
		{"PUT", "/clinic/_design%2Fapp", ""},
		{"POST", "/clinic/_design/app/_update/touch", ""},
		{"PATCH", "/clinic/doc", ""},
		{"POST", "/_replicate", ""},
		{"PUT", "/other/doc", ""},
	} {
		op := profile.Classify(&datastore.Request{Method: r.method, Path: r.path, RawQuery: r.query, HasBody: r.method != "GET"})
		what := rules[op.Body]
		if op.Refusal != nil {
			what = "refused: " + op.Refusal.Code
		}
		fmt.Printf("%-5s %-34s %-24s %s\n", r.method, r.path, op.Endpoint, what)
	}
	// Output:
	// PUT   /clinic/a%2Fb                      couchdb.doc              encrypt documents
	// POST  /clinic/_bulk_docs                 couchdb.bulk_docs        encrypt documents
	// POST  /clinic/_find                      couchdb.find             transform
	// GET   /clinic/_all_docs                  couchdb.all_docs         no body
	// PUT   /clinic/_design%2Fapp              couchdb.design           refused: unprotected_operation
	// POST  /clinic/_design/app/_update/touch  couchdb.design_function  refused: unprotected_operation
	// PATCH /clinic/doc                        couchdb.doc              refused: unprotected_operation
	// POST  /_replicate                        couchdb.replicate        refused: unprotected_operation
	// PUT   /other/doc                         couchdb.doc              pass
}
