package elasticsearch

import (
	"net/url"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// segment is one '/'-separated part of the escaped request path.
type segment struct {
	raw  string // as sent
	name string // unescaped once, as Elasticsearch's RestUtils.decodeComponent reads it
}

func (s segment) escaped() bool { return s.raw != s.name }

// splitPath splits an escaped path at raw '/' and unescapes each segment
// once: Elasticsearch's router (PathTrie) splits the raw path and decodes
// each path parameter, so "%2F" inside an index name or id belongs to it,
// and matches its endpoint names ("_search") on the raw text. One trailing
// slash is ignored, as Elasticsearch ignores it. An empty segment inside
// the path, a "." or ".." segment (raw or escaped) and an invalid escape
// are refused on every path: routers and proxies in between read them
// differently.
func splitPath(p string) ([]segment, *datastore.Refusal) {
	if p == "" || p == "/" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, datastore.BadRequest("elasticsearch: the request path does not start with /")
	}
	p = strings.TrimSuffix(p[1:], "/")
	var segs []segment
	for _, raw := range strings.Split(p, "/") {
		if raw == "" {
			return nil, datastore.BadRequest("elasticsearch: the request path has an empty segment (//), which Elasticsearch and proxies in between read differently")
		}
		name, err := url.PathUnescape(raw)
		if err != nil {
			return nil, datastore.BadRequest("elasticsearch: a path segment has an invalid percent-escape")
		}
		if name == "." || name == ".." || raw == "." || raw == ".." {
			return nil, datastore.BadRequest("elasticsearch: the request path has a . or .. segment, which proxies and servers resolve differently")
		}
		segs = append(segs, segment{raw: raw, name: name})
	}
	return segs, nil
}

// param is one query parameter, name and value unescaped with '+' as a
// space, as Elasticsearch's RestUtils.decodeQueryString reads them.
type param struct {
	name, value string
	hasValue    bool
}

// parseQuery splits a raw query at '&' (Elasticsearch does not split at
// ';'). A parameter that does not unescape is refused: Elasticsearch
// refuses the request, but a sidecar that skipped it might miss a name.
func parseQuery(raw string) ([]param, *datastore.Refusal) {
	var out []param
	for _, seg := range strings.Split(raw, "&") {
		if seg == "" {
			continue
		}
		n, v, has := strings.Cut(seg, "=")
		name, err1 := url.QueryUnescape(n)
		value, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, datastore.BadRequest("elasticsearch: a query parameter has an invalid percent-escape")
		}
		out = append(out, param{name: name, value: value, hasValue: has})
	}
	return out, nil
}

func lookup(params []param, name string) (string, bool) {
	v, ok := "", false
	for _, p := range params {
		if p.name == name {
			v, ok = p.value, true
		}
	}
	return v, ok
}

// target is what an index expression reaches: the protected collections
// it may name, in file order, and whether it may name several indices.
type target struct {
	cols []*collection
	// multi: the expression is a list, a wildcard, _all or a date-math
	// expression, or the request has none (every index).
	multi bool
}

func (t *target) protected() bool { return t != nil && len(t.cols) > 0 }

func (t *target) add(c *collection) {
	if !slices.Contains(t.cols, c) {
		t.cols = append(t.cols, c)
	}
}

func (t *target) merge(u *target) {
	for _, c := range u.cols {
		t.add(c)
	}
	t.multi = t.multi || u.multi
}

// first is the collection an Operation names.
func (t *target) first() *datastore.Collection {
	if !t.protected() {
		return nil
	}
	return t.cols[0].orig
}

