package rules

import (
	"os"
	"strings"
	"testing"
)

const diffV2Old = `version: 2
datastore: testdb
hosts: [couch-a:5984, couch-b:5984]
collections:
  - name: clinic
    fields:
      ssn:         {key: pii}
      patient.ssn: {key: pii}
      card:        {key: card}
      card.number: {key: card}
      email:       {key: contact, searchable: true}
      diagnosis:   {key: phi, nulls: encrypt}
      notes:       {key: phi, tags: [hipaa], owner: records}
      iban:        {key: bank}
      phone:       {key: contact}
    attachments: refuse
    design_docs: allow
    views:
      patients/by_email: {key: email}
      patients/by_ward:  {key: ward}
  - name: archive
    fields: {ssn: {key: pii}}
allow: [config]
decrypt:
  keys: [pii]
`

func TestCompareV2(t *testing.T) {
	newRules := strings.NewReplacer(
		"hosts: [couch-a:5984, couch-b:5984]", "hosts: [couch-a:5984, couch-c:5984]",
		"      patient.ssn: {key: pii}\n", "", // still protected by ssn
		"      card.number: {key: card}\n", "", // still protected by card
		"      email:       {key: contact, searchable: true}", "      email:       {key: contact}",
		"      diagnosis:   {key: phi, nulls: encrypt}", "      diagnosis:   {key: phi}",
		"tags: [hipaa], owner: records", "tags: [hipaa, gdpr], owner: records",
		"      iban:        {key: bank}\n", "      accounts.iban: {key: bank}\n", // narrower: removed
		"      phone:       {key: contact}\n", "      contact:     {key: pii}\n", // phone inside contact? no: removed
		"    attachments: refuse", "    attachments: allow",
		"    design_docs: allow", "    design_docs: refuse",
		"      patients/by_ward:  {key: ward}\n", "",
		"  - name: archive\n    fields: {ssn: {key: pii}}\n", "  - name: billing\n    fields: {iban: {key: bank}}\n",
		"allow: [config]", "allow: [replicate]",
	).Replace(diffV2Old)
	d := Compare(mustCompile(t, diffV2Old), mustCompile(t, newRules))
	type want struct {
		kind    ChangeKind
		coll    string
		field   string
		flagged bool
		says    string
	}
	wants := []want{
		{HostsChanged, "", "couch-b:5984", true, "HOST REMOVED couch-b:5984"},
		{HostsChanged, "", "couch-c:5984", false, "host added couch-c:5984"},
		{AllowChanged, "", "replicate", true, "SERVER OPERATION ALLOWED replicate"},
		{AllowChanged, "", "config", false, "server operation config is now refused"},
		{FieldCovered, "clinic", "patient.ssn", false, "still protected by ssn (line 7)"},
		{FieldCovered, "clinic", "card.number", false, "still protected by card (line 8)"},
		{FieldChanged, "clinic", "email", true, "Lookups on it are now refused"},
		{FieldChanged, "clinic", "diagnosis", true, "null values are now left as null"},
		{FieldChanged, "clinic", "notes", false, "inventory: tags [hipaa, gdpr]"},
		{FieldRemoved, "clinic", "iban", true, "REMOVED PROTECTION clinic: iban"},
		{FieldRemoved, "clinic", "phone", true, "REMOVED PROTECTION clinic: phone"},
		{FieldAdded, "clinic", "accounts.iban", false, "newly protected"},
		{FieldAdded, "clinic", "contact", false, "newly protected"},
		{PolicyChanged, "clinic", "attachments", true, "ATTACHMENTS ALLOWED clinic"},
		{PolicyChanged, "clinic", "design documents", false, "design documents are now refused"},
		{ViewChanged, "clinic", "patients/by_ward", false, "no longer declared"},
		{CollectionRemoved, "archive", "", true, "COLLECTION REMOVED archive"},
		{CollectionAdded, "billing", "", false, "collection added billing"},
	}
	for _, w := range wants {
		t.Run(string(w.kind)+" "+w.coll+" "+w.field, func(t *testing.T) {
			for _, c := range d.Changes {
				if c.Kind == w.kind && c.Collection == w.coll && c.Field == w.field {
					if c.Flagged != w.flagged {
						t.Errorf("flagged = %v, want %v (%s)", c.Flagged, w.flagged, c.Message)
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
	d.WriteText(&out)
	for _, s := range []string{"Rules removed or replaced whose fields stay protected:", "  = clinic: card.number removed, still protected by card", "  ! ATTACHMENTS ALLOWED", "Summary: "} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, out.String())
		}
	}
	if strings.Contains(strings.ToLower(out.String()), "check whether") {
		t.Errorf("the diff asks the reviewer to decide:\n%s", out.String())
	}
}

// TestCompareDecidesCoverage: a removed rule whose values another rule
// still protects is reported as still protected, never as a removal, in
// both versions.
func TestCompareDecidesCoverage(t *testing.T) {
	v1 := func(fields string) string {
		return "version: 1\nroutes:\n  - name: w\n    match: {methods: [POST], paths: [\"/db/_bulk_docs\"]}\n    encrypt:\n      - fields: [" + fields + "]\n        key: pii\n"
	}
	d := Compare(mustCompile(t, v1(`"$.docs[*].ssn", "$..ssn", "$.docs[*].card.number", "$.docs[*].card"`)), mustCompile(t, v1(`"$..ssn", "$.docs[*].card"`)))
	if d.Flagged() != 0 || len(d.Changes) != 2 {
		t.Fatalf("changes:\n%s", changesText(d))
	}
	for _, c := range d.Changes {
		if c.Kind != FieldCovered {
			t.Errorf("%s", c.Message)
		}
	}
	if !strings.Contains(d.Changes[0].Message, "$.docs[*].ssn removed, still protected by $..ssn (same key and mode)") {
		t.Errorf("%s", d.Changes[0].Message)
	}
	// Covered by a rule under another key: a key change, flagged.
	d = Compare(mustCompile(t, v1(`"$.docs[*].ssn"`)), mustCompile(t, v1(`"$.docs[*].x"`)+"      - fields: [\"$..ssn\"]\n        key: other\n"))
	var changed bool
	for _, c := range d.Changes {
		if c.Kind == FieldChanged && c.Flagged && strings.Contains(c.Message, "now protected by $..ssn (key other, random)") {
			changed = true
		}
	}
	if !changed {
		t.Errorf("changes:\n%s", changesText(d))
	}
}

func TestCompareAcrossVersions(t *testing.T) {
	v1, err := os.ReadFile("testdata/v1/clinic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	old := mustCompile(t, string(v1))
	conv, err := Convert(old, ConvertOptions{Datastore: "testdb"})
	if err != nil {
		t.Fatal(err)
	}
	v2 := mustCompile(t, string(conv.YAML))

	// 1 to 2, converted: nothing lost, nothing flagged.
	d := Compare(old, v2)
	if d.Flagged() != 0 {
		t.Errorf("converted clinic: flagged changes:\n%s", changesText(d))
	}
	if d.Changes[0].Kind != VersionChanged {
		t.Errorf("first change: %+v", d.Changes[0])
	}
	// 1 to 2 with a field dropped: flagged, for single and bulk writes.
	dropped := mustCompile(t, strings.Replace(string(conv.YAML), "      diagnosis:   {key: phi}\n", "", 1))
	d = Compare(old, dropped)
	n := 0
	for _, c := range d.Changes {
		if c.Kind == FieldRemoved && strings.Contains(c.Message, "diagnosis") && c.Flagged {
			n++
		}
	}
	if n != 2 {
		t.Errorf("dropped diagnosis: %d flagged removals:\n%s", n, changesText(d))
	}
	// 2 to 1: deny by default ends (flagged), and a single name protects
	// the member at any depth, which $.ssn and $.docs[*].ssn do not.
	d = Compare(v2, old)
	if d.Changes[0].Kind != VersionChanged || !d.Changes[0].Flagged {
		t.Errorf("first change: %+v", d.Changes[0])
	}
	for _, c := range d.Changes[1:] {
		if c.Kind == FieldRemoved && (!c.Flagged || !strings.Contains(c.Message, "route patients-write selects only $.ssn, $.docs[*].ssn") && c.Field == "ssn") {
			t.Errorf("%s", c.Message)
		}
	}
	// Back to 1 with $..x rules: still protected on every document write.
	desc := mustCompile(t, `version: 1
routes:
  - name: w
    match: {methods: [POST, PUT], paths: ["/clinic", "/clinic/*", "/clinic/_bulk_docs"]}
    encrypt:
      - {fields: ["$..ssn", "$..name", "$..birth_date"], key: pii}
      - {fields: ["$..diagnosis", "$..notes"], key: phi}
      - {fields: ["$..email"], key: contact, mode: deterministic}
      - {fields: ["$..phone"], key: contact}
      - {fields: ["$..card_number"], key: card}
decrypt:
  keys: [pii, phi, contact]
  mask: {card: last4}
`)
	d = Compare(v2, desc)
	for _, c := range d.Changes[1:] {
		if c.Flagged || c.Kind != FieldCovered && c.Kind != RouteAdded {
			t.Errorf("%s", c.Message)
		}
	}
	// A REST file has nothing version 2 can carry: its routes are removed.
	pci, _ := os.ReadFile("testdata/v1/pci-payments.yaml")
	d = Compare(mustCompile(t, string(pci)), mustCompile(t, "version: 2\ndatastore: testdb\ncollections: [{name: orders, fields: {number: {key: card}}}]\ndecrypt: {keys: [pii], mask: {card: last4}}\n"))
	if d.Flagged() != 1 || d.Changes[1].Kind != RouteRemoved {
		t.Errorf("pci:\n%s", changesText(d))
	}
}
