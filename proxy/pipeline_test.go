package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/rules"
)

// clinicRules returns testdata/clinic.yaml with edits applied in order
// (old, new pairs), so that tests can vary the decrypt section or add hosts.
func clinicRules(t testing.TB, edits ...string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/clinic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("clinic.yaml has no %q to edit", edits[i])
		}
		s = strings.ReplaceAll(s, edits[i], edits[i+1])
	}
	return []byte(s)
}

func compilePlan(t testing.TB, src []byte) *rules.Plan {
	t.Helper()
	p, diags, err := rules.Compile("clinic.yaml", src)
	if err != nil {
		t.Fatalf("compile: %v %v", err, diags)
	}
	return p
}

func clinicPlan(t testing.TB, edits ...string) *rules.Plan {
	return compilePlan(t, clinicRules(t, edits...))
}

// seal encrypts the fields of doc that selectors name, as a sidecar with
// the same keys would have stored them.
func seal(t testing.TB, keys fieldcrypt.Keyring, doc string, rules ...fieldcrypt.FieldRule) string {
	t.Helper()
	enc, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := enc.EncryptBytes(context.Background(), []byte(doc), keys, nil)
	if err != nil {
		t.Fatalf("seal %s: %v", doc, err)
	}
	return string(out)
}

func piiRule(sel string) fieldcrypt.FieldRule {
	return fieldcrypt.FieldRule{Selector: fieldcrypt.MustParseSelector(sel), Key: "pii", Mode: fieldcrypt.ModeRandom}
}

func contactRule(sel string) fieldcrypt.FieldRule {
	return fieldcrypt.FieldRule{Selector: fieldcrypt.MustParseSelector(sel), Key: "contact", Mode: fieldcrypt.ModeDeterministic}
}

// tokenPattern matches a token as JSON text.
var tokenPattern = regexp.MustCompile(`"` + regexp.QuoteMeta(fieldcrypt.TokenPrefix) + `[A-Za-z0-9_-]+"`)

// isToken reports whether v is a JSON string holding a sidecrypt token.
func isToken(v any) bool {
	s, ok := v.(string)
	if !ok || !strings.HasPrefix(s, fieldcrypt.TokenPrefix) {
		return false
	}
	_, err := fieldcrypt.ParseTokenInfo([]byte(s))
	return err == nil
}

func decodeJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("not JSON: %q: %v", b, err)
	}
	return m
}

func gzipBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

const patient = `{"_id":"p1","name":"Ada","ssn":"078-05-1120","email":"ada@example.com","age":36,"visits":[{"diagnosis":{"code":"J45","text":"asthma"}}],"big":12345678901234567890}`

func TestEncryptsRequestBody(t *testing.T) {
	keys := testKeyring(t)
	plan := clinicPlan(t)
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(plan), Keys: keys})
	c := client(t)

	for _, enc := range []string{"", "gzip", "deflate", "raw-deflate"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			body := []byte(patient)
			hdr := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
			switch enc {
			case "gzip":
				body = gzipBytes(t, body)
				hdr.Set("Content-Encoding", "gzip")
			case "deflate":
				var b bytes.Buffer
				zw := zlib.NewWriter(&b)
				zw.Write([]byte(patient))
				zw.Close()
				body = b.Bytes()
				hdr.Set("Content-Encoding", "deflate")
			case "raw-deflate":
				body = deflateRaw(t, []byte(patient))
				hdr.Set("Content-Encoding", "deflate")
			}
			status, _, resp := do(t, c, "PUT", tp.URL.String()+"/clinic/p1", hdr, bytes.NewReader(body))
			if status != 200 {
				t.Fatalf("status %d %s", status, resp)
			}
			got := rc.last(t)
			if got.Header.Get("Content-Length") != strconv.Itoa(len(got.Body)) {
				t.Errorf("Content-Length %q for a %d-byte body", got.Header.Get("Content-Length"), len(got.Body))
			}
			if got.Header.Get("Content-Encoding") != hdr.Get("Content-Encoding") {
				t.Errorf("Content-Encoding %q, want %q", got.Header.Get("Content-Encoding"), hdr.Get("Content-Encoding"))
			}
			stored := got.Body
			switch enc {
			case "gzip":
				stored = gunzip(t, stored)
			case "deflate":
				zr, err := zlib.NewReader(bytes.NewReader(stored))
				if err != nil {
					t.Fatalf("upstream body is not zlib: %v", err)
				}
				stored, _ = io.ReadAll(zr)
			case "raw-deflate":
				stored = inflateRaw(t, stored)
			}
			assertStoredPatient(t, stored)
		})
	}
	if n := tp.Obs.field(FieldEncrypted, "pii"); n != 8 {
		t.Errorf("observer counted %d pii fields encrypted, want 8 (2 per request)", n)
	}
	if n := tp.Obs.field(FieldEncrypted, "contact"); n != 4 {
		t.Errorf("observer counted %d contact fields encrypted, want 4", n)
	}
}

