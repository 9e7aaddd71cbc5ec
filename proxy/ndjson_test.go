package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/elasticsearch"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// TestNDJSONBody: BodyNDJSON through the pipeline with the Elasticsearch
// profile: lines sealed as they are read, whatever the NDJSON media type
// or content coding; one refused line, an oversized body or a BOM
// forwards nothing.
func TestNDJSONBody(t *testing.T) {
	schema := &datastore.Schema{Datastore: elasticsearch.Name, Collections: []*datastore.Collection{{Name: "orders", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
		{Name: "email", Path: []string{"email"}, AnyDepth: true, Key: "contact", Mode: fieldcrypt.ModeDeterministic, Searchable: true},
	}}}}
	prof, err := elasticsearch.New(schema)
	if err != nil {
		t.Fatal(err)
	}
	rc, up := startUpstream(t, nil)
	plan := v2Plan(t, prof)
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(plan), Keys: testKeyring(t), MaxBody: 4096})
	c := client(t)

	bulk := "{\"index\":{\"_index\":\"orders\",\"_id\":\"1\"}}\n{\"ssn\":\"123-45-6789\",\"email\":\"ann@example.com\"}\n{\"delete\":{\"_index\":\"orders\",\"_id\":\"2\"}}\n"
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		name   string
		hdr    http.Header
		body   []byte
		chunk  bool
		status int
		code   string
	}{
		{name: "x-ndjson", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(bulk), status: 200},
		{name: "elasticsearch 8 media type", hdr: http.Header{"Content-Type": {"application/vnd.elasticsearch+x-ndjson; compatible-with=8"}}, body: []byte(bulk), status: 200},
		{name: "json media type", hdr: http.Header{"Content-Type": {"application/json"}}, body: []byte(bulk), status: 200},
		{name: "chunked", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(bulk), chunk: true, status: 200},
		{name: "gzip", hdr: http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, body: gz(bulk), status: 200},
		{name: "one bad line", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(bulk + "{\"index\":{\"_index\":\"orders\"}}\n[{\"ssn\":\"123-45-6789\"}]\n"), status: 400, code: CodeBadRequest},
		{name: "syntax error on a line", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(bulk + "{\"index\":{}\n"), status: 400, code: CodeInvalidJSON},
		{name: "too large", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(strings.Repeat(bulk, 100)), status: 413, code: CodeBodyTooLarge},
		{name: "too large chunked", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte(strings.Repeat(bulk, 100)), chunk: true, status: 413, code: CodeBodyTooLarge},
		{name: "gzip bomb", hdr: http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, body: gz(strings.Repeat(bulk, 100)), status: 413, code: CodeBodyTooLarge},
		{name: "bad gzip", hdr: http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, body: []byte("not gzip"), status: 400, code: CodeBadEncoding},
		{name: "byte-order mark", hdr: http.Header{"Content-Type": {"application/x-ndjson"}}, body: []byte("\xEF\xBB\xBF" + bulk), status: 400, code: CodeByteOrderMark},
		{name: "multipart", hdr: http.Header{"Content-Type": {"multipart/form-data; boundary=x"}}, body: []byte(bulk), status: 415, code: CodeUnsupportedMedia},
		{name: "yaml", hdr: http.Header{"Content-Type": {"application/yaml"}}, body: []byte("ssn: 1\n"), status: 415, code: CodeUnsupportedMedia},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rc.count()
			var rd io.Reader = bytes.NewReader(tc.body)
			if tc.chunk {
				rd = io.MultiReader(rd) // unknown length: sent chunked
			}
			status, _, resp := do(t, c, "POST", tp.URL.String()+"/_bulk", tc.hdr, rd)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, resp, tc.status)
			}
			if tc.code != "" {
				if got := errorCode(t, resp); got != tc.code {
					t.Fatalf("code %q, want %q", got, tc.code)
				}
				if rc.count() != before {
					t.Fatal("a refused body reached the upstream")
				}
				return
			}
			r := rc.last(t)
			body := r.Body
			if r.Header.Get("Content-Encoding") == "gzip" {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(zr)
			}
			if bytes.Contains(body, []byte("123-45-6789")) || bytes.Contains(body, []byte("ann@example.com")) {
				t.Errorf("plaintext reached the upstream: %s", body)
			}
			if bytes.Count(body, []byte("\n")) != 3 || !bytes.Contains(body, []byte(`{"delete":{"_index":"orders","_id":"2"}}`+"\n")) {
				t.Errorf("lines changed: %q", body)
			}
		})
	}
}

// TestNDJSONResponses: tokens in NDJSON and Elasticsearch 8 JSON answers
// are opened.
func TestNDJSONResponses(t *testing.T) {
	keys := testKeyring(t)
	pii, _ := keys.SealKey(context.Background(), "pii")
	tokA, err := fieldcrypt.SealString(pii, fieldcrypt.ModeRandom, "123-45-6789")
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"application/x-ndjson", "application/vnd.elasticsearch+json;compatible-with=8"} {
		t.Run(ct, func(t *testing.T) {
			_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				_, _ = io.WriteString(w, `{"_source":{"ssn":"`+string(tokA)+`"}}`+"\n"+`{"hits":{"hits":[{"_source":{"ssn":"`+string(tokA)+`"}}]}}`+"\n")
			}))
			tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(v2Plan(t, &scriptedProfile{})), Keys: keys})
			status, _, body := do(t, client(t), "GET", tp.URL.String()+"/orders/_doc/1", nil, nil)
			if status != 200 || bytes.Count(body, []byte("123-45-6789")) != 2 || bytes.Contains(body, tokA) {
				t.Errorf("%d %s", status, body)
			}
		})
	}
}
