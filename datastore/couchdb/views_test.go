package couchdb

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// q escapes a JSON key as a client puts it in a query string.
func q(t testing.TB, jsonText string) string { return url.QueryEscape(expand(t, jsonText)) }

func TestViewQuery(t *testing.T) {
	p := newProfile(t)
	for _, tc := range []struct {
		name, view, query string
		want              string // expanded; "" when refused
		code              string
	}{
		{name: "key", view: "by_email", query: `key=%22a%40b%22`, want: `key=` + q(t, `⟨contact:"a@b"⟩`)},
		{name: "key raw quotes", view: "by_email", query: `key="a@b"`, want: `key=` + q(t, `⟨contact:"a@b"⟩`)},
		{name: "plus is a space", view: "by_email", query: `key=%22a+b%22`, want: `key=` + q(t, `⟨contact:"a b"⟩`)},
		{name: "other params untouched", view: "by_email", query: `include_docs=true&key=%22a%40b%22&limit=10&startkey_docid=x%2Fy&descending=false`,
			want: `include_docs=true&key=` + q(t, `⟨contact:"a@b"⟩`) + `&limit=10&startkey_docid=x%2Fy&descending=false`},
		{name: "keys", view: "by_email", query: `keys=` + url.QueryEscape(`["a@b", "c@d"]`), want: `keys=` + q(t, `[⟨contact:"a@b"⟩,⟨contact:"c@d"⟩]`)},
		{name: "repeated key", view: "by_email", query: `key="a"&key="b"`, code: codeUnsupported},
		{name: "repeated same key", view: "by_email", query: `key="a"&key="a"`, want: `key=` + q(t, `⟨contact:"a"⟩`) + `&key=` + q(t, `⟨contact:"a"⟩`)},
		{name: "start and end equal", view: "by_email", query: `startkey="a"&endkey="a"`, want: `startkey=` + q(t, `⟨contact:"a"⟩`) + `&endkey=` + q(t, `⟨contact:"a"⟩`)},
		{name: "start_key alias", view: "by_email", query: `start_key="a"&end_key="a"`, want: `start_key=` + q(t, `⟨contact:"a"⟩`) + `&end_key=` + q(t, `⟨contact:"a"⟩`)},
		{name: "range over ciphertext", view: "by_email", query: `startkey="a"&endkey="b"`, code: codeUnsupported},
		{name: "open range", view: "by_email", query: `startkey="a"`, code: codeUnsupported},
		{name: "range markers only", view: "by_email", query: `startkey=null&endkey={}`, want: `startkey=null&endkey={}`},
		{name: "compound key", view: "by_email_date", query: `key=` + url.QueryEscape(`["a@b","2026-01-01"]`), want: `key=` + q(t, `[⟨contact:"a@b"⟩,"2026-01-01"]`)},
		{name: "compound prefix range", view: "by_email_date", query: `startkey=` + url.QueryEscape(`["a@b"]`) + `&endkey=` + url.QueryEscape(`["a@b",{}]`),
			want: `startkey=` + q(t, `[⟨contact:"a@b"⟩]`) + `&endkey=` + q(t, `[⟨contact:"a@b"⟩,{}]`)},
		{name: "compound range on plain position", view: "by_email_date", query: `startkey=` + url.QueryEscape(`["a@b","2026"]`) + `&endkey=` + url.QueryEscape(`["a@b","2027"]`),
			want: `startkey=` + q(t, `[⟨contact:"a@b"⟩,"2026"]`) + `&endkey=` + q(t, `[⟨contact:"a@b"⟩,"2027"]`)},
		{name: "compound range on protected position", view: "by_email_date", query: `startkey=["a"]&endkey=["b"]`, code: codeUnsupported},
		{name: "compound keys", view: "by_email_date", query: `keys=` + url.QueryEscape(`[["a@b","x"],["c@d"]]`), want: `keys=` + q(t, `[[⟨contact:"a@b"⟩,"x"],[⟨contact:"c@d"⟩]]`)},
		{name: "compound second position", view: "by_ward_phone", query: `key=["B","555"]`, want: `key=` + q(t, `["B",⟨contact:"555"⟩]`)},
		{name: "compound null encrypted", view: "by_ward_phone", query: `key=["B",null]`, want: `key=` + q(t, `["B",⟨contact:null⟩]`)},
		{name: "compound not an array", view: "by_email_date", query: `key="a@b"`, code: codeBad},
		{name: "compound too many positions", view: "by_email_date", query: `key=["a","b","c"]`, code: codeBad},
		{name: "escaped dot in the declared field", view: "by_tag", query: `key="x"`, want: `key=` + q(t, `⟨contact:"x"⟩`)},
		{name: "random field", view: "by_ssn", query: `key="123"`, code: codeUnsupported},
		{name: "random field null", view: "by_ssn", query: `key=null`, want: `key=null`},
		{name: "inside a protected value", view: "by_city", query: `key="Paris"`, code: codeUnsupported},
		{name: "not JSON", view: "by_email", query: `key=a@b`, code: codeBad},
		{name: "keys not an array", view: "by_email", query: `keys="a"`, code: codeBad},
		{name: "bracket name", view: "by_email", query: `key%5B0%5D=a`, code: codeBad},
		{name: "semicolon", view: "by_email", query: `key="a";x=1`, code: codeBad},
		{name: "no key, but ;", view: "by_email", query: `limit=1;skip=2`, code: codeBad},
		{name: "no key", view: "by_email", query: `limit=1&skip=2`, want: `limit=1&skip=2`},
		{name: "key without value", view: "by_email", query: `key`, code: codeBad},
		{name: "bad escape in value", view: "by_email", query: `key=%zz`, code: codeBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := p.Classify(request("GET", "/clinic/_design/app/_view/"+tc.view, tc.query, false))
			if op.Refusal != nil {
				if tc.code != "" && op.Refusal.Code == tc.code {
					return // refused by the parameter check, before sealing
				}
				t.Fatalf("refused: %v", op.Refusal)
			}
			if op.Query == nil {
				if tc.want != tc.query {
					t.Fatalf("no query transform")
				}
				return
			}
			if strings.Contains(tc.want, fieldcrypt.TokenPrefix) && len(op.Keys) == 0 {
				t.Error("a query transform that seals, without keys")
			}
			got, err := op.Query(context.Background(), tc.query, keyring(t))
			if tc.code != "" {
				if refusalCode(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestViewUnprotectedKeys(t *testing.T) {
	p := newProfile(t)
	op := p.Classify(request("GET", "/clinic/_design/app/_view/by_ward", `key="B"`, false))
	if op.Refusal != nil || op.Query != nil || op.Body != datastore.BodyNone {
		t.Errorf("plain view: %+v", op)
	}
	op = p.Classify(request("GET", "/clinic/_design/app/_view/by_email", `include_docs=true`, false))
	if op.Refusal != nil || op.Query != nil || op.Keys != nil {
		t.Errorf("declared view without keys: %+v", op)
	}
}

func TestViewBody(t *testing.T) {
	p := newProfile(t)
	runXform(t, p, "POST", "/clinic/_design/app/_view/by_email", "", []xformCase{
		{name: "keys", in: `{"keys":["a@b","c@d"],"include_docs":true}`, want: `{"keys":[⟨contact:"a@b"⟩,⟨contact:"c@d"⟩],"include_docs":true}`},
		{name: "key", in: `{"key":"a@b"}`, want: `{"key":⟨contact:"a@b"⟩}`},
		{name: "range equal", in: `{"startkey":"a","endkey":"a","limit":5}`, want: `{"startkey":⟨contact:"a"⟩,"endkey":⟨contact:"a"⟩,"limit":5}`},
		{name: "range", in: `{"startkey":"a","endkey":"b"}`, code: codeUnsupported},
		{name: "queries", in: `{"queries":[{"keys":["a"]},{"key":"b","skip":1},{"limit":1}]}`,
			want: `{"queries":[{"keys":[⟨contact:"a"⟩]},{"key":⟨contact:"b"⟩,"skip":1},{"limit":1}]}`},
		{name: "queries range", in: `{"queries":[{"key":"a"},{"startkey":"x"}]}`, code: codeUnsupported},
		{name: "queries not objects", in: `{"queries":["a"]}`, code: codeBad},
		{name: "nothing to seal is byte-identical", in: ` { "limit" : 1 } `, want: `{ "limit" : 1 }`},
		{name: "keys not an array", in: `{"keys":"a"}`, code: codeBad},
	})
	runXform(t, p, "POST", "/clinic/_design/app/_view/by_email/queries", "", []xformCase{
		{name: "queries endpoint", in: `{"queries":[{"keys":["a"]}]}`, want: `{"queries":[{"keys":[⟨contact:"a"⟩]}]}`},
	})
	runXform(t, p, "POST", "/clinic/_design/app/_view/by_email_date", "", []xformCase{
		{name: "compound keys", in: `{"keys":[["a@b","2026"]]}`, want: `{"keys":[[⟨contact:"a@b"⟩,"2026"]]}`},
	})
	runXform(t, p, "POST", "/clinic/_design/app/_view/undeclared", "", []xformCase{
		{name: "undeclared without keys", in: `{"limit":1,"include_docs":true}`, want: `{"limit":1,"include_docs":true}`},
		{name: "undeclared with keys", in: `{"keys":["123-45-6789"]}`, code: codeUnprotected},
		{name: "undeclared with keys in queries", in: `{"queries":[{"limit":1},{"startkey":"x"}]}`, code: codeUnprotected},
	})
}

// The query and the body of one declared view both get sealed.
func TestViewPostWithQuery(t *testing.T) {
	p := newProfile(t)
	op := p.Classify(request("POST", "/clinic/_design/app/_view/by_email", `key="a"`, true))
	if op.Query == nil || op.Transform == nil || op.Body != datastore.BodyTransform {
		t.Fatalf("%+v", op)
	}
	got, err := op.Query(context.Background(), `key="a"`, keyring(t))
	if err != nil || got != `key=`+q(t, `⟨contact:"a"⟩`) {
		t.Errorf("query %s %v", got, err)
	}
	out, err := op.Transform(context.Background(), []byte(`{"keys":["b"]}`), keyring(t))
	if err != nil || string(out) != expand(t, `{"keys":[⟨contact:"b"⟩]}`) {
		t.Errorf("body %s %v", out, err)
	}
}

func TestViewNeverForwardsPlaintext(t *testing.T) {
	p := newProfile(t)
	const secret = "s3cr3t@example.org"
	for _, query := range []string{
		`key="` + secret + `"`,
		`keys=["x","` + secret + `"]`,
		`startkey="` + secret + `"&endkey="` + secret + `"`,
		`limit=2&key=%22` + url.QueryEscape(secret) + `%22&key=%22` + url.QueryEscape(secret) + `%22`,
	} {
		op := p.Classify(request("GET", "/clinic/_design/app/_view/by_email", query, false))
		got, err := op.Query(context.Background(), query, keyring(t))
		if err != nil {
			t.Errorf("%s: %v", query, err)
			continue
		}
		if dec, _ := url.QueryUnescape(got); strings.Contains(dec, secret) {
			t.Errorf("%s forwarded in plaintext: %s", query, got)
		}
	}
}

func TestSplitFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"a":      "a",
		"a.b":    "a|b",
		`a\.b`:   "a.b",
		`a\\.b`:  `a\|b`,
		`a\\\.b`: `a\.b`,
		`a\b`:    `a\b`,
	} {
		if got := strings.Join(splitFieldName(in), "|"); got != want {
			t.Errorf("splitFieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
