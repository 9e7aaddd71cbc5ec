package memcouch

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

type reply struct {
	status int
	body   string
	json   map[string]any
}

func call(t *testing.T, h http.Handler, method, path, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := reply{status: rec.Code, body: rec.Body.String()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	if strings.HasPrefix(strings.TrimSpace(r.body), "{") {
		if err := json.Unmarshal(rec.Body.Bytes(), &r.json); err != nil {
			t.Fatalf("%s %s: reply is not JSON: %v\n%s", method, path, err, r.body)
		}
	}
	return r
}

// step is one request of a scenario and what must come back. A body
// template may use {{rev}}, replaced by the rev of the last successful
// write.
type step struct {
	method, path, body string
	status             int
	errCode            string   // the "error" member, for failures
	contains           []string // substrings the reply must hold
	excludes           []string // substrings it must not hold
}

func runSteps(t *testing.T, h http.Handler, steps []step) {
	t.Helper()
	rev := ""
	for i, s := range steps {
		body := strings.ReplaceAll(s.body, "{{rev}}", rev)
		path := strings.ReplaceAll(s.path, "{{rev}}", rev)
		r := call(t, h, s.method, path, body)
		if r.status != s.status {
			t.Fatalf("step %d %s %s: status %d, want %d\n%s", i, s.method, path, r.status, s.status, r.body)
		}
		if s.errCode != "" {
			if got, _ := r.json["error"].(string); got != s.errCode {
				t.Fatalf("step %d %s %s: error %q, want %q\n%s", i, s.method, path, got, s.errCode, r.body)
			}
			if _, ok := r.json["reason"].(string); !ok {
				t.Fatalf("step %d: error reply without reason: %s", i, r.body)
			}
		}
		for _, c := range s.contains {
			if !strings.Contains(r.body, c) {
				t.Fatalf("step %d %s %s: reply lacks %q\n%s", i, s.method, path, c, r.body)
			}
		}
		for _, c := range s.excludes {
			if strings.Contains(r.body, c) {
				t.Fatalf("step %d %s %s: reply holds %q\n%s", i, s.method, path, c, r.body)
			}
		}
		if v, ok := r.json["rev"].(string); ok && r.status < 300 {
			rev = v
		}
		if v, ok := r.json["_rev"].(string); ok && r.status < 300 {
			rev = v
		}
	}
}

func TestEndpoints(t *testing.T) {
	createDB := step{method: "PUT", path: "/clinic", status: 201, contains: []string{`"ok":true`}}
	tests := []struct {
		name  string
		steps []step
	}{
		{"welcome", []step{
			{method: "GET", path: "/", status: 200, contains: []string{`"couchdb":"Welcome"`}},
			{method: "POST", path: "/", body: "{}", status: 405, errCode: "method_not_allowed"},
		}},
		{"create database", []step{
			createDB,
			{method: "PUT", path: "/clinic", status: 412, errCode: "file_exists"},
			{method: "PUT", path: "/Bad", status: 400, errCode: "illegal_database_name"},
			{method: "GET", path: "/_all_dbs", status: 200, contains: []string{`["clinic"]`}},
			{method: "GET", path: "/clinic", status: 200, contains: []string{`"db_name":"clinic"`, `"doc_count":0`}},
		}},
		{"missing database", []step{
			{method: "GET", path: "/nope", status: 404, errCode: "not_found", contains: []string{"Database does not exist."}},
			{method: "GET", path: "/nope/x", status: 404, errCode: "not_found"},
			{method: "POST", path: "/nope", body: `{}`, status: 404, errCode: "not_found"},
		}},
		{"delete database", []step{
			createDB,
			{method: "DELETE", path: "/clinic", status: 200},
			{method: "GET", path: "/clinic", status: 404, errCode: "not_found"},
			{method: "DELETE", path: "/clinic", status: 404, errCode: "not_found"},
		}},
		{"post document", []step{
			createDB,
			{method: "POST", path: "/clinic", body: `{"name":"Ana","n":1}`, status: 201, contains: []string{`"ok":true`, `"rev":"1-`}},
			{method: "POST", path: "/clinic", body: `{"_id":"p1","name":"Bo"}`, status: 201, contains: []string{`"id":"p1"`}},
			{method: "POST", path: "/clinic", body: `{"_id":"p1","name":"Bo"}`, status: 409, errCode: "conflict"},
			{method: "POST", path: "/clinic", body: `[1,2]`, status: 400, errCode: "bad_request"},
			{method: "POST", path: "/clinic", body: `{"a":`, status: 400, errCode: "bad_request"},
			{method: "POST", path: "/clinic", body: `{"a":1} {"b":2}`, status: 400, errCode: "bad_request"},
			{method: "POST", path: "/clinic", body: `{"_attachments":{}}`, status: 400, errCode: "doc_validation"},
			{method: "POST", path: "/clinic", body: `{"_id":"_x"}`, status: 400, errCode: "illegal_docid"},
			{method: "GET", path: "/clinic", status: 200, contains: []string{`"doc_count":2`}},
		}},
		{"put and get document", []step{
			createDB,
			{method: "GET", path: "/clinic/p1", status: 404, errCode: "not_found", contains: []string{`"reason":"missing"`}},
			{method: "PUT", path: "/clinic/p1", body: `{"name":"Ana","card":{"number":"4111"}}`, status: 201, contains: []string{`"rev":"1-`}},
			{method: "GET", path: "/clinic/p1", status: 200, contains: []string{`{"_id":"p1","_rev":"1-`, `"name":"Ana","card":{"number":"4111"}}`}},
			// An update without the current rev is a conflict, with it a new generation.
			{method: "PUT", path: "/clinic/p1", body: `{"name":"Ann"}`, status: 409, errCode: "conflict"},
			{method: "PUT", path: "/clinic/p1", body: `{"_rev":"{{rev}}","name":"Ann"}`, status: 201, contains: []string{`"rev":"2-`}},
			{method: "PUT", path: "/clinic/p1", body: `{"_rev":"1-00000000000000000000000000000000","name":"X"}`, status: 409, errCode: "conflict"},
			{method: "GET", path: "/clinic/p1", status: 200, contains: []string{`"_rev":"2-`, `"name":"Ann"`}, excludes: []string{"card"}},
			{method: "PUT", path: "/clinic/p1?rev={{rev}}", body: `{"name":"Q"}`, status: 201, contains: []string{`"rev":"3-`}},
			{method: "PUT", path: "/clinic/p2", body: `{"_id":"other"}`, status: 400, errCode: "bad_request"},
			{method: "PUT", path: "/clinic/p3", body: `{"_rev":"1-abc"}`, status: 409, errCode: "conflict"},
			{method: "PUT", path: "/clinic/_design/d", body: `{"views":{}}`, status: 201},
			{method: "GET", path: "/clinic/_design/d", status: 200, contains: []string{`"_id":"_design/d"`}},
		}},
		{"delete document", []step{
			createDB,
			{method: "PUT", path: "/clinic/p1", body: `{"name":"Ana"}`, status: 201},
			{method: "DELETE", path: "/clinic/p1", status: 409, errCode: "conflict"},
			{method: "DELETE", path: "/clinic/p1?rev={{rev}}", status: 200, contains: []string{`"rev":"2-`}},
			{method: "GET", path: "/clinic/p1", status: 404, errCode: "not_found", contains: []string{`"reason":"deleted"`}},
			{method: "DELETE", path: "/clinic/nobody?rev=1-a", status: 404, errCode: "not_found"},
			// A deleted document can be created again.
			{method: "PUT", path: "/clinic/p1", body: `{"name":"Back"}`, status: 201, contains: []string{`"rev":"3-`}},
			{method: "GET", path: "/clinic", status: 200, contains: []string{`"doc_count":1`, `"doc_del_count":0`}},
		}},
		{"bulk docs", []step{
			createDB,
			{method: "PUT", path: "/clinic/p1", body: `{"v":1}`, status: 201},
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_id":"a","v":1},{"v":2},{"_id":"p1","v":3},{"_id":"p1","_rev":"{{rev}}","v":4}]}`, status: 201,
				contains: []string{`{"ok":true,"id":"a","rev":"1-`, `{"id":"p1","error":"conflict","reason":"Document update conflict."}`, `{"ok":true,"id":"p1","rev":"2-`}},
			{method: "GET", path: "/clinic", status: 200, contains: []string{`"doc_count":3`}},
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[1]}`, status: 400, errCode: "bad_request"},
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"nodocs":[]}`, status: 400, errCode: "bad_request"},
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[],"new_edits":false}`, status: 400, errCode: "bad_request"},
			{method: "GET", path: "/clinic/_bulk_docs", status: 405, errCode: "method_not_allowed"},
		}},
		{"all docs", []step{
			createDB,
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[{"_id":"c","v":3},{"_id":"a","v":1},{"_id":"b","v":2}]}`, status: 201},
			{method: "GET", path: "/clinic/_all_docs", status: 200, contains: []string{`"total_rows":3`, `"rows":[{"id":"a","key":"a","value":{"rev":"1-`}, excludes: []string{`"doc"`}},
			{method: "GET", path: "/clinic/_all_docs?include_docs=true&skip=1&limit=1", status: 200, contains: []string{`"offset":1`, `"id":"b"`, `"doc":{"_id":"b"`}, excludes: []string{`"id":"a"`, `"id":"c"`}},
			{method: "GET", path: "/clinic/_all_docs?limit=x", status: 400, errCode: "query_parse_error"},
			{method: "GET", path: "/clinic/_all_docs?include_docs=yes", status: 400, errCode: "query_parse_error"},
		}},
		{"find", []step{
			createDB,
			{method: "POST", path: "/clinic/_bulk_docs", body: `{"docs":[
				{"_id":"1","email":"a@x","address":{"city":"Oslo"},"n":1},
				{"_id":"2","email":"b@x","address":{"city":"Oslo"},"n":2},
				{"_id":"3","email":"a@x","address":{"city":"Rome"},"n":3}]}`, status: 201},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"a@x"}}`, status: 200, contains: []string{`"_id":"1"`, `"_id":"3"`}, excludes: []string{`"_id":"2"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":{"$eq":"a@x"},"address.city":"Rome"}}`, status: 200, contains: []string{`"_id":"3"`}, excludes: []string{`"_id":"1"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"address":{"city":"Oslo"}},"fields":["n"]}`, status: 200, contains: []string{`{"n":1}`, `{"n":2}`}, excludes: []string{`email`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"$and":[{"n":2},{"email":"b@x"}]}}`, status: 200, contains: []string{`"_id":"2"`}, excludes: []string{`"_id":"1"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"n":2.0}}`, status: 200, contains: []string{`"_id":"2"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"a@x"},"limit":1,"skip":1}`, status: 200, contains: []string{`"_id":"3"`}, excludes: []string{`"_id":"1"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"zz"}}`, status: 200, contains: []string{`"docs":[]`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{}}`, status: 200, contains: []string{`"_id":"1"`, `"_id":"2"`, `"_id":"3"`}},
			// The index on email follows updates and deletes.
			{method: "PUT", path: "/clinic/4", body: `{"email":"a@x"}`, status: 201},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"a@x"}}`, status: 200, contains: []string{`"_id":"4"`}},
			{method: "PUT", path: "/clinic/4", body: `{"_rev":"{{rev}}","email":"c@x"}`, status: 201},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"a@x"}}`, status: 200, excludes: []string{`"_id":"4"`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"c@x"}}`, status: 200, contains: []string{`"_id":"4"`}},
			{method: "DELETE", path: "/clinic/4?rev={{rev}}", status: 200},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"email":"c@x"}}`, status: 200, contains: []string{`"docs":[]`}},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"n":{"$gt":1}}}`, status: 400, errCode: "invalid_operator"},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"$or":[]}}`, status: 400, errCode: "invalid_operator"},
			{method: "POST", path: "/clinic/_find", body: `{"limit":1}`, status: 400, errCode: "missing_required_key"},
			{method: "POST", path: "/clinic/_find", body: `{"selector":[]}`, status: 400, errCode: "invalid_selector"},
			{method: "POST", path: "/clinic/_find", body: `{"selector":{"n":1},"sort":["n"]}`, status: 400, errCode: "bad_request"},
		}},
		{"changes", []step{
			createDB,
			{method: "PUT", path: "/clinic/a", body: `{"v":1}`, status: 201},
			{method: "PUT", path: "/clinic/b", body: `{"v":2}`, status: 201},
			{method: "DELETE", path: "/clinic/b?rev={{rev}}", status: 200},
			{method: "GET", path: "/clinic/_changes", status: 200, contains: []string{`{"seq":1,"id":"a"`, `{"seq":3,"id":"b","changes":[{"rev":"2-`, `"deleted":true`, `"last_seq":3`}},
			{method: "GET", path: "/clinic/_changes?since=1&include_docs=true", status: 200, contains: []string{`"id":"b"`, `"doc":{"_id":"b"`}, excludes: []string{`"id":"a"`}},
			{method: "GET", path: "/clinic/_changes?limit=1", status: 200, contains: []string{`"last_seq":1`, `"pending":1`}},
			{method: "GET", path: "/clinic/_changes?feed=continuous", status: 400, errCode: "bad_request"},
			{method: "GET", path: "/clinic/_changes?since=x", status: 400, errCode: "bad_request"},
		}},
		{"unknown special path", []step{
			createDB,
			{method: "GET", path: "/clinic/_purge", status: 400, errCode: "bad_request"},
			{method: "GET", path: "/clinic/a/b", status: 404, errCode: "not_found"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, New(), tt.steps)
		})
	}
}