// assertStoredPatient checks what the datastore got for patient: the
// protected fields are tokens, the others are as sent, and no protected
// value appears anywhere.
func assertStoredPatient(t testing.TB, stored []byte) {
	t.Helper()
	// Tokens are taken out first, so that "J45" found by chance inside
	// one's base64 is not reported.
	outside := tokenPattern.ReplaceAll(stored, []byte(`"TOKEN"`))
	for _, secret := range []string{"078-05-1120", "ada@example.com", "asthma", "J45"} {
		if bytes.Contains(outside, []byte(secret)) {
			t.Errorf("stored document contains %q: %s", secret, stored)
		}
	}
	m := decodeJSON(t, stored)
	if !isToken(m["ssn"]) || !isToken(m["email"]) {
		t.Errorf("ssn/email not tokens: %s", stored)
	}
	visits, _ := m["visits"].([]any)
	if len(visits) != 1 || !isToken(visits[0].(map[string]any)["diagnosis"]) {
		t.Errorf("diagnosis not a token: %s", stored)
	}
	if m["name"] != "Ada" || m["age"] != json.Number("36") || m["big"] != json.Number("12345678901234567890") {
		t.Errorf("unprotected fields changed: %s", stored)
	}
}

func TestRefusals(t *testing.T) {
	keys := testKeyring(t)
	plan := clinicPlan(t)
	deep := strings.Repeat(`{"a":`, 600) + "1" + strings.Repeat("}", 600)
	cases := []struct {
		name     string
		path     string
		hdr      http.Header
		body     []byte
		chunk    bool // send without Content-Length
		keys     fieldcrypt.Keyring
		maxDepth int
		status   int
		code     string
	}{
		{name: "declared length over the cap", body: bytes.Repeat([]byte(" "), 5000), status: 413, code: CodeBodyTooLarge},
		{name: "chunked body over the cap", body: []byte(`{"ssn":"` + strings.Repeat("1", 5000) + `"}`), chunk: true, status: 413, code: CodeBodyTooLarge},
		{name: "gzip bomb", body: gzipBytes(t, []byte(`{"ssn":"`+strings.Repeat("1", 100000)+`"}`)), hdr: http.Header{"Content-Encoding": {"gzip"}}, status: 413, code: CodeBodyTooLarge},
		{name: "text/plain body", hdr: http.Header{"Content-Type": {"text/plain"}}, body: []byte(patient), status: 415, code: CodeUnsupportedMedia},
		{name: "no content type", hdr: http.Header{"Content-Type": nil}, body: []byte(patient), status: 415, code: CodeUnsupportedMedia},
		{name: "chunked text/plain", hdr: http.Header{"Content-Type": {"text/plain"}}, body: []byte(patient), chunk: true, status: 415, code: CodeUnsupportedMedia},
		{name: "brotli", hdr: http.Header{"Content-Encoding": {"br"}}, body: []byte(patient), status: 415, code: CodeUnsupportedEncoding},
		{name: "zstd", hdr: http.Header{"Content-Encoding": {"zstd"}}, body: []byte(patient), status: 415, code: CodeUnsupportedEncoding},
		{name: "stacked codings", hdr: http.Header{"Content-Encoding": {"gzip, gzip"}}, body: gzipBytes(t, gzipBytes(t, []byte(patient))), status: 415, code: CodeUnsupportedEncoding},
		{name: "corrupt gzip", hdr: http.Header{"Content-Encoding": {"gzip"}}, body: []byte("\x1f\x8b\x08\x00garbage"), status: 400, code: CodeBadEncoding},
		{name: "invalid JSON", body: []byte(`{"ssn": "1",`), status: 400, code: CodeInvalidJSON},
		{name: "trailing garbage", body: []byte(`{"ssn": "1"} x`), status: 400, code: CodeInvalidJSON},
		{name: "too deep", body: []byte(deep), status: 400, code: CodeTooDeep},
		{name: "deeper than SIDECRYPT_MAX_DEPTH", body: []byte(`{"a":{"b":{"c":{"d":1}}},"ssn":"1"}`), maxDepth: 3, status: 400, code: CodeTooDeep},
		{name: "duplicate protected key", body: []byte(`{"ssn":"078-05-1120","ssn":"x"}`), status: 400, code: CodeDuplicateKey},
		{name: "invalid UTF-8", body: []byte("{\"ssn\":\"\xff\xfe\"}"), status: 400, code: CodeInvalidUTF8},
		{name: "HSM unavailable", body: []byte(patient), keys: failingKeyring{fmt.Errorf("keycache: unwrap pii v1: %w", hsm.ErrUnavailable)}, status: 503, code: CodeKeyUnavailable},
		{name: "HSM unavailable, empty body", body: nil, keys: failingKeyring{hsm.ErrUnavailable}, path: "/clinic/_all_docs?email=ada%40example.com", status: 503, code: CodeKeyUnavailable},
		{name: "malformed protected query", path: "/clinic/_all_docs?email=%zz", status: 400, code: CodeBadQuery},
		{name: "malformed query name", path: "/clinic/_all_docs?em%zzail=x", status: 400, code: CodeBadQuery},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.keys
			if k == nil {
				k = keys
			}
			rc, up := startUpstream(t, nil)
			tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(plan), Keys: k, MaxBody: 4096, MaxDepth: tc.maxDepth})
			method, path := "PUT", "/clinic/p1"
			if tc.path != "" {
				method, path = "GET", tc.path
			}
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
				if tc.chunk {
					body = io.MultiReader(body)
				}
			}
			req, _ := http.NewRequest(method, tp.URL.String()+path, body)
			req.Header.Set("Content-Type", "application/json")
			for h, v := range tc.hdr {
				req.Header[h] = v
			}
			resp, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || errorCode(t, b) != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("error Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if n := rc.count(); n != 0 {
				t.Fatalf("upstream received %d requests after a refusal", n)
			}
			if n := tp.Obs.refusals(tp.routeFor(method, path), tc.code); n != 1 {
				t.Errorf("observer counted %d refusals for %s", n, tc.code)
			}
			evs := tp.Audit.all()
			if len(evs) != 1 || evs[0].Action != "request.refused" || evs[0].Reason != tc.code || evs[0].Rules != plan.Hash {
				t.Errorf("audit events %+v", evs)
			}
			for _, secret := range []string{"078-05-1120", "ada@example.com"} {
				if strings.Contains(tp.Log.String(), secret) || strings.Contains(fmt.Sprint(evs), secret) || bytes.Contains(b, []byte(secret)) {
					t.Errorf("%q leaked into the log, audit or error body", secret)
				}
			}
		})
	}
}

