package rules

import (
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Plan is a compiled, validated rule file: what the proxy consults for every
// request. A Plan is immutable once built; reload swaps whole Plans.
type Plan struct {
	// Hash identifies the rule file's content: "sha256:<hex>" of the bytes.
	Hash string
	// Source is where the rules came from (file path or etcd key).
	Source string
	// Routes in file order; the first that matches a request wins.
	// Version 1 only: a version 2 plan has none.
	Routes []*Route
	// Decryptor opens, masks or leaves tokens in responses according to
	// the decrypt policy. Never nil: with no decrypt section it leaves
	// every token as it is.
	Decryptor *fieldcrypt.Decryptor
	// DecryptKeys are the keys this sidecar may open, MaskKeys those it
	// masks; all others stay tokens. Both sorted.
	DecryptKeys []string
	MaskKeys    []string

	// Version is the rule file's version: 1 (routes) or 2 (collections).
	Version int
	// Schema is what a version 2 file protects; nil for version 1.
	Schema *datastore.Schema
	// Profile applies Schema to requests: the proxy asks it to Classify
	// every request. nil for version 1, whose Routes apply instead.
	Profile datastore.Profile

	// implementation detail fields follow (matcher, original document).
	matcher *matcher
	doc     *Document
	masks   map[string]maskRule // key → how it is masked (MaskKeys only)
	policy  *policy             // the decrypt section as a fieldcrypt.Policy
	stats   *Stats
}

// Route is one compiled route.
type Route struct {
	Name string
	// Body encrypts the fields of a JSON request body; nil when the route
	// protects no body fields.
	Body *fieldcrypt.Encryptor
	// Query lists URL query parameters to encrypt.
	Query []QueryRule
	// Keys are the key names this route seals with, sorted.
	Keys []string

	// Fields are the body rules Body was compiled from, in file order.
	Fields []fieldcrypt.FieldRule
	// Methods are the HTTP methods the route matches, upper case; "*"
	// matches any. A route listing GET also matches HEAD.
	Methods []string
	// Paths are the path patterns, as written.
	Paths []string
	// Hosts are the host patterns, lower case; empty matches any host.
	Hosts []string
	// ContentTypes are the media ranges the body rules accept (see
	// AcceptsContentType); DefaultContentTypes when the file names none.
	ContentTypes []string
	// Line is where the route starts in the rule file, for explanations.
	Line int

	anyMethod bool
	paths     []pathPattern
	hosts     []hostPattern
	types     []mediaRange
}

// QueryRule encrypts one URL query parameter.
type QueryRule struct {
	Param string
	Key   string
	Mode  fieldcrypt.Mode
}

// Request is what route matching looks at.
type Request struct {
	Method string
	Host   string // without port; empty in reverse mode
	Path   string // URL path, unescaped
	// ContentType is the media type without parameters, lower case. It
	// does NOT take part in matching (see Route.AcceptsContentType); it
	// is carried for explanations.
	ContentType string
}

// Match returns the first route that matches r by method, path and host,
// or nil. It does not allocate for clean paths, and is safe for concurrent
// use.
//
// The path is cleaned first ("//db/./x/" meets the same route as "/db/x")
// so that no spelling of a protected resource slips past its route. An
// empty r.Host (reverse mode) is matched by every route, host-restricted
// or not: with one upstream, hosts carry no meaning, and matching more
// only ever protects more.
func (p *Plan) Match(r Request) *Route {
	if p == nil || p.matcher == nil {
		return nil
	}
	return p.matcher.match(r)
}

// Hosts returns the hosts that routes name (forward mode intercepts HTTPS
// only for these), or nil if some route matches any host.
// Wildcard patterns are returned as written ("*.example.com").
//
// For a version 2 file they are the datastore's hosts (Schema.Hosts, host
// or host:port, lower case); a file that names none leaves every host
// possibly the datastore, so anyHost is true.
func (p *Plan) Hosts() (hosts []string, anyHost bool) {
	if p == nil {
		return nil, false
	}
	if p.Schema != nil {
		if len(p.Schema.Hosts) == 0 {
			return nil, true
		}
		return slices.Clone(p.Schema.Hosts), false
	}
	if p.matcher == nil {
		return nil, false
	}
	return p.matcher.hosts()
}

// Document returns the parsed rule file the plan was compiled from.
func (p *Plan) Document() *Document { return p.doc }

// Stats returns the counters the plan's masks update. Plans compiled with
// the same CompileOptions.Stats share them.
func (p *Plan) Stats() *Stats { return p.stats }

// HasBodyRules reports whether the route encrypts request body fields.
// Requests on such a route must have their body buffered and rewritten.
func (r *Route) HasBodyRules() bool { return r != nil && r.Body != nil }

// HasQueryRules reports whether the route encrypts URL query parameters.
func (r *Route) HasQueryRules() bool { return r != nil && len(r.Query) > 0 }

// AcceptsContentType reports whether a request body of the given media type
// (parameters and case are ignored) may pass through the route's body
// rules.
//
// Content type never decides whether a route applies; it decides whether
// a body can be trusted to be what the rules read. The proxy refuses (415)
// a non-empty body on a route with body rules when this returns false:
// otherwise labelling a JSON body text/plain would carry it past the
// encryption. An empty media type is not accepted.
func (r *Route) AcceptsContentType(mediaType string) bool {
	if r == nil {
		return false
	}
	for i := range r.types {
		if r.types[i].matches(mediaType) {
			return true
		}
	}
	return false
}

// QueryRule returns the rule for the query parameter name, if any. The
// name is compared exactly: query parameter names are case-sensitive.
func (r *Route) QueryRule(name string) (QueryRule, bool) {
	if r == nil {
		return QueryRule{}, false
	}
	for _, q := range r.Query {
		if q.Param == name {
			return q, true
		}
	}
	return QueryRule{}, false
}

// matcher finds the first route for a request.
type matcher struct {
	routes   []*Route
	hostList []string
	anyHost  bool
}

func newMatcher(routes []*Route) *matcher {
	m := &matcher{routes: routes}
	for _, r := range routes {
		if len(r.Methods) == 0 || len(r.paths) == 0 {
			continue // matches nothing
		}
		if len(r.hosts) == 0 {
			m.anyHost = true
			continue
		}
		for _, h := range r.Hosts {
			if !slices.Contains(m.hostList, h) {
				m.hostList = append(m.hostList, h)
			}
		}
	}
	slices.Sort(m.hostList)
	return m
}

func (m *matcher) match(r Request) *Route {
	p := cleanPath(r.Path)
	for _, rt := range m.routes {
		if rt.matches(r.Method, r.Host, p) {
			return rt
		}
	}
	return nil
}

func (m *matcher) hosts() ([]string, bool) {
	if m.anyHost {
		return nil, true
	}
	return slices.Clone(m.hostList), false
}

func (rt *Route) matchesMethod(method string) bool {
	if rt.anyMethod {
		return true
	}
	for _, m := range rt.Methods {
		// Compared without regard to case: a datastore that accepts "post"
		// must not receive it unprotected.
		if strings.EqualFold(m, method) || (m == "GET" && strings.EqualFold(method, "HEAD")) {
			return true
		}
	}
	return false
}

func (rt *Route) matches(method, host, cleanPath string) bool {
	if !rt.matchesMethod(method) {
		return false
	}
	if len(rt.hosts) > 0 && host != "" {
		ok := false
		for i := range rt.hosts {
			if rt.hosts[i].match(host) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range rt.paths {
		if rt.paths[i].match(cleanPath) {
			return true
		}
	}
	return false
}
