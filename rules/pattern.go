package rules

import (
	"fmt"
	"path"
	"strings"
)

// segKind is one segment of a compiled path pattern.
type segKind uint8

const (
	segLiteral segKind = iota // matches one segment spelled exactly so
	segOne                    // "*": exactly one segment, any spelling
	segAny                    // "**": zero or more segments
)

type segment struct {
	kind segKind
	lit  string
}

// pathPattern is a compiled path pattern such as /clinic/*/attachments/**.
type pathPattern struct {
	text string
	segs []segment
}

// patternError describes a malformed pattern; offset is the byte offset in
// the pattern text of the offending character.
type patternError struct {
	offset int
	msg    string
	hint   string
}

func (e *patternError) Error() string { return e.msg }

// parsePathPattern compiles a path pattern. Patterns are absolute, split
// on "/", and each segment is a literal, "*" or "**". A "*" inside a
// literal is refused rather than guessed at: "/clinic/doc*" could mean a
// prefix match, and a rule file must not be ambiguous.
func parsePathPattern(text string) (pathPattern, error) {
	if text == "" {
		return pathPattern{}, &patternError{0, "empty path pattern", `write "/db/_bulk_docs", or "/**" for every path`}
	}
	if text[0] != '/' {
		return pathPattern{}, &patternError{0, "path pattern must start with \"/\"", `write "/` + text + `"`}
	}
	if i := strings.IndexAny(text, "?#"); i >= 0 {
		return pathPattern{}, &patternError{i, fmt.Sprintf("%q in a path pattern", text[i]), "patterns match the URL path only; use query rules for query parameters"}
	}
	if i := strings.IndexByte(text, '%'); i >= 0 {
		return pathPattern{}, &patternError{i, "percent-escape in a path pattern", "patterns match the unescaped path: write the character itself"}
	}
	p := pathPattern{text: text}
	off := 1
	rest := text[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "" && !more && len(p.segs) == 0:
			// "/" alone: the root, zero segments.
		case seg == "":
			if more || len(p.segs) > 0 {
				return pathPattern{}, &patternError{off, "empty segment in path pattern", "remove the doubled or trailing \"/\": paths are matched after cleaning"}
			}
		case seg == "." || seg == "..":
			return pathPattern{}, &patternError{off, fmt.Sprintf("%q segment in path pattern", seg), "paths are matched after cleaning, so they never contain . or .. segments"}
		case seg == "**":
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == segAny {
				return pathPattern{}, &patternError{off, "\"**\" twice in a row", "one \"**\" already matches any number of segments"}
			}
			p.segs = append(p.segs, segment{kind: segAny})
		case seg == "*":
			p.segs = append(p.segs, segment{kind: segOne})
		case strings.Contains(seg, "*"):
			return pathPattern{}, &patternError{off + strings.IndexByte(seg, '*'), "\"*\" inside a segment", `"*" and "**" stand for whole segments: "/db/*", not "/db/doc*"`}
		default:
			p.segs = append(p.segs, segment{kind: segLiteral, lit: seg})
		}
		if !more {
			break
		}
		off += len(seg) + 1
		rest = tail
	}
	return p, nil
}

// cleanPath puts a request path into the form patterns are matched
// against: rooted, "." and ".." resolved, repeated and trailing slashes
// removed. Every spelling of a resource must meet the same route, or a
// client could step around a rule with "/db//_bulk_docs/".
// path.Clean returns its argument unchanged (no allocation) when the path
// is already clean, which is the common case.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		return path.Clean("/" + p)
	}
	return path.Clean(p)
}

