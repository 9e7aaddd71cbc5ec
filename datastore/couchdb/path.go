package couchdb

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// segment is one '/'-separated part of the escaped request path.
type segment struct {
	raw  string // as sent: "a%2Fb"
	name string // unescaped once, as CouchDB and pouchdb-server read it: "a/b"
}

// plusName is the segment as CouchDB reads it with decode_plus_to_space:
// '+' is a space.
func (s segment) plusName() string {
	n, err := url.PathUnescape(strings.ReplaceAll(s.raw, "+", "%20"))
	if err != nil {
		return s.name
	}
	return n
}

// escaped reports whether the segment was spelled with percent-escapes.
func (s segment) escaped() bool { return s.raw != s.name }

// splitPath splits an escaped path ("/clinic/a%2Fb") at raw '/' and
// unescapes each segment once, as CouchDB (chttpd) and pouchdb-server
// (express) do, so that "%2F" inside a segment belongs to the segment.
//
// One trailing slash is ignored, as both servers ignore it. Other empty
// segments ("//clinic/x") are left out, as CouchDB leaves them out, and
// reported: express and proxies in between read such a path differently,
// so the caller refuses it where it matters. A "." or ".." segment, raw or
// unescaped ("%2e%2e"), or inside an unescaped segment ("a%2F..%2Fb"),
// which a proxy in front of the datastore may resolve, is refused on
// every path: clients resolve dot segments before sending (RFC 3986
// section 5.2.4), so only crafted requests carry them.
func splitPath(p string) (segs []segment, empty bool, ref *datastore.Refusal) {
	if p == "" || p == "/" {
		return nil, false, nil
	}
	if p[0] != '/' {
		return nil, false, datastore.BadRequest("couchdb: the request path does not start with /")
	}
	p = strings.TrimSuffix(p[1:], "/")
	if p == "" {
		return nil, true, nil
	}
	parts := strings.Split(p, "/")
	segs = make([]segment, 0, len(parts))
	for _, raw := range parts {
		if raw == "" {
			empty = true
			continue
		}
		name, err := url.PathUnescape(raw)
		if err != nil {
			return nil, false, datastore.BadRequest("couchdb: a path segment has an invalid percent-escape")
		}
		if dotSegment(raw) || dotSegment(name) || hasDotComponent(name) {
			return nil, false, datastore.BadRequest("couchdb: the request path has a . or .. segment, which proxies and servers resolve differently")
		}
		segs = append(segs, segment{raw: raw, name: name})
	}
	return segs, empty, nil
}

func dotSegment(s string) bool { return s == "." || s == ".." }

// hasDotComponent reports whether an unescaped segment holds a "." or
// ".." between slashes ("a/../b"): a reader that unescapes "%2F" before
// resolving dot segments would move up a level.
func hasDotComponent(name string) bool {
	if strings.IndexByte(name, '/') < 0 {
		return false
	}
	for _, c := range strings.Split(name, "/") {
		if dotSegment(c) {
			return true
		}
	}
	return false
}

// pouchRewrite is the pattern with which pouchdb-server's rewrite
// middleware (express-pouchdb lib/routes/rewrite.js) finds a _rewrite
// request: anywhere in the URL, query string included, before any route
// is matched.
var pouchRewrite = regexp.MustCompile(`/[^/]*/_design/[^/]*/_rewrite/`)

// rewriteURL reports whether pouchdb-server would hand the request to a
// design document's rewrite handler.
func rewriteURL(r *datastore.Request) bool {
	if !strings.Contains(r.Path, "_rewrite") && !strings.Contains(r.RawQuery, "_rewrite") {
		return false
	}
	u := r.Path
	if r.RawQuery != "" {
		u += "?" + r.RawQuery
	}
	return pouchRewrite.MatchString(u)
}

// safeName returns s for a message when it is a plain identifier (an
// endpoint, a method, an operator), and a placeholder otherwise: messages
// name endpoints, never a value, and a segment that is not an identifier
// might be one.
func safeName(s string) string {
	if len(s) == 0 || len(s) > 40 {
		return "(unnamed)"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '$' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			return "(unnamed)"
		}
	}
	return s
}

// methodName names a method in a message when it is a registered HTTP
// method (in any case); any other method text could carry anything.
func methodName(m string) string {
	switch strings.ToUpper(m) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
		"COPY", "MOVE", "LOCK", "UNLOCK", "MKCOL", "PROPFIND", "PROPPATCH", "SEARCH", "QUERY":
		return m
	}
	return "(an unknown method)"
}

// pouchName is the database name pouchdb-server stores a URL's database
// under: express-pouchdb's cleanFilename, which runs sanitize-filename
// (removes / ? < > \ : * | " and control characters, blanks a name of only
// dots or a Windows device name, strips trailing dots and spaces, keeps
// at most 255 bytes) and wraps a name that comes out empty in "__".
// "/clinic%3F", "/clinic." and "/cli%2Fnic" all reach clinic there.
func pouchName(name string) string {
	if s := sanitizeFilename(name); s != "" {
		return s
	}
	return sanitizeFilename("__" + name + "__")
}

func sanitizeFilename(in string) string {
	s := in
	if !plainFilename(in) {
		var b strings.Builder
		for _, r := range in {
			if strings.ContainsRune(`/?<>\:*|"`, r) || r <= 0x1f || (r >= 0x80 && r <= 0x9f) {
				continue
			}
			b.WriteRune(r)
		}
		s = b.String()
	}
	if strings.Trim(s, ".") == "" || windowsDevice(s) {
		s = ""
	}
	s = strings.TrimRight(s, ". ")
	if len(s) > 255 {
		n := 0
		for i, r := range s {
			if i+utf8.RuneLen(r) > 255 {
				break
			}
			n = i + utf8.RuneLen(r)
		}
		s = s[:n]
	}
	return s
}

// plainFilename reports whether in is printable ASCII with none of the
// characters sanitizeFilename removes, so that its first step would copy
// it unchanged. Every ordinary database name is, and then no copy is made
// (this runs on every request).
func plainFilename(in string) bool {
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c < 0x20 || c >= 0x7f || strings.IndexByte(`/?<>\:*|"`, c) >= 0 {
			return false
		}
	}
	return true
}

// windowsDevice matches /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i.
func windowsDevice(s string) bool {
	base, _, _ := strings.Cut(s, ".")
	switch b := strings.ToLower(base); {
	case b == "con" || b == "prn" || b == "aux" || b == "nul":
		return true
	case len(b) == 4 && (b[:3] == "com" || b[:3] == "lpt") && b[3] >= '0' && b[3] <= '9':
		return true
	}
	return false
}

// pouchPattern is a collection pattern as pouchdb-server's names read it:
// the characters sanitize-filename removes, removed from each literal
// part, and trailing dots and spaces stripped when the pattern ends with
// one. A protected "org/clinic" is stored as "orgclinic" there, and a
// request for /orgclinic reaches it.
func pouchPattern(pattern string) string {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		var b strings.Builder
		for _, r := range p {
			if strings.ContainsRune(`/?<>\:|"`, r) || r <= 0x1f || (r >= 0x80 && r <= 0x9f) {
				continue
			}
			b.WriteRune(r)
		}
		parts[i] = b.String()
	}
	if last := len(parts) - 1; parts[last] != "" {
		parts[last] = strings.TrimRight(parts[last], ". ")
	}
	return strings.Join(parts, "*")
}
