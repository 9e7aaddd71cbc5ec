package couchdb

import (
	"slices"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
)

const (
	pass   = datastore.BodyPass
	none   = datastore.BodyNone
	opaque = datastore.BodyOpaque
	jsonB  = datastore.BodyJSON
	enc    = datastore.BodyEncrypt
	xform  = datastore.BodyTransform
)

type classifyCase struct {
	name   string
	method string
	path   string
	query  string
	body   bool
	hdr    []string
	ep     string
	rule   datastore.BodyRule
	code   string // refusal code, "" when the request is not refused
}

func runClassify(t *testing.T, p *Profile, cases []classifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := p.Classify(request(tc.method, tc.path, tc.query, tc.body, tc.hdr...))
			if op == nil {
				t.Fatal("nil operation")
			}
			gotCode := ""
			if op.Refusal != nil {
				gotCode = op.Refusal.Code
				if !strings.HasPrefix(op.Refusal.Message, "couchdb: ") {
					t.Errorf("message %q does not name the package", op.Refusal.Message)
				}
			}
			if gotCode != tc.code {
				msg := ""
				if op.Refusal != nil {
					msg = op.Refusal.Message
				}
				t.Fatalf("refusal %q (%s), want %q", gotCode, msg, tc.code)
			}
			if tc.ep != "" && op.Endpoint != tc.ep {
				t.Errorf("endpoint %q, want %q", op.Endpoint, tc.ep)
			}
			if tc.code != "" {
				return
			}
			if op.Body != tc.rule {
				t.Errorf("body rule %v, want %v", op.Body, tc.rule)
			}
			if (op.Body == pass) != (op.Collection == nil) {
				t.Errorf("body rule %v with collection %v", op.Body, op.Collection)
			}
			switch op.Body {
			case enc:
				if op.Encryptor == nil || len(op.Keys) == 0 {
					t.Errorf("BodyEncrypt without encryptor or keys")
				}
			case xform:
				if op.Transform == nil {
					t.Errorf("BodyTransform without transform")
				}
			}
		})
	}
}

