package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// clinicRules protects every database whose name starts with "clinic".
// Fields by name (any depth) and one dotted path; email searchable; three
// declared views (a view's keys come back opened only where the file
// declares them). The sidecar may open every key, so that what the
// application reads can be compared with a direct connection.
const clinicRules = `version: 2
datastore: couchdb
collections:
  - name: "clinic*"
    fields:
      name:        {key: pii, tags: [hipaa-identifier]}
      ssn:         {key: pii}
      email:       {key: contact, searchable: true}
      phone:       {key: contact}
      diagnosis:   {key: phi, nulls: encrypt}
      notes:       {key: phi}
      card.number: {key: card, tags: [pci-dss-3.5.1]}
    views:
      patients/by_email: {key: email}
      patients/by_ward_email: {key: [ward, email]}
      patients/count_by_email: {key: email}
decrypt:
  keys: [pii, phi, contact, card]
`

var clinicKeys = []string{"pii", "phi", "contact", "card"}

// Patients. Every protected value is distinctive enough to be searched
// for in the relay's record and the store.
const (
	annDoc = `{"_id":"p-ann","type":"patient","name":"Ann Example","ssn":"123-45-6789","email":"ann@example.com",
 "phone":"+1 555 0100","diagnosis":"J45.909 asthma","notes":{"text":"inhaler twice daily","dose_ug":400},
 "card":{"number":"4111111111111111","exp":"12/29"},"ward":"B","age":44,
 "contact":{"name":"Kin Example","email":"kin@example.net"},
 "visits":[{"date":"2026-01-02","diagnosis":"R05 cough visit"}],
 "aliases":[{"email":"ann.alias@example.com"}]}`
	bobDoc = `{"_id":"p-bob","type":"patient","name":"Bob Sample","ssn":"987-65-4321","email":"bob@example.org",
 "diagnosis":"E11.9 diabetes","ward":"C","age":61,"card":[{"number":"5500005555555559"}]}`
	cyDoc = `{"_id":"p-cy","type":"patient","name":"Cy Person","ssn":"111-22-3333","email":"cy@example.net",
 "diagnosis":null,"ward":"B","age":30}`
	// Types survive: a number, an array and an object as protected
	// values; text outside ASCII.
	typesDoc = `{"_id":"p-types","type":"patient","ssn":123456789,"name":["Zoë Ünïcode","Zed 😀 Emoji"],
 "notes":{"deep":{"flag":true,"list":[1,2.5,"Deep Note Text"]}},"email":"zoe@example.com","ward":"A","age":7}`
)

// patientSecrets are all the protected values above; none may reach the
// store.
var patientSecrets = []string{
	"Ann Example", "123-45-6789", "ann@example.com", "+1 555 0100", "J45.909 asthma",
	"inhaler twice daily", "4111111111111111", "Kin Example", "kin@example.net", "R05 cough visit",
	"ann.alias@example.com",
	"Bob Sample", "987-65-4321", "bob@example.org", "E11.9 diabetes", "5500005555555559",
	"Cy Person", "111-22-3333", "cy@example.net",
	"123456789", "Zoë Ünïcode", "Zed 😀 Emoji", "Deep Note Text", "zoe@example.com",
}

// jsonQuery encodes a JSON value as a query parameter value, as CouchDB
// clients do for key, keys, startkey and endkey.
func jsonQuery(v string) string { return url.QueryEscape(v) }

// createDesignDirectly writes a design document into a store without the
// sidecar (the sidecar refuses design documents by default: they carry
// code).
func createDesignDirectly(t *testing.T, storeURL, db, id, body string) {
	t.Helper()
	must(t, http.StatusCreated, "PUT", storeURL+"/"+db+"/"+id, body)
}

// patientsDesign declares the views the rules name, and two more.
const patientsDesign = `{"views":{
  "by_email":{"map":"function(doc){ if (doc.email) emit(doc.email, doc.ward); }"},
  "by_ward_email":{"map":"function(doc){ if (doc.ward && doc.email) emit([doc.ward, doc.email], null); }"},
  "count_by_email":{"map":"function(doc){ if (doc.email) emit(doc.email, 1); }","reduce":"_count"},
  "by_ward":{"map":"function(doc){ if (doc.ward) emit(doc.ward, doc.age); }"}
}}`

// seed creates db on the target and writes the patients.
func seed(tg *target, db string) {
	tg.do("create "+db, "PUT", "/"+db, "")
	for _, d := range []string{annDoc, bobDoc, cyDoc} {
		id := d[strings.Index(d, `"_id":"`)+7:]
		id = id[:strings.IndexByte(id, '"')]
		tg.do("seed "+id, "PUT", "/"+db+"/"+id, d)
	}
}