// keys are the keys of every collection reached.
func (t *target) keys(searchOnly bool) []string {
	var out []string
	for _, c := range t.cols {
		ks := c.keys
		if searchOnly {
			ks = c.searchKeys
		}
		for _, k := range ks {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// all is the target of a request that names no index (every index).
func (p *Profile) all() *target {
	t := &target{multi: true}
	for _, c := range p.cols {
		t.add(c)
	}
	return t
}

// resolve reads an index expression as Elasticsearch does: a comma list
// of names, each possibly a wildcard pattern ("clinic-*"), an exclusion
// ("-clinic-old", which the profile ignores: an excluded index is still
// counted as reached), a remote cluster's index ("remote:clinic"), a
// date-math name ("<clinic-{now/d}>"), or _all. Each name is read as
// written and, when the raw segment has a '+', with '+' as a space. A
// name may reach a protected collection when it matches the collection's
// pattern, or the backing indices of a data stream of that name, or when
// its own wildcard could match one of those.
func (p *Profile) resolve(expr string, raws ...string) *target {
	t := &target{}
	names := []string{expr}
	for _, raw := range raws {
		if strings.IndexByte(raw, '+') >= 0 {
			if n, err := url.PathUnescape(strings.ReplaceAll(raw, "+", "%20")); err == nil && n != expr {
				names = append(names, n)
			}
		}
	}
	for _, e := range names {
		parts := strings.Split(e, ",")
		if len(parts) > 1 {
			t.multi = true
		}
		for _, part := range parts {
			p.resolveOne(t, part)
		}
	}
	return t
}

func (p *Profile) resolveOne(t *target, name string) {
	if _, rest, remote := strings.Cut(name, ":"); remote {
		name = rest
	}
	name = strings.TrimPrefix(name, "-")
	if strings.HasPrefix(name, "<") && strings.HasSuffix(name, ">") {
		name = dateMathPattern(name[1 : len(name)-1])
	}
	if name == "" || name == "_all" || name == "*" {
		t.multi = true
		for _, c := range p.cols {
			t.add(c)
		}
		return
	}
	if strings.IndexByte(name, '*') >= 0 {
		t.multi = true
	}
	for _, c := range p.cols {
		for _, pat := range c.patterns {
			if globsIntersect(pat, name) {
				t.add(c)
				break
			}
		}
	}
}

// dateMathPattern turns the inside of a date-math index name
// ("clinic-{now/d{yyyy.MM}}") into a pattern that matches every index it
// can resolve to ("clinic-*"). "\{" and "\}" are literal braces.
func dateMathPattern(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(s[i+1])
			}
			i++
		case c == '{':
			if depth == 0 {
				b.WriteByte('*')
			}
			depth++
		case c == '}' && depth > 0:
			depth--
		default:
			if depth == 0 {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// globsIntersect reports whether some name matches both patterns ('*'
// stands for any run of characters in either).
func globsIntersect(a, b string) bool {
	if strings.IndexByte(a, '*') < 0 && strings.IndexByte(b, '*') < 0 {
		return a == b
	}
	memo := make([]int8, (len(a)+1)*(len(b)+1))
	var rec func(i, j int) bool
	rec = func(i, j int) bool {
		m := &memo[i*(len(b)+1)+j]
		if *m != 0 {
			return *m > 0
		}
		r := false
		switch {
		case i == len(a) && j == len(b):
			r = true
		case i < len(a) && a[i] == '*':
			r = rec(i+1, j) || (j < len(b) && rec(i, j+1))
		case j < len(b) && b[j] == '*':
			r = rec(i, j+1) || (i < len(a) && rec(i+1, j))
		case i < len(a) && j < len(b) && a[i] == b[j]:
			r = rec(i+1, j+1)
		}
		*m = -1
		if r {
			*m = 1
		}
		return r
	}
	return rec(0, 0)
}

// safeName returns s for a message when it is a plain identifier, and a
// placeholder otherwise: messages name endpoints, never a value.
func safeName(s string) string {
	if len(s) == 0 || len(s) > 40 {
		return "(unnamed)"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			return "(unnamed)"
		}
	}
	return s
}

// methodName names a method in a message when it is a registered HTTP
// method; any other method text could carry anything.
func methodName(m string) string {
	switch strings.ToUpper(m) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return "(an unknown method)"
}
