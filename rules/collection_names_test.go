package rules

import "testing"

func TestCollectionNamesPerDatastore(t *testing.T) {
	for _, tc := range []struct {
		ds, name string
		ok       bool
	}{
		{"couchdb", "clinic", true}, {"couchdb", "/clinic", false}, {"couchdb", "Clinic", false},
		{"elasticsearch", "orders", true}, {"elasticsearch", "orders-*", true}, {"elasticsearch", ".ds-logs-*", true},
		{"elasticsearch", "Orders", false}, {"elasticsearch", "a,b", false}, {"elasticsearch", "_all", false},
		{"elasticsearch", "-x", false}, {"elasticsearch", "a b", false}, {"elasticsearch", "r:orders", false},
		{"elasticsearch", "a/b", false}, {"elasticsearch", "..", false}, {"elasticsearch", "a**", false},
		{"rest", "/customers", true}, {"rest", "/api/v1/Patients", true}, {"rest", "/tenants/*/records", true},
		{"rest", "customers", false}, {"rest", "/", false}, {"rest", "/customers/", false}, {"rest", "//x", false},
		{"rest", "/a/../b", false}, {"rest", "/a?b=1", false}, {"rest", "/a%20b", false},
	} {
		msg, _, hint := collectionNameProblemFor(tc.ds, tc.name)
		if (msg == "") != tc.ok {
			t.Errorf("%s %q: %q (%s)", tc.ds, tc.name, msg, hint)
		}
	}
}
