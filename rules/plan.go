package rules

import (
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
	Routes []*Route
	// Decryptor opens, masks or leaves tokens in responses according to
	// the decrypt policy.
	Decryptor *fieldcrypt.Decryptor
	// DecryptKeys are the keys this sidecar may open, MaskKeys those it
	// masks; all others stay tokens.
	DecryptKeys []string
	MaskKeys    []string

	// implementation detail fields follow (matcher, original document).
	matcher *matcher
	doc     *Document
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
}

// QueryRule encrypts one URL query parameter.
type QueryRule struct {
	Param string
	Key   string
	Mode  fieldcrypt.Mode
}

// Request is what route matching looks at.
type Request struct {
	Method      string
	Host        string // without port; empty in reverse mode
	Path        string // URL path, unescaped
	ContentType string // media type without parameters, lower case
}

// Match returns the first route that matches r, or nil.
func (p *Plan) Match(r Request) *Route {
	if p == nil || p.matcher == nil {
		return nil
	}
	return p.matcher.match(r)
}

// Hosts returns the hosts that routes name (forward mode intercepts HTTPS
// only for these), or nil if some route matches any host.
func (p *Plan) Hosts() (hosts []string, anyHost bool) {
	if p == nil || p.matcher == nil {
		return nil, false
	}
	return p.matcher.hosts()
}