// match reports whether the clean path p matches. It does not allocate:
// segments are walked in place, and "**" backtracks to one saved position
// (the classic wildcard algorithm, with segments in place of characters).
func (pp *pathPattern) match(p string) bool {
	segs := pp.segs
	pos := 1 // byte offset of the next segment in p; p starts with "/"
	if p == "/" {
		pos = len(p)
	}
	si := 0
	starSi, starPos := -1, 0
	for pos < len(p) || si < len(segs) {
		if si < len(segs) {
			switch s := segs[si]; s.kind {
			case segAny:
				starSi, starPos = si, pos
				si++
				continue
			case segOne:
				if pos < len(p) {
					pos = nextSegment(p, pos)
					si++
					continue
				}
			case segLiteral:
				if pos < len(p) {
					end := segmentEnd(p, pos)
					if p[pos:end] == s.lit {
						pos = nextSegment(p, pos)
						si++
						continue
					}
				}
			}
		}
		// Mismatch: let the last "**" swallow one more segment.
		if starSi < 0 || starPos >= len(p) {
			return false
		}
		starPos = nextSegment(p, starPos)
		pos = starPos
		si = starSi + 1
	}
	return true
}

func segmentEnd(p string, pos int) int {
	if i := strings.IndexByte(p[pos:], '/'); i >= 0 {
		return pos + i
	}
	return len(p)
}

// nextSegment returns the offset just past the segment starting at pos
// and its trailing slash.
func nextSegment(p string, pos int) int {
	end := segmentEnd(p, pos)
	if end < len(p) {
		return end + 1
	}
	return end
}

// covers reports whether every path that q matches, pp matches too. It is
// sound but not complete: true is certain, false may be wrong for exotic
// combinations of "**". It is used only for the "shadowed route" warning,
// where a missed warning is acceptable and a false one is not.
func (pp *pathPattern) covers(q *pathPattern) bool {
	return segsCover(pp.segs, q.segs)
}

func segsCover(outer, inner []segment) bool {
	if len(inner) == 0 {
		for _, s := range outer {
			if s.kind != segAny {
				return false
			}
		}
		return true
	}
	if len(outer) == 0 {
		return false
	}
	o, in := outer[0], inner[0]
	switch in.kind {
	case segAny:
		if o.kind != segAny {
			return false
		}
		return segsCover(outer, inner[1:]) || segsCover(outer[1:], inner)
	default:
		switch o.kind {
		case segAny:
			return segsCover(outer[1:], inner) || segsCover(outer, inner[1:])
		case segOne:
			return segsCover(outer[1:], inner[1:])
		default:
			return in.kind == segLiteral && in.lit == o.lit && segsCover(outer[1:], inner[1:])
		}
	}
}

// hostPattern is an exact host name or "*.suffix" (any name below suffix,
// not suffix itself). Stored lower case; matched case-insensitively as
// DNS names are.
type hostPattern struct {
	text   string
	suffix string // ".example.com" for "*.example.com"; "" for exact
}

func parseHostPattern(text string) (hostPattern, error) {
	if text == "" {
		return hostPattern{}, &patternError{0, "empty host pattern", "omit hosts to match every host"}
	}
	if text == "*" {
		return hostPattern{}, &patternError{0, "\"*\" as a host pattern", "omit hosts to match every host"}
	}
	if strings.Contains(text, "://") {
		return hostPattern{}, &patternError{0, "host pattern holds a URL", "write the host name only, for example \"api.example.com\""}
	}
	lower := strings.ToLower(text)
	name := lower
	h := hostPattern{text: lower}
	if strings.HasPrefix(lower, "*.") {
		name = lower[2:]
		h.suffix = lower[1:]
	}
	base := len(text) - len(name)
	if strings.HasPrefix(name, "[") || strings.Count(name, ":") > 1 {
		// An IPv6 literal; check loosely, the URL parser is the judge.
		return hostPattern{}, &patternError{0, "IPv6 host patterns are not supported", "use an IPv4 address or a name"}
	}
	labels := strings.Split(name, ".")
	off := base
	for _, l := range labels {
		if l == "" {
			return hostPattern{}, &patternError{off, "empty label in host pattern", "check for a doubled or trailing dot"}
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c == ':':
				return hostPattern{}, &patternError{off + i, "port in host pattern", "hosts match without the port: write \"" + text[:off+i] + "\""}
			case c == '*':
				return hostPattern{}, &patternError{off + i, "\"*\" is only allowed as the whole first label", `write "*.example.com"`}
			default:
				return hostPattern{}, &patternError{off + i, fmt.Sprintf("%q in host pattern", c), "host names use letters, digits, '-' and '.'"}
			}
		}
		off += len(l) + 1
	}
	return h, nil
}

