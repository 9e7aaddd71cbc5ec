package elasticsearch

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDocumentWrites(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, method, path, body string
		code                     string
		plain                    []string // must not appear in the output
		kept                     []string // must appear (after expand)
	}{
		{name: "index", method: "PUT", path: "/orders/_doc/1", body: `{"ssn":"123-45-6789","email":"ann@example.com","ward":"B"}`,
			plain: []string{"123-45-6789", "ann@example.com"}, kept: []string{`"ward":"B"`, `"email":⟨contact:"ann@example.com"⟩`}},
		{name: "pretty-printed", method: "PUT", path: "/orders/_doc/1", body: "{\n  \"email\": \"ann@example.com\",\n  \"n\": 1\n}\n",
			plain: []string{"ann@example.com"}, kept: []string{`⟨contact:"ann@example.com"⟩`}},
		{name: "dotted member name", method: "PUT", path: "/orders/_doc/1", body: `{"card.number":"4111111111111111"}`,
			plain: []string{"4111111111111111"}, kept: []string{`"card.number":⟨card:"4111111111111111"⟩`}},
		{name: "nested card", method: "PUT", path: "/orders/_doc/1", body: `{"card":{"number":"4111111111111111","exp":"12/30"}}`,
			plain: []string{"4111111111111111"}, kept: []string{`"exp":"12/30"`}},
		{name: "dotted path to any-depth name", method: "PUT", path: "/orders/_doc/1", body: `{"patient.ssn":"123-45-6789"}`, plain: []string{"123-45-6789"}},
		{name: "dotted inside protected", method: "PUT", path: "/orders/_doc/1", body: `{"address.city":"Springfield"}`, plain: []string{"Springfield"}},
		{name: "empty dot component", method: "PUT", path: "/orders/_doc/1", body: `{"x..ssn":"123-45-6789","ssn.":"987-65-4321"}`, plain: []string{"123-45-6789", "987-65-4321"}},
		{name: "arrays transparent", method: "PUT", path: "/orders/_doc/1", body: `{"cards":[],"card":[{"number":"4111111111111111"}]}`, plain: []string{"4111111111111111"}},
		{name: "object sealed whole", method: "PUT", path: "/orders/_doc/1", body: `{"address":{"city":"Springfield","zip":"12345"}}`, plain: []string{"Springfield", "12345"}},
		{name: "null left", method: "PUT", path: "/orders/_doc/1", body: `{"email":null}`, kept: []string{`"email":null`}},
		{name: "null encrypted", method: "PUT", path: "/orders/_doc/1", body: `{"phone":null}`, plain: []string{"null"}},
		{name: "array body", method: "PUT", path: "/orders/_doc/1", body: `[{"ssn":"123-45-6789"}]`, code: codeBad},
		{name: "two values", method: "PUT", path: "/orders/_doc/1", body: `{"a":1} {"ssn":"123-45-6789"}`, code: "syntax"},
		{name: "duplicate keys", method: "PUT", path: "/orders/_doc/1", body: `{"ssn":"1","ssn":"123-45-6789"}`, code: "syntax"},
		{name: "update doc", method: "POST", path: "/orders/_update/1", body: `{"doc":{"email":"ann@example.com"},"doc_as_upsert":true}`,
			plain: []string{"ann@example.com"}, kept: []string{`"doc_as_upsert":true`}},
		{name: "update upsert", method: "POST", path: "/orders/_update/1", body: `{"doc":{"x":1},"upsert":{"ssn":"123-45-6789"}}`, plain: []string{"123-45-6789"}},
		{name: "update script", method: "POST", path: "/orders/_update/1", body: `{"script":{"source":"ctx._source.ssn = params.s","params":{"s":"123-45-6789"}}}`, code: codeUnprotected},
		{name: "update unknown member", method: "POST", path: "/orders/_update/1", body: `{"doc":{},"fields":["ssn"]}`, code: codeUnprotected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, p, tc.method, tc.path, "", tc.body)
			switch {
			case tc.code == "syntax":
				if err == nil || refusalCode(err) != "" {
					t.Fatalf("err = %v, want a syntax error", err)
				}
				return
			case tc.code != "":
				if refusalCode(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if !json.Valid([]byte(out)) {
				t.Fatalf("output is not JSON: %s", out)
			}
			for _, s := range tc.plain {
				if strings.Contains(out, s) {
					t.Errorf("%s left in %s", s, out)
				}
			}
			for _, s := range tc.kept {
				if !strings.Contains(out, expand(t, s)) {
					t.Errorf("%s missing from %s", s, out)
				}
			}
		})
	}
}

