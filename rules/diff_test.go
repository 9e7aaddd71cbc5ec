package rules

import (
	"strings"
	"testing"
)

const diffOld = `version: 1
routes:
  - name: search
    match: {methods: [POST], paths: ["/clinic/_find"]}
    encrypt: [{fields: [$.selector.email], key: contact, mode: deterministic}]
    query: [{params: [email, phone], key: contact, mode: deterministic}]
  - name: write
    match: {methods: [POST, PUT], paths: ["/clinic/*", "/clinic/_bulk_docs"]}
    encrypt:
      - fields: ["$.docs[*].ssn", "$.docs[*].diagnosis"]
        key: pii
      - fields: ["$.docs[*].email"]
        key: contact
        mode: deterministic
      - fields: ["$.docs[*].allergies"]
        key: pii
        nulls: encrypt
  - name: legacy
    match: {methods: [POST], paths: ["/old/**"]}
    encrypt: [{fields: [$.ssn], key: pii}]
decrypt:
  keys: [pii]
  mask: {contact: hash, card: full}
`

func TestCompareNoChange(t *testing.T) {
	a := mustCompile(t, diffOld)
	b := mustCompile(t, "# a comment changes the hash, not the protection\n"+diffOld)
	d := Compare(a, b)
	if !d.Empty() || d.Summary() != "no change in protection" {
		t.Fatalf("changes: %+v", d.Changes)
	}
	var out strings.Builder
	d.WriteText(&out)
	if !strings.Contains(out.String(), "No change in protection") {
		t.Errorf("text: %s", out.String())
	}
}

func TestCompare(t *testing.T) {
	newRules := strings.NewReplacer(
		// search: phone query parameter dropped; email switched key.
		"query: [{params: [email, phone], key: contact, mode: deterministic}]", "query: [{params: [email], key: contact2, mode: deterministic}]",
		// write: diagnosis dropped, card added, email mode changed, a path removed.
		`fields: ["$.docs[*].ssn", "$.docs[*].diagnosis"]`, `fields: ["$.docs[*].ssn", "$.docs[*].card"]`,
		"        key: contact\n        mode: deterministic", "        key: contact\n        mode: random",
		`paths: ["/clinic/*", "/clinic/_bulk_docs"]`, `paths: ["/clinic/_bulk_docs"]`,
		"        nulls: encrypt\n", "",
		// legacy removed; a new route in front of search.
		"  - name: legacy\n    match: {methods: [POST], paths: [\"/old/**\"]}\n    encrypt: [{fields: [$.ssn], key: pii}]\n", "",
		"routes:\n", "routes:\n  - name: everything\n    match: {methods: [POST], paths: [\"/clinic/**\"]}\n    encrypt: [{fields: [$..ssn], key: pii}]\n",
		// contact becomes openable; card revealed more.
		"keys: [pii]", "keys: [pii, contact]",
		"mask: {contact: hash, card: full}", "mask: {card: last4}",
	).Replace(diffOld)
	d := Compare(mustCompile(t, diffOld), mustCompile(t, newRules))
	type want struct {
		kind    ChangeKind
		route   string
		field   string
		flagged bool
		says    string
	}
	wants := []want{
		{RouteRemoved, "legacy", "", true, "ROUTE REMOVED legacy"},
		{RouteAdded, "everything", "", false, "route added everything"},
		{RouteInserted, "everything", "search", true, "takes the requests both match"},
		{RouteInserted, "everything", "write", true, "takes the requests both match"},
		{QueryRemoved, "search", "phone", true, "REMOVED PROTECTION search: query parameter phone"},
		{QueryChanged, "search", "email", true, "Equality queries on this parameter stop matching"},
		{FieldRemoved, "write", "$.docs[*].diagnosis", true, "REMOVED PROTECTION write: $.docs[*].diagnosis"},
		{FieldAdded, "write", "$.docs[*].card", false, "newly protected"},
		{FieldChanged, "write", "$.docs[*].email", true, "Existing data keeps its old tokens"},
		{FieldChanged, "write", "$.docs[*].allergies", true, "null values are now left as null"},
		{MatchChanged, "write", "paths", true, "paths no longer include /clinic/*"},
		{DecryptChanged, "", "contact", true, "KEY BECOMES OPENABLE contact"},
		{DecryptChanged, "", "card", true, "REVEALS MORE card"},
	}
	for _, w := range wants {
		t.Run(string(w.kind)+" "+w.route+" "+w.field, func(t *testing.T) {
			for _, c := range d.Changes {
				if c.Kind == w.kind && c.Route == w.route && c.Field == w.field {
					if c.Flagged != w.flagged {
						t.Errorf("flagged = %v, want %v", c.Flagged, w.flagged)
					}
					if !strings.Contains(c.Message, w.says) {
						t.Errorf("message %q does not say %q", c.Message, w.says)
					}
					return
				}
			}
			t.Errorf("change missing; have:\n%s", changesText(d))
		})
	}
	if len(d.Changes) != len(wants) {
		t.Errorf("%d changes, want %d:\n%s", len(d.Changes), len(wants), changesText(d))
	}
	var out strings.Builder
	if err := d.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, s := range []string{"Fields NO LONGER protected:", "  ! REMOVED PROTECTION write", "Key or mode changes:", "Decrypt and mask policy:", "Summary: "} {
		if !strings.Contains(text, s) {
			t.Errorf("text output lacks %q:\n%s", s, text)
		}
	}
	if got := d.Summary(); !strings.Contains(got, "2 fields NO LONGER protected") || !strings.Contains(got, "(11 flagged)") {
		t.Errorf("summary: %s", got)
	}
}

func TestCompareReorderAndDecryptNarrowing(t *testing.T) {
	a := mustCompile(t, `version: 1
routes:
  - name: narrow
    match: {methods: [POST], paths: ["/db/_find"]}
    encrypt: [{fields: [$.selector.email], key: contact, mode: deterministic}]
  - name: broad
    match: {methods: [POST], paths: ["/db/*"]}
    encrypt: [{fields: [$.ssn], key: pii}]
decrypt: {keys: [pii, contact]}
`)
	b := mustCompile(t, `version: 1
routes:
  - name: broad
    match: {methods: [POST], paths: ["/db/*"]}
    encrypt: [{fields: [$.ssn], key: pii}]
  - name: narrow
    match: {methods: [POST], paths: ["/db/_find"]}
    encrypt: [{fields: [$.selector.email], key: contact, mode: deterministic}]
decrypt: {keys: [pii], mask: {contact: last4}}
`)
	d := Compare(a, b)
	var reorder, narrowed bool
	for _, c := range d.Changes {
		switch {
		case c.Kind == RouteReordered && c.Route == "broad" && c.Flagged:
			reorder = true
		case c.Kind == DecryptChanged && c.Field == "contact" && !c.Flagged:
			narrowed = true // opened → masked reveals less
		}
	}
	if !reorder || !narrowed || len(d.Changes) != 2 {
		t.Errorf("changes:\n%s", changesText(d))
	}
}

func changesText(d *Diff) string {
	var b strings.Builder
	for _, c := range d.Changes {
		b.WriteString(string(c.Kind) + " " + c.Route + " " + c.Field + ": " + c.Message + "\n")
	}
	return b.String()
}