func TestPostNeedsJSON(t *testing.T) {
	h := New()
	runSteps(t, h, []step{{method: "PUT", path: "/clinic", status: 201}})
	for _, path := range []string{"/clinic", "/clinic/_bulk_docs", "/clinic/_find"} {
		req := httptest.NewRequest("POST", path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "text/plain")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnsupportedMediaType || !strings.Contains(rec.Body.String(), "bad_content_type") {
			t.Errorf("POST %s as text/plain: %d %s", path, rec.Code, rec.Body)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	h := New()
	h.maxBody = 4096 // the real limit, 64 MiB, would only make the test slow
	runSteps(t, h, []step{{method: "PUT", path: "/clinic", status: 201}})
	big := `{"x":"` + strings.Repeat("a", 4096) + `"}`
	r := call(t, h, "POST", "/clinic", big)
	if r.status != http.StatusRequestEntityTooLarge || r.json["error"] != "too_large" {
		t.Fatalf("oversized body: %d %s", r.status, r.body[:min(len(r.body), 200)])
	}
	for _, path := range []string{"/clinic/_bulk_docs", "/clinic/_find"} {
		if r := call(t, h, "POST", path, `{"docs":[`+big+`]}`); r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized body to %s: %d", path, r.status)
		}
	}
	if r := call(t, h, "GET", "/clinic", ""); r.json["doc_count"] != 0.0 {
		t.Errorf("refused bodies changed the store: %s", r.body)
	}
}

// TestConcurrentWrites checks that sharded locking loses no write and that
// revisions stay consistent under -race.
func TestConcurrentWrites(t *testing.T) {
	srv := httptest.NewServer(New())
	defer srv.Close()
	client := srv.Client()
	mustDo := func(method, path, body string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	mustDo("PUT", "/db", "")
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if resp := mustDo("POST", "/db", fmt.Sprintf(`{"email":"w%d@x","i":%d}`, w%2, i)); resp != nil && resp.StatusCode != 201 {
					t.Errorf("POST: %d", resp.StatusCode)
				}
				if i%10 == 0 {
					mustDo("POST", "/db/_find", `{"selector":{"email":"w0@x"},"limit":1000}`)
				}
			}
		})
	}
	wg.Wait()
	resp, err := client.Post(srv.URL+"/db/_find", "application/json", strings.NewReader(`{"selector":{"email":"w0@x"},"limit":100000}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var found struct{ Docs []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&found); err != nil {
		t.Fatal(err)
	}
	if want := workers / 2 * each; len(found.Docs) != want {
		t.Fatalf("_find after concurrent writes: %d docs, want %d", len(found.Docs), want)
	}
}

func FuzzSelector(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":{"$eq":"x"}}}`, `{"$and":[{"a":1},{"b.c":null}]}`, `{"a":{"$gt":1}}`, `[]`, `{"a":{}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sel string) {
		conds, err := parseSelectorTop(json.RawMessage(sel))
		if err != nil {
			return
		}
		for _, c := range conds {
			if c.path == "" || !json.Valid([]byte(c.value)) {
				t.Fatalf("selector %q gave condition %+v", sel, c)
			}
		}
	})
}

// FuzzParseObject checks the member scanner against encoding/json: every
// object it accepts, rebuilt from its members, decodes to the same value,
// and it accepts exactly the JSON objects.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, ` { "a" : [1, {"b":"}"}] , "c\"d":"\\" } `, `{"a":{"b":[[]]}}`, `[1]`, `{"a":1,}`, `{"\u0041":true,"n":-1.5e3}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		members, err := parseObject([]byte(in))
		var want any
		validObject := json.Unmarshal([]byte(in), &want) == nil && isObject([]byte(in))
		if (err == nil) != validObject {
			t.Fatalf("parseObject(%q): err %v, but it is valid object: %v", in, err, validObject)
		}
		if err != nil {
			return
		}
		rebuilt := []byte{'{'}
		for i, m := range members {
			if i > 0 {
				rebuilt = append(rebuilt, ',')
			}
			rebuilt = appendString(rebuilt, m.key)
			rebuilt = append(rebuilt, ':')
			rebuilt = append(rebuilt, m.raw...)
		}
		rebuilt = append(rebuilt, '}')
		var got any
		if err := json.Unmarshal(rebuilt, &got); err != nil {
			t.Fatalf("rebuilt %q from %q: %v", rebuilt, in, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("rebuilt %q from %q: got %v want %v", rebuilt, in, got, want)
		}
	})
}
