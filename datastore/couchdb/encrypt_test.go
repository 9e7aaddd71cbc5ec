package couchdb

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// encrypt classifies a request and runs its body check and document
// encryptor, as the proxy does.
func encrypt(t *testing.T, p *Profile, method, path, body string) (string, error) {
	t.Helper()
	op := p.Classify(request(method, path, "", true))
	if op.Refusal != nil {
		t.Fatalf("%s %s refused: %v", method, path, op.Refusal)
	}
	if op.Body != datastore.BodyEncrypt || op.Check == nil {
		t.Fatalf("%s %s: body rule %v, check %v", method, path, op.Body, op.Check != nil)
	}
	if err := op.Check([]byte(body)); err != nil {
		return "", err
	}
	out, _, err := op.Encryptor.EncryptBytes(context.Background(), []byte(body), keyring(t), nil)
	return string(out), err
}

// tokenPattern matches a token as JSON text.
var tokenPattern = regexp.MustCompile(`"` + regexp.QuoteMeta(fieldcrypt.TokenPrefix) + `[A-Za-z0-9_-]+"`)

func TestDocumentWrites(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, method, path, body string
		refused                  bool
		shape                    bool     // refused by the shape check: 400 bad_request
		plain                    []string // must not appear in the output
		kept                     []string // must appear
	}{
		{name: "put", method: "PUT", path: "/clinic/doc", body: `{"ssn":"123-45","email":"a@b","ward":"B"}`, plain: []string{"123-45", "a@b"}, kept: []string{`"ward":"B"`}},
		{name: "post", method: "POST", path: "/clinic", body: `{"patient":{"name":"Ann"},"diagnosis":null}`, plain: []string{"Ann", "null"}},
		{name: "put: a bare array", method: "PUT", path: "/clinic/doc", body: `[{"ssn":"111","patient":{"name":"Ann"}}]`, shape: true},
		{name: "put: a string", method: "PUT", path: "/clinic/doc", body: `"Ann Example"`, shape: true},
		{name: "put: a number", method: "PUT", path: "/clinic/doc", body: ` 4111111111111111`, shape: true},
		{name: "post: a string", method: "POST", path: "/clinic", body: `"Ann Example"`, shape: true},
		{name: "local: an array", method: "PUT", path: "/clinic/_local/x", body: "\n\t[\"Ann Example\"]", shape: true},
		{name: "local", method: "PUT", path: "/clinic/_local/cp", body: `{"ssn":"123-45"}`, plain: []string{"123-45"}},
		{name: "stub attachment", method: "PUT", path: "/clinic/doc", body: `{"ssn":"9","_attachments":{"a.txt":{"stub":true,"length":2,"digest":"md5-x"}}}`, plain: []string{`"9"`}, kept: []string{`"stub":true`}},
		{name: "null data", method: "PUT", path: "/clinic/doc", body: `{"_attachments":{"a":{"data":null}}}`},
		{name: "follows false", method: "PUT", path: "/clinic/doc", body: `{"_attachments":{"a":{"follows":false}}}`},
		{name: "ordinary id", method: "PUT", path: "/clinic/doc", body: `{"_id":"doc","_rev":"1-a"}`, kept: []string{`"_id":"doc"`}},
		{name: "local id in body", method: "PUT", path: "/clinic/doc", body: `{"_id":"_local/x"}`},
		{name: "nested _id is data", method: "PUT", path: "/clinic/doc", body: `{"ref":{"_id":"_design/x"}}`},
		{name: "inline attachment", method: "PUT", path: "/clinic/doc", body: `{"ssn":"1","_attachments":{"a.json":{"content_type":"application/json","data":"eyJzc24iOiIxIn0="}}}`, refused: true},
		{name: "inline attachment in array", method: "PUT", path: "/clinic/doc", body: `{"_attachments":[{"data":"eA=="}]}`, refused: true},
		{name: "follows", method: "PUT", path: "/clinic/doc", body: `{"_attachments":{"a":{"follows":true,"length":3}}}`, refused: true},
		{name: "inline attachment on post", method: "POST", path: "/clinic", body: `{"_attachments":{"a":{"data":"eA=="}}}`, refused: true},
		{name: "inline attachment on local", method: "PUT", path: "/clinic/_local/x", body: `{"_attachments":{"a":{"data":"eA=="}}}`, refused: true},
		{name: "design id on put", method: "PUT", path: "/clinic/doc", body: `{"_id":"_design/x","views":{}}`, refused: true},
		{name: "design id escaped", method: "PUT", path: "/clinic/doc", body: `{"_id":"\u005fdesign/x"}`, refused: true},
		{name: "design id on post", method: "POST", path: "/clinic", body: `{"_id":"_design/x"}`, refused: true},
		{name: "design id on local", method: "PUT", path: "/clinic/_local/x", body: `{"_id":"_design/x"}`, refused: true},

		{name: "bulk", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"ssn":"111"},{"email":"a@b","_deleted":false}],"new_edits":false}`, plain: []string{"111", "a@b"}, kept: []string{`"new_edits":false`}},
		{name: "bulk: a bare array", method: "POST", path: "/clinic/_bulk_docs", body: `[{"ssn":"111","patient":{"name":"Ann"}}]`, shape: true},
		{name: "bulk: docs as an object", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":{"a":{"ssn":"111","patient":{"name":"Ann"}}}}`, shape: true},
		{name: "bulk: nested arrays", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[[{"ssn":"111","patient":{"name":"Ann"}}]]}`, shape: true},
		{name: "bulk: escaped docs", method: "POST", path: "/clinic/_bulk_docs", body: `{"\u0064ocs":[{"ssn":"111"}]}`, plain: []string{"111"}},
		{name: "bulk: a document at the root", method: "POST", path: "/clinic/_bulk_docs", body: `{"ssn":"111","patient":{"name":"Ann"}}`, shape: true},
		{name: "bulk stub", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_attachments":{"a":{"stub":true}}}]}`},
		{name: "bulk inline attachment", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_id":"a"},{"_attachments":{"x":{"data":"eA=="}}}]}`, refused: true},
		{name: "bulk follows", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_attachments":{"x":{"follows":true}}}]}`, refused: true},
		{name: "bulk design id", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_id":"ok"},{"_id":"_design/x","_deleted":true}]}`, refused: true},

		{name: "allowed attachment", method: "PUT", path: "/tenant-1/doc", body: `{"ssn":"7","_attachments":{"a":{"data":"eA=="}}}`, plain: []string{`"7"`}, kept: []string{`"data":"eA=="`}},
		{name: "allowed design id", method: "POST", path: "/tenant-1/_bulk_docs", body: `{"docs":[{"_id":"_design/x","ssn":"7"}]}`, plain: []string{`"7"`}},
		{name: "allowed design doc put", method: "PUT", path: "/tenant-1/_design/x", body: `{"views":{},"ssn":"7"}`, plain: []string{`"7"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := encrypt(t, p, tc.method, tc.path, tc.body)
			if tc.shape {
				if refusalCode(err) != codeBad || strings.Contains(err.Error(), "Ann") || strings.Contains(err.Error(), "111") {
					t.Fatalf("err = %v, want a bad_request refusal that names no value", err)
				}
				return
			}
			if tc.refused {
				var r *datastore.Refusal
				if !errors.Is(err, fieldcrypt.ErrFieldRefused) || !errors.As(err, &r) || r.Code != codeUnprotected {
					t.Fatalf("err = %v, want a field refusal", err)
				}
				if !strings.HasPrefix(r.Message, "couchdb: ") {
					t.Errorf("message %q", r.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Tokens are taken out first, so that "111" or "Ann" found by
			// chance inside one's base64 is not reported.
			outside := tokenPattern.ReplaceAllString(out, `"TOKEN"`)
			for _, s := range tc.plain {
				if strings.Contains(outside, s) {
					t.Errorf("%s left in %s", s, out)
				}
			}
			for _, s := range tc.kept {
				if !strings.Contains(out, s) {
					t.Errorf("%s missing from %s", s, out)
				}
			}
		})
	}
}

// Check rules come before field rules: a protected field named like an
// attachment member must not turn a refusal into an encryption.
func TestCheckRulesComeFirst(t *testing.T) {
	s := &datastore.Schema{Datastore: "couchdb", Collections: []*datastore.Collection{{
		Name: "db",
		Fields: []*datastore.Field{
			{Name: "data", Path: []string{"data"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
			{Name: "_id", Path: []string{"_id"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
		},
	}}}
	prof, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	p := prof.(*Profile)
	for _, body := range []string{`{"_attachments":{"a":{"data":"eA=="}}}`, `{"_id":"_design/x"}`} {
		if _, err := encrypt(t, p, "PUT", "/db/doc", body); !errors.Is(err, fieldcrypt.ErrFieldRefused) {
			t.Errorf("%s: err = %v, want a refusal", body, err)
		}
	}
	if out, err := encrypt(t, p, "PUT", "/db/doc", `{"data":"x"}`); err != nil || strings.Contains(out, `"x"`) {
		t.Errorf("data field: %s %v", out, err)
	}
}
