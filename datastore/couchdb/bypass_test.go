package couchdb

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// The bypasses the attacker suite (internal/e2e, issue 11) found, each
// with the exact request that got a value past the profile, and the
// well-formed requests next to them that must keep working.

// secret is in every attack; no refusal message may carry it.
const secret = "123-45-6789"

// Query parameters: an allow-list per endpoint, typed values.
func TestQueryParameters(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		// The attacks (wire and access log).
		{name: "unknown parameter on a document", method: "GET", path: "/clinic/p-ann", query: "ssn=" + secret, code: codeBad},
		{name: "view key in upper case", method: "GET", path: "/clinic/_design/app/_view/by_email", query: `KEY="ann@example.com"`, code: codeBad},
		{name: "view key hidden in an escaped name", method: "GET", path: "/clinic/_design/app/_view/by_email", query: `key%3D"ann@example.com"`, code: codeBad},
		{name: "unknown parameter on the database", method: "GET", path: "/clinic", query: "ssn=" + secret, code: codeBad},
		{name: "unknown parameter on _find", method: "POST", path: "/clinic/_find", query: "ssn=" + secret, body: true, code: codeBad},
		{name: "unknown parameter on _bulk_docs", method: "POST", path: "/clinic/_bulk_docs", query: "ssn=" + secret, body: true, code: codeBad},
		{name: "unknown parameter on a document write", method: "PUT", path: "/clinic/doc", query: "ssn=" + secret, body: true, code: codeBad},
		{name: "unknown parameter on an attachment", method: "GET", path: "/clinic/doc/a.txt", query: "ssn=" + secret, code: codeBad},
		{name: "unknown parameter on _all_docs", method: "GET", path: "/clinic/_all_docs", query: "ssn=" + secret, code: codeBad},
		{name: "unknown parameter on _changes", method: "GET", path: "/clinic/_changes", query: "ssn=" + secret, code: codeBad},
		{name: "unknown parameter on _security", method: "GET", path: "/clinic/_security", query: "ssn=" + secret, code: codeBad},
		{name: "a name without a value", method: "GET", path: "/clinic/p-ann", query: secret, code: codeBad},
		{name: "empty name", method: "GET", path: "/clinic/p-ann", query: "=" + secret, code: codeBad},
		{name: "bracketed known name", method: "GET", path: "/clinic/p-ann", query: "rev[ssn]=" + secret, code: codeBad},
		{name: "escaped bracketed known name", method: "GET", path: "/clinic/p-ann", query: "rev%5B0%5D=" + secret, code: codeBad},
		{name: "semicolon", method: "GET", path: "/clinic/p-ann", query: "revs=true;ssn=" + secret, code: codeBad},
		{name: "semicolon inside a free value", method: "GET", path: "/clinic/p-ann", query: "rev=1-a;x", code: codeBad},
		{name: "method override", method: "POST", path: "/clinic/_find", query: "_method=PUT", body: true, code: codeUnprotected},
		{name: "rewrite named in a query wins", method: "GET", path: "/clinic/doc", query: "x=/other/_design/app/_rewrite/doc", ep: EpRewrite, code: codeUnprotected},

		// Typed values.
		{name: "boolean", method: "GET", path: "/clinic/p-ann", query: "conflicts=true&revs=false", rule: none},
		{name: "boolean with a value", method: "GET", path: "/clinic/p-ann", query: "conflicts=Ann+Example", code: codeBad},
		{name: "boolean in upper case", method: "GET", path: "/clinic/p-ann", query: "conflicts=TRUE", code: codeBad},
		{name: "boolean without =", method: "GET", path: "/clinic/p-ann", query: "conflicts", code: codeBad},
		{name: "integer", method: "GET", path: "/clinic/_all_docs", query: "limit=10&skip=0", rule: none},
		{name: "integer with a value", method: "GET", path: "/clinic/_all_docs", query: "limit=" + secret, code: codeBad},
		{name: "integer: a card number", method: "GET", path: "/clinic/_all_docs", query: "skip=4111111111111111", code: codeBad},
		{name: "integer: leading zero", method: "GET", path: "/clinic/_all_docs", query: "limit=007", code: codeBad},
		{name: "integer: negative", method: "GET", path: "/clinic/_all_docs", query: "limit=-1", code: codeBad},
		{name: "integer: exponent", method: "GET", path: "/clinic/_all_docs", query: "limit=1e3", code: codeBad},
		{name: "heartbeat true", method: "GET", path: "/clinic/_changes", query: "feed=continuous&heartbeat=true", rule: none},
		{name: "heartbeat with a value", method: "GET", path: "/clinic/_changes", query: "feed=continuous&heartbeat=" + secret, code: codeBad},
		{name: "enum", method: "GET", path: "/clinic/_changes", query: "feed=longpoll&style=all_docs", rule: none},
		{name: "enum with a value", method: "GET", path: "/clinic/_changes", query: "feed=" + secret, code: codeBad},
		{name: "stale", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: "stale=update_after&update=lazy", rule: none},
		{name: "stale with a value", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: "stale=" + secret, code: codeBad},
		{name: "batch", method: "PUT", path: "/clinic/doc", query: "batch=ok&new_edits=false&rev=1-a&w=2", body: true, rule: enc},
		{name: "batch with a value", method: "PUT", path: "/clinic/doc", query: "batch=" + secret, body: true, code: codeBad},
		{name: "free text: rev, since, docids", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: "startkey_docid=a%2Fb&end_key_doc_id=z", rule: none},
		{name: "open_revs all", method: "GET", path: "/clinic/p-ann", query: "open_revs=all", rule: none},
		{name: "open_revs list", method: "GET", path: "/clinic/p-ann", query: `open_revs=["1-a","2-b"]`, rule: none},
		{name: "open_revs object", method: "GET", path: "/clinic/p-ann", query: `open_revs={"ssn":"1"}`, code: codeBad},
		{name: "atts_since list of strings", method: "GET", path: "/clinic/p-ann", query: `atts_since=["1-a"]`, rule: none},
		{name: "atts_since of numbers", method: "GET", path: "/clinic/p-ann", query: `atts_since=[123456789]`, code: codeBad},
		{name: "all_docs key is an id", method: "GET", path: "/clinic/_all_docs", query: `key="p-ann"&include_docs=true`, rule: none},
		{name: "all_docs keys are ids", method: "GET", path: "/clinic/_all_docs", query: `keys=["a","b"]`, rule: none},
		{name: "all_docs key is an object", method: "GET", path: "/clinic/_all_docs", query: `key={"ssn":"1"}`, code: codeBad},
		{name: "all_docs key not JSON", method: "GET", path: "/clinic/_all_docs", query: `key=p-ann`, code: codeBad},
		{name: "all_docs reduce", method: "GET", path: "/clinic/_all_docs", query: `reduce=true`, code: codeBad},
		{name: "plain view key is JSON", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: `key="B"&reduce=false&group_level=2`, rule: none},
		{name: "plain view key not JSON", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: `key=B`, code: codeBad},
		{name: "plain view keys not an array", method: "GET", path: "/clinic/_design/app/_view/by_ward", query: `keys="B"`, code: codeBad},
		{name: "cache buster", method: "GET", path: "/clinic/p-ann", query: "_nonce=1767225600000", rule: none},
		{name: "cache buster with a value", method: "GET", path: "/clinic/p-ann", query: "_nonce=" + secret, code: codeBad},
		{name: "cache buster on a write", method: "PUT", path: "/clinic/p-ann", query: "_nonce=1", body: true, code: codeBad},
		{name: "database create", method: "PUT", path: "/clinic", query: "q=8&n=3&partitioned=false", rule: none},
		{name: "database delete takes none", method: "DELETE", path: "/clinic", query: "rev=1", code: codeBad},
		{name: "bulk_get", method: "POST", path: "/clinic/_bulk_get", query: "revs=true&latest=true&attachments=false", body: true, rule: jsonB},
		{name: "index list", method: "GET", path: "/clinic/_index", query: "limit=10", rule: none},
		{name: "index delete quorum", method: "DELETE", path: "/clinic/_index/d/json/n", query: "w=3", rule: none},
		{name: "id parameter where design documents are allowed", method: "PUT", path: "/tenant-1/doc", query: "id=x", body: true, rule: enc},
		{name: "unprotected database takes anything", method: "GET", path: "/other/doc", query: "ssn=" + secret, rule: pass},

		// A CORS preflight carries the query of the request it announces.
		{name: "preflight without a query", method: "OPTIONS", path: "/clinic/p-ann", ep: EpOptions, rule: none},
		{name: "preflight with known parameters", method: "OPTIONS", path: "/clinic/p-ann", query: "rev=1-a", hdr: []string{"Access-Control-Request-Method", "PUT"}, ep: EpOptions, rule: none},
		{name: "preflight with an unknown parameter", method: "OPTIONS", path: "/clinic/p-ann", query: "ssn=" + secret, hdr: []string{"Access-Control-Request-Method", "PUT"}, code: codeBad},
		{name: "preflight, read for GET", method: "OPTIONS", path: "/clinic/_all_docs", query: "include_docs=true", ep: EpOptions, rule: none},
		{name: "preflight of a write parameter read for GET", method: "OPTIONS", path: "/clinic/p-ann", query: "batch=ok", code: codeBad},
		{name: "preflight of a refused endpoint", method: "OPTIONS", path: "/clinic/_design/x/_update/f", query: "ssn=" + secret, hdr: []string{"Access-Control-Request-Method", "POST"}, code: codeBad},
	})
}

