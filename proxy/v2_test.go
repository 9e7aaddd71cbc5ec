package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

// scriptedProfile answers Classify from a table keyed by "METHOD path";
// whatever is not in it passes (outside every collection). It records
// the requests it was asked about.
type scriptedProfile struct {
	ops  map[string]*datastore.Operation
	seen []datastore.Request
}

func (s *scriptedProfile) Name() string { return "scripted" }

func (s *scriptedProfile) Classify(r *datastore.Request) *datastore.Operation {
	s.seen = append(s.seen, *r)
	if op, ok := s.ops[r.Method+" "+r.Path]; ok {
		return op
	}
	return &datastore.Operation{Endpoint: "scripted.pass", Body: datastore.BodyPass}
}

func v2Plan(t *testing.T, prof datastore.Profile) *rules.Plan {
	t.Helper()
	return &rules.Plan{
		Hash:        "sha256:v2test",
		Schema:      &datastore.Schema{Datastore: "scripted"},
		Profile:     prof,
		Decryptor:   fieldcrypt.NewDecryptor(openPolicy{"pii", "contact"}, fieldcrypt.Limits{}),
		DecryptKeys: []string{"pii", "contact"},
	}
}

func TestV2Pipeline(t *testing.T) {
	coll := &datastore.Collection{Name: "clinic", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
	}}
	docRules, err := coll.DocumentRules()
	if err != nil {
		t.Fatal(err)
	}
	docEnc := mustEncryptor(docRules)
	prof := &scriptedProfile{ops: map[string]*datastore.Operation{
		"PUT /clinic/p1":         {Collection: coll, Endpoint: "t.doc", Body: datastore.BodyEncrypt, Encryptor: docEnc, Keys: []string{"pii"}},
		"PUT /clinic/a%2Fb":      {Collection: coll, Endpoint: "t.doc", Body: datastore.BodyEncrypt, Encryptor: docEnc, Keys: []string{"pii"}},
		"GET /clinic/p1":         {Collection: coll, Endpoint: "t.doc", Body: datastore.BodyNone},
		"POST /clinic/_all_docs": {Collection: coll, Endpoint: "t.ids", Body: datastore.BodyJSON},
		"POST /clinic/_update":   {Collection: coll, Endpoint: "t.update", Refusal: datastore.Refuse("update handlers run code with request data")},
		"POST /clinic/_find": {Collection: coll, Endpoint: "t.find", Body: datastore.BodyTransform, Keys: []string{"pii"},
			Transform: func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
				if bytes.Contains(body, []byte("$gt")) {
					return nil, datastore.Unsupported("range on ssn")
				}
				return []byte(`{"selector":{"ssn":"TOKEN"}}`), nil
			}},
		"GET /clinic/_design/d/_view/v": {Collection: coll, Endpoint: "t.view", Body: datastore.BodyNone,
			Query: func(ctx context.Context, raw string, keys fieldcrypt.Keyring) (string, error) {
				if strings.Contains(raw, "startkey") {
					return "", datastore.Unsupported("range")
				}
				return strings.ReplaceAll(raw, "123", "SEALED"), nil
			}},
	}}
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(v2Plan(t, prof)), Keys: testKeyring(t)})
	c := client(t)
	json := http.Header{"Content-Type": {"application/json"}}

	type tc struct {
		name, method, path string
		hdr                http.Header
		body               string
		status             int
		code               string // error code when refused
		sent               func(t *testing.T, r recorded)
	}
	noPlain := func(t *testing.T, r recorded) {
		if bytes.Contains(r.Body, []byte("123-45-6789")) {
			t.Errorf("plaintext reached the upstream: %s", r.Body)
		}
		if !bytes.Contains(r.Body, []byte(`"`+fieldcrypt.TokenPrefix)) {
			t.Errorf("no token in %s", r.Body)
		}
	}
	cases := []tc{
		{name: "doc write sealed", method: "PUT", path: "/clinic/p1", hdr: json, body: `{"ssn":"123-45-6789","ward":"B"}`, status: 200, sent: noPlain},
		{name: "escaped id reaches the profile escaped", method: "PUT", path: "/clinic/a%2Fb", hdr: json, body: `{"ssn":"123-45-6789"}`, status: 200, sent: func(t *testing.T, r recorded) {
			noPlain(t, r)
			if r.Path != "/clinic/a/b" { // recorder shows the decoded path
				t.Errorf("path %q", r.Path)
			}
		}},
		{name: "no content type is read as JSON", method: "PUT", path: "/clinic/p1", body: `{"ssn":"123-45-6789"}`, status: 200, sent: noPlain},
		{name: "text/plain is read as JSON", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {"text/plain"}}, body: `{"ssn":"123-45-6789"}`, status: 200, sent: noPlain},
		{name: "utf-8 charset", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {"application/json; charset=UTF-8"}}, body: `{"ssn":"123-45-6789"}`, status: 200, sent: noPlain},
		{name: "utf-7 charset refused", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {"application/json; charset=utf-7"}}, body: `{"+AHM-sn":"123-45-6789"}`, status: 415, code: CodeUnsupportedCharset},
		{name: "quoted latin1 charset refused", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {`application/json; charset="ISO-8859-1"`}}, body: `{"ssn":"1"}`, status: 415, code: CodeUnsupportedCharset},
		{name: "two content types refused", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {"application/json", "text/plain; charset=utf-16"}}, body: `{"ssn":"1"}`, status: 400, code: CodeBadContentType},
		{name: "multipart refused", method: "PUT", path: "/clinic/p1", hdr: http.Header{"Content-Type": {"multipart/related; boundary=x"}}, body: `--x`, status: 415, code: CodeUnsupportedMedia},
		{name: "byte-order mark refused", method: "PUT", path: "/clinic/p1", hdr: json, body: "\xEF\xBB\xBF{\"ssn\":\"123-45-6789\"}", status: 400, code: CodeByteOrderMark},
		{name: "method override header refused", method: "PUT", path: "/clinic/p1", hdr: http.Header{"X-Http-Method-Override": {"DELETE"}}, body: `{}`, status: 403, code: CodeUnprotectedOperation},
		{name: "method override on a read refused", method: "GET", path: "/clinic/p1", hdr: http.Header{"X-Method-Override": {"DELETE"}}, status: 403, code: CodeUnprotectedOperation},
		{name: "_method parameter refused", method: "GET", path: "/clinic/p1?a=1;_m%65thod=PUT", status: 403, code: CodeUnprotectedOperation},
		{name: "body where none may travel", method: "GET", path: "/clinic/p1", hdr: json, body: `{"ssn":"123-45-6789"}`, status: 400, code: CodeUnexpectedBody},
		{name: "read passes", method: "GET", path: "/clinic/p1", status: 200},
		{name: "profile refusal", method: "POST", path: "/clinic/_update", hdr: json, body: `{"ssn":"123-45-6789"}`, status: 403, code: CodeUnprotectedOperation},
		{name: "ids body validated", method: "POST", path: "/clinic/_all_docs", hdr: json, body: `{"keys":["a"]}`, status: 200, sent: func(t *testing.T, r recorded) {
			if string(r.Body) != `{"keys":["a"]}` {
				t.Errorf("body changed: %s", r.Body)
			}
		}},
		{name: "ids body malformed", method: "POST", path: "/clinic/_all_docs", hdr: json, body: `{"keys":[`, status: 400, code: CodeInvalidJSON},
		{name: "ids body invalid UTF-8", method: "POST", path: "/clinic/_all_docs", hdr: json, body: "{\"keys\":[\"\xff\"]}", status: 400, code: CodeInvalidUTF8},
		{name: "transform", method: "POST", path: "/clinic/_find", hdr: json, body: `{"selector":{"ssn":"123-45-6789"}}`, status: 200, sent: func(t *testing.T, r recorded) {
			if string(r.Body) != `{"selector":{"ssn":"TOKEN"}}` {
				t.Errorf("body %s", r.Body)
			}
		}},
		{name: "transform refusal", method: "POST", path: "/clinic/_find", hdr: json, body: `{"selector":{"ssn":{"$gt":"1"}}}`, status: 400, code: CodeUnsupportedQuery},
		{name: "transform gets valid JSON only", method: "POST", path: "/clinic/_find", hdr: json, body: `{"selector":`, status: 400, code: CodeInvalidJSON},
		{name: "query sealed", method: "GET", path: "/clinic/_design/d/_view/v?key=%22123%22", status: 200, sent: func(t *testing.T, r recorded) {
			if r.RawQuery != "key=%22SEALED%22" {
				t.Errorf("query %q", r.RawQuery)
			}
		}},
		{name: "query refusal", method: "GET", path: "/clinic/_design/d/_view/v?startkey=1", status: 400, code: CodeUnsupportedQuery},
		{name: "unprotected passes untouched", method: "PUT", path: "/other/p1", hdr: http.Header{"Content-Type": {"application/json; charset=utf-7"}}, body: `{"ssn":"123-45-6789"}`, status: 200, sent: func(t *testing.T, r recorded) {
			if string(r.Body) != `{"ssn":"123-45-6789"}` {
				t.Errorf("body changed: %s", r.Body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rc.count()
			var body *strings.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			var status int
			var resp []byte
			if body != nil {
				status, _, resp = do(t, c, tc.method, tp.URL.String()+tc.path, tc.hdr, body)
			} else {
				status, _, resp = do(t, c, tc.method, tp.URL.String()+tc.path, tc.hdr, nil)
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, resp)
			}
			if tc.code != "" {
				if got := errorCode(t, resp); got != tc.code {
					t.Errorf("code %q, want %q", got, tc.code)
				}
				if rc.count() != before {
					t.Errorf("a refused request reached the upstream: %+v", rc.last(t))
				}
				return
			}
			if rc.count() != before+1 {
				t.Fatalf("upstream saw %d requests, want 1", rc.count()-before)
			}
			if tc.sent != nil {
				tc.sent(t, rc.last(t))
			}
		})
	}
	// The profile saw escaped paths, as the store will.
	found := false
	for _, r := range prof.seen {
		if r.Path == "/clinic/a%2Fb" {
			found = true
		}
	}
	if !found {
		t.Error("the profile never saw the escaped path /clinic/a%2Fb")
	}
}

