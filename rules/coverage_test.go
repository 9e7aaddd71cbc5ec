package rules

import (
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func TestCoveredBy(t *testing.T) {
	sel := func(s string) []fieldcrypt.Step { return fieldcrypt.MustParseSelector(s).Steps() }
	doc := func(name string) []fieldcrypt.Step {
		path, _, msg, _ := splitFieldName(name)
		if msg != "" {
			t.Fatal(msg)
		}
		c := &datastore.Collection{Fields: []*datastore.Field{{Name: name, Path: path, AnyDepth: len(path) == 1, Key: "k", Mode: fieldcrypt.ModeRandom}}}
		rules, err := c.DocumentRules()
		if err != nil {
			t.Fatal(err)
		}
		return rules[0].Selector.Steps()
	}
	for _, tc := range []struct {
		name string
		f    []fieldcrypt.Step
		gs   [][]fieldcrypt.Step
		want bool
	}{
		{"same", sel("$.ssn"), [][]fieldcrypt.Step{sel("$['ssn']")}, true},
		{"descendant covers bulk", sel("$.docs[*].ssn"), [][]fieldcrypt.Step{sel("$..ssn")}, true},
		{"bulk does not cover descendant", sel("$..ssn"), [][]fieldcrypt.Step{sel("$.docs[*].ssn")}, false},
		{"union covers", sel("$.docs[*].ssn"), [][]fieldcrypt.Step{sel("$.docs[0].ssn"), sel("$.docs[*].x")}, false},
		{"outer value covers inner", sel("$.card.number"), [][]fieldcrypt.Step{sel("$.card")}, true},
		{"inner does not cover outer", sel("$.card"), [][]fieldcrypt.Step{sel("$.card.number")}, false},
		{"wildcard", sel("$.docs[3].ssn"), [][]fieldcrypt.Step{sel("$.docs[*].ssn")}, true},
		{"index not wildcard", sel("$.docs[*].ssn"), [][]fieldcrypt.Step{sel("$.docs[3].ssn")}, false},
		{"index union", sel("$.a[*]"), [][]fieldcrypt.Step{sel("$.a[0]"), sel("$.a[1]")}, false},
		{"other names", sel("$.*.ssn"), [][]fieldcrypt.Step{sel("$.a.ssn")}, false},
		{"descendant in the middle", sel("$.a.b.c"), [][]fieldcrypt.Step{sel("$..b.c")}, true},
		{"v2 any depth covers v1 top", sel("$.ssn"), [][]fieldcrypt.Step{doc("ssn")}, true},
		{"v2 dotted through arrays", sel("$.accounts[2].iban"), [][]fieldcrypt.Step{doc("accounts.iban")}, true},
		// [*] is also every member of an object: accounts.x.iban.
		{"v1 wildcard is wider than arrays", sel("$.accounts[*].iban"), [][]fieldcrypt.Step{doc("accounts.iban")}, false},
		{"v2 dotted nested arrays", sel("$.accounts[0][1].iban"), [][]fieldcrypt.Step{doc("accounts.iban")}, true},
		{"v2 dotted is not any depth", doc("iban"), [][]fieldcrypt.Step{doc("accounts.iban")}, false},
		{"v2 outer single name", doc("card.number"), [][]fieldcrypt.Step{doc("card")}, true},
		{"v2 single inside dotted", doc("payment.card.number"), [][]fieldcrypt.Step{doc("card")}, true},
		{"v2 top-level single only", doc("card"), [][]fieldcrypt.Step{doc("payment.card")}, false},
		{"nothing", sel("$.x"), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coveredBy(tc.f, tc.gs); got != tc.want {
				t.Errorf("coveredBy = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGlobCovers(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"tenant-*", "tenant-a", true},
		{"tenant-*", "tenant-*-archive", true},
		{"tenant-*-archive", "tenant-*", false},
		{"*", "anything*", true},
		{"clinic", "clinic", true},
		{"clinic", "clinic*", false},
		{"a*b", "a*", false},
		{"a*b*", "a*b", true},
		{"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", strings.Repeat("a", 60), false},
	} {
		if got := globCovers(tc.a, tc.b); got != tc.want {
			t.Errorf("globCovers(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if tc.want && !datastore.Glob(tc.a, tc.b) {
			t.Errorf("datastore.Glob(%q, %q) disagrees", tc.a, tc.b)
		}
	}
}