func TestClassifyDocuments(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		// The database.
		{name: "db info", method: "GET", path: "/clinic", ep: EpDB, rule: none},
		{name: "db info HEAD", method: "HEAD", path: "/clinic/", ep: EpDB, rule: none},
		{name: "db create", method: "PUT", path: "/clinic", ep: EpDB, rule: none},
		{name: "db delete", method: "DELETE", path: "/clinic", ep: EpDB, rule: none},
		{name: "db post doc", method: "POST", path: "/clinic", body: true, ep: EpDoc, rule: enc},
		{name: "db COPY", method: "COPY", path: "/clinic", ep: EpDB, code: codeUnprotected},
		{name: "encoded db name", method: "PUT", path: "/cl%69nic/doc", body: true, ep: EpDoc, rule: enc},
		{name: "pattern db", method: "PUT", path: "/tenant-a/doc", body: true, ep: EpDoc, rule: enc},
		{name: "pattern db with slash", method: "PUT", path: "/tenant-a%2Fb/doc", body: true, ep: EpDoc, rule: enc},

		// Documents.
		{name: "doc get", method: "GET", path: "/clinic/doc", query: "rev=1-a&revs=true&open_revs=all&attachments=true", ep: EpDoc, rule: none},
		{name: "doc head", method: "HEAD", path: "/clinic/doc", ep: EpDoc, rule: none},
		{name: "doc put", method: "PUT", path: "/clinic/doc", body: true, ep: EpDoc, rule: enc},
		{name: "doc put new_edits", method: "PUT", path: "/clinic/doc", query: "new_edits=false&batch=ok", body: true, ep: EpDoc, rule: enc},
		{name: "doc delete", method: "DELETE", path: "/clinic/doc", query: "rev=1-a", ep: EpDoc, rule: none},
		{name: "doc id with %2F", method: "PUT", path: "/clinic/a%2Fb", body: true, ep: EpDoc, rule: enc},
		{name: "doc id with %2F get", method: "GET", path: "/clinic/a%2Fb", ep: EpDoc, rule: none},
		{name: "doc post (multipart form)", method: "POST", path: "/clinic/doc", body: true, ep: EpDoc, code: codeUnprotected},
		{name: "doc put multipart/related", method: "PUT", path: "/clinic/doc", body: true, hdr: []string{"Content-Type", "multipart/related; boundary=x"}, ep: EpDoc, code: codeUnprotected},
		{name: "db post multipart", method: "POST", path: "/clinic", body: true, hdr: []string{"Content-Type", "Multipart/Form-Data; boundary=x"}, code: codeUnprotected},
		{name: "doc put id query", method: "PUT", path: "/clinic/doc", query: "id=_design/x", body: true, ep: EpDoc, code: codeUnprotected},
		{name: "doc put id query (bracket)", method: "PUT", path: "/clinic/doc", query: "id%5B%5D=x", body: true, ep: EpDoc, code: codeUnprotected},
		{name: "doc copy", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "doc2"}, ep: EpDoc, rule: none},
		{name: "doc copy with rev", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "doc2?rev=1-a"}, ep: EpDoc, rule: none},
		{name: "doc copy to design", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "_design/x"}, ep: EpDesign, code: codeUnprotected},
		{name: "doc copy to encoded design", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "%5Fdesign%2Fx?rev=1-a"}, ep: EpDesign, code: codeUnprotected},
		{name: "doc copy to design, spaces", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "  _design/x"}, code: codeUnprotected},
		{name: "doc copy two destinations", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "a", "Destination", "_design/x"}, code: codeBad},
		{name: "doc copy to local", method: "COPY", path: "/clinic/doc", hdr: []string{"Destination", "_local/x"}, ep: EpDoc, rule: none},

		// Methods.
		{name: "PATCH", method: "PATCH", path: "/clinic/doc", body: true, code: codeUnprotected},
		{name: "lower-case put", method: "put", path: "/clinic/doc", body: true, code: codeUnprotected},
		{name: "lower-case get", method: "get", path: "/clinic/doc", code: codeUnprotected},
		{name: "MOVE", method: "MOVE", path: "/clinic/doc", code: codeUnprotected},
		{name: "TRACE", method: "TRACE", path: "/clinic", code: codeUnprotected},
		{name: "OPTIONS", method: "OPTIONS", path: "/clinic/doc", ep: EpOptions, rule: none},
		{name: "OPTIONS with body", method: "OPTIONS", path: "/clinic/doc", body: true, ep: EpOptions, code: codeUnprotected},
		{name: "OPTIONS with body unprotected", method: "OPTIONS", path: "/other/doc", body: true, rule: pass},

		// _local documents.
		{name: "local get", method: "GET", path: "/clinic/_local/x", ep: EpLocal, rule: none},
		{name: "local put", method: "PUT", path: "/clinic/_local/x", body: true, ep: EpLocal, rule: enc},
		{name: "local put %2F", method: "PUT", path: "/clinic/_local%2Fx", body: true, ep: EpLocal, rule: enc},
		{name: "local delete", method: "DELETE", path: "/clinic/_local/x", ep: EpLocal, rule: none},
		{name: "local attachment", method: "PUT", path: "/clinic/_local/x/att", body: true, ep: EpLocal, code: codeUnprotected},
		{name: "local without id", method: "PUT", path: "/clinic/_local", body: true, code: codeUnprotected},
		{name: "local %2F without id", method: "PUT", path: "/clinic/_local%2F", body: true, code: codeUnprotected},
		{name: "local_docs", method: "GET", path: "/clinic/_local_docs", ep: EpAllDocs, rule: none},
		{name: "local_docs post", method: "POST", path: "/clinic/_local_docs", body: true, ep: EpAllDocs, rule: jsonB},

		// Attachments (refused by clinic's policy).
		{name: "attachment get", method: "GET", path: "/clinic/doc/att.json", ep: EpAttachment, rule: none},
		{name: "attachment get nested", method: "GET", path: "/clinic/doc/a/b.png", ep: EpAttachment, rule: none},
		{name: "attachment put", method: "PUT", path: "/clinic/doc/att.json", body: true, ep: EpAttachment, code: codeUnprotected},
		{name: "attachment delete", method: "DELETE", path: "/clinic/doc/att.json", query: "rev=1-a", ep: EpAttachment, rule: none},
		{name: "attachment post", method: "POST", path: "/clinic/doc/att.json", body: true, ep: EpAttachment, code: codeUnprotected},
		{name: "attachment put allowed", method: "PUT", path: "/tenant-x/doc/att.json", body: true, ep: EpAttachment, rule: opaque},
		{name: "attachment put allowed multipart", method: "PUT", path: "/tenant-x/doc/att", body: true, hdr: []string{"Content-Type", "multipart/mixed; boundary=b"}, ep: EpAttachment, rule: opaque},

		// Bulk and id-keyed endpoints.
		{name: "bulk_docs", method: "POST", path: "/clinic/_bulk_docs", body: true, ep: EpBulkDocs, rule: enc},
		{name: "bulk_docs new_edits", method: "POST", path: "/clinic/_bulk_docs", query: "new_edits=false", body: true, ep: EpBulkDocs, rule: enc},
		{name: "bulk_docs GET", method: "GET", path: "/clinic/_bulk_docs", code: codeUnprotected},
		{name: "bulk_docs PUT", method: "PUT", path: "/clinic/_bulk_docs", body: true, code: codeUnprotected},
		{name: "bulk_docs encoded", method: "POST", path: "/clinic/%5Fbulk_docs", body: true, code: codeBad},
		{name: "bulk_docs upper case", method: "POST", path: "/clinic/_BULK_DOCS", body: true, code: codeUnprotected},
		{name: "all_docs", method: "GET", path: "/clinic/_all_docs", query: `keys=["a","b"]&include_docs=true`, ep: EpAllDocs, rule: none},
		{name: "all_docs post", method: "POST", path: "/clinic/_all_docs", body: true, ep: EpAllDocs, rule: jsonB},
		{name: "all_docs queries", method: "POST", path: "/clinic/_all_docs/queries", body: true, ep: EpAllDocs, rule: jsonB},
		{name: "all_docs put", method: "PUT", path: "/clinic/_all_docs", body: true, code: codeUnprotected},
		{name: "design_docs", method: "GET", path: "/clinic/_design_docs", ep: EpAllDocs, rule: none},
		{name: "bulk_get", method: "POST", path: "/clinic/_bulk_get", query: "revs=true", body: true, ep: EpBulkGet, rule: jsonB},
		{name: "revs_diff", method: "POST", path: "/clinic/_revs_diff", body: true, ep: EpRevs, rule: jsonB},
		{name: "missing_revs", method: "POST", path: "/clinic/_missing_revs", body: true, ep: EpRevs, rule: jsonB},
		{name: "purge", method: "POST", path: "/clinic/_purge", body: true, ep: EpPurge, rule: jsonB},
		{name: "purged_infos", method: "GET", path: "/clinic/_purged_infos", ep: EpPurge, rule: none},

		// Settings and maintenance.
		{name: "security get", method: "GET", path: "/clinic/_security", ep: EpAdmin, rule: none},
		{name: "security put", method: "PUT", path: "/clinic/_security", body: true, ep: EpAdmin, rule: jsonB},
		{name: "security encoded", method: "PUT", path: "/clinic/%5Fsecurity", body: true, code: codeBad},
		{name: "revs_limit put", method: "PUT", path: "/clinic/_revs_limit", body: true, ep: EpAdmin, rule: jsonB},
		{name: "purged_infos_limit get", method: "GET", path: "/clinic/_purged_infos_limit", ep: EpAdmin, rule: none},
		{name: "compact", method: "POST", path: "/clinic/_compact", ep: EpAdmin, rule: jsonB},
		{name: "compact ddoc", method: "POST", path: "/clinic/_compact/app", ep: EpAdmin, rule: jsonB},
		{name: "view_cleanup", method: "POST", path: "/clinic/_view_cleanup", ep: EpAdmin, rule: jsonB},
		{name: "ensure_full_commit", method: "POST", path: "/clinic/_ensure_full_commit", ep: EpAdmin, rule: jsonB},
		{name: "shards", method: "GET", path: "/clinic/_shards", ep: EpAdmin, rule: none},
		{name: "shards doc", method: "GET", path: "/clinic/_shards/doc", ep: EpAdmin, rule: none},
		{name: "sync_shards", method: "POST", path: "/clinic/_sync_shards", ep: EpAdmin, rule: jsonB},
		{name: "temp_view", method: "POST", path: "/clinic/_temp_view", body: true, ep: EpTempView, code: codeUnprotected},
		{name: "unknown endpoint", method: "GET", path: "/clinic/_foo", ep: EpUnknown, code: codeUnprotected},
		{name: "unknown endpoint post", method: "POST", path: "/clinic/_bar", body: true, code: codeUnprotected},

		// Partitions.
		{name: "partition info", method: "GET", path: "/clinic/_partition/p1", ep: EpPartition, rule: none},
		{name: "partition all_docs", method: "GET", path: "/clinic/_partition/p1/_all_docs", ep: EpAllDocs, rule: none},
		{name: "partition find", method: "POST", path: "/clinic/_partition/p1/_find", body: true, ep: EpFind, rule: xform},
		{name: "partition explain", method: "POST", path: "/clinic/_partition/p1/_explain", body: true, ep: EpExplain, rule: xform},
		{name: "partition view declared", method: "GET", path: "/clinic/_partition/p1/_design/app/_view/by_email", query: `key="a"`, ep: EpView, rule: none},
		{name: "partition view undeclared key", method: "GET", path: "/clinic/_partition/p1/_design/app/_view/nope", query: `key="a"`, ep: EpView, code: codeUnprotected},
		{name: "partition update handler", method: "PUT", path: "/clinic/_partition/p1/_design/app/_update/f", body: true, code: codeUnprotected},
		{name: "partition doc", method: "PUT", path: "/clinic/_partition/p1/doc", body: true, code: codeUnprotected},

		// Unprotected databases pass whatever they are.
		{name: "other db put", method: "PUT", path: "/other/doc", body: true, ep: EpDoc, rule: pass},
		{name: "other db PATCH", method: "PATCH", path: "/other/doc", body: true, rule: pass},
		{name: "other db update handler", method: "PUT", path: "/other/_design/x/_update/f", body: true, ep: EpDesign, rule: pass},
		{name: "other db lower-case", method: "post", path: "/other/_find", body: true, ep: EpFind, rule: pass},
		{name: "prefix of protected name", method: "PUT", path: "/clinic2/doc", body: true, rule: pass},
	})
}