func TestBulk(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, path, body string
		code             string
		plain, kept      []string
	}{
		{name: "index create update delete", path: "/_bulk", body: `{"index":{"_index":"orders","_id":"1"}}
{"email":"ann@example.com","ssn":"123-45-6789"}
{"create":{"_index":"orders","_id":"2"}}
{"card":{"number":"4111111111111111"}}
{"update":{"_index":"orders","_id":"1"}}
{"doc":{"email":"bob@example.com"}}
{"delete":{"_index":"orders","_id":"3"}}
{"index":{"_index":"logs"}}
{"email":"plain@example.com"}
`, plain: []string{"ann@example.com", "123-45-6789", "4111111111111111", "bob@example.com"},
			kept: []string{`{"delete":{"_index":"orders","_id":"3"}}` + "\n", `{"email":"plain@example.com"}` + "\n", `⟨contact:"ann@example.com"⟩`}},
		{name: "path index default", path: "/orders/_bulk", body: "{\"index\":{}}\n{\"email\":\"ann@example.com\"}\n", plain: []string{"ann@example.com"}},
		{name: "action overrides unprotected path", path: "/logs/_bulk", body: "{\"index\":{\"_index\":\"orders\"}}\n{\"email\":\"ann@example.com\"}\n", plain: []string{"ann@example.com"}},
		{name: "CRLF", path: "/orders/_bulk", body: "{\"index\":{}}\r\n{\"email\":\"ann@example.com\"}\r\n", plain: []string{"ann@example.com"}, kept: []string{"}\r\n"}},
		{name: "blank action lines skipped", path: "/orders/_bulk", body: "\n  \n{\"index\":{}}\n{\"email\":\"ann@example.com\"}\n", plain: []string{"ann@example.com"}},
		{name: "missing trailing newline", path: "/orders/_bulk", body: "{\"index\":{}}\n{\"email\":\"ann@example.com\"}", code: codeBad},
		{name: "action without source", path: "/orders/_bulk", body: "{\"index\":{}}\n", code: codeBad},
		// Elasticsearch reads the line after an index action as its
		// source, whatever it looks like; so does the profile.
		{name: "action line read as a source", path: "/orders/_bulk", body: "{\"index\":{}}\n{\"delete\":{\"email\":\"ann@example.com\"}}\n", plain: []string{"ann@example.com"}},
		{name: "source is an array", path: "/orders/_bulk", body: "{\"index\":{}}\n[{\"email\":\"ann@example.com\"}]\n", code: codeBad},
		{name: "two values on one line", path: "/orders/_bulk", body: "{\"index\":{}}\n{\"a\":1} {\"email\":\"ann@example.com\"}\n", code: "syntax"},
		{name: "two values on the action line", path: "/orders/_bulk", body: "{\"index\":{}} {\"email\":\"ann@example.com\"}\n{}\n", code: "syntax"},
		{name: "duplicate keys", path: "/orders/_bulk", body: "{\"index\":{}}\n{\"email\":\"a\",\"email\":\"ann@example.com\"}\n", code: "syntax"},
		{name: "two actions in one line", path: "/orders/_bulk", body: "{\"index\":{},\"delete\":{}}\n{}\n", code: codeBad},
		{name: "unknown action", path: "/orders/_bulk", body: "{\"upsert\":{}}\n{}\n", code: codeBad},
		{name: "unknown action parameter", path: "/orders/_bulk", body: "{\"index\":{\"x\":1}}\n{}\n", code: codeBad},
		{name: "pipeline in action", path: "/logs/_bulk", body: "{\"index\":{\"pipeline\":\"p\"}}\n{}\n", code: codeUnprotected},
		{name: "no index anywhere", path: "/_bulk", body: "{\"index\":{}}\n{}\n", code: codeBad},
		{name: "wildcard index in action", path: "/_bulk", body: "{\"index\":{\"_index\":\"ord*\"}}\n{}\n", code: codeBad},
		{name: "update script", path: "/orders/_bulk", body: "{\"update\":{\"_id\":\"1\"}}\n{\"script\":\"ctx._source.ssn='x'\"}\n", code: codeUnprotected},
		{name: "escaped action name", path: "/orders/_bulk", body: "{\"\\u0069ndex\":{}}\n{\"email\":\"ann@example.com\"}\n", plain: []string{"ann@example.com"}},
		{name: "escaped _index", path: "/_bulk", body: "{\"index\":{\"\\u005findex\":\"orders\"}}\n{\"email\":\"ann@example.com\"}\n", plain: []string{"ann@example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, p, "POST", tc.path, "", tc.body)
			switch {
			case tc.code == "syntax":
				if err == nil || refusalCode(err) != "" {
					t.Fatalf("err = %v, want a syntax error", err)
				}
				return
			case strings.HasSuffix(tc.code, "?"):
				if err == nil {
					t.Fatalf("accepted: %s", out)
				}
				return
			case tc.code != "":
				if refusalCode(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if strings.Count(out, "\n") != strings.Count(tc.body, "\n") {
				t.Errorf("line count changed: %q", out)
			}
			for _, s := range tc.plain {
				if strings.Contains(out, s) {
					t.Errorf("%s left in %s", s, out)
				}
			}
			for _, s := range tc.kept {
				if !strings.Contains(out, expand(t, s)) {
					t.Errorf("%q missing from %s", s, out)
				}
			}
		})
	}
}

func TestSearch(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, path, body string
		want             string // expanded; "" to skip
		code             string
	}{
		{name: "term", path: "/orders/_search", body: `{"query":{"term":{"email":"ann@example.com"}}}`, want: `{"query":{"term":{"email":⟨contact:"ann@example.com"⟩}}}`},
		{name: "term object", path: "/orders/_search", body: `{"query":{"term":{"email":{"value":"ann@example.com","boost":2}}}}`, want: `{"query":{"term":{"email":{"value":⟨contact:"ann@example.com"⟩,"boost":2}}}}`},
		{name: "term multi-field", path: "/orders/_search", body: `{"query":{"term":{"email.keyword":"ann@example.com"}}}`, want: `{"query":{"term":{"email.keyword":⟨contact:"ann@example.com"⟩}}}`},
		{name: "terms", path: "/orders/_count", body: `{"query":{"terms":{"email":["a@x.org","b@x.org"],"boost":1}}}`, want: `{"query":{"terms":{"email":[⟨contact:"a@x.org"⟩,⟨contact:"b@x.org"⟩],"boost":1}}}`},
		{name: "terms lookup", path: "/orders/_search", body: `{"query":{"terms":{"email":{"index":"u","id":"1","path":"e"}}}}`, want: `{"query":{"terms":{"email":{"index":"u","id":"1","path":"e"}}}}`},
		{name: "match becomes term", path: "/orders/_search", body: `{"query":{"match":{"email":"ann@example.com"}}}`, want: `{"query":{"term":{"email":{"value":⟨contact:"ann@example.com"⟩}}}}`},
		{name: "match options", path: "/orders/_search", body: `{"query":{"match_phrase":{"email":{"query":"ann@example.com","slop":0,"_name":"m"}}}}`, want: `{"query":{"term":{"email":{"value":⟨contact:"ann@example.com"⟩,"_name":"m"}}}}`},
		{name: "match fuzziness", path: "/orders/_search", body: `{"query":{"match":{"email":{"query":"x","fuzziness":"AUTO"}}}}`, code: codeUnsupported},
		{name: "match unprotected", path: "/orders/_search", body: `{"query":{"match":{"ward":"B"}}}`, want: `{"query":{"match":{"ward":"B"}}}`},
		{name: "bool nesting", path: "/orders/_search", body: `{"query":{"bool":{"must":[{"term":{"card.number":"4111"}}],"filter":{"bool":{"should":[{"match":{"phone":"555"}}],"must_not":{"ids":{"values":["1"]}}}}}}}`,
			want: `{"query":{"bool":{"must":[{"term":{"card.number":⟨card:"4111"⟩}}],"filter":{"bool":{"should":[{"term":{"phone":{"value":⟨contact:"555"⟩}}}],"must_not":{"ids":{"values":["1"]}}}}}}}`},
		{name: "nested card path", path: "/orders/_search", body: `{"query":{"nested":{"path":"card","query":{"term":{"card.number":"4111"}}}}}`, want: `{"query":{"nested":{"path":"card","query":{"term":{"card.number":⟨card:"4111"⟩}}}}}`},
		{name: "ids", path: "/orders/_search", body: `{"query":{"ids":{"values":["a","b"]}}}`, want: `{"query":{"ids":{"values":["a","b"]}}}`},
		{name: "exists", path: "/orders/_search", body: `{"query":{"exists":{"field":"ssn"}}}`, want: `{"query":{"exists":{"field":"ssn"}}}`},
		{name: "source filtering", path: "/orders/_search", body: `{"_source":["email"],"fields":["email"],"size":5}`, want: `{"_source":["email"],"fields":["email"],"size":5}`},
		{name: "range", path: "/orders/_search", body: `{"query":{"range":{"email":{"gte":"a"}}}}`, code: codeUnsupported},
		{name: "range unprotected", path: "/orders/_search", body: `{"query":{"range":{"date":{"gte":"2020"}}}}`, want: `{"query":{"range":{"date":{"gte":"2020"}}}}`},
		{name: "prefix", path: "/orders/_search", body: `{"query":{"prefix":{"email":"ann"}}}`, code: codeUnsupported},
		{name: "wildcard", path: "/orders/_search", body: `{"query":{"bool":{"should":[{"wildcard":{"card.number":{"value":"4*"}}}]}}}`, code: codeUnsupported},
		{name: "regexp", path: "/orders/_search", body: `{"query":{"regexp":{"email":".*"}}}`, code: codeUnsupported},
		{name: "fuzzy", path: "/orders/_search", body: `{"query":{"fuzzy":{"email":"ann"}}}`, code: codeUnsupported},
		{name: "term on random field", path: "/orders/_search", body: `{"query":{"term":{"ssn":"123-45-6789"}}}`, code: codeUnsupported},
		{name: "term inside random object", path: "/orders/_search", body: `{"query":{"term":{"address.city":"x"}}}`, code: codeUnsupported},
		{name: "query_string", path: "/orders/_search", body: `{"query":{"query_string":{"query":"email:ann"}}}`, code: codeUnsupported},
		{name: "simple_query_string all fields", path: "/orders/_search", body: `{"query":{"simple_query_string":{"query":"ann"}}}`, code: codeUnsupported},
		{name: "multi_match wildcard fields", path: "/orders/_search", body: `{"query":{"multi_match":{"query":"ann","fields":["e*"]}}}`, code: codeUnsupported},
		{name: "multi_match unprotected fields", path: "/orders/_search", body: `{"query":{"multi_match":{"query":"B","fields":["ward","notes^2"]}}}`, want: `{"query":{"multi_match":{"query":"B","fields":["ward","notes^2"]}}}`},
		{name: "script", path: "/orders/_search", body: `{"query":{"script":{"script":"doc['email'].value == 'x'"}}}`, code: codeUnsupported},
		{name: "wrapper", path: "/orders/_search", body: `{"query":{"wrapper":{"query":"eyJ0ZXJtIjp7fX0="}}}`, code: codeUnsupported},
		{name: "unknown query", path: "/orders/_search", body: `{"query":{"frobnicate":{"email":"x"}}}`, code: codeUnsupported},
		{name: "two query types in one object", path: "/orders/_search", body: `{"query":{"term":{"ward":"B"},"match":{"email":"x"}}}`, code: codeBad},
		{name: "sort", path: "/orders/_search", body: `{"sort":[{"email":"asc"}]}`, code: codeUnsupported},
		{name: "sort string", path: "/orders/_search", body: `{"sort":"card.number"}`, code: codeUnsupported},
		{name: "sort ok", path: "/orders/_search", body: `{"sort":[{"date":{"order":"desc"}},"_score"]}`, want: `{"sort":[{"date":{"order":"desc"}},"_score"]}`},
		{name: "aggs", path: "/orders/_search", body: `{"aggs":{"e":{"terms":{"field":"email"}}}}`, code: codeUnsupported},
		{name: "aggs nested", path: "/orders/_search", body: `{"aggs":{"w":{"terms":{"field":"ward"},"aggs":{"c":{"cardinality":{"field":"phone"}}}}}}`, code: codeUnsupported},
		{name: "aggs filter query sealed", path: "/orders/_search", body: `{"aggs":{"f":{"filter":{"term":{"email":"a@x.org"}}}}}`, want: `{"aggs":{"f":{"filter":{"term":{"email":⟨contact:"a@x.org"⟩}}}}}`},
		{name: "aggs unknown", path: "/orders/_search", body: `{"aggs":{"f":{"frob":{"field":"ward"}}}}`, code: codeUnsupported},
		{name: "aggs script", path: "/orders/_search", body: `{"aggs":{"f":{"terms":{"script":"doc['email']"}}}}`, code: codeUnsupported},
		{name: "highlight", path: "/orders/_search", body: `{"highlight":{"fields":{"email":{}}}}`, code: codeUnsupported},
		{name: "highlight wildcard", path: "/orders/_search", body: `{"highlight":{"fields":{"*":{}}}}`, code: codeUnsupported},
		{name: "collapse", path: "/orders/_search", body: `{"collapse":{"field":"email"}}`, code: codeUnsupported},
		{name: "suggest", path: "/orders/_search", body: `{"suggest":{"s":{"text":"ann","term":{"field":"email"}}}}`, code: codeUnsupported},
		{name: "runtime mappings", path: "/orders/_search", body: `{"runtime_mappings":{"x":{"type":"keyword"}}}`, code: codeUnsupported},
		{name: "unknown member", path: "/orders/_search", body: `{"retriever":{"standard":{"query":{"term":{"email":"x"}}}}}`, code: codeUnprotected},
		{name: "post_filter", path: "/orders/_search", body: `{"post_filter":{"term":{"email":"a@x.org"}}}`, want: `{"post_filter":{"term":{"email":⟨contact:"a@x.org"⟩}}}`},
		{name: "count unknown member", path: "/orders/_count", body: `{"query":{"match_all":{}},"size":1}`, code: codeUnprotected},
		{name: "comma list seals", path: "/logs,orders/_search", body: `{"query":{"term":{"email":"a@x.org"}}}`, want: `{"query":{"term":{"email":⟨contact:"a@x.org"⟩}}}`},
		{name: "terms_enum", path: "/orders/_terms_enum", body: `{"field":"email","string":"a"}`, code: codeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, p, "POST", tc.path, "", tc.body)
			if tc.code != "" {
				if refusalCode(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := expand(t, tc.want); out != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
		})
	}
}

