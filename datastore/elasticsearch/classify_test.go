package elasticsearch

import (
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
)

const (
	pass   = datastore.BodyPass
	none   = datastore.BodyNone
	jsonB  = datastore.BodyJSON
	xform  = datastore.BodyTransform
	ndjson = datastore.BodyNDJSON
)

type classifyCase struct {
	name   string
	method string
	path   string
	query  string
	ep     string
	rule   datastore.BodyRule
	code   string // refusal code, "" when not refused
}

func runClassify(t *testing.T, p *Profile, cases []classifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.method != "GET" && tc.method != "HEAD" && tc.method != "OPTIONS" && tc.method != "DELETE"
			op := p.Classify(request(tc.method, tc.path, tc.query, body))
			got := ""
			if op.Refusal != nil {
				got = op.Refusal.Code
				if !strings.HasPrefix(op.Refusal.Message, "elasticsearch: ") {
					t.Errorf("message %q does not name the package", op.Refusal.Message)
				}
			}
			if got != tc.code {
				msg := ""
				if op.Refusal != nil {
					msg = op.Refusal.Message
				}
				t.Fatalf("refusal %q (%s), want %q", got, msg, tc.code)
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
			if op.Body == ndjson && op.Lines == nil || op.Body == xform && op.Transform == nil {
				t.Errorf("body rule %v without its function", op.Body)
			}
		})
	}
}