func TestClassifyDesign(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "ddoc get", method: "GET", path: "/clinic/_design/app", ep: EpDesign, rule: none},
		{name: "ddoc info", method: "GET", path: "/clinic/_design/app/_info", ep: EpDesign, rule: none},
		{name: "ddoc put", method: "PUT", path: "/clinic/_design/app", body: true, ep: EpDesign, code: codeUnprotected},
		{name: "ddoc delete", method: "DELETE", path: "/clinic/_design/app", ep: EpDesign, code: codeUnprotected},
		{name: "ddoc copy", method: "COPY", path: "/clinic/_design/app", hdr: []string{"Destination", "x"}, ep: EpDesign, code: codeUnprotected},
		{name: "ddoc post", method: "POST", path: "/clinic/_design/app", body: true, code: codeUnprotected},
		{name: "ddoc %2F put", method: "PUT", path: "/clinic/_design%2Fapp", body: true, ep: EpDesign, code: codeUnprotected},
		{name: "ddoc %2F get", method: "GET", path: "/clinic/_design%2Fapp", ep: EpDesign, rule: none},
		{name: "ddoc %2f lower hex", method: "PUT", path: "/clinic/_design%2fapp", body: true, code: codeUnprotected},
		{name: "ddoc %5F", method: "PUT", path: "/clinic/%5Fdesign/app", body: true, code: codeBad},
		{name: "ddoc %5F %2F", method: "PUT", path: "/clinic/%5Fdesign%2Fapp", body: true, ep: EpDesign, code: codeUnprotected},
		{name: "ddoc without name", method: "PUT", path: "/clinic/_design", body: true, code: codeUnprotected},
		{name: "ddoc %2F without name", method: "PUT", path: "/clinic/_design%2F", body: true, code: codeUnprotected},
		{name: "ddoc name with %2F", method: "PUT", path: "/clinic/_design/a%2Fb", body: true, code: codeUnprotected},
		{name: "ddoc trailing slash", method: "PUT", path: "/clinic/_design/app/", body: true, code: codeBad},
		{name: "ddoc attachment get", method: "GET", path: "/clinic/_design/app/logo.png", ep: EpAttachment, rule: none},
		{name: "ddoc attachment put", method: "PUT", path: "/clinic/_design/app/logo.png", body: true, ep: EpAttachment, code: codeUnprotected},
		{name: "ddoc attachment delete", method: "DELETE", path: "/clinic/_design/app/logo.png", code: codeUnprotected},

		{name: "update handler PUT", method: "PUT", path: "/clinic/_design/app/_update/f/doc", body: true, ep: EpDesignFunction, code: codeUnprotected},
		{name: "update handler POST", method: "POST", path: "/clinic/_design/app/_update/f", body: true, ep: EpDesignFunction, code: codeUnprotected},
		{name: "update handler PATCH", method: "PATCH", path: "/clinic/_design/app/_update/f/doc", body: true, code: codeUnprotected},
		{name: "update handler GET", method: "GET", path: "/clinic/_design/app/_update/f", query: "ssn=1", code: codeUnprotected},
		{name: "update handler via %2F ddoc", method: "POST", path: "/clinic/_design%2Fapp/_update/f", body: true, ep: EpDesignFunction, code: codeUnprotected},
		{name: "update handler encoded", method: "POST", path: "/clinic/_design/app/%5Fupdate/f", body: true, code: codeBad},
		{name: "show", method: "GET", path: "/clinic/_design/app/_show/s/doc", ep: EpDesignFunction, code: codeUnprotected},
		{name: "list", method: "GET", path: "/clinic/_design/app/_list/l/v", query: "key=1", ep: EpDesignFunction, code: codeUnprotected},
		{name: "rewrite", method: "GET", path: "/clinic/_design/app/_rewrite/x", code: codeUnprotected},
		{name: "rewrite put", method: "PUT", path: "/clinic/_design/app/_rewrite/doc", body: true, code: codeUnprotected},
		{name: "search", method: "GET", path: "/clinic/_design/app/_search/idx", query: "q=ssn:1", ep: EpDesignFunction, code: codeUnprotected},
		{name: "search_info", method: "GET", path: "/clinic/_design/app/_search_info/idx", code: codeUnprotected},
		{name: "nouveau", method: "POST", path: "/clinic/_design/app/_nouveau/idx", body: true, code: codeUnprotected},
		{name: "geo", method: "GET", path: "/clinic/_design/app/_geo/idx", code: codeUnprotected},
		{name: "unknown under ddoc", method: "GET", path: "/clinic/_design/app/_whatever", code: codeUnprotected},

		// Design documents and attachments allowed by the file.
		{name: "allowed ddoc put", method: "PUT", path: "/tenant-1/_design/app", body: true, ep: EpDesign, rule: enc},
		{name: "allowed ddoc delete", method: "DELETE", path: "/tenant-1/_design/app", ep: EpDesign, rule: none},
		{name: "allowed ddoc copy", method: "COPY", path: "/tenant-1/_design/app", hdr: []string{"Destination", "_design/b"}, ep: EpDesign, rule: none},
		{name: "allowed ddoc attachment", method: "PUT", path: "/tenant-1/_design/app/logo.png", body: true, ep: EpAttachment, rule: opaque},
		{name: "allowed copy to ddoc", method: "COPY", path: "/tenant-1/doc", hdr: []string{"Destination", "_design/x"}, ep: EpDoc, rule: none},
		{name: "allowed ddoc id query", method: "PUT", path: "/tenant-1/doc", query: "id=_design/x", body: true, rule: enc},
		{name: "allowed: update handler still refused", method: "POST", path: "/tenant-1/_design/app/_update/f", body: true, code: codeUnprotected},
		{name: "allowed: rewrite still refused", method: "GET", path: "/tenant-1/_design/app/_rewrite/x", code: codeUnprotected},
	})
}