func TestMsearch(t *testing.T) {
	p := newProfile(t)
	body := "{\"index\":\"orders\"}\n{\"query\":{\"term\":{\"email\":\"a@x.org\"}}}\n\n{\"query\":{\"term\":{\"email\":\"b@x.org\"}}}\n{\"index\":[\"logs\"]}\n{\"query\":{\"term\":{\"email\":\"c@x.org\"}}}\n"
	out, err := run(t, p, "POST", "/logs/_msearch", "", body)
	if err != nil {
		t.Fatal(err)
	}
	want := expand(t, "{\"index\":\"orders\"}\n{\"query\":{\"term\":{\"email\":⟨contact:\"a@x.org\"⟩}}}\n\n{\"query\":{\"term\":{\"email\":\"b@x.org\"}}}\n{\"index\":[\"logs\"]}\n{\"query\":{\"term\":{\"email\":\"c@x.org\"}}}\n")
	if out != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
	// Against the protected default, the empty header's body is sealed.
	out, err = run(t, p, "POST", "/orders/_msearch", "", "\n{\"query\":{\"term\":{\"email\":\"b@x.org\"}}}\n")
	if err != nil || strings.Contains(out, "b@x.org") {
		t.Fatalf("%s %v", out, err)
	}
	for _, bad := range []string{"{}\n{\"query\":{\"prefix\":{\"email\":\"a\"}}}\n", "{}\n", "{}\n{}"} {
		if _, err := run(t, p, "POST", "/orders/_msearch", "", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReindex(t *testing.T) {
	p := newProfile(t)
	if _, err := run(t, p, "POST", "/_reindex", "", `{"source":{"index":"logs"},"dest":{"index":"orders"}}`); refusalCode(err) != codeUnprotected {
		t.Errorf("reindex into protected: %v", err)
	}
	if _, err := run(t, p, "POST", "/_reindex", "", `{"source":{"index":"logs"},"dest":{"index":"logs2"}}`); err != nil {
		t.Errorf("reindex between unprotected indices: %v", err)
	}
	if _, err := run(t, p, "POST", "/_reindex", "", `{"source":{"index":"logs"},"dest":{"index":"logs2","pipeline":"p"}}`); refusalCode(err) != codeUnprotected {
		t.Errorf("reindex with a pipeline: %v", err)
	}
	allowed := newProfile(t, OpReindex)
	out, err := run(t, allowed, "POST", "/_reindex", "", `{"source":{"index":"orders","query":{"term":{"email":"a@x.org"}}},"dest":{"index":"orders-v2"}}`)
	if err != nil || strings.Contains(out, "a@x.org") {
		t.Errorf("allowed reindex: %s %v", out, err)
	}
	if _, err := run(t, allowed, "POST", "/_reindex", "", `{"source":{"remote":{"host":"http://x:9200"},"index":"o"},"dest":{"index":"orders"}}`); refusalCode(err) != codeUnprotected {
		t.Errorf("remote reindex: %v", err)
	}
}

func TestIndexSettings(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		method, path, body string
		ok                 bool
	}{
		{"PUT", "/orders", `{"mappings":{"properties":{"email":{"type":"keyword"}}}}`, true},
		{"PUT", "/orders", `{"aliases":{"o":{}}}`, false},
		{"PUT", "/logs", `{"aliases":{"o":{}}}`, true},
		{"PUT", "/logs", `{"settings":{"index":{"default_pipeline":"p"}}}`, false},
		{"PUT", "/logs", `{"settings":{"index.final_pipeline":"p"}}`, false},
		{"PUT", "/orders/_settings", `{"index":{"default_pipeline":"_none"}}`, true},
		{"PUT", "/orders/_settings", `{"default_pipeline":"p"}`, false},
		{"PUT", "/_settings", `{"index":{"number_of_replicas":1}}`, true},
	} {
		_, err := run(t, p, tc.method, tc.path, "", tc.body)
		if (err == nil) != tc.ok {
			t.Errorf("%s %s %s: %v", tc.method, tc.path, tc.body, err)
		}
	}
}