// routeFor names the clinic route a request matches, for observer keys.
func (tp *testProxy) routeFor(method, path string) string {
	u, _ := url.Parse(path)
	r := tp.rules.Current().Match(rules.Request{Method: method, Path: u.Path})
	if r == nil {
		return ""
	}
	return r.Name
}

// TestExpectContinueRefusedEarly: a request refused for its headers is
// refused before the client is asked for the body.
func TestExpectContinueRefusedEarly(t *testing.T) {
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: testKeyring(t), MaxBody: 1024})
	for _, tc := range []struct {
		name   string
		ct     string
		size   int
		status int
	}{
		{"too large", "application/json", 4096, 413},
		{"wrong type", "text/plain", 100, 415},
		{"accepted", "application/json", 100, 400}, // spaces only: invalid JSON, but read
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("PUT", tp.URL.String()+"/clinic/p1", bytes.NewReader(bytes.Repeat([]byte(" "), tc.size)))
			req.Header.Set("Content-Type", tc.ct)
			req.Header.Set("Expect", "100-continue")
			var got100 atomic.Bool
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }}))
			resp, err := continueClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if want := tc.status == 400; got100.Load() != want {
				t.Errorf("100 Continue sent: %v, want %v", got100.Load(), want)
			}
		})
	}
	if rc.count() != 0 {
		t.Fatal("upstream received a refused request")
	}
}