func TestClassifyQueries(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "find", method: "POST", path: "/clinic/_find", body: true, ep: EpFind, rule: xform},
		{name: "find GET", method: "GET", path: "/clinic/_find", ep: EpFind, code: codeUnprotected},
		{name: "find encoded", method: "POST", path: "/clinic/%5Ffind", body: true, code: codeBad},
		{name: "explain", method: "POST", path: "/clinic/_explain", body: true, ep: EpExplain, rule: xform},
		{name: "index get", method: "GET", path: "/clinic/_index", ep: EpIndex, rule: none},
		{name: "index post", method: "POST", path: "/clinic/_index", body: true, ep: EpIndex, rule: xform},
		{name: "index delete", method: "DELETE", path: "/clinic/_index/idx/json/by-email", ep: EpIndex, rule: none},
		{name: "index delete _design", method: "DELETE", path: "/clinic/_index/_design/idx/json/by-email", ep: EpIndex, rule: none},
		{name: "index bulk delete", method: "POST", path: "/clinic/_index/_bulk_delete", body: true, ep: EpIndex, rule: jsonB},
		{name: "index put", method: "PUT", path: "/clinic/_index", body: true, code: codeUnprotected},

		{name: "changes", method: "GET", path: "/clinic/_changes", ep: EpChanges, rule: none},
		{name: "changes continuous", method: "GET", path: "/clinic/_changes", query: "feed=continuous&include_docs=true&since=now&heartbeat=1000", ep: EpChanges, rule: none},
		{name: "changes eventsource", method: "GET", path: "/clinic/_changes", query: "feed=eventsource", rule: none},
		{name: "changes longpoll", method: "GET", path: "/clinic/_changes", query: "feed=longpoll&style=all_docs", rule: none},
		{name: "changes doc_ids", method: "POST", path: "/clinic/_changes", query: "filter=_doc_ids", body: true, ep: EpChanges, rule: xform},
		{name: "changes doc_ids get", method: "GET", path: "/clinic/_changes", query: `filter=_doc_ids&doc_ids=["a"]`, rule: none},
		{name: "changes view filter", method: "GET", path: "/clinic/_changes", query: "filter=_view&view=app/by_ward", rule: none},
		{name: "changes design filter", method: "GET", path: "/clinic/_changes", query: "filter=_design", rule: none},
		{name: "changes selector", method: "POST", path: "/clinic/_changes", query: "filter=_selector", body: true, rule: xform},
		{name: "changes selector encoded", method: "POST", path: "/clinic/_changes", query: "filter=%5Fselector", body: true, rule: xform},
		{name: "changes custom filter", method: "GET", path: "/clinic/_changes", query: "filter=app/by_ssn&ssn=123", ep: EpChanges, code: codeUnprotected},
		{name: "changes custom filter encoded", method: "GET", path: "/clinic/_changes", query: "filter=app%2Fby_ssn", code: codeUnprotected},
		{name: "changes custom filter after ;", method: "GET", path: "/clinic/_changes", query: "since=0;filter=app/f", code: codeUnprotected},
		{name: "changes second filter", method: "GET", path: "/clinic/_changes", query: "filter=_doc_ids&filter=app/f", code: codeUnprotected},
		{name: "changes quoted filter", method: "GET", path: "/clinic/_changes", query: `filter="_doc_ids"`, code: codeUnprotected},
		{name: "changes selector param", method: "GET", path: "/clinic/_changes", query: `filter=_selector&selector={"ssn":"1"}`, code: codeUnprotected},
		{name: "changes selector bracket param", method: "GET", path: "/clinic/_changes", query: `filter=_selector&selector%5Bssn%5D=1`, code: codeUnprotected},
		{name: "changes filter bracket", method: "GET", path: "/clinic/_changes", query: `filter[x]=_doc_ids`, code: codeBad},
		{name: "changes bad escape in name", method: "GET", path: "/clinic/_changes", query: `fil%zzter=x`, code: codeBad},
		{name: "changes PUT", method: "PUT", path: "/clinic/_changes", body: true, code: codeUnprotected},

		{name: "view declared get", method: "GET", path: "/clinic/_design/app/_view/by_email", query: `key="a@b"`, ep: EpView, rule: none},
		{name: "view declared post", method: "POST", path: "/clinic/_design/app/_view/by_email", body: true, ep: EpView, rule: xform},
		{name: "view declared queries", method: "POST", path: "/clinic/_design/app/_view/by_email/queries", body: true, ep: EpView, rule: xform},
		{name: "view declared info", method: "GET", path: "/clinic/_design/app/_view/by_email/_info", ep: EpView, rule: none},
		{name: "view plain declared post", method: "POST", path: "/clinic/_design/app/_view/by_ward", body: true, ep: EpView, rule: jsonB},
		{name: "view undeclared", method: "GET", path: "/clinic/_design/app/_view/nope", query: "include_docs=true&startkey_docid=a", ep: EpView, rule: none},
		{name: "view undeclared key", method: "GET", path: "/clinic/_design/app/_view/nope", query: `key="x"`, ep: EpView, code: codeUnprotected},
		{name: "view undeclared start_key", method: "GET", path: "/clinic/_design/app/_view/nope", query: `start_key="x"`, code: codeUnprotected},
		{name: "view undeclared keys after ;", method: "GET", path: "/clinic/_design/app/_view/nope", query: `a=1;keys=["x"]`, code: codeUnprotected},
		{name: "view undeclared encoded name", method: "GET", path: "/clinic/_design/app/_view/nope", query: `%6Bey="x"`, code: codeUnprotected},
		{name: "view undeclared bracket", method: "GET", path: "/clinic/_design/app/_view/nope", query: `key%5Bx%5D=1`, code: codeUnprotected},
		{name: "view undeclared post", method: "POST", path: "/clinic/_design/app/_view/nope", body: true, ep: EpView, rule: jsonB},
		{name: "view put", method: "PUT", path: "/clinic/_design/app/_view/by_email", body: true, code: codeUnprotected},
		{name: "view %2F ddoc", method: "GET", path: "/clinic/_design%2Fapp/_view/by_email", query: `key="a"`, ep: EpView, rule: none},
	})
}

