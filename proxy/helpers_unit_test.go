package proxy

import (
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

func TestParseCoding(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want coding
		ok   bool
	}{
		{nil, codingIdentity, true},
		{[]string{""}, codingIdentity, true},
		{[]string{"identity"}, codingIdentity, true},
		{[]string{"gzip"}, codingGzip, true},
		{[]string{"X-GZIP"}, codingGzip, true},
		{[]string{"deflate"}, codingDeflate, true},
		{[]string{" gzip , identity"}, codingGzip, true},
		{[]string{"br"}, 0, false},
		{[]string{"zstd"}, 0, false},
		{[]string{"compress"}, 0, false},
		{[]string{"gzip, gzip"}, 0, false},
		{[]string{"gzip", "deflate"}, 0, false},
		{[]string{"gzip, br"}, 0, false},
		{[]string{"gzip;q=1"}, 0, false},
	} {
		h := http.Header{}
		if tc.in != nil {
			h["Content-Encoding"] = tc.in
		}
		got, ok := parseCoding(h)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseCoding(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLimitAcceptEncoding(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"gzip", "gzip"},
		{"gzip, deflate", "gzip, deflate"},
		{"br", "identity"},
		{"gzip, deflate, br, zstd", "gzip, deflate"},
		{"br;q=1, gzip;q=0.1, *;q=0", "gzip;q=0.1"},
		{"identity", "identity"},
	} {
		h := http.Header{}
		if tc.in != "" {
			h.Set("Accept-Encoding", tc.in)
		}
		limitAcceptEncoding(h)
		if got := h.Get("Accept-Encoding"); got != tc.want {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHasDotSegment(t *testing.T) {
	for p, want := range map[string]bool{
		"/": false, "": false, "/clinic/doc": false, "/clinic/.hidden": false, "/a..b": false,
		"/clinic/../x": true, "/clinic/./x": true, "/clinic/..": true, "/.": true, "..": true, "/a//../b": true,
	} {
		if got := hasDotSegment(p); got != want {
			t.Errorf("hasDotSegment(%q) = %v", p, got)
		}
	}
}

func TestMediaType(t *testing.T) {
	for in, want := range map[string]string{
		"application/json":                  "application/json",
		"Application/JSON; charset=utf-8":   "application/json",
		"  text/plain ;charset=utf-8":       "text/plain",
		"":                                  "",
		"application/vnd.api+json; ext=\"x": "application/vnd.api+json",
	} {
		if got := mediaType(in); got != want {
			t.Errorf("mediaType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteErrorIsJSON(t *testing.T) {
	for _, ref := range []*refusal{refTooLarge, refMedia, refKeyUnavailable("pii"), refKeyUnavailable(""), refInternal} {
		rec := httptest.NewRecorder()
		writeError(rec, ref)
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != ref.code || e.Error.Message != ref.message {
			t.Errorf("%s: %q (%v)", ref.code, rec.Body.String(), err)
		}
		if rec.Code != ref.status || rec.Header().Get("Content-Length") == "" {
			t.Errorf("%s: status %d, headers %v", ref.code, rec.Code, rec.Header())
		}
	}
}

// FuzzSealQuery: whatever the query, a protected parameter never leaves in
// plaintext. Either the query is refused, or every segment is byte-for-byte
// what was sent except the values of "email", each of which is a token that
// opens to the value sent (or already was such a token).
func FuzzSealQuery(f *testing.F) {
	for _, s := range []string{
		"email=a%40b.c", "a=1&email=x;email=y", "email", "email=", "%65mail=x", "email=%zz",
		"x=1&&y=2;", "email=sc1.AAAA", "email=caf%C3%A9", "email=%ff", "=&=;email==x",
	} {
		f.Add(s)
	}
	key := newKey(f, "contact", 1)
	keys := fieldcrypt.NewStaticKeyring(key)
	qrules := []rules.QueryRule{{Param: "email", Key: "contact", Mode: fieldcrypt.ModeDeterministic}}
	f.Fuzz(func(t *testing.T, raw string) {
		out, ref := sealQuery(context.Background(), raw, qrules, keys, map[string]int{})
		if ref != nil {
			if ref != refBadQuery {
				t.Fatalf("refusal %v", ref)
			}
			return
		}
		in, got := splitQuery(raw), splitQuery(out)
		if len(in) != len(got) {
			t.Fatalf("%q -> %q: segment count changed", raw, out)
		}
		for i := range in {
			rawName, rawValue, hasValue := strings.Cut(in[i], "=")
			name, _ := url.QueryUnescape(rawName)
			if name != "email" || !hasValue {
				if in[i] != got[i] {
					t.Fatalf("segment %q became %q", in[i], got[i])
				}
				continue
			}
			value, _ := url.QueryUnescape(rawValue)
			gotName, gotValue, _ := strings.Cut(got[i], "=")
			if gotName != rawName {
				t.Fatalf("name %q became %q", rawName, gotName)
			}
			tok, err := url.QueryUnescape(gotValue)
			if err != nil {
				t.Fatal(err)
			}
			_, plain, err := fieldcrypt.OpenToken(key, []byte(tok))
			if err != nil {
				t.Fatalf("%q: value %q is not a token of contact: %v", raw, tok, err)
			}
			if tok == value {
				continue // was already a valid token
			}
			var s string
			if err := json.Unmarshal(plain, &s); err != nil || s != value {
				t.Fatalf("token opens to %q, want %q", plain, value)
			}
		}
	})
}

// splitQuery splits on '&' and ';', keeping empty segments.
func splitQuery(q string) []string {
	var out []string
	start := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '&' || q[i] == ';' {
			out = append(out, q[start:i])
			start = i + 1
		}
	}
	return append(out, q[start:])
}

func FuzzParseCoding(f *testing.F) {
	for _, s := range []string{"gzip", "gzip, deflate", "br", " , identity ,gzip", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, ok := parseCoding(http.Header{"Content-Encoding": {v}})
		if ok && c > codingDeflate {
			t.Fatalf("%q: coding %d", v, c)
		}
		h := http.Header{"Accept-Encoding": {v}}
		limitAcceptEncoding(h)
		for _, tok := range strings.Split(h.Get("Accept-Encoding"), ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !decodableCoding(tok) {
				t.Fatalf("%q kept undecodable %q", v, tok)
			}
		}
	})
}

// TestPlainMediaType checks the fast path of strictRequest against
// mime.ParseMediaType: whenever it says "plain", ParseMediaType accepts
// the value and finds no parameter.
func TestPlainMediaType(t *testing.T) {
	for _, ct := range []string{
		"application/json", " application/json ", "APPLICATION/JSON", "text/plain", "application",
		"application/", "/json", "application/json/x", "application/json;charset=latin1",
		"application/json; charset=utf-8", "appli cation/json", "application/js\"on", "application/jsön",
		"application/json\t", "\tapplication/json", "a/b", "a@b/c", "", " ", "application/vnd.api+json",
		"application/json\x00", "application/json\x7f", "application/\u00a0json",
	} {
		plain := plainMediaType(ct)
		_, params, err := mime.ParseMediaType(ct)
		if plain && (err != nil || len(params) > 0) {
			t.Errorf("plainMediaType(%q) = true, but ParseMediaType: %v %v", ct, params, err)
		}
		if !plain && err == nil && len(params) == 0 && !strings.ContainsAny(ct, ";") && isASCII(ct) {
			t.Errorf("plainMediaType(%q) = false, but ParseMediaType accepts it without parameters", ct)
		}
	}
}

func FuzzPlainMediaType(f *testing.F) {
	for _, s := range []string{"application/json", "text/plain;charset=utf-8", "a/b/c", " x/y "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		if !plainMediaType(ct) {
			return
		}
		if _, params, err := mime.ParseMediaType(ct); err != nil || len(params) > 0 {
			t.Fatalf("plainMediaType(%q) = true, but ParseMediaType: %v %v", ct, params, err)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
