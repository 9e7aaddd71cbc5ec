package rules

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

const matchRules = `version: 1
routes:
  - name: search
    match: {methods: [POST], paths: ["/clinic/_find"]}
    encrypt: [{fields: [$.selector.email], key: contact, mode: deterministic}]
    query: [{params: [email], key: contact, mode: deterministic}]
  - name: write
    match: {methods: [POST, PUT], paths: ["/clinic/*", "/clinic/_bulk_docs"]}
    encrypt: [{fields: [$.ssn, "$.docs[*].ssn"], key: pii}]
  - name: read
    match: {methods: [GET], paths: ["/clinic/**"]}
    query: [{params: [key], key: pii, mode: deterministic}]
  - name: api
    match: {methods: ["*"], paths: ["/v1/**"], hosts: [api.example.com, "*.pay.example.com"], content_types: [text/json]}
    encrypt: [{fields: [$.card], key: card}]
`

func mustCompile(t testing.TB, src string) *Plan {
	t.Helper()
	p, diags, err := Compile("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	for _, d := range diags {
		t.Logf("%s", d)
	}
	return p
}

func TestMatch(t *testing.T) {
	p := mustCompile(t, matchRules)
	tests := []struct {
		name string
		req  Request
		want string // route name, "" for none
	}{
		{"first route wins", Request{Method: "POST", Path: "/clinic/_find"}, "search"},
		{"second route", Request{Method: "POST", Path: "/clinic/_bulk_docs"}, "write"},
		{"one segment", Request{Method: "PUT", Path: "/clinic/doc1"}, "write"},
		{"method decides", Request{Method: "DELETE", Path: "/clinic/doc1"}, ""},
		{"lower-case method is the same method", Request{Method: "post", Path: "/clinic/_bulk_docs"}, "write"},
		{"HEAD goes with GET", Request{Method: "HEAD", Path: "/clinic/x"}, "read"},
		{"unclean path meets its route", Request{Method: "POST", Path: "//clinic/./_bulk_docs/"}, "write"},
		{"dot-dot cannot escape", Request{Method: "POST", Path: "/x/../clinic/_bulk_docs"}, "write"},
		{"no route", Request{Method: "POST", Path: "/other/_bulk_docs"}, ""},
		{"host matches", Request{Method: "PATCH", Host: "api.example.com", Path: "/v1/cards"}, "api"},
		{"wildcard host", Request{Method: "POST", Host: "eu.pay.example.com", Path: "/v1/x"}, "api"},
		{"other host", Request{Method: "POST", Host: "evil.example.org", Path: "/v1/x"}, ""},
		{"reverse mode: no host matches every route", Request{Method: "POST", Path: "/v1/x"}, "api"},
		{"content type never decides", Request{Method: "POST", Path: "/clinic/_bulk_docs", ContentType: "text/plain"}, "write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Match(tt.req)
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want {
				t.Errorf("Match(%+v) = %q, want %q", tt.req, name, tt.want)
			}
		})
	}
	var nilPlan *Plan
	if nilPlan.Match(Request{Method: "POST", Path: "/"}) != nil {
		t.Error("nil plan matched")
	}
}

func TestRouteAccessors(t *testing.T) {
	p := mustCompile(t, matchRules)
	byName := map[string]*Route{}
	for _, r := range p.Routes {
		byName[r.Name] = r
	}
	search, write, read, api := byName["search"], byName["write"], byName["read"], byName["api"]
	if !search.HasBodyRules() || !search.HasQueryRules() {
		t.Error("search: want body and query rules")
	}
	if !write.HasBodyRules() || write.HasQueryRules() {
		t.Error("write: want body rules only")
	}
	if read.HasBodyRules() || !read.HasQueryRules() {
		t.Error("read: want query rules only")
	}
	if q, ok := search.QueryRule("email"); !ok || q.Key != "contact" || q.Mode != fieldcrypt.ModeDeterministic {
		t.Errorf("search.QueryRule(email) = %+v, %v", q, ok)
	}
	if _, ok := search.QueryRule("Email"); ok {
		t.Error("query parameter names are case-sensitive")
	}
	if !slices.Equal(write.Keys, []string{"pii"}) || !slices.Equal(search.Keys, []string{"contact"}) {
		t.Errorf("keys: write %v, search %v", write.Keys, search.Keys)
	}
	for _, c := range []struct {
		r    *Route
		typ  string
		want bool
	}{
		{write, "application/json", true},
		{write, "application/json; charset=utf-8", true},
		{write, "application/vnd.couchdb+json", true},
		{write, "text/plain", false},
		{write, "", false},
		{api, "text/json", true},
		{api, "application/json", false}, // the route named its own types
	} {
		if got := c.r.AcceptsContentType(c.typ); got != c.want {
			t.Errorf("%s.AcceptsContentType(%q) = %v, want %v", c.r.Name, c.typ, got, c.want)
		}
	}
	hosts, anyHost := p.Hosts()
	if !anyHost || hosts != nil {
		t.Errorf("Hosts() = %v, %v; want any host (routes without hosts exist)", hosts, anyHost)
	}
	only := mustCompile(t, `version: 1
routes:
  - name: api
    match: {methods: [POST], paths: ["/**"], hosts: [b.example.com, "*.a.example.com"]}
    encrypt: [{fields: [$.x], key: pii}]
  - name: api2
    match: {methods: [POST], paths: ["/**"], hosts: [b.example.com]}
    encrypt: [{fields: [$.x], key: pii}]
`)
	hosts, anyHost = only.Hosts()
	if anyHost || !slices.Equal(hosts, []string{"*.a.example.com", "b.example.com"}) {
		t.Errorf("Hosts() = %v, %v", hosts, anyHost)
	}
}