func TestClassifyServer(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "root", method: "GET", path: "/", ep: EpServer, rule: pass},
		{name: "empty path", method: "GET", path: "", ep: EpServer, rule: pass},
		{name: "root POST", method: "POST", path: "/", body: true, code: codeUnprotected},
		{name: "all_dbs", method: "GET", path: "/_all_dbs", ep: EpServer, rule: pass},
		{name: "all_dbs POST", method: "POST", path: "/_all_dbs", code: codeUnprotected},
		{name: "dbs_info", method: "POST", path: "/_dbs_info", body: true, rule: pass},
		{name: "active_tasks", method: "GET", path: "/_active_tasks", rule: pass},
		{name: "membership", method: "GET", path: "/_membership", rule: pass},
		{name: "up", method: "GET", path: "/_up", rule: pass},
		{name: "uuids", method: "GET", path: "/_uuids", query: "count=3", rule: pass},
		{name: "session get", method: "GET", path: "/_session", rule: pass},
		{name: "session post", method: "POST", path: "/_session", body: true, rule: pass},
		{name: "session delete", method: "DELETE", path: "/_session", rule: pass},
		{name: "utils", method: "GET", path: "/_utils/index.html", rule: pass},
		{name: "scheduler jobs", method: "GET", path: "/_scheduler/jobs", rule: pass},
		{name: "scheduler docs", method: "GET", path: "/_scheduler/docs/_replicator/r1", rule: pass},
		{name: "log (pouchdb)", method: "GET", path: "/_log", rule: pass},
		{name: "stats (pouchdb)", method: "GET", path: "/_stats", rule: pass},
		{name: "db_updates", method: "GET", path: "/_db_updates", query: "feed=longpoll", rule: pass},
		{name: "node stats", method: "GET", path: "/_node/_local/_stats/couchdb/request_time", rule: pass},
		{name: "node system", method: "GET", path: "/_node/node1@127.0.0.1/_system", rule: pass},
		{name: "node versions", method: "GET", path: "/_node/_local/_versions", rule: pass},
		{name: "node prometheus", method: "GET", path: "/_node/_local/_prometheus", rule: pass},
		{name: "node alias of a db", method: "PUT", path: "/_node/node1@127.0.0.1/clinic/doc", body: true, ep: EpUnknown, code: codeUnprotected},
		{name: "node alias get", method: "GET", path: "/_node/node1@127.0.0.1/clinic/doc", code: codeUnprotected},
		{name: "node config get", method: "GET", path: "/_node/_local/_config/httpd", ep: EpConfig, rule: pass},
		{name: "node config put", method: "PUT", path: "/_node/_local/_config/vhosts/example.com", body: true, ep: EpConfig, code: codeUnprotected},
		{name: "node config reload", method: "POST", path: "/_node/_local/_config/_reload", ep: EpConfig, code: codeUnprotected},
		{name: "node config delete", method: "DELETE", path: "/_node/x/_config/vhosts/a", ep: EpConfig, code: codeUnprotected},
		{name: "node restart", method: "POST", path: "/_node/_local/_restart", ep: EpRestart, code: codeUnprotected},
		{name: "node bare", method: "GET", path: "/_node", code: codeUnprotected},
		{name: "node encoded config", method: "PUT", path: "/_node/_local/%5Fconfig/a/b", body: true, code: codeBad},

		{name: "replicate", method: "POST", path: "/_replicate", body: true, ep: EpReplicate, code: codeUnprotected},
		{name: "replicate GET", method: "GET", path: "/_replicate", ep: EpReplicate, code: codeUnprotected},
		{name: "replicate lower-case", method: "post", path: "/_replicate", body: true, code: codeUnprotected},
		{name: "replicate upper-case name", method: "POST", path: "/_REPLICATE", body: true, ep: EpUnknown, code: codeUnprotected},
		{name: "replicate encoded", method: "POST", path: "/%5Freplicate", body: true, code: codeBad},
		{name: "replicate preflight", method: "OPTIONS", path: "/_replicate", rule: pass},
		{name: "replicate OPTIONS with body", method: "OPTIONS", path: "/_replicate", body: true, code: codeUnprotected},
		{name: "unknown endpoint preflight", method: "OPTIONS", path: "/_foo", ep: EpOptions, rule: pass},
		{name: "rewrite preflight", method: "OPTIONS", path: "/other/_design/a/_rewrite/x", rule: pass},
		{name: "root preflight", method: "OPTIONS", path: "/", rule: pass},
		{name: "replicator write", method: "PUT", path: "/_replicator/r1", body: true, ep: EpReplicate, code: codeUnprotected},
		{name: "replicator post", method: "POST", path: "/_replicator", body: true, ep: EpReplicate, code: codeUnprotected},
		{name: "replicator bulk", method: "POST", path: "/_replicator/_bulk_docs", body: true, ep: EpReplicate, code: codeUnprotected},
		{name: "replicator delete", method: "DELETE", path: "/_replicator/r1", ep: EpReplicate, code: codeUnprotected},
		{name: "replicator read", method: "GET", path: "/_replicator/r1", ep: EpSystemDB, rule: pass},
		{name: "config get", method: "GET", path: "/_config/httpd", ep: EpConfig, rule: pass},
		{name: "config put", method: "PUT", path: "/_config/couchdb/max_document_size", body: true, ep: EpConfig, code: codeUnprotected},
		{name: "config vhosts", method: "PUT", path: "/_config/vhosts/clinic.example.com", body: true, ep: EpConfig, code: codeUnprotected},
		{name: "config delete", method: "DELETE", path: "/_config/vhosts/a", ep: EpConfig, code: codeUnprotected},
		{name: "users", method: "PUT", path: "/_users/org.couchdb.user:bob", body: true, ep: EpSystemDB, rule: pass},
		{name: "global_changes", method: "GET", path: "/_global_changes/_changes", rule: pass},
		{name: "global_changes write", method: "PUT", path: "/_global_changes/x", body: true, code: codeUnprotected},
		{name: "restart", method: "POST", path: "/_restart", ep: EpRestart, code: codeUnprotected},
		{name: "reshard get", method: "GET", path: "/_reshard/jobs", ep: EpReshard, rule: pass},
		{name: "reshard post", method: "POST", path: "/_reshard/jobs", body: true, ep: EpReshard, code: codeUnprotected},
		{name: "cluster_setup get", method: "GET", path: "/_cluster_setup", rule: pass},
		{name: "cluster_setup post", method: "POST", path: "/_cluster_setup", body: true, code: codeUnprotected},
		{name: "reload_query_servers", method: "POST", path: "/_reload_query_servers", code: codeUnprotected},
		{name: "search_analyze", method: "POST", path: "/_search_analyze", body: true, code: codeUnprotected},
		{name: "unknown server endpoint", method: "GET", path: "/_foo", ep: EpUnknown, code: codeUnprotected},

		// A _rewrite anywhere in the URL (pouchdb-server matches it before
		// routing and resolves ../ in targets).
		{name: "rewrite in other db", method: "PUT", path: "/other/_design/app/_rewrite/x", body: true, ep: EpRewrite, code: codeUnprotected},
		{name: "rewrite in query", method: "PUT", path: "/other/doc", query: "x=/clinic/_design/app/_rewrite/doc", body: true, ep: EpRewrite, code: codeUnprotected},
		{name: "rewrite in query of clinic", method: "GET", path: "/clinic/doc", query: "x=/other/_design/app/_rewrite/doc", ep: EpRewrite, code: codeUnprotected},
		{name: "no rewrite", method: "GET", path: "/other/_design/app/_rewritten", rule: pass},
	})
}

