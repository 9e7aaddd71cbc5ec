package rules

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleRuleFiles: the shipped examples (the demo uses clinic.yaml)
// are version 2 files, for CouchDB unless named for another datastore
// (es-*.yaml for Elasticsearch, rest-*.yaml for REST stores), and compile
// without a warning.
func TestExampleRuleFiles(t *testing.T) {
	files, err := filepath.Glob("../examples/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			plan, diags, err := LoadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(diags) > 0 {
				t.Errorf("warnings: %v", diags)
			}
			want := "couchdb"
			switch base := filepath.Base(f); {
			case strings.HasPrefix(base, "es-"):
				want = "elasticsearch"
			case strings.HasPrefix(base, "rest-"):
				want = "rest"
			}
			if plan.Schema == nil || plan.Schema.Datastore != want {
				t.Errorf("not a version 2 file for %s", want)
			}
		})
	}
}

// TestClinicExample: the demo and the end-to-end tests rely on these
// properties of examples/rules/clinic.yaml.
func TestClinicExample(t *testing.T) {
	plan, _, err := LoadFile("../examples/rules/clinic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := plan.Schema.Match("clinic")
	if c == nil {
		t.Fatal("no clinic collection")
	}
	want := map[string]string{"name": "pii", "ssn": "pii", "birth_date": "pii", "diagnosis": "phi", "notes": "phi",
		"email": "contact", "phone": "contact", "card_number": "card"}
	for name, key := range want {
		f, _ := c.FieldAt([]string{name})
		if f == nil || f.Key != key {
			t.Errorf("%s: %+v, want key %s", name, f, key)
		}
	}
	if f, _ := c.FieldAt([]string{"email"}); f == nil || !f.Searchable {
		t.Error("email must be searchable (the demo finds patients by email)")
	}
	if m, ok := plan.MaskOf("card"); !ok || m != MaskLast4 {
		t.Errorf("card mask %q, want last4", m)
	}
	if got := plan.DecryptKeys; len(got) != 3 || got[0] != "contact" || got[1] != "phi" || got[2] != "pii" {
		t.Errorf("decrypt keys %v", got)
	}
}