func TestClassifyDocuments(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "index doc", method: "PUT", path: "/orders/_doc/1", ep: EpDoc, rule: ndjson},
		{name: "index doc POST", method: "POST", path: "/orders/_doc/1", ep: EpDoc, rule: ndjson},
		{name: "auto id", method: "POST", path: "/orders/_doc", ep: EpDoc, rule: ndjson},
		{name: "create", method: "PUT", path: "/orders/_create/1", ep: EpDoc, rule: ndjson},
		{name: "update", method: "POST", path: "/orders/_update/1", ep: EpUpdate, rule: ndjson},
		{name: "get", method: "GET", path: "/orders/_doc/1", query: "routing=x&_source_includes=email", ep: EpDoc, rule: none},
		{name: "head", method: "HEAD", path: "/orders/_doc/1", ep: EpDoc, rule: none},
		{name: "source", method: "GET", path: "/orders/_source/1", ep: EpDoc, rule: none},
		{name: "delete", method: "DELETE", path: "/orders/_doc/1", ep: EpDoc, rule: none},
		{name: "id with %2F", method: "PUT", path: "/orders/_doc/a%2Fb", ep: EpDoc, rule: ndjson},
		{name: "encoded index name", method: "PUT", path: "/%6Frders/_doc/1", ep: EpDoc, rule: ndjson},
		{name: "pattern index", method: "PUT", path: "/tenant-a/_doc/1", ep: EpDoc, rule: ndjson},
		{name: "data stream backing index", method: "PUT", path: "/.ds-orders-2026.01.01-000001/_doc/1", ep: EpDoc, rule: ndjson},
		{name: "unprotected", method: "PUT", path: "/logs/_doc/1", ep: EpDoc, rule: pass},
		{name: "unprotected search", method: "POST", path: "/logs/_search", rule: pass},
		{name: "remote cluster index", method: "POST", path: "/remote:orders/_search", ep: EpSearch, rule: xform},
		{name: "date math", method: "POST", path: "/%3Cor%7Bnow%2Fd%7Ders%3E/_search", ep: EpSearch, rule: xform},
		{name: "typed ES 7 write", method: "PUT", path: "/orders/order/1", ep: EpDoc, rule: ndjson},
		{name: "typed ES 7 auto id", method: "POST", path: "/orders/order", ep: EpDoc, rule: ndjson},
		{name: "typed ES 7 update", method: "POST", path: "/orders/order/1/_update", ep: EpUpdate, rule: ndjson},
		{name: "typed _doc update", method: "POST", path: "/orders/_doc/1/_update", ep: EpUpdate, rule: ndjson},
		{name: "typed create", method: "PUT", path: "/orders/order/1/_create", ep: EpDoc, rule: ndjson},
		{name: "typed search", method: "POST", path: "/orders/order/_search", ep: EpSearch, rule: xform},
		{name: "typed bulk", method: "POST", path: "/orders/order/_bulk", ep: EpBulk, rule: ndjson},

		// Attacker spellings.
		{name: "comma list write", method: "PUT", path: "/logs,orders/_doc/1", code: codeBad},
		{name: "wildcard write", method: "PUT", path: "/ord*/_doc/1", code: codeBad},
		{name: "_all write", method: "PUT", path: "/_all/_doc/1", code: codeBad},
		{name: "comma list search", method: "POST", path: "/logs,orders/_search", ep: EpSearch, rule: xform},
		{name: "wildcard search", method: "POST", path: "/o*/_search", ep: EpSearch, rule: xform},
		{name: "wildcard star", method: "POST", path: "/*/_search", ep: EpSearch, rule: xform},
		{name: "exclusion still protected", method: "POST", path: "/*,-orders/_search", ep: EpSearch, rule: xform},
		{name: "all search", method: "POST", path: "/_all/_search", ep: EpSearch, rule: xform},
		{name: "server search", method: "POST", path: "/_search", ep: EpSearch, rule: xform},
		{name: "escaped endpoint", method: "POST", path: "/orders/%5Fsearch", code: codeBad},
		{name: "escaped server endpoint", method: "POST", path: "/%5Fbulk", code: codeBad},
		{name: "empty segment", method: "PUT", path: "//orders/_doc/1", code: codeBad},
		{name: "dot segment", method: "PUT", path: "/orders/%2e%2e/_doc/1", code: codeBad},
		{name: "bad escape", method: "PUT", path: "/orders/_doc/%zz", code: codeBad},
		{name: "id starting with _", method: "PUT", path: "/orders/_doc/_bulk", code: codeBad},
		{name: "PATCH", method: "PATCH", path: "/orders/_doc/1", code: codeUnprotected},
		{name: "lower-case method", method: "put", path: "/orders/_doc/1", code: codeUnprotected},
		{name: "source param", method: "GET", path: "/orders/_search", query: "source=%7B%7D&source_content_type=application/json", code: codeUnprotected},
		{name: "source param on an unprotected msearch", method: "POST", path: "/logs/_msearch", query: "source=x", code: codeUnprotected},
		{name: "source param on an unprotected search", method: "GET", path: "/logs/_search", query: "source=%7B%7D", rule: pass},
		{name: "q param", method: "GET", path: "/orders/_search", query: "q=email:x", code: codeUnsupported},
		{name: "sort param", method: "GET", path: "/orders/_search", query: "sort=email:asc", code: codeUnsupported},
		{name: "sort param ok", method: "GET", path: "/orders/_search", query: "sort=date:asc", ep: EpSearch, rule: xform},
		{name: "pipeline param", method: "PUT", path: "/orders/_doc/1", query: "pipeline=p", code: codeUnprotected},
		{name: "pipeline param on unprotected", method: "PUT", path: "/logs/_doc/1", query: "pipeline=p", code: codeUnprotected},
		{name: "unknown endpoint", method: "POST", path: "/orders/_frobnicate", code: codeUnprotected},
		{name: "search template", method: "POST", path: "/orders/_search/template", code: codeUnprotected},
		{name: "eql", method: "POST", path: "/orders/_eql/search", code: codeUnprotected},
		{name: "update by query", method: "POST", path: "/orders/_update_by_query", code: codeUnprotected},
		{name: "delete by query", method: "POST", path: "/orders/_delete_by_query", code: codeUnprotected},
		{name: "alias put", method: "PUT", path: "/orders/_alias/x", code: codeUnprotected},
		{name: "alias delete", method: "DELETE", path: "/orders/_alias/x", ep: EpAlias, rule: none},
		{name: "clone into protected", method: "POST", path: "/logs/_clone/orders", code: codeUnprotected},
		{name: "clone out of protected", method: "POST", path: "/orders/_clone/orders-copy", ep: EpCopy, rule: xform},
		{name: "ccr follow", method: "PUT", path: "/orders/_ccr/follow", code: codeUnprotected},
		{name: "OPTIONS preflight", method: "OPTIONS", path: "/orders/_doc/1", rule: pass},
	})
}