func TestClassifyPaths(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "dot dot", method: "PUT", path: "/clinic/../clinic/doc", body: true, ep: EpPath, code: codeBad},
		{name: "dot", method: "PUT", path: "/clinic/./doc", body: true, code: codeBad},
		{name: "encoded dot dot", method: "PUT", path: "/other/%2e%2e/clinic/doc", body: true, code: codeBad},
		{name: "encoded dot dot upper", method: "PUT", path: "/other/%2E%2E/clinic/doc", body: true, code: codeBad},
		{name: "dot dot inside %2F id", method: "PUT", path: "/other/a%2F..%2F..%2Fclinic", body: true, code: codeBad},
		{name: "double slash", method: "PUT", path: "/clinic//doc", body: true, code: codeBad},
		{name: "leading double slash", method: "PUT", path: "//clinic/doc", body: true, code: codeBad},
		{name: "two trailing slashes", method: "GET", path: "/clinic/doc//", code: codeBad},
		{name: "double slash in server path", method: "POST", path: "//_replicate", body: true, code: codeBad},
		{name: "double slash, pouch alias", method: "PUT", path: "//clinic%3F/doc", body: true, code: codeBad},
		{name: "only slashes", method: "GET", path: "//", code: codeBad},
		{name: "double slash unprotected", method: "PUT", path: "//other/doc", body: true, ep: EpDoc, rule: pass},
		{name: "double slash inside unprotected", method: "PUT", path: "/other//doc", body: true, rule: pass},
		// One trailing slash is read alike on the database itself only:
		// pouchdb-server reads PUT /{db}/{docid}/ as an attachment
		// named "" and keeps it in _local and _design ids and
		// attachment names.
		{name: "trailing slash on the database", method: "POST", path: "/clinic/", body: true, ep: EpDoc, rule: enc},
		{name: "trailing slash on the database GET", method: "GET", path: "/clinic/", ep: EpDB, rule: none},
		{name: "trailing slash on a document", method: "PUT", path: "/clinic/doc/", body: true, ep: EpPath, code: codeBad},
		{name: "trailing slash on a document GET", method: "GET", path: "/clinic/doc/", code: codeBad},
		{name: "trailing slash on a local document", method: "PUT", path: "/clinic/_local/x/", body: true, code: codeBad},
		{name: "trailing slash on an attachment", method: "GET", path: "/clinic/doc/att/", code: codeBad},
		{name: "trailing slash on an endpoint", method: "GET", path: "/clinic/_all_docs/", code: codeBad},
		{name: "trailing slash preflight", method: "OPTIONS", path: "/clinic/doc/", code: codeBad},
		{name: "escaped trailing slash is part of the id", method: "PUT", path: "/clinic/doc%2F", body: true, ep: EpDoc, rule: enc},
		{name: "trailing slash unprotected", method: "PUT", path: "/other/doc/", body: true, rule: pass},
		{name: "bad escape", method: "PUT", path: "/clinic/a%zz", body: true, code: codeBad},
		{name: "bad escape in db", method: "PUT", path: "/cl%zznic/doc", body: true, code: codeBad},
		{name: "no leading slash", method: "GET", path: "clinic/doc", code: codeBad},
		{name: "plus in db name (CouchDB: space)", method: "PUT", path: "/tenant-a+b/doc", body: true, rule: enc},

		// Names pouchdb-server stores under another name (sanitize-filename).
		{name: "pouch: question mark", method: "PUT", path: "/clinic%3F/doc", body: true, rule: enc},
		{name: "pouch: trailing dot", method: "PUT", path: "/clinic./doc", body: true, rule: enc},
		{name: "pouch: trailing dots and spaces", method: "PUT", path: "/clinic.%20./doc", body: true, rule: enc},
		{name: "pouch: slash", method: "PUT", path: "/cli%2Fnic/doc", body: true, rule: enc},
		{name: "pouch: colon star pipe", method: "PUT", path: "/c%3Al%2Ai%7Cnic/doc", body: true, rule: enc},
		{name: "pouch: control character", method: "PUT", path: "/cl%00inic/doc", body: true, rule: enc},
		{name: "pouch: C1 control", method: "PUT", path: "/c%C2%80linic/doc", body: true, rule: enc},
		{name: "pouch: backslash quote angle", method: "PUT", path: "/%22clinic%5C%3C%3E/doc", body: true, rule: enc},
		{name: "pouch: bulk_docs", method: "POST", path: "/clinic%3F/_bulk_docs", body: true, ep: EpBulkDocs, rule: enc},
		{name: "pouch: protected name with slash", method: "PUT", path: "/org%2Frecords/doc", body: true, rule: enc},
		{name: "pouch: its pouchdb name", method: "PUT", path: "/orgrecords/doc", body: true, rule: enc},
		{name: "pouch: its pouchdb name, other spelling", method: "PUT", path: "/org%3Arecords./doc", body: true, rule: enc},
		{name: "pouch: replicator alias", method: "PUT", path: "/%3F_replicator/r1", body: true, code: codeBad},
		{name: "pouch: users alias", method: "PUT", path: "/%7C_users/x", body: true, code: codeBad},
		{name: "pouch: unrelated name", method: "PUT", path: "/other%3F/doc", body: true, rule: pass},
	})
}