// TestMatchAllocs: Match runs on every request and must not allocate for
// clean paths.
func TestMatchAllocs(t *testing.T) {
	p := mustCompile(t, matchRules)
	reqs := []Request{
		{Method: "POST", Path: "/clinic/_bulk_docs"},
		{Method: "GET", Path: "/clinic/a/b/c"},
		{Method: "POST", Host: "eu.pay.example.com", Path: "/v1/x/y"},
		{Method: "DELETE", Path: "/nothing/here"},
	}
	for _, r := range reqs {
		if n := testing.AllocsPerRun(100, func() { p.Match(r) }); n != 0 {
			t.Errorf("Match(%+v) allocates %v times", r, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	p := mustCompile(b, matchRules)
	cases := []struct {
		name string
		req  Request
	}{
		{"first", Request{Method: "POST", Path: "/clinic/_find"}},
		{"deep-doublestar", Request{Method: "GET", Path: "/clinic/a/b/c/d/e"}},
		{"host", Request{Method: "POST", Host: "eu.pay.example.com", Path: "/v1/x"}},
		{"miss", Request{Method: "POST", Path: "/other/_bulk_docs"}},
		{"unclean", Request{Method: "POST", Path: "//clinic/_bulk_docs/"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Match(c.req)
			}
		})
	}
}

func TestCompileResult(t *testing.T) {
	src := []byte(matchRules)
	p, _, err := Compile("x.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if p.Hash != HashBytes(src) || !strings.HasPrefix(p.Hash, "sha256:") || len(p.Hash) != len("sha256:")+64 {
		t.Errorf("Hash = %q", p.Hash)
	}
	if p.Source != "x.yaml" || p.Decryptor == nil || p.Document() == nil || p.Stats() == nil {
		t.Errorf("plan incomplete: %+v", p)
	}
	// Warnings alone do not refuse the file.
	p, diags, err := Compile("x.yaml", []byte("version: 1\ndecrypt: {keys: [unused]}\n"))
	if err != nil || p == nil || len(diags) != 1 || diags[0].Severity != SeverityWarning {
		t.Errorf("warnings only: plan %v, diags %v, err %v", p != nil, diags, err)
	}
	// Errors do, with an *Error listing them.
	p, diags, err = Compile("x.yaml", []byte("version: 1\nroutes: 3\n"))
	var re *Error
	if p != nil || err == nil || !errors.Is(err, ErrInvalid) || !errors.As(err, &re) || len(re.Diagnostics) != len(diags) {
		t.Fatalf("invalid: plan %v, err %v", p != nil, err)
	}
	if !strings.Contains(err.Error(), "x.yaml:2:9: error: routes: want a list") {
		t.Errorf("error text: %q", err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(matchRules), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _, err := LoadFile(good)
	if err != nil || p.Source != good {
		t.Fatalf("LoadFile: %v", err)
	}
	if _, _, err := LoadFile(filepath.Join(dir, "missing.yaml")); err == nil || errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "rules: ") {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadFile(big); err == nil {
		t.Error("oversized file accepted")
	}
}

func TestDiagnosticString(t *testing.T) {
	tests := []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{File: "a.yaml", Line: 3, Col: 7, Severity: SeverityError, Message: "bad", Hint: "fix it"}, "a.yaml:3:7: error: bad\n\thint: fix it"},
		{Diagnostic{File: "a.yaml", Line: 3, Severity: SeverityWarning, Message: "meh"}, "a.yaml:3:1: warning: meh"},
		{Diagnostic{File: "a.yaml", Severity: SeverityError, Message: "too big"}, "a.yaml: error: too big"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	cands := []string{"methods", "paths", "hosts", "content_types"}
	for in, want := range map[string]string{"methdos": "methods", "path": "paths", "host": "hosts", "contenttypes": "content_types", "colour": "", "": ""} {
		if got := didYouMean(in, cands); got != want {
			t.Errorf("didYouMean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompileRefusesUnreadableContent(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		says string
	}{
		{"too large", append([]byte("version: 1\n#"), bytes.Repeat([]byte("x"), MaxFileSize)...), "more than the 1048576 allowed"},
		{"not UTF-8", []byte("version: 1\nroutes: [{name: \xff}]\n"), "not valid UTF-8"},
		{"NUL byte", []byte("version: 1\x00\n"), "YAML syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, diags, err := Compile("x.yaml", tt.data)
			if p != nil || err == nil || len(diags) == 0 || !strings.Contains(diags[0].Message, tt.says) {
				t.Errorf("plan %v, diags %v, err %v; want a refusal saying %q", p != nil, diags, err, tt.says)
			}
		})
	}
}
