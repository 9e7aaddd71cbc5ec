package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// TestConvertExamples converts the version 1 examples (testdata/v1) and
// compares with testdata/convert/*.want; run with -update after an
// intended change. Every output must compile without errors, and every
// document field the version 1 file protected must be protected by the
// version 2 file at least as widely, unless a note says it was not carried.
func TestConvertExamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/v1/*.yaml")
	if len(files) == 0 {
		t.Fatal("no version 1 examples")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			plan, _, err := LoadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			conv, err := Convert(plan, ConvertOptions{Datastore: "testdb"})
			if err != nil {
				t.Fatal(err)
			}
			v2, diags, err := Compile(name+"-v2.yaml", conv.YAML)
			if err != nil {
				t.Fatalf("output does not compile: %v\n%s", err, conv.YAML)
			}
			for _, d := range diags {
				if conv.Complete() && !strings.Contains(name, "research") {
					t.Errorf("output has a warning: %s", d)
				}
			}
			checkCarried(t, plan, v2, conv)
			golden(t, filepath.Join("testdata/convert", name+".want"), string(conv.YAML))
		})
	}
}

// checkCarried: every document selector of a CouchDB route that no note
// calls lost is covered by the fields of its database's collection.
func checkCarried(t *testing.T, v1, v2 *Plan, conv *Conversion) {
	t.Helper()
	lost := map[string]bool{}
	for _, n := range conv.Notes {
		if n.Lost {
			lost[n.Route] = true
		}
	}
	for _, r := range v1.Routes {
		dbs, _ := routeDatabases(r)
		for _, f := range r.Fields {
			vf := readV1Selector(f.Selector)
			if vf.search || vf.lost != "" || lost[r.Name] {
				continue
			}
			for _, db := range dbs {
				c := v2.Schema.Match(db)
				if c == nil {
					t.Errorf("route %s: database %s is not a collection of the output", r.Name, db)
					continue
				}
				var gs [][]fieldcrypt.Step
				for _, g := range c.Fields {
					if g.Key == f.Key && g.Mode == f.Mode {
						gs = append(gs, docFieldSteps(g))
					}
				}
				if !coveredBy(vf.doc, gs) {
					t.Errorf("route %s: %s (key %s, %s) is not covered in %s", r.Name, f.Selector, f.Key, f.Mode, db)
				}
			}
		}
	}
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if intended)\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}

func TestConvertCases(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v1       string
		complete bool
		has      []string // in the output
	}{
		{"selectors", `version: 1
routes:
  - name: w
    match: {methods: [POST, PUT], paths: ["/clinic/*", "/clinic/_bulk_docs"]}
    encrypt:
      - fields: ["$.ssn", "$.docs[*].ssn", "$..diagnosis", "$.card.number", "$.docs[*].card.number", "$['a.b']"]
        key: pii
      - fields: ["$.email", "$.docs[*].email"]
        key: contact
        mode: deterministic
        nulls: encrypt
`, true, []string{"      ssn:", "{key: pii}", "card.number:", "'a\\.b':", "email:", "{key: contact, searchable: true, nulls: encrypt}",
			"single names, which protect the member at any depth"}},
		{"two keys", `version: 1
routes:
  - name: a
    match: {methods: [POST], paths: ["/db/_bulk_docs"]}
    encrypt: [{fields: ["$.docs[*].ssn"], key: pii}]
  - name: b
    match: {methods: [PUT], paths: ["/db/*"]}
    encrypt: [{fields: ["$.ssn"], key: other}]
`, false, []string{"NOT CARRIED", "version 2 gives a field one key and mode: kept the first", "ssn: {key: pii}"}},
		{"search implied, query lost", `version: 1
routes:
  - name: s
    match: {methods: [POST], paths: ["/db/_find"]}
    encrypt: [{fields: ["$.selector.email"], key: contact, mode: deterministic, leaves: true}]
    query: [{params: [key], key: contact, mode: deterministic}]
  - name: w
    match: {methods: [PUT], paths: ["/db/*"]}
    encrypt: [{fields: ["$.email"], key: contact, mode: deterministic}]
`, false, []string{"declare views instead", "implied by the profile", "email: {key: contact, searchable: true}"}},
		{"foreign, hosts, exemptions, types, whole docs", `version: 1
routes:
  - name: skip
    match: {methods: [POST], paths: ["/db/_local/*"]}
  - name: h
    match: {methods: [POST], paths: ["/db/*"], hosts: [couch.internal], content_types: [text/json]}
    encrypt: [{fields: ["$.x", "$._attachments", "$.docs[*]"], key: pii}]
  - name: api
    match: {methods: [POST], paths: ["/api/customers/*", "/**/_find"]}
    encrypt: [{fields: ["$.x"], key: pii}]
`, false, []string{"protects nothing", "hosts: [couch.internal]", "content_types", "_attachments", "protects whole documents", "/api/customers/*, /**/_find are not CouchDB database paths"}},
		{"arrays", `version: 1
routes:
  - name: w
    match: {methods: [PUT], paths: ["/db/*"]}
    encrypt:
      - fields: ["$.accounts[*].iban", "$.cards[0].number", "$.tags[*]", "$..a.b"]
        key: bank
`, true, []string{"iban:", "cards.number:", "tags:", "b:", "sealed whole instead of element by element"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := mustCompile(t, tc.v1)
			conv, err := Convert(plan, ConvertOptions{Datastore: "testdb"})
			if err != nil {
				t.Fatal(err)
			}
			out := string(conv.YAML)
			for _, n := range conv.Notes {
				out += "\n" + n.String()
			}
			if conv.Complete() != tc.complete {
				t.Errorf("complete = %v, want %v\n%s", conv.Complete(), tc.complete, out)
			}
			for _, s := range tc.has {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			v2, _, err := Compile("out.yaml", conv.YAML)
			if err != nil {
				t.Fatalf("output does not compile: %v\n%s", err, conv.YAML)
			}
			checkCarried(t, plan, v2, conv)
		})
	}
	if _, err := Convert(mustCompile(t, "version: 2\ndatastore: testdb\n"), ConvertOptions{}); err != ErrNotVersion1 {
		t.Errorf("converting a version 2 file: %v", err)
	}
}