func TestClassifyAllowed(t *testing.T) {
	runClassify(t, newProfile(t, OpReplicate, OpConfig, OpRewrite, OpRestart, OpReshard), []classifyCase{
		{name: "replicate", method: "POST", path: "/_replicate", body: true, ep: EpReplicate, rule: pass},
		{name: "replicator write", method: "PUT", path: "/_replicator/r1", body: true, ep: EpReplicate, rule: pass},
		{name: "config put", method: "PUT", path: "/_config/a/b", body: true, ep: EpConfig, rule: pass},
		{name: "node config put", method: "PUT", path: "/_node/_local/_config/a/b", body: true, ep: EpConfig, rule: pass},
		{name: "restart", method: "POST", path: "/_restart", rule: pass},
		{name: "reshard", method: "POST", path: "/_reshard/jobs", body: true, rule: pass},
		{name: "rewrite elsewhere", method: "PUT", path: "/other/_design/app/_rewrite/x", body: true, rule: pass},
		{name: "rewrite on protected db still refused", method: "PUT", path: "/clinic/_design/app/_rewrite/x", body: true, code: codeUnprotected},
		{name: "node alias still refused", method: "PUT", path: "/_node/node1@127.0.0.1/clinic/doc", body: true, code: codeUnprotected},
	})
}