func TestQueryParameters(t *testing.T) {
	keys := testKeyring(t)
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: keys})
	c := client(t)
	stored := decodeJSON(t, []byte(seal(t, keys, `{"email":"ada+x@example.com"}`, contactRule("$.email"))))
	token := stored["email"].(string)

	for _, tc := range []struct{ name, query, want string }{
		{"single", "email=ada%2Bx%40example.com", "email=" + token},
		{"plus is a space, escaping kept elsewhere", "a=%20b&email=ada%2Bx%40example.com&z=1+2", "a=%20b&email=" + token + "&z=1+2"},
		{"semicolon separator", "a=1;email=ada%2Bx%40example.com", "a=1;email=" + token},
		{"every occurrence", "email=ada%2Bx%40example.com&email=ada%2Bx%40example.com", "email=" + token + "&email=" + token},
		{"escaped name", "%65mail=ada%2Bx%40example.com", "%65mail=" + token},
		{"no value", "email&x=1", "email&x=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?"+tc.query, nil, nil)
			if status != 200 {
				t.Fatalf("status %d %s", status, body)
			}
			if got := rc.last(t).RawQuery; got != tc.want {
				t.Errorf("upstream query\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	t.Run("a token of a key this sidecar opens is refused", func(t *testing.T) {
		// The app behind this sidecar sees emails in plaintext and never
		// has a contact token: one in a query was copied from the store,
		// and sent unsealed it would find (and open) its document.
		before := rc.count()
		status, _, body := do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?email="+token, nil, nil)
		if status != 403 || errorCode(t, body) != CodeTokenNotAllowed || rc.count() != before {
			t.Errorf("status %d %s", status, body)
		}
		status, _, body = do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?other="+token, nil, nil)
		if status != 403 || errorCode(t, body) != CodeTokenNotAllowed || rc.count() != before {
			t.Errorf("in an unprotected parameter: status %d %s", status, body)
		}
	})
	t.Run("forged token is encrypted", func(t *testing.T) {
		forged := fieldcrypt.TokenPrefix + strings.Repeat("A", 60)
		do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?email="+forged, nil, nil)
		if got := rc.last(t).RawQuery; got == "email="+forged || !strings.HasPrefix(got, "email="+fieldcrypt.TokenPrefix) {
			t.Errorf("forged token passed as is: %s", got)
		}
	})
	t.Run("unmatched route keeps the query", func(t *testing.T) {
		do(t, c, "GET", tp.URL.String()+"/other/_all_docs?email=ada%40example.com", nil, nil)
		if got := rc.last(t).RawQuery; got != "email=ada%40example.com" {
			t.Errorf("query %s", got)
		}
	})
}