// match reports whether host (without port) matches. No allocation.
func (h *hostPattern) match(host string) bool {
	if len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1] // the absolute form names the same host
	}
	if h.suffix == "" {
		return strings.EqualFold(host, h.text)
	}
	return len(host) > len(h.suffix) && strings.EqualFold(host[len(host)-len(h.suffix):], h.suffix)
}

// covers reports whether every host q matches, h matches too.
func (h *hostPattern) covers(q *hostPattern) bool {
	if h.suffix == "" {
		return q.suffix == "" && q.text == h.text
	}
	if q.suffix != "" {
		return strings.HasSuffix(q.suffix, h.suffix)
	}
	return len(q.text) > len(h.suffix) && strings.HasSuffix(q.text, h.suffix)
}

// mediaRange is an accepted content type: "type/subtype", "type/*" or
// "type/*+suffix" (application/*+json covers application/ld+json, ...).
type mediaRange struct {
	text    string
	typ     string
	subtype string // "" for any
	suffix  string // "+json" for "*+json"
}

// DefaultContentTypes are the media types body rules accept when a route
// names none: JSON and the structured-syntax JSON types (RFC 6839).
var DefaultContentTypes = []string{"application/json", "application/*+json"}

func parseMediaRange(text string) (mediaRange, error) {
	lower := strings.ToLower(text)
	if strings.ContainsAny(lower, "; ") {
		return mediaRange{}, &patternError{strings.IndexAny(lower, "; "), "parameters in a content type", `write the media type only: "application/json"`}
	}
	typ, sub, ok := strings.Cut(lower, "/")
	if !ok || typ == "" || sub == "" {
		return mediaRange{}, &patternError{0, "not of the form type/subtype", `for example "application/json" or "application/*+json"`}
	}
	if typ == "*" {
		return mediaRange{}, &patternError{0, "\"*/*\" would accept any content type", "name the JSON types the API really sends"}
	}
	for i := 0; i < len(lower); i++ {
		c := lower[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("/*+.-_!#$&^", c) >= 0) {
			return mediaRange{}, &patternError{i, fmt.Sprintf("%q in content type", c), ""}
		}
	}
	if strings.Contains(typ, "*") {
		return mediaRange{}, &patternError{strings.IndexByte(lower, '*'), "\"*\" in the top-level type", `use "application/*+json"`}
	}
	m := mediaRange{text: lower, typ: typ, subtype: sub}
	switch {
	case sub == "*":
		m.subtype = ""
	case strings.HasPrefix(sub, "*+") && len(sub) > 2 && !strings.Contains(sub[2:], "*"):
		m.subtype, m.suffix = "", sub[1:]
	case strings.Contains(sub, "*"):
		return mediaRange{}, &patternError{len(typ) + 1 + strings.IndexByte(sub, '*'), "\"*\" inside a subtype", `only "type/*" and "type/*+suffix" are patterns`}
	}
	return m, nil
}

// matches reports whether a media type (parameters allowed, any case)
// falls in the range. No allocation.
func (m *mediaRange) matches(mediaType string) bool {
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = mediaType[:i]
	}
	mediaType = strings.TrimSpace(mediaType)
	typ, sub, ok := strings.Cut(mediaType, "/")
	if !ok || !strings.EqualFold(typ, m.typ) || sub == "" {
		return false
	}
	switch {
	case m.suffix != "":
		return len(sub) > len(m.suffix) && strings.EqualFold(sub[len(sub)-len(m.suffix):], m.suffix)
	case m.subtype == "":
		return true
	default:
		return strings.EqualFold(sub, m.subtype)
	}
}
