package rules

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPathPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		want    bool
	}{
		{"/", "/", true},
		{"/", "/a", false},
		{"/**", "/", true},
		{"/**", "/a/b/c", true},
		{"/clinic/_bulk_docs", "/clinic/_bulk_docs", true},
		{"/clinic/_bulk_docs", "/clinic/_bulk_docs/", true}, // cleaned
		{"/clinic/_bulk_docs", "//clinic//_bulk_docs", true},
		{"/clinic/_bulk_docs", "/other/../clinic/./_bulk_docs", true},
		{"/clinic/_bulk_docs", "/Clinic/_bulk_docs", false}, // case-sensitive, as CouchDB is
		{"/clinic/*", "/clinic/doc1", true},
		{"/clinic/*", "/clinic", false},
		{"/clinic/*", "/clinic/doc1/att", false},
		{"/clinic/**", "/clinic", true},
		{"/clinic/**", "/clinic/a/b", true},
		{"/clinic/**", "/clinical/a", false},
		{"/*/_find", "/clinic/_find", true},
		{"/*/_find", "/clinic/x/_find", false},
		{"/**/_find", "/a/b/c/_find", true},
		{"/**/_find", "/_find", true},
		{"/**/_find", "/a/_find/x", false},
		{"/a/**/b/*", "/a/x/b/y/b/z", true},
		{"/a/**/b/*", "/a/x/b", false},
		{"/a/**/b/**/c", "/a/b/c", true},
		{"/a/**/b/**/c", "/a/c/b/c", true},
		{"/a/**/b/**/c", "/a/c/c", false},
		{"/db/a b", "/db/a b", true},
		{"/x", "", false},
		{"/", "", true},
		{"/db/doc", "db/doc", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.path, func(t *testing.T) {
			pp, err := parsePathPattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := pp.match(cleanPath(tt.path)); got != tt.want {
				t.Errorf("match(%q) = %v, want %v", tt.path, got, tt.want)
			}
			if got := pp.match(cleanPath(tt.path)); got != refMatch(tt.pattern, tt.path) {
				t.Errorf("disagrees with the reference matcher")
			}
		})
	}
}

// refMatch is an obviously-correct matcher: the pattern as a regular
// expression over the cleaned path.
func refMatch(pattern, path string) bool {
	var re strings.Builder
	re.WriteString("^")
	segs := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	if pattern == "/" {
		segs = nil
	}
	for _, s := range segs {
		switch s {
		case "**":
			re.WriteString("(/[^/]+)*")
		case "*":
			re.WriteString("/[^/]+")
		default:
			re.WriteString("/" + regexp.QuoteMeta(s))
		}
	}
	re.WriteString("$")
	p := cleanPath(path)
	if p == "/" {
		p = ""
	}
	return regexp.MustCompile(re.String()).MatchString(p)
}

// FuzzPathPattern checks the allocation-free matcher against the regular
// expression reference on arbitrary patterns and paths.
func FuzzPathPattern(f *testing.F) {
	f.Add("/a/**/b/*", "/a/x/b/y")
	f.Add("/**/_find", "/db/_find")
	f.Add("/*", "//")
	f.Fuzz(func(t *testing.T, pattern, path string) {
		pp, err := parsePathPattern(pattern)
		if err != nil {
			return
		}
		// Rule files are UTF-8 (checked before patterns are parsed);
		// the regular expression reference needs it too.
		if !utf8.ValidString(pattern) || !utf8.ValidString(path) {
			return
		}
		if got, want := pp.match(cleanPath(path)), refMatch(pattern, path); got != want {
			t.Fatalf("pattern %q path %q: match %v, reference %v", pattern, path, got, want)
		}
	})
}

func TestPathPatternCovers(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"/**", "/a/b", true},
		{"/**", "/", true},
		{"/a/**", "/a/*/c", true},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/**", false},
		{"/a/b", "/a/*", false},
		{"/a/**", "/b/**", false},
		{"/**/x", "/a/**/x", true},
		{"/*/x", "/a/x", true},
		{"/a/**", "/a", true},
		{"/a/*", "/a", false},
	}
	for _, tt := range tests {
		t.Run(tt.outer+" ⊇ "+tt.inner, func(t *testing.T) {
			o, _ := parsePathPattern(tt.outer)
			i, _ := parsePathPattern(tt.inner)
			if got := o.covers(&i); got != tt.want {
				t.Errorf("covers = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSegsIntersect(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"/a/*", "/a/b", true},
		{"/a/*", "/b/*", false},
		{"/**", "/x/y", true},
		{"/a/**/z", "/*/b/z", true},
		{"/a/**/z", "/a/y", false},
		{"/a/*/c", "/**/b/**", true},
		{"/a", "/a/**", true},
		{"/a/b", "/a/c", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" ∩ "+tt.b, func(t *testing.T) {
			a, _ := parsePathPattern(tt.a)
			b, _ := parsePathPattern(tt.b)
			if got := segsIntersect(a.segs, b.segs); got != tt.want {
				t.Errorf("intersect = %v, want %v", got, tt.want)
			}
			if got := segsIntersect(b.segs, a.segs); got != tt.want {
				t.Errorf("intersect (swapped) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHostPattern(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "API.Example.COM", true},
		{"api.example.com", "api.example.com.", true},
		{"api.example.com", "xapi.example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
		{"10.0.0.1", "10.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.host, func(t *testing.T) {
			h, err := parseHostPattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.match(tt.host); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHostCovers(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "*.a.example.com", true},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "example.com", false},
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "*.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.outer+" ⊇ "+tt.inner, func(t *testing.T) {
			o, _ := parseHostPattern(tt.outer)
			i, _ := parseHostPattern(tt.inner)
			if got := o.covers(&i); got != tt.want {
				t.Errorf("covers = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMediaRange(t *testing.T) {
	tests := []struct {
		rng, typ string
		want     bool
	}{
		{"application/json", "application/json", true},
		{"application/json", "Application/JSON; charset=utf-8", true},
		{"application/json", "application/jsonx", false},
		{"application/json", "text/plain", false},
		{"application/json", "", false},
		{"application/*+json", "application/ld+json", true},
		{"application/*+json", "application/vnd.api+json", true},
		{"application/*+json", "application/+json", false},
		{"application/*+json", "application/json", false},
		{"application/*", "application/x-ndjson", true},
		{"application/*", "text/json", false},
	}
	for _, tt := range tests {
		t.Run(tt.rng+" "+tt.typ, func(t *testing.T) {
			m, err := parseMediaRange(tt.rng)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.matches(tt.typ); got != tt.want {
				t.Errorf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}