func TestDecryptsResponses(t *testing.T) {
	keys := testKeyring(t)
	sealed := seal(t, keys, patient, piiRule("$.ssn"), piiRule("$..diagnosis"), contactRule("$.email"))
	big := `{"rows":[` + strings.Repeat(sealed+",", 2000) + sealed + `]}` // > 256 KiB: streamed
	wantBig := `{"rows":[` + strings.Repeat(patient+",", 2000) + patient + `]}`
	serve := func(ct, enc string, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b := []byte(body)
			if enc == "gzip" {
				b = gzipBytes(t, b)
			}
			w.Header().Set("Content-Type", ct)
			if enc != "" {
				w.Header().Set("Content-Encoding", enc)
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.Write(b)
		})
	}
	for _, tc := range []struct {
		name     string
		h        http.Handler
		method   string
		want     string
		chunked  bool
		encoding string
	}{
		{name: "json", h: serve("application/json", "", sealed), want: patient},
		{name: "text/plain (CouchDB without Accept)", h: serve("text/plain; charset=utf-8", "", sealed), want: patient},
		{name: "+json", h: serve("application/vnd.clinic+json", "", sealed), want: patient},
		{name: "large, streamed", h: serve("application/json", "", big), want: wantBig, chunked: true},
		{name: "gzip, served as identity", h: serve("application/json", "gzip", sealed), want: patient, chunked: true},
		{name: "brotli passes untouched", h: serve("application/json", "br", sealed), want: sealed, encoding: "br"},
		{name: "octet-stream untouched", h: serve("application/octet-stream", "", sealed), want: sealed},
		{name: "not JSON", h: serve("text/plain", "", "hello "+sealed+" {"), want: "hello " + sealed + " {"},
		{name: "HEAD", h: serve("application/json", "", sealed), method: "HEAD", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, up := startUpstream(t, tc.h)
			tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: keys})
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req, _ := http.NewRequest(method, tp.URL.String()+"/clinic/p1", nil)
			req.Header.Set("Accept-Encoding", "gzip, br")
			resp, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("body\n got %.300s\nwant %.300s", b, tc.want)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tc.encoding {
				t.Errorf("Content-Encoding %q, want %q", got, tc.encoding)
			}
			if tc.chunked {
				if resp.ContentLength != -1 {
					t.Errorf("streamed response has Content-Length %d", resp.ContentLength)
				}
			} else if method != "HEAD" && resp.ContentLength != int64(len(b)) {
				t.Errorf("Content-Length %d for %d bytes", resp.ContentLength, len(b))
			}
		})
	}
}

// TestAcceptEncodingLimited: with a decrypter in force, the upstream is
// only offered codings the sidecar can decode.
func TestAcceptEncodingLimited(t *testing.T) {
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: testKeyring(t)})
	for _, tc := range []struct{ in, want string }{
		{"gzip, deflate, br, zstd", "gzip, deflate"},
		{"br;q=1.0, gzip;q=0.5", "gzip;q=0.5"},
		{"br", "identity"},
		{"gzip", "gzip"},
	} {
		do(t, client(t), "GET", tp.URL.String()+"/clinic/p1", http.Header{"Accept-Encoding": {tc.in}}, nil)
		if got := rc.last(t).Header.Get("Accept-Encoding"); got != tc.want {
			t.Errorf("Accept-Encoding %q became %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPolicies(t *testing.T) {
	keys := testKeyring(t)
	sealed := seal(t, keys, patient, piiRule("$.ssn"), piiRule("$..diagnosis"), contactRule("$.email"))
	_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, sealed)
	}))
	t.Run("decrypt list omits contact", func(t *testing.T) {
		plan := clinicPlan(t, "keys: [pii, contact]", "keys: [pii]")
		tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(plan), Keys: keys})
		_, _, b := do(t, client(t), "GET", tp.URL.String()+"/clinic/p1", nil, nil)
		m := decodeJSON(t, b)
		if m["ssn"] != "078-05-1120" || !isToken(m["email"]) {
			t.Errorf("want ssn opened and email a token: %s", b)
		}
		if m["email"] != decodeJSON(t, []byte(sealed))["email"] {
			t.Error("the email token was changed")
		}
	})
	t.Run("mask pii", func(t *testing.T) {
		plan := clinicPlan(t, "keys: [pii, contact]", "keys: [contact]\n  mask: {pii: \"***\"}")
		tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(plan), Keys: keys})
		_, _, b := do(t, client(t), "GET", tp.URL.String()+"/clinic/p1", nil, nil)
		m := decodeJSON(t, b)
		if m["ssn"] != "***" || m["email"] != "ada@example.com" {
			t.Errorf("want ssn masked and email opened: %s", b)
		}
		if bytes.Contains(b, []byte("078-05-1120")) || bytes.Contains(b, []byte("asthma")) {
			t.Errorf("masked value leaked: %s", b)
		}
		if tp.Obs.field(FieldMasked, "pii") != 2 || tp.Obs.field(FieldDecrypted, "contact") != 1 {
			t.Errorf("observer fields %v", tp.Obs.fields)
		}
	})
	t.Run("no decrypt section", func(t *testing.T) {
		plan := clinicPlan(t, "decrypt:\n  keys: [pii, contact]\n", "")
		tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(plan), Keys: keys})
		_, _, b := do(t, client(t), "GET", tp.URL.String()+"/clinic/p1", nil, nil)
		if string(b) != sealed {
			t.Errorf("tokens were changed: %s", b)
		}
	})
}