func TestClassifyServer(t *testing.T) {
	runClassify(t, newProfile(t), []classifyCase{
		{name: "root", method: "GET", path: "/", rule: pass},
		{name: "cluster health", method: "GET", path: "/_cluster/health", rule: pass},
		{name: "cat indices", method: "GET", path: "/_cat/indices", rule: pass},
		{name: "bulk", method: "POST", path: "/_bulk", ep: EpBulk, rule: ndjson},
		{name: "bulk on unprotected index", method: "POST", path: "/logs/_bulk", ep: EpBulk, rule: ndjson},
		{name: "msearch", method: "POST", path: "/_msearch", ep: EpMsearch, rule: ndjson},
		{name: "msearch on unprotected index", method: "POST", path: "/logs/_msearch", ep: EpMsearch, rule: ndjson},
		{name: "mget", method: "POST", path: "/_mget", ep: EpMget, rule: jsonB},
		{name: "count", method: "POST", path: "/_count", ep: EpSearch, rule: xform},
		{name: "scroll", method: "POST", path: "/_search/scroll", ep: EpScroll, rule: jsonB},
		{name: "reindex", method: "POST", path: "/_reindex", ep: EpReindex, rule: xform},
		{name: "aliases", method: "POST", path: "/_aliases", code: codeUnprotected},
		{name: "aliases get", method: "GET", path: "/_aliases", rule: pass},
		{name: "index template", method: "PUT", path: "/_index_template/t", code: codeUnprotected},
		{name: "index template get", method: "GET", path: "/_index_template/t", rule: pass},
		{name: "pipeline put", method: "PUT", path: "/_ingest/pipeline/p", code: codeUnprotected},
		{name: "pipeline simulate", method: "POST", path: "/_ingest/pipeline/_simulate", code: codeUnprotected},
		{name: "pipeline get", method: "GET", path: "/_ingest/pipeline/p", rule: pass},
		{name: "stored script", method: "PUT", path: "/_scripts/s", code: codeUnprotected},
		{name: "painless execute", method: "POST", path: "/_scripts/painless/_execute", code: codeUnprotected},
		{name: "restore", method: "POST", path: "/_snapshot/repo/snap/_restore", code: codeUnprotected},
		{name: "snapshot create", method: "PUT", path: "/_snapshot/repo/snap", rule: pass},
		{name: "sql", method: "POST", path: "/_sql", code: codeUnprotected},
		{name: "esql", method: "POST", path: "/_query", code: codeUnprotected},
		{name: "opensearch sql", method: "POST", path: "/_plugins/_sql", code: codeUnprotected},
		{name: "opensearch replication", method: "PUT", path: "/_plugins/_replication/orders/_start", code: codeUnprotected},
		{name: "transform", method: "PUT", path: "/_transform/t", code: codeUnprotected},
		{name: "search template all", method: "POST", path: "/_search/template", code: codeUnprotected},
		{name: "unknown server endpoint", method: "GET", path: "/_frobnicate", code: codeUnprotected},
		{name: "settings all", method: "PUT", path: "/_settings", ep: EpSettings, rule: xform},
	})
	allowed := newProfile(t, Operations...)
	runClassify(t, allowed, []classifyCase{
		{name: "allowed aliases", method: "POST", path: "/_aliases", ep: EpAlias, rule: xform},
		{name: "allowed pipeline param", method: "PUT", path: "/orders/_doc/1", query: "pipeline=p", ep: EpDoc, rule: ndjson},
		{name: "allowed update by query", method: "POST", path: "/orders/_update_by_query", ep: EpByQuery, rule: xform},
		{name: "allowed restore", method: "POST", path: "/_snapshot/repo/snap/_restore", rule: pass},
		{name: "allowed sql", method: "POST", path: "/_sql", rule: pass},
	})
}

func TestGlobsIntersect(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"orders", "orders", true}, {"orders", "order", false}, {"o*", "orders", true}, {"tenant-*", "*", true},
		{"tenant-*", "t*a", true}, {"tenant-*", "x*", false}, {"*x", "*y", false}, {"a*", "*b", true},
		{".ds-orders-*", ".ds-o*", true}, {"orders", "orders*", true}, {"ab*cd", "*bc*", true},
	} {
		if got := globsIntersect(tc.a, tc.b); got != tc.want {
			t.Errorf("globsIntersect(%q, %q) = %v", tc.a, tc.b, got)
		}
		if got := globsIntersect(tc.b, tc.a); got != tc.want {
			t.Errorf("globsIntersect(%q, %q) = %v", tc.b, tc.a, got)
		}
	}
}

func TestNewRefusesMetadataFields(t *testing.T) {
	s := &datastore.Schema{Datastore: Name, Collections: []*datastore.Collection{{Name: "x", Fields: []*datastore.Field{
		{Name: "_id", Path: []string{"_id"}, AnyDepth: true, Key: "pii"}}}}}
	if _, err := New(s); err == nil || !strings.HasPrefix(err.Error(), "elasticsearch: ") {
		t.Fatalf("err = %v", err)
	}
}
