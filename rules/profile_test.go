package rules

import (
	"errors"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// Test-only profiles, so that version 2 files can be compiled and checked
// here without depending on what a real profile refuses:
//
//   - "testdb" documents databases as one endpoint and implements
//     datastore.Describer; it refuses a schema with a collection named
//     "refused-by-profile", to show how a profile's objection is reported;
//   - "testdb-plain" is the same without Describer.
func init() {
	datastore.Register("testdb", func(s *datastore.Schema) (datastore.Profile, error) {
		for _, c := range s.Collections {
			if c.Name == "refused-by-profile" {
				return nil, errors.New("datastore: testdb: collection \"refused-by-profile\" is not supported")
			}
		}
		return &testProfile{name: "testdb", schema: s}, nil
	}, "replicate", "config")
	datastore.Register("testdb-plain", func(s *datastore.Schema) (datastore.Profile, error) {
		return plainProfile{&testProfile{name: "testdb-plain", schema: s}}, nil
	}, "replicate")
}

type testProfile struct {
	name   string
	schema *datastore.Schema
}

func (p *testProfile) Name() string { return p.name }

// Classify: the first path segment names the collection; a protected one
// gets its documents encrypted (the body is the document), the rest passes.
func (p *testProfile) Classify(r *datastore.Request) *datastore.Operation {
	db, _, _ := strings.Cut(strings.TrimPrefix(r.Path, "/"), "/")
	c := p.schema.Match(db)
	if c == nil {
		return &datastore.Operation{Endpoint: p.name + ".pass", Body: datastore.BodyPass}
	}
	if r.Method == "DELETE" {
		return &datastore.Operation{Collection: c, Endpoint: p.name + ".delete", Refusal: datastore.Refuse("DELETE on a protected collection")}
	}
	return &datastore.Operation{Collection: c, Endpoint: p.name + ".doc", Body: datastore.BodyJSON, Keys: c.Keys()}
}

func (p *testProfile) Coverage(c *datastore.Collection) []datastore.Coverage {
	return []datastore.Coverage{
		{Endpoint: p.name + ".doc", Request: "PUT /{db}/{id}", Treatment: "documents encrypted"},
		{Endpoint: p.name + ".delete", Request: "DELETE /{db}", Treatment: "refused", Refused: true, Why: "deletes <everything>"},
	}
}

type plainProfile struct{ p *testProfile }

func (p plainProfile) Name() string { return p.p.name }
func (p plainProfile) Classify(r *datastore.Request) *datastore.Operation {
	return p.p.Classify(r)
}