func TestOpenFailuresAudited(t *testing.T) {
	keys := testKeyring(t)
	good := seal(t, keys, `{"ssn":"078-05-1120","email":"ada@example.com"}`, piiRule("$.ssn"), contactRule("$.email"))
	m := decodeJSON(t, []byte(good))
	ssn := m["ssn"].(string)
	tampered := ssn[:len(ssn)-4] + flip(ssn[len(ssn)-4:])
	otherKey := seal(t, fieldcrypt.NewStaticKeyring(newKey(t, "pii", 7)), `{"ssn":"1"}`, piiRule("$.ssn"))
	unknown := decodeJSON(t, []byte(otherKey))["ssn"].(string)
	body := fmt.Sprintf(`{"rows":[{"ssn":%q,"email":%q},{"ssn":%q},{"ssn":%q}]}`, tampered, m["email"], unknown, ssn)
	for _, streamed := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamed=%v", streamed), func(t *testing.T) {
			_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if streamed {
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, body)
			}))
			tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: keys})
			status, _, b := do(t, client(t), "GET", tp.URL.String()+"/clinic/_all_docs", nil, nil)
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			want := fmt.Sprintf(`{"rows":[{"ssn":%q,"email":"ada@example.com"},{"ssn":%q},{"ssn":"078-05-1120"}]}`, tampered, unknown)
			if string(b) != want {
				t.Errorf("body\n got %s\nwant %s", b, want)
			}
			evs := tp.Audit.all()
			if len(evs) != 1 {
				t.Fatalf("%d audit events, want 1 per response: %+v", len(evs), evs)
			}
			ev := evs[0]
			if ev.Action != "response.open_failed" || ev.Details["failures"] != "2" || ev.Details["route"] != "patients-lookup" {
				t.Errorf("event %+v", ev)
			}
			if ev.Details["paths pii v1"] != "$.rows[0].ssn" || ev.Details["paths pii v7"] != "$.rows[1].ssn" {
				t.Errorf("paths %v", ev.Details)
			}
			if strings.Contains(fmt.Sprint(ev), "078-05-1120") {
				t.Error("audit event holds a value")
			}
			if tp.Obs.field(FieldOpenFailed, "pii") != 2 {
				t.Errorf("observer %v", tp.Obs.fields)
			}
		})
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

// TestStreamsLineByLine: a change feed reaches the client one line at a
// time. The upstream sends the second line only after the client has read
// the first through the sidecar, so buffering anywhere would deadlock
// (and fail on the client timeout) instead of passing.
func TestStreamsLineByLine(t *testing.T) {
	keys := testKeyring(t)
	line := func(i int) string {
		return seal(t, keys, fmt.Sprintf(`{"seq":%d,"doc":{"ssn":"ssn-%d"}}`, i, i), piiRule("$.doc.ssn")) + "\n"
	}
	for _, tc := range []struct{ ct, enc string }{
		{"application/json", ""},
		{"text/plain; charset=utf-8", ""},
		{"application/x-ndjson", ""},
		{"application/json", "gzip"},
	} {
		t.Run(tc.ct+" "+tc.enc, func(t *testing.T) {
			next := make(chan struct{})
			_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ct)
				var out io.Writer = w
				var zw *gzip.Writer
				if tc.enc == "gzip" {
					w.Header().Set("Content-Encoding", "gzip")
					zw = gzip.NewWriter(w)
					out = zw
				}
				for i := range 3 {
					io.WriteString(out, line(i))
					if zw != nil {
						zw.Flush()
					}
					w.(http.Flusher).Flush()
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
				}
				if zw != nil {
					zw.Close()
				}
			}))
			tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: keys})
			req, _ := http.NewRequest("GET", tp.URL.String()+"/clinic/_changes?feed=continuous&include_docs=true", nil)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				got, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
				if want := fmt.Sprintf(`{"seq":%d,"doc":{"ssn":"ssn-%d"}}`+"\n", i, i); got != want {
					t.Fatalf("line %d: got %q want %q", i, got, want)
				}
				next <- struct{}{}
			}
		})
	}
}

