package elasticsearch_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	_ "github.com/sidecrypt/sidecrypt/datastore/elasticsearch" // registers "elasticsearch"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func schema() *datastore.Schema {
	return &datastore.Schema{
		Datastore: "elasticsearch",
		Collections: []*datastore.Collection{{
			Name: "orders*",
			Fields: []*datastore.Field{
				{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
				{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
			},
		}},
	}
}

func ExampleProfile_Classify() {
	profile, err := datastore.New(schema())
	if err != nil {
		panic(err)
	}
	rules := map[datastore.BodyRule]string{
		datastore.BodyPass: "pass", datastore.BodyNone: "no body", datastore.BodyJSON: "JSON, unchanged",
		datastore.BodyTransform: "transform", datastore.BodyNDJSON: "line by line",
	}
	for _, r := range []struct{ method, path, query string }{
		{"PUT", "/orders/_doc/a%2Fb", ""},
		{"POST", "/_bulk", ""},
		{"POST", "/orders-2026,logs/_search", ""},
		{"GET", "/o*/_search", "q=email:ann"},
		{"POST", "/orders/_update_by_query", ""},
		{"PUT", "/logs/_doc/1", "pipeline=geoip"},
		{"POST", "/_reindex", ""},
		{"PUT", "/logs/_doc/1", ""},
	} {
		op := profile.Classify(&datastore.Request{Method: r.method, Path: r.path, RawQuery: r.query, HasBody: r.method != "GET"})
		what := rules[op.Body]
		if op.Refusal != nil {
			what = "refused: " + op.Refusal.Code
		}
		fmt.Printf("%-4s %-26s %-28s %s\n", r.method, r.path, op.Endpoint, what)
	}
	// Output:
	// PUT  /orders/_doc/a%2Fb         elasticsearch.doc            line by line
	// POST /_bulk                     elasticsearch.bulk           line by line
	// POST /orders-2026,logs/_search  elasticsearch.search         transform
	// GET  /o*/_search                elasticsearch.search         refused: unsupported_query
	// POST /orders/_update_by_query   elasticsearch.by_query       refused: unprotected_operation
	// PUT  /logs/_doc/1               elasticsearch.pipeline       refused: unprotected_operation
	// POST /_reindex                  elasticsearch.reindex        transform
	// PUT  /logs/_doc/1               elasticsearch.doc            pass
}

// A search's compared values are sealed as the documents' fields were;
// match on a searchable field becomes a term query, and a range on one
// is refused.
func ExampleProfile_Classify_search() {
	profile, _ := datastore.New(schema())
	keys := fieldcrypt.NewStaticKeyring(key("contact"), key("pii"))
	for _, body := range []string{
		`{"query":{"bool":{"filter":[{"match":{"email":"ann@example.com"}},{"range":{"total":{"gte":10}}}]}}}`,
		`{"query":{"range":{"email":{"gte":"a"}}}}`,
	} {
		op := profile.Classify(&datastore.Request{Method: "POST", Path: "/orders/_search", HasBody: true})
		out, err := op.Transform(context.Background(), []byte(body), keys)
		if err != nil {
			fmt.Println(err)
			continue
		}
		tok, _ := fieldcrypt.SealString(key("contact"), fieldcrypt.ModeDeterministic, "ann@example.com")
		fmt.Println(strings.ReplaceAll(string(out), string(tok), "TOKEN"))
	}
	// Output:
	// {"query":{"bool":{"filter":[{"term":{"email":{"value":"TOKEN"}}},{"range":{"total":{"gte":10}}}]}}}
	// unsupported_query: elasticsearch: range on the encrypted field "email" cannot work: a searchable field keeps equality only (term, terms, match, match_phrase, ids, exists), not order, ranges, patterns, words or buckets
}

func key(name string) *fieldcrypt.DataKey {
	m := make([]byte, 0, fieldcrypt.DataKeySize)
	for i := 0; len(m) < fieldcrypt.DataKeySize; i++ {
		s := sha256.Sum256([]byte(name + string(rune('0'+i))))
		m = append(m, s[:]...)
	}
	k, err := fieldcrypt.NewDataKey(name, 1, m[:fieldcrypt.DataKeySize])
	if err != nil {
		panic(err)
	}
	return k
}