// Messages never carry a value, and name a parameter or member only when
// it is a plain lower-case identifier.
func TestBypassMessagesCarryNoValue(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		method, path, query string
		named               string // the name the message must give, or ""
	}{
		{"GET", "/clinic/p-ann", "ssn=" + secret, "ssn"},
		{"GET", "/clinic/p-ann", "Ann+Example=1", ""},
		{"GET", "/clinic/p-ann", secret + "=1", ""},
		{"GET", "/clinic/_design/app/_view/by_email", `key%3D"` + secret + `"`, ""},
		{"GET", "/clinic/_design/app/_view/by_email", `KEY="` + secret + `"`, ""},
		{"GET", "/clinic/_all_docs", "limit=" + secret, "limit"},
		{"GET", "/clinic/_changes", "feed=" + secret, "feed"},
	} {
		op := p.Classify(request(tc.method, tc.path, tc.query, false))
		if op.Refusal == nil {
			t.Fatalf("%s ?%s not refused", tc.path, tc.query)
		}
		msg := op.Refusal.Message
		if strings.Contains(msg, secret) || strings.Contains(msg, "Ann") || strings.Contains(msg, "KEY") {
			t.Errorf("?%s: message quotes a value or an arbitrary name: %s", tc.query, msg)
		}
		if tc.named != "" && !strings.Contains(msg, " "+tc.named) {
			t.Errorf("?%s: message does not name %s: %s", tc.query, tc.named, msg)
		}
	}
}