// countingRules counts Current calls.
type countingRules struct {
	plan  *rules.Plan
	calls atomic.Int32
}

func (c *countingRules) Current() *rules.Plan { c.calls.Add(1); return c.plan }

// TestRulesReadOncePerRequest: one Current per request, so that a reload
// cannot split an exchange between two plans.
func TestRulesReadOncePerRequest(t *testing.T) {
	keys := testKeyring(t)
	sealed := seal(t, keys, patient, piiRule("$.ssn"))
	_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, sealed)
	}))
	src := &countingRules{plan: clinicPlan(t)}
	tp := startProxy(t, Config{Upstream: up, Rules: src, Keys: keys})
	c := client(t)
	for range 3 {
		do(t, c, "PUT", tp.URL.String()+"/clinic/p1", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(patient))
		do(t, c, "GET", tp.URL.String()+"/clinic/p1", nil, nil)
	}
	if n := src.calls.Load(); n != 6 {
		t.Errorf("Current called %d times for 6 requests", n)
	}
}

// TestKeyringFailsMidRun: once the HSM goes away, protected writes are
// refused and nothing reaches the upstream; reads of tokens fail open to
// the tokens, never to an error.
func TestKeyringFailsMidRun(t *testing.T) {
	sk := &switchKeyring{inner: testKeyring(t), err: fmt.Errorf("keycache: %w", hsm.ErrUnavailable)}
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: sk})
	c := client(t)
	hdr := http.Header{"Content-Type": {"application/json"}}
	if status, _, _ := do(t, c, "PUT", tp.URL.String()+"/clinic/p1", hdr, strings.NewReader(patient)); status != 200 {
		t.Fatalf("status %d before the outage", status)
	}
	sk.failing.Store(true)
	status, _, b := do(t, c, "PUT", tp.URL.String()+"/clinic/p2", hdr, strings.NewReader(patient))
	if status != 503 || errorCode(t, b) != CodeKeyUnavailable || !strings.Contains(string(b), `\"contact\"`) {
		t.Fatalf("during the outage: %d %s", status, b)
	}
	if rc.count() != 1 {
		t.Fatalf("upstream saw %d requests, want only the one before the outage", rc.count())
	}
	// A read on a route with query rules that names no protected
	// parameter needs no key and still goes through.
	if status, _, b := do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?include_docs=true", nil, nil); status != 200 {
		t.Fatalf("read without a protected parameter during the outage: %d %s", status, b)
	}
	status, _, b = do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?email=ada%40example.com", nil, nil)
	if status != 503 || errorCode(t, b) != CodeKeyUnavailable {
		t.Fatalf("read with a protected parameter during the outage: %d %s", status, b)
	}
	if rc.count() != 2 {
		t.Fatalf("upstream saw %d requests, want 2", rc.count())
	}
}

func TestNothingSecretInLogs(t *testing.T) {
	keys := testKeyring(t)
	_, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: rules.Static(clinicPlan(t)), Keys: keys})
	c := client(t)
	hdr := http.Header{"Content-Type": {"application/json"}}
	do(t, c, "PUT", tp.URL.String()+"/clinic/p1", hdr, strings.NewReader(patient))
	do(t, c, "PUT", tp.URL.String()+"/clinic/p1", hdr, strings.NewReader(patient[:40]))
	do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?email=ada%40example.com", nil, nil)
	do(t, c, "GET", tp.URL.String()+"/clinic/_all_docs?email=%zz&ssn=078-05-1120", nil, nil)
	logs := tp.Log.String()
	if !strings.Contains(logs, "request refused") {
		t.Fatalf("expected refusal log lines, got:\n%s", logs)
	}
	for _, secret := range []string{"078-05-1120", "ada@example.com", "ada%40example.com", "asthma", "Ada"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}

func deflateRaw(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	fw.Write(b)
	fw.Close()
	return buf.Bytes()
}

func inflateRaw(t testing.TB, b []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(flate.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return out
}