// A file that protects a system database by pattern gets the database
// treatment there; replication writes are refused first.
func TestClassifySystemDatabaseProtected(t *testing.T) {
	s := &datastore.Schema{Datastore: "couchdb", Collections: []*datastore.Collection{{
		Name:   "*",
		Fields: []*datastore.Field{{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: 1}},
	}}}
	p, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	runClassify(t, p.(*Profile), []classifyCase{
		{name: "users doc", method: "PUT", path: "/_users/org.couchdb.user:bob", body: true, rule: enc},
		{name: "replicator write", method: "PUT", path: "/_replicator/r", body: true, code: codeUnprotected},
		{name: "any db", method: "PUT", path: "/x/doc", body: true, rule: enc},
		{name: "all_dbs", method: "GET", path: "/_all_dbs", rule: pass},
	})
}

func TestRegistered(t *testing.T) {
	ops, ok := datastore.Operations("couchdb")
	if !ok {
		t.Fatal("couchdb is not registered")
	}
	for _, op := range []string{OpReplicate, OpConfig, OpRewrite, OpRestart, OpReshard} {
		if !slices.Contains(ops, op) {
			t.Errorf("operation %q not registered", op)
		}
	}
	p, err := datastore.New(testSchema())
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "couchdb" {
		t.Errorf("Name = %q", p.Name())
	}
	if _, ok := p.(datastore.Describer); !ok {
		t.Error("the profile does not describe its coverage")
	}
	// A schema without collections protects nothing and refuses only
	// server-wide operations.
	empty, err := New(&datastore.Schema{Datastore: "couchdb"})
	if err != nil {
		t.Fatal(err)
	}
	if op := empty.Classify(request("PUT", "/clinic/doc", "", true)); op.Body != pass || op.Refusal != nil {
		t.Errorf("empty schema: %+v", op)
	}
	if op := empty.Classify(request("POST", "/_replicate", "", true)); op.Refusal == nil {
		t.Error("empty schema: _replicate not refused")
	}
}

// Refusal messages never carry a value from the request.
func TestMessagesCarryNoValue(t *testing.T) {
	p := newProfile(t)
	const secret = "SECRET123"
	for _, r := range []*datastore.Request{
		request("GET", "/clinic/_"+secret, "", false),
		request("GET", "/_"+secret, "", false),
		request(secret, "/clinic/doc", "", false),
		request("GET", "/clinic/_design/app/_"+secret, "", false),
		request("GET", "/clinic/_design/app/_view/"+secret+"@x", `key="`+secret+`"`, false),
		request("GET", "/clinic/_changes", "filter=app/"+secret, false),
		request("COPY", "/clinic/doc", "", false, "Destination", "_design/"+secret),
	} {
		op := p.Classify(r)
		if op.Refusal == nil {
			t.Errorf("%s %s not refused", r.Method, r.Path)
			continue
		}
		if strings.Contains(op.Refusal.Message, secret) && !strings.Contains(r.Path, "_"+secret) {
			t.Errorf("message quotes a value: %s", op.Refusal.Message)
		}
		if strings.Contains(op.Refusal.Message, secret+"@") {
			t.Errorf("message quotes a name that is not an identifier: %s", op.Refusal.Message)
		}
	}
}

// FuzzClassify: Classify never returns nil or panics, and a request that
// reaches the protected database is never passed as unprotected.
func FuzzClassify(f *testing.F) {
	for _, s := range [][3]string{
		{"PUT", "/clinic/doc", ""}, {"POST", "/clinic/_bulk_docs", "new_edits=false"},
		{"GET", "/clinic/_design/app/_view/by_email", `key="a"`}, {"COPY", "/clinic/_design%2Fx", ""},
		{"POST", "/_replicate", ""}, {"PUT", "/cl%69nic/a%2Fb", ""}, {"GET", "/_node/n/clinic", ""},
	} {
		f.Add(s[0], s[1], s[2], true)
	}
	p := newProfile(f)
	f.Fuzz(func(t *testing.T, method, path, query string, body bool) {
		op := p.Classify(request(method, path, query, body))
		if op == nil {
			t.Fatal("nil operation")
		}
		segs, _, ref := splitPath(path)
		if ref != nil || len(segs) == 0 || op.Refusal != nil {
			return
		}
		if p.match(segs[0]) != nil && op.Collection == nil {
			t.Fatalf("%s %s ?%s reaches a protected database and passes unprotected: %+v", method, path, query, op)
		}
		if op.Collection == nil && op.Body != pass {
			t.Fatalf("unprotected operation with body rule %v", op.Body)
		}
	})
}