// bodyCheck classifies a request with a body and runs what the proxy runs
// on it before forwarding: the Check, or the Transform.
func bodyCheck(t *testing.T, p *Profile, method, path, query, body string) error {
	t.Helper()
	op := p.Classify(request(method, path, query, true))
	if op.Refusal != nil {
		return op.Refusal
	}
	switch {
	case op.Body == datastore.BodyNone:
		return errUnexpectedBody
	case op.Body == datastore.BodyJSON && op.Check != nil:
		return op.Check([]byte(body))
	case op.Body == datastore.BodyEncrypt && op.Check != nil:
		return op.Check([]byte(body))
	case op.Body == datastore.BodyTransform:
		_, err := op.Transform(t.Context(), []byte(body), keyring(t))
		return err
	}
	t.Fatalf("%s %s: body rule %v without a check: the body would be forwarded unread", method, path, op.Body)
	return nil
}

// errUnexpectedBody stands for the proxy's refusal of a body on a
// BodyNone operation.
var errUnexpectedBody = &datastore.Refusal{Status: 400, Code: codeUnexpectedBody}

// Bodies the profile forwarded unread, and bodies of an unexpected shape.
func TestBodyShapes(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, method, path, query, body string
		code                            string // "" passes
		err                             error  // a fieldcrypt sentinel
	}{
		// The attacks, exact bodies.
		{name: "_security with a protected value", method: "PUT", path: "/clinic/_security", body: `{"members":{"names":[]},"ssn":"123-45-6789"}`, code: codeBad},
		{name: "database PUT with a document", method: "PUT", path: "/clinic", body: `{"name":"Ann Example","ssn":"123-45-6789"}`, code: codeUnexpectedBody},
		{name: "_bulk_get with a protected member", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":[{"id":"p-ann","ssn":"123-45-6789"}]}`, code: codeBad},
		{name: "_revs_diff with a protected member", method: "POST", path: "/clinic/_revs_diff", body: `{"p-ann":["1-x"],"x":{"ssn":"123-45-6789"}}`, code: codeBad},
		{name: "_purge with a protected value", method: "POST", path: "/clinic/_purge", body: `{"p-ann":["1-x"],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_all_docs with a protected member", method: "POST", path: "/clinic/_all_docs", body: `{"keys":["p-ann"],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_compact with a body", method: "POST", path: "/clinic/_compact", body: `{"ssn":"123-45-6789"}`, code: codeUnexpectedBody},
		{name: "_index/_bulk_delete with a protected member", method: "POST", path: "/clinic/_index/_bulk_delete", body: `{"docids":["x"],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_bulk_docs with an extra member", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[],"card":{"number":"4111111111111111"}}`, code: codeBad},
		{name: "_bulk_docs with a document at the top", method: "POST", path: "/clinic/_bulk_docs", body: `{"_id":"body-9","card":{"number":"4111111111111111"},"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_bulk_docs as an array", method: "POST", path: "/clinic/_bulk_docs", body: `[{"_id":"body-11","card":{"number":"4111111111111111"}}]`, code: codeBad},
		{name: "document that is a string", method: "PUT", path: "/clinic/body-17", body: `"Ann Example"`, code: codeBad},

		// _security, settings.
		{name: "_security", method: "PUT", path: "/clinic/_security", body: `{"admins":{"names":["a"],"roles":["_admin"]},"members":{"names":[],"roles":[]}}`},
		{name: "_security empty", method: "PUT", path: "/clinic/_security", body: `{}`},
		{name: "_security member inside members", method: "PUT", path: "/clinic/_security", body: `{"members":{"names":[],"ssn":"123-45-6789"}}`, code: codeBad},
		{name: "_security object in names", method: "PUT", path: "/clinic/_security", body: `{"members":{"names":[{"ssn":"123-45-6789"}]}}`, code: codeBad},
		{name: "_security members not an object", method: "PUT", path: "/clinic/_security", body: `{"members":["123-45-6789"]}`, code: codeBad},
		{name: "_security an array", method: "PUT", path: "/clinic/_security", body: `["123-45-6789"]`, code: codeBad},
		{name: "_security duplicate member", method: "PUT", path: "/clinic/_security", body: `{"members":{},"members":{"ssn":1}}`, err: fieldcrypt.ErrDuplicateKey},
		{name: "_security escaped member name", method: "PUT", path: "/clinic/_security", body: `{"m\u0065mbers":{"names":["a"]}}`},
		{name: "_revs_limit", method: "PUT", path: "/clinic/_revs_limit", body: `1000`},
		{name: "_revs_limit a string", method: "PUT", path: "/clinic/_revs_limit", body: `"123-45-6789"`, code: codeBad},
		{name: "_revs_limit zero", method: "PUT", path: "/clinic/_revs_limit", body: `0`, code: codeBad},
		{name: "_revs_limit a card number", method: "PUT", path: "/clinic/_revs_limit", body: `4111111111111111`, code: codeBad},
		{name: "_purged_infos_limit", method: "PUT", path: "/clinic/_purged_infos_limit", body: ` 1500 `},
		{name: "_purged_infos_limit object", method: "PUT", path: "/clinic/_purged_infos_limit", body: `{"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_auto_purge", method: "PUT", path: "/clinic/_auto_purge", body: `{"deleted_document_ttl":"3_hour"}`},
		{name: "_auto_purge value", method: "PUT", path: "/clinic/_auto_purge", body: `{"deleted_document_ttl":"123-45-6789"}`, code: codeBad},
		{name: "_auto_purge member", method: "PUT", path: "/clinic/_auto_purge", body: `{"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_compact {}", method: "POST", path: "/clinic/_compact", body: ` { } `},
		{name: "_compact ddoc {}", method: "POST", path: "/clinic/_compact/app", body: `{}`},
		{name: "_view_cleanup string", method: "POST", path: "/clinic/_view_cleanup", body: `"123-45-6789"`, code: codeUnexpectedBody},
		{name: "_ensure_full_commit member", method: "POST", path: "/clinic/_ensure_full_commit", body: `{"ssn":"123-45-6789"}`, code: codeUnexpectedBody},

		// Ids and revisions.
		{name: "_bulk_get", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":[{"id":"a"},{"id":"b","rev":"1-x","atts_since":["1-y"]}]}`},
		{name: "_bulk_get id object", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":[{"id":{"ssn":"123-45-6789"}}]}`, code: codeBad},
		{name: "_bulk_get top member", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":[],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_bulk_get docs string", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":"123-45-6789"}`, code: codeBad},
		{name: "_bulk_get element string", method: "POST", path: "/clinic/_bulk_get", body: `{"docs":["123-45-6789"]}`, code: codeBad},
		{name: "_revs_diff", method: "POST", path: "/clinic/_revs_diff", body: `{"a":["1-x","2-y"],"b/c":[]}`},
		{name: "_revs_diff value string", method: "POST", path: "/clinic/_revs_diff", body: `{"a":"123-45-6789"}`, code: codeBad},
		{name: "_revs_diff number in revs", method: "POST", path: "/clinic/_revs_diff", body: `{"a":[123456789]}`, code: codeBad},
		{name: "_missing_revs array body", method: "POST", path: "/clinic/_missing_revs", body: `["123-45-6789"]`, code: codeBad},
		{name: "_purge", method: "POST", path: "/clinic/_purge", body: `{"a":["1-x"]}`},
		{name: "_index/_bulk_delete", method: "POST", path: "/clinic/_index/_bulk_delete", body: `{"docids":["_design/a"],"w":2}`},
		{name: "_index/_bulk_delete w string", method: "POST", path: "/clinic/_index/_bulk_delete", body: `{"docids":[],"w":"123-45-6789"}`, code: codeBad},

		// _all_docs and views: typed options.
		{name: "_all_docs options", method: "POST", path: "/clinic/_all_docs", body: `{"keys":["a","b"],"include_docs":true,"limit":2,"conflicts":false,"stale":"ok","update":"lazy"}`},
		{name: "_all_docs option value", method: "POST", path: "/clinic/_all_docs", body: `{"keys":["a"],"include_docs":"123-45-6789"}`, code: codeBad},
		{name: "_all_docs keys not ids", method: "POST", path: "/clinic/_all_docs", body: `{"keys":[{"ssn":"123-45-6789"}]}`, code: codeBad},
		{name: "_all_docs cache buster in a body", method: "POST", path: "/clinic/_all_docs", body: `{"_nonce":1}`, code: codeBad},
		{name: "_all_docs queries", method: "POST", path: "/clinic/_all_docs/queries", body: `{"queries":[{"keys":["a"]},{"limit":1,"skip":2}]}`},
		{name: "_all_docs queries member", method: "POST", path: "/clinic/_all_docs/queries", body: `{"queries":[{"keys":["a"],"ssn":"123-45-6789"}]}`, code: codeBad},
		{name: "_all_docs queries top member", method: "POST", path: "/clinic/_all_docs/queries", body: `{"queries":[],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "_all_docs queries not objects", method: "POST", path: "/clinic/_all_docs/queries", body: `{"queries":["123-45-6789"]}`, code: codeBad},
		{name: "_design_docs", method: "POST", path: "/clinic/_design_docs", body: `{"keys":["_design/a"]}`},
		{name: "plain view body", method: "POST", path: "/clinic/_design/app/_view/by_ward", body: `{"keys":["B"],"group":true,"reduce":true,"group_level":1}`},
		{name: "plain view body member", method: "POST", path: "/clinic/_design/app/_view/by_ward", body: `{"keys":["B"],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "declared view body member", method: "POST", path: "/clinic/_design/app/_view/by_email", body: `{"keys":["a@b"],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "declared view option value", method: "POST", path: "/clinic/_design/app/_view/by_email", body: `{"key":"a@b","limit":"123-45-6789"}`, code: codeBad},
		{name: "declared view queries member", method: "POST", path: "/clinic/_design/app/_view/by_email/queries", body: `{"queries":[{"keys":["a@b"]}],"ssn":"123-45-6789"}`, code: codeBad},
		{name: "undeclared view body member", method: "POST", path: "/clinic/_design/app/_view/nope", body: `{"limit":1,"ssn":"123-45-6789"}`, code: codeBad},
		{name: "undeclared view body keys", method: "POST", path: "/clinic/_design/app/_view/nope", body: `{"keys":["123-45-6789"]}`, code: codeUnprotected},

		// _changes.
		{name: "_changes doc_ids", method: "POST", path: "/clinic/_changes", query: "filter=_doc_ids", body: `{"doc_ids":["a"]}`},
		{name: "_changes doc_ids string", method: "POST", path: "/clinic/_changes", query: "filter=_doc_ids", body: `{"doc_ids":"123-45-6789"}`, code: codeBad},
		{name: "_changes doc_ids objects", method: "POST", path: "/clinic/_changes", query: "filter=_doc_ids", body: `{"doc_ids":[{"ssn":"123-45-6789"}]}`, code: codeBad},

		// Documents and _bulk_docs.
		{name: "document", method: "PUT", path: "/clinic/doc", body: ` {"ssn":"123-45-6789"}`},
		{name: "document array", method: "PUT", path: "/clinic/doc", body: `[{"ssn":"123-45-6789"}]`, code: codeBad},
		{name: "document number", method: "POST", path: "/clinic", body: `4111111111111111`, code: codeBad},
		{name: "document null", method: "PUT", path: "/clinic/_local/x", body: `null`, code: codeBad},
		{name: "document blank", method: "PUT", path: "/clinic/doc", body: "  \n", err: fieldcrypt.ErrSyntax},
		{name: "design document string", method: "PUT", path: "/tenant-1/_design/x", body: `"Ann Example"`, code: codeBad},
		{name: "bulk string in docs", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":["Ann Example"]}`, code: codeBad},
		{name: "bulk new_edits string", method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[],"new_edits":"123-45-6789"}`, code: codeBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bodyCheck(t, p, tc.method, tc.path, tc.query, tc.body)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			case tc.code == "":
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			default:
				if got := refusalCode(err); got != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "Ann") || strings.Contains(err.Error(), "4111") {
					t.Errorf("message quotes a value: %v", err)
				}
				if tc.code != codeUnexpectedBody && !strings.HasPrefix(err.(*datastore.Refusal).Message, "couchdb: ") {
					t.Errorf("message does not name the package: %v", err)
				}
			}
		})
	}
}

// Every body the profile lets through in a protected database is either
// sealed (BodyEncrypt), transformed (BodyTransform) or checked
// (BodyJSON with a Check), or is an attachment the file allows
// (BodyOpaque): no BodyJSON is forwarded unread any more.
func TestNoBodyUnread(t *testing.T) {
	p := newProfile(t)
	for _, r := range [][2]string{
		{"PUT", "/clinic"}, {"POST", "/clinic"}, {"PUT", "/clinic/d"}, {"PUT", "/clinic/_local/l"},
		{"POST", "/clinic/_bulk_docs"}, {"POST", "/clinic/_all_docs"}, {"POST", "/clinic/_all_docs/queries"},
		{"POST", "/clinic/_design_docs"}, {"POST", "/clinic/_local_docs/queries"}, {"POST", "/clinic/_bulk_get"},
		{"POST", "/clinic/_revs_diff"}, {"POST", "/clinic/_missing_revs"}, {"POST", "/clinic/_purge"},
		{"PUT", "/clinic/_security"}, {"PUT", "/clinic/_revs_limit"}, {"PUT", "/clinic/_purged_infos_limit"},
		{"PUT", "/clinic/_auto_purge"}, {"POST", "/clinic/_compact"}, {"POST", "/clinic/_compact/app"},
		{"POST", "/clinic/_view_cleanup"}, {"POST", "/clinic/_ensure_full_commit"}, {"POST", "/clinic/_sync_shards"},
		{"POST", "/clinic/_search_cleanup"}, {"POST", "/clinic/_nouveau_cleanup"}, {"POST", "/clinic/_index"},
		{"POST", "/clinic/_index/_bulk_delete"}, {"POST", "/clinic/_find"}, {"POST", "/clinic/_explain"},
		{"POST", "/clinic/_changes"}, {"POST", "/clinic/_design/app/_view/by_email"}, {"POST", "/clinic/_design/app/_view/by_ward"},
		{"POST", "/clinic/_design/app/_view/nope"}, {"POST", "/clinic/_design/app/_view/nope/queries"},
		{"POST", "/clinic/_partition/p/_all_docs"}, {"POST", "/clinic/_partition/p/_find"},
		{"PUT", "/tenant-1/_design/x"}, {"POST", "/tenant-1/_bulk_docs"},
	} {
		op := p.Classify(request(r[0], r[1], "", true))
		if op.Refusal != nil {
			continue
		}
		switch op.Body {
		case datastore.BodyNone, datastore.BodyTransform:
		case datastore.BodyEncrypt, datastore.BodyJSON:
			if op.Check == nil {
				t.Errorf("%s %s: body rule %v without a Check", r[0], r[1], op.Body)
			}
		default:
			t.Errorf("%s %s: body rule %v", r[0], r[1], op.Body)
		}
	}
}

// Mango operators take arguments of their documented types; any other
// argument would reach the datastore unread.
func TestMangoOperands(t *testing.T) {
	runXform(t, newProfile(t), "POST", "/clinic/_find", "", []xformCase{
		// The attacks.
		{name: "$exists with a value", in: `{"selector":{"email":{"$exists":"ann@example.com"}}}`, code: codeBad},
		{name: "$exists with a value on a random field", in: `{"selector":{"ssn":{"$exists":{"v":"123-45-6789"}}}}`, code: codeBad},
		{name: "$exists with a value on an unprotected field", in: `{"selector":{"ward":{"$exists":"123-45-6789"}}}`, code: codeBad},
		{name: "$exists with null", in: `{"selector":{"ward":{"$exists":null}}}`, code: codeBad},
		{name: "$exists true", in: `{"selector":{"email":{"$exists":true},"ward":{"$exists":false}}}`, want: `{"selector":{"email":{"$exists":true},"ward":{"$exists":false}}}`},

		{name: "$regex object", in: `{"selector":{"ward":{"$regex":{"x":"123-45-6789"}}}}`, code: codeBad},
		{name: "$beginsWith number", in: `{"selector":{"ward":{"$beginsWith":123456789}}}`, code: codeBad},
		{name: "$size string", in: `{"selector":{"ward":{"$size":"123-45-6789"}}}`, code: codeBad},
		{name: "$size negative", in: `{"selector":{"ward":{"$size":-1}}}`, code: codeBad},
		{name: "$size fraction", in: `{"selector":{"ward":{"$size":1.5}}}`, code: codeBad},
		{name: "$mod strings", in: `{"selector":{"age":{"$mod":["123-45-6789",1]}}}`, code: codeBad},
		{name: "$mod three", in: `{"selector":{"age":{"$mod":[2,0,123456789]}}}`, code: codeBad},
		{name: "$mod by zero", in: `{"selector":{"age":{"$mod":[0,0]}}}`, code: codeBad},
		{name: "$mod negative remainder", in: `{"selector":{"age":{"$mod":[3,-1]}}}`, want: `{"selector":{"age":{"$mod":[3,-1]}}}`},
		{name: "$type value", in: `{"selector":{"ward":{"$type":"123-45-6789"}}}`, code: codeBad},
		{name: "$type name", in: `{"selector":{"ward":{"$type":"string"}}}`, want: `{"selector":{"ward":{"$type":"string"}}}`},
		{name: "$all string", in: `{"selector":{"ward":{"$all":"123-45-6789"}}}`, code: codeBad},
		{name: "$keyMapMatch field", in: `{"selector":{"meta":{"$keyMapMatch":{"ssn":"123-45-6789"}}}}`, code: codeBad},
		{name: "$keyMapMatch eq object", in: `{"selector":{"meta":{"$keyMapMatch":{"$eq":{"ssn":"123-45-6789"}}}}}`, code: codeBad},
		{name: "$keyMapMatch in", in: `{"selector":{"meta":{"$keyMapMatch":{"$or":[{"$in":["a","b"]},{"$regex":"^x"}]}}}}`, want: `{"selector":{"meta":{"$keyMapMatch":{"$or":[{"$in":["a","b"]},{"$regex":"^x"}]}}}}`},
		{name: "$keyMapMatch unknown operator", in: `{"selector":{"meta":{"$keyMapMatch":{"$frob":"x"}}}}`, code: codeBad},
		{name: "$in string", in: `{"selector":{"ward":{"$in":"123-45-6789"}}}`, code: codeBad},
		{name: "$or object", in: `{"selector":{"$or":{"ward":"123-45-6789"}}}`, code: codeBad},
		{name: "$nor string at the top", in: `{"selector":{"$nor":["123-45-6789"]}}`, code: codeBad},
		{name: "$not string", in: `{"selector":{"ward":{"$not":"123-45-6789"}}}`, code: codeBad},
		{name: "$elemMatch string", in: `{"selector":{"visits":{"$elemMatch":"123-45-6789"}}}`, code: codeBad},

		// _find's other members, typed.
		{name: "limit string", in: `{"selector":{},"limit":"123-45-6789"}`, code: codeBad},
		{name: "skip fraction", in: `{"selector":{},"skip":1.5}`, code: codeBad},
		{name: "conflicts string", in: `{"selector":{},"conflicts":"123-45-6789"}`, code: codeBad},
		{name: "bookmark object", in: `{"selector":{},"bookmark":{"ssn":"123-45-6789"}}`, code: codeBad},
		{name: "use_index object", in: `{"selector":{},"use_index":{"ssn":"123-45-6789"}}`, code: codeBad},
		{name: "use_index three", in: `{"selector":{},"use_index":["a","b","123-45-6789"]}`, code: codeBad},
		{name: "stale ok", in: `{"selector":{},"stale":"ok","update":false}`, want: `{"selector":{},"stale":"ok","update":false}`},
		{name: "sort direction value", in: `{"selector":{},"sort":[{"ward":"123-45-6789"}]}`, code: codeBad},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_index", "", []xformCase{
		{name: "index name object", in: `{"index":{"fields":["ward"]},"name":{"ssn":"123-45-6789"}}`, code: codeBad},
		{name: "index ddoc number", in: `{"index":{"fields":["ward"]},"ddoc":123456789}`, code: codeBad},
		{name: "index w string", in: `{"index":{"fields":["ward"]},"w":"123-45-6789"}`, code: codeBad},
		{name: "index inner name object", in: `{"index":{"fields":["ward"],"name":{"ssn":"1"}}}`, code: codeBad},
		{name: "index field direction value", in: `{"index":{"fields":[{"ward":"123-45-6789"}]}}`, code: codeBad},
		{name: "text index still refused first", in: `{"index":{"fields":[{"name":"string"}]},"type":"text"}`, code: codeUnprotected},
	})
}

// _changes requests that no server answers; each stops pouchdb-server
// 4.2, whose changes feed leaves the error unhandled.
func TestChangesFilters(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "_selector GET", method: "GET", path: "/clinic/_changes", query: "filter=_selector", code: codeBad},
		{name: "_selector POST without a body", method: "POST", path: "/clinic/_changes", query: "filter=_selector", code: codeBad},
		{name: "_selector POST", method: "POST", path: "/clinic/_changes", query: "filter=_selector", body: true, rule: xform},
		{name: "_view without view", method: "GET", path: "/clinic/_changes", query: "filter=_view", code: codeBad},
		{name: "_view", method: "GET", path: "/clinic/_changes", query: "filter=_view&view=app/v", rule: none},
		{name: "_doc_ids GET without ids", method: "GET", path: "/clinic/_changes", query: "filter=_doc_ids", code: codeBad},
		{name: "_doc_ids POST without a body", method: "POST", path: "/clinic/_changes", query: "filter=_doc_ids", code: codeBad},
		{name: "_doc_ids POST, ids in the query", method: "POST", path: "/clinic/_changes", query: `filter=_doc_ids&doc_ids=["a"]`, rule: xform},
		{name: "_design", method: "GET", path: "/clinic/_changes", query: "filter=_design", rule: none},
		{name: "filter twice", method: "GET", path: "/clinic/_changes", query: "filter=_design&filter=_view&view=a/b", code: codeBad},
		{name: "empty filter", method: "GET", path: "/clinic/_changes", query: "filter=", code: codeBad},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_changes", "filter=_selector", []xformCase{
		{name: "_selector body without a selector", in: `{"doc_ids":["a"]}`, code: codeBad},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_changes", "filter=_doc_ids", []xformCase{
		{name: "_doc_ids body without ids", in: `{}`, code: codeBad},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_changes", `filter=_doc_ids&doc_ids=["a"]`, []xformCase{
		{name: "_doc_ids in the query, body empty", in: `{}`, want: `{}`},
	})
}

func TestBulkShape(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       string // refusal code; "" passes
		err        error
	}{
		{name: "docs", body: `{"docs":[{"_id":"a","ssn":"1"},{"_id":"b"}]}`},
		{name: "docs and flags", body: " {\n \"new_edits\" : false , \"docs\" : [ { } , {\"a\":[1,{\"b\":\"]}\"}]} ] , \"all_or_nothing\":true }\n"},
		{name: "empty object", body: `{}`},
		{name: "empty docs", body: `{"docs":[]}`},
		{name: "escaped name", body: `{"\u0064ocs":[{}]}`},
		{name: "strings with brackets and escaped quotes", body: `{"docs":[{"a":"}]\"{[","b":"\\","c":"\\\"]"}],"new_edits":true}`},
		{name: "nested documents", body: `{"docs":[{"a":{"b":[{"c":{}}]}}]}`},

		{name: "extra member", body: `{"docs":[],"card":{"number":"4111111111111111"}}`, code: codeBad},
		{name: "escaped extra member", body: `{"docs":[],"\u0063ard":{"number":"4111111111111111"}}`, code: codeBad},
		{name: "document at the top", body: `{"_id":"x","card":{"number":"4111111111111111"}}`, code: codeBad},
		{name: "array", body: `[{"_id":"x","ssn":"1"}]`, code: codeBad},
		{name: "string", body: `"Ann Example"`, code: codeBad},
		{name: "docs an object", body: `{"docs":{"a":{"ssn":"1"}}}`, code: codeBad},
		{name: "docs a string", body: `{"docs":"Ann Example"}`, code: codeBad},
		{name: "element an array", body: `{"docs":[[{"ssn":"1"}]]}`, code: codeBad},
		{name: "element a string", body: `{"docs":[{},"Ann Example"]}`, code: codeBad},
		{name: "element null", body: `{"docs":[null]}`, code: codeBad},
		{name: "new_edits string", body: `{"docs":[],"new_edits":"Ann Example"}`, code: codeBad},
		{name: "new_edits number", body: `{"docs":[],"new_edits":0}`, code: codeBad},
		{name: "all_or_nothing object", body: `{"all_or_nothing":{"ssn":"1"},"docs":[]}`, code: codeBad},

		{name: "duplicate docs", body: `{"docs":[{}],"docs":[{"ssn":"1"}]}`, err: fieldcrypt.ErrDuplicateKey},
		{name: "duplicate new_edits", body: `{"new_edits":true,"new_edits":false,"docs":[]}`, err: fieldcrypt.ErrDuplicateKey},
		{name: "empty body", body: ``, err: fieldcrypt.ErrSyntax},
		{name: "unterminated", body: `{"docs":[{"a":"b`, err: fieldcrypt.ErrSyntax},
		{name: "unterminated object", body: `{"docs":[{"a":{}`, err: fieldcrypt.ErrSyntax},
		{name: "no colon", body: `{"docs" [] }`, err: fieldcrypt.ErrSyntax},
		{name: "literal glued", body: `{"docs":[],"new_edits":truex}`, err: fieldcrypt.ErrSyntax},
		{name: "no closing brace", body: `{"docs":[]`, err: fieldcrypt.ErrSyntax},
		{name: "member name not a string", body: `{docs:[]}`, err: fieldcrypt.ErrSyntax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bulkShape([]byte(tc.body))
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			case tc.code == "":
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			default:
				if refusalCode(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
			}
		})
	}
}

// FuzzBulkShape: on a body that is one valid JSON document, bulkShape
// passes exactly the bodies whose tree is an object of docs (an array of
// objects), new_edits and all_or_nothing (booleans), each at most once.
func FuzzBulkShape(f *testing.F) {
	for _, s := range []string{
		`{"docs":[{"a":"}]"}]}`, `{"docs":[],"new_edits":false}`, `[{}]`, `{"docs":{}}`, `{"d\u006fcs":[{}]}`,
		`{"docs":[{"a":"\\"}],"x":1}`, `{"all_or_nothing":true}`, `"s"`, `{"docs":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := bulkShape(body) // never panics, on any input
		if !json.Valid(body) {
			return
		}
		root, perr := jsontree.Parse(body, fieldcrypt.DefaultMaxDepth)
		if perr != nil {
			return // duplicate names, depth: the encryptor refuses too
		}
		want := root.Kind == jsontree.Object
		for i := 0; want && i < len(root.Members); i++ {
			m := root.Members[i]
			switch m.Name {
			case "docs":
				want = m.Value.Kind == jsontree.Array
				for _, e := range m.Value.Elems {
					want = want && e.Kind == jsontree.Object
				}
			case "new_edits", "all_or_nothing":
				want = m.Value.Kind == jsontree.Bool
			default:
				want = false
			}
		}
		if want != (err == nil) {
			t.Fatalf("%s: bulkShape err = %v, want ok %v", body, err, want)
		}
	})
}
