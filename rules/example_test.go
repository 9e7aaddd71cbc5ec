package rules_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

func ExampleCompile() {
	src := `version: 1
routes:
  - name: patients-write
    match: {methods: [POST], paths: ["/clinic/_bulk_docs"]}
    encrypt:
      - fields: ["$.docs[*].ssn"]
        key: pii
decrypt:
  keys: [pii]
`
	plan, diags, err := rules.Compile("clinic.yaml", []byte(src))
	if err != nil {
		fmt.Println(err) // every error, one per line, with FILE:LINE:COL
		return
	}
	fmt.Println(len(diags), "warnings")
	route := plan.Match(rules.Request{Method: "POST", Path: "/clinic/_bulk_docs"})
	fmt.Println(route.Name, route.Keys, route.AcceptsContentType("application/json"))

	// Throw-away key, as `sidecrypt rules test` uses.
	material := make([]byte, fieldcrypt.DataKeySize)
	rand.Read(material)
	key, _ := fieldcrypt.NewDataKey("pii", 1, material)
	ring := fieldcrypt.NewStaticKeyring(key)
	out, _, _ := route.Body.EncryptBytes(context.Background(), []byte(`{"docs":[{"ssn":"123-45-6789"}]}`), ring, nil)
	fmt.Println(strings.Contains(string(out), "123-45-6789"))
	// Output:
	// 0 warnings
	// patients-write [pii] true
	// false
}

func ExampleCompile_errors() {
	src := `version: 1
routes:
  - name: write
    match: {methods: [POST], paths: ["/db/*"]}
    encrypt:
      - fields: [$.ssn]
        key: pii
        mode: determinstic
`
	_, diags, _ := rules.Compile("rules.yaml", []byte(src))
	for _, d := range diags {
		fmt.Println(d)
	}
	// Output:
	// rules.yaml:8:15: error: unknown mode "determinstic"
	// 	hint: did you mean "deterministic"? (modes are random (the default) and deterministic)
}

func ExampleCompare() {
	oldPlan, _, _ := rules.Compile("old.yaml", []byte(`version: 1
routes:
  - name: write
    match: {methods: [POST], paths: ["/db/*"]}
    encrypt: [{fields: [$.ssn, $.diagnosis], key: pii}]
`))
	newPlan, _, _ := rules.Compile("new.yaml", []byte(`version: 1
routes:
  - name: write
    match: {methods: [POST], paths: ["/db/*"]}
    encrypt: [{fields: [$.ssn], key: pii}]
`))
	d := rules.Compare(oldPlan, newPlan)
	for _, c := range d.Changes {
		fmt.Println(c.Flagged, c.Message)
	}
	fmt.Println(d.Summary())
	// Output:
	// true REMOVED PROTECTION write: $.diagnosis (was key pii, random): it reaches the datastore in plaintext
	// 1 field NO LONGER protected (1 flagged)
}

func ExampleNewFileSource() {
	src, err := rules.NewFileSource("testdata/example.yaml", rules.FileSourceOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The proxy: one Current() per request, used for the whole request.
	plan := src.Current()
	fmt.Println(plan.Match(rules.Request{Method: "PUT", Path: "/clinic/p1"}).Name)
	// Serve runs src.Run(ctx) in the background and calls
	// src.Reload(ctx) on SIGHUP.
	// Output:
	// patients-write
}

func ExampleCompile_version2() {
	src := `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn:         {key: pii}
      card.number: {key: card}
      email:       {key: contact, searchable: true}
decrypt:
  keys: [pii, contact]
  mask: {card: last4}
`
	plan, _, err := rules.Compile("clinic.yaml", []byte(src))
	if err != nil {
		fmt.Println(err)
		return
	}
	c := plan.Schema.Match("clinic")
	for _, f := range c.Fields {
		fmt.Println(f.Name, f.AnyDepth, f.Key, f.Mode)
	}
	// The proxy asks the profile about every request.
	op := plan.Profile.Classify(&datastore.Request{Method: "PUT", Path: "/clinic/_design%2Fapp", HasBody: true})
	fmt.Println(op.Endpoint, op.Refusal.Code)
	// Output:
	// ssn true pii random
	// card.number false card random
	// email true contact deterministic
	// couchdb.design unprotected_operation
}

func ExampleConvert() {
	v1, _, _ := rules.Compile("old.yaml", []byte(`version: 1
routes:
  - name: write
    match: {methods: [POST, PUT], paths: ["/clinic/*", "/clinic/_bulk_docs"]}
    encrypt:
      - fields: ["$.ssn", "$.docs[*].ssn"]
        key: pii
`))
	conv, _ := rules.Convert(v1, rules.ConvertOptions{})
	for _, line := range strings.Split(string(conv.YAML), "\n") {
		if !strings.HasPrefix(line, "#") && line != "" {
			fmt.Println(line)
		}
	}
	fmt.Println(conv.Complete())
	// Output:
	// version: 2
	// datastore: couchdb
	// collections:
	//   - name: clinic
	//     fields:
	//       ssn: {key: pii}
	// true
}