// A gzip-encoded document is decoded, sealed and re-encoded.
func TestV2GzipBody(t *testing.T) {
	coll := &datastore.Collection{Name: "clinic", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
	}}
	docRules, _ := coll.DocumentRules()
	prof := &scriptedProfile{ops: map[string]*datastore.Operation{
		"PUT /clinic/p1": {Collection: coll, Endpoint: "t.doc", Body: datastore.BodyEncrypt, Encryptor: mustEncryptor(docRules), Keys: []string{"pii"}},
	}}
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(v2Plan(t, prof)), Keys: testKeyring(t)})
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(`{"ssn":"123-45-6789"}`))
	zw.Close()
	status, _, resp := do(t, client(t), "PUT", tp.URL.String()+"/clinic/p1",
		http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, &zb)
	if status != 200 {
		t.Fatalf("status %d: %s", status, resp)
	}
	zr, err := gzip.NewReader(bytes.NewReader(rc.last(t).Body))
	if err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	plain.ReadFrom(zr)
	if strings.Contains(plain.String(), "123-45-6789") || !strings.Contains(plain.String(), `"`+fieldcrypt.TokenPrefix) {
		t.Errorf("upstream got %s", plain.String())
	}
}

// Version 1 routes match the path as the store reads it: "%2F" inside a
// segment belongs to it.
func TestV1EscapedPathMatching(t *testing.T) {
	plan, _, err := rules.Compile("t.yaml", []byte(`version: 1
routes:
  - name: docs
    match: {methods: [PUT], paths: ["/clinic/*"]}
    encrypt:
      - fields: ["$.ssn"]
        key: pii
`))
	if err != nil {
		t.Fatal(err)
	}
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(plan), Keys: testKeyring(t)})
	c := client(t)
	for _, path := range []string{"/clinic/a%2Fb", "/clinic/_design%2Fx", "/cl%69nic/p1", "/clinic/a%2fb%2Fc"} {
		status, _, resp := do(t, c, "PUT", tp.URL.String()+path, http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"ssn":"123-45-6789"}`))
		if status != 200 {
			t.Fatalf("%s: status %d: %s", path, status, resp)
		}
		if b := rc.last(t).Body; bytes.Contains(b, []byte("123-45-6789")) {
			t.Errorf("%s: plaintext reached the upstream: %s", path, b)
		}
	}
	for path, code := range map[string]string{
		"/clinic/%2E%2E/x": CodeBadPath,
	} {
		before := rc.count()
		status, _, resp := do(t, c, "PUT", tp.URL.String()+path, http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"ssn":"123-45-6789"}`))
		if status != 400 || errorCode(t, resp) != code || rc.count() != before {
			t.Errorf("%s: status %d %s", path, status, resp)
		}
	}
	// The UTF-7 trick on a v1 route.
	before := rc.count()
	status, _, resp := do(t, c, "PUT", tp.URL.String()+"/clinic/p1", http.Header{"Content-Type": {"application/json; charset=utf-7"}}, strings.NewReader(`{"+AHM-sn":"123-45-6789"}`))
	if status != 415 || errorCode(t, resp) != CodeUnsupportedCharset || rc.count() != before {
		t.Errorf("utf-7: status %d %s", status, resp)
	}
}

func TestRoutePath(t *testing.T) {
	for _, c := range []struct {
		in, out   string
		empty, ok bool
	}{
		{"/clinic/p1", "/clinic/p1", false, true},
		{"/clinic/a%2Fb", "/clinic/a%2Fb", false, true},
		{"/clinic/a%2fb", "/clinic/a%2Fb", false, true},
		{"/cl%69nic/p%20q", "/clinic/p q", false, true},
		{"/clinic//p1", "/clinic//p1", true, true},
		{"/clinic/p1/", "/clinic/p1/", false, true},
		{"/clinic/%2e", "", false, false},
		{"/clinic/%zz", "", false, false},
	} {
		out, empty, ok := routePath(c.in)
		if out != c.out || empty != c.empty || ok != c.ok {
			t.Errorf("routePath(%q) = %q, %v, %v", c.in, out, empty, ok)
		}
	}
}
