package rest

import (
	"context"
	"net/url"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/seal"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Endpoint names (Operation.Endpoint), stable for logs, metrics and audit.
const (
	EpPath       = "rest.path"       // a path the profile cannot read unambiguously
	EpCollection = "rest.collection" // /{prefix}: list, create, replace a singular resource
	EpItem       = "rest.item"       // /{prefix}/{id}
	EpNested     = "rest.nested"     // /{prefix}/{id}/{sub}...: nested routes
	EpOther      = "rest.other"      // outside every protected prefix
	EpOptions    = "rest.options"    // OPTIONS without a body
)

// Classify implements datastore.Profile.
func (p *Profile) Classify(r *datastore.Request) *datastore.Operation {
	op, c := p.classify(r)
	switch {
	case op.Refusal == nil && c == nil && (r.Method == "GET" || r.Method == "HEAD") && strings.EqualFold(strings.TrimSuffix(r.Path, "/"), "/db"):
		p.bindDB(op)
	default:
		p.bind(op, c)
	}
	return op
}

// classify returns the operation and the collection whose records the
// answer carries.
func (p *Profile) classify(r *datastore.Request) (*datastore.Operation, *collection) {
	segs, ref := splitPath(r.Path)
	if ref != nil {
		return &datastore.Operation{Endpoint: EpPath, Refusal: ref}, nil
	}
	if r.Method == "OPTIONS" && !r.HasBody {
		return &datastore.Operation{Endpoint: EpOptions, Body: datastore.BodyPass}, nil
	}
	c, rest, ref := p.match(segs)
	if ref != nil {
		return &datastore.Operation{Endpoint: EpPath, Refusal: ref}, nil
	}
	if c == nil {
		if op, into := p.nestedInto(r, segs); op != nil {
			return op, into
		}
		return &datastore.Operation{Endpoint: EpOther, Body: datastore.BodyPass}, nil
	}
	q := &req{p: p, r: r, c: c}
	m := r.Method
	if m == "HEAD" {
		m = "GET"
	}
	ep := EpCollection
	switch len(rest) {
	case 0:
	case 1:
		ep = EpItem
	default:
		ep = EpNested
	}
	op := &datastore.Operation{Collection: c.Collection, Endpoint: ep, Body: datastore.BodyNone}
	if r.RawQuery != "" {
		if ref := q.checkQuery(); ref != nil {
			op.Refusal = ref
			return op, nil
		}
		op.Query = q.sealQuery
		op.Keys = c.searchKeys
	}
	// The answer carries this collection's records, or, for a nested
	// read, those of the nested collection.
	of := c
	if ep == EpNested {
		of, _, _ = p.match(rest[1:])
	}
	switch m {
	case "GET", "DELETE":
		return op, of
	case "POST", "PUT", "PATCH":
		if ep == EpNested {
			return q.refuse(ep, "a write to a nested route under a protected prefix (/{prefix}/{id}/{sub}) stores its body in a collection the profile cannot tell; write to the collection's own prefix"), nil
		}
		if ep == EpItem && m == "POST" {
			return q.refuse(ep, "POST /{prefix}/{id} is not an operation the REST profile knows; create records with POST /{prefix}"), nil
		}
		op.Body = datastore.BodyEncrypt
		op.Encryptor = c.enc
		op.Keys = c.keys
		if m != "POST" {
			// PUT and PATCH of a record (or of a singular resource)
			// replace or merge a stored one.
			op.Preserve = preserve(c, r.Path)
		}
		return op, c
	case "OPTIONS":
		return q.refuse(ep, "OPTIONS with a body on a protected prefix: the body would reach the datastore unread"), nil
	}
	return q.refuse(ep, "method %s is not one the REST profile knows (methods are case-sensitive); refused on a protected prefix", methodName(r.Method)), nil
}

type req struct {
	p *Profile
	r *datastore.Request
	c *collection
}

func (q *req) refuse(ep, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Refusal: datastore.Refuse("rest: "+format, args...)}
}

// segment is one '/'-separated part of the escaped path.
type segment struct{ raw, name string }

// splitPath splits the escaped path at raw '/' and unescapes each segment
// once, as express does for route parameters. Invalid escapes and "."
// or ".." segments (raw or escaped) are refused everywhere. Empty
// segments are kept, and judged by match.
func splitPath(p string) ([]segment, *datastore.Refusal) {
	if p == "" || p == "/" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, datastore.BadRequest("rest: the request path does not start with /")
	}
	p = strings.TrimSuffix(p[1:], "/")
	var segs []segment
	for _, raw := range strings.Split(p, "/") {
		name, err := url.PathUnescape(raw)
		if err != nil {
			return nil, datastore.BadRequest("rest: a path segment has an invalid percent-escape")
		}
		if name == "." || name == ".." || hasDotComponent(name) {
			return nil, datastore.BadRequest("rest: the request path has a . or .. segment, which proxies and servers resolve differently")
		}
		segs = append(segs, segment{raw: raw, name: name})
	}
	return segs, nil
}

func hasDotComponent(name string) bool {
	for _, c := range strings.Split(name, "/") {
		if c == "." || c == ".." {
			return true
		}
	}
	return false
}

// match returns the protected collection whose prefix the path starts
// with, and the segments after the prefix. Prefixes are compared without
// regard to case (express routes are case-insensitive by default), on the
// segments as sent and as unescaped. A path that is protected only when
// an escaped slash is read as a separator, or only when empty segments
// are dropped, is refused: stores and proxies in between read those
// differently.
func (p *Profile) match(segs []segment) (*collection, []segment, *datastore.Refusal) {
	empty := false
	for _, s := range segs {
		if s.raw == "" {
			empty = true
		}
	}
	for _, c := range p.cols {
		for k := 1; k <= len(segs); k++ {
			raw, dec := joinSegs(segs[:k])
			if datastore.Glob(c.pattern, strings.ToLower(raw)) || datastore.Glob(c.pattern, strings.ToLower(dec)) {
				if empty {
					return nil, nil, datastore.BadRequest("rest: the request path has an empty segment (//) under a protected prefix, which stores and proxies read differently")
				}
				return c, segs[k:], nil
			}
		}
	}
	// Read with every escape undone and empty segments dropped.
	var parts []string
	for _, s := range segs {
		if s.name != "" {
			parts = append(parts, strings.ToLower(s.name))
		}
	}
	full := "/" + strings.Join(parts, "/")
	for _, c := range p.cols {
		if datastore.Glob(c.pattern, full) || datastore.Glob(c.pattern+"/*", full) {
			return nil, nil, datastore.BadRequest("rest: the request path reaches a protected prefix only when an escaped slash (%%2F) is read as a separator or an empty segment is dropped, which stores and proxies do differently")
		}
	}
	return nil, nil, nil
}

func joinSegs(segs []segment) (raw, dec string) {
	var r, d strings.Builder
	for _, s := range segs {
		r.WriteString("/" + s.raw)
		d.WriteString("/" + s.name)
	}
	return r.String(), d.String()
}

// nestedInto refuses writes through a nested route whose last segment
// names a protected collection: json-server's POST /posts/1/customers
// creates a customer (with postId 1) from the body.
func (p *Profile) nestedInto(r *datastore.Request, segs []segment) (*datastore.Operation, *collection) {
	if len(segs) < 3 {
		return nil, nil
	}
	for i := 2; i < len(segs); i++ {
		c, _, _ := p.match(segs[i:])
		if c == nil {
			continue
		}
		if r.Method == "GET" || r.Method == "HEAD" {
			if r.RawQuery == "" {
				return &datastore.Operation{Collection: c.Collection, Endpoint: EpNested, Body: datastore.BodyNone}, c
			}
			return &datastore.Operation{Collection: c.Collection, Endpoint: EpNested, Refusal: datastore.Refuse(
				"rest: a nested route that reads a protected collection (/{parent}/{id}/{prefix}) with query parameters: the profile cannot tell which collection they filter; query the collection's own prefix")}, nil
		}
		return &datastore.Operation{Collection: c.Collection, Endpoint: EpNested, Refusal: datastore.Refuse(
			"rest: a nested route that ends in a protected collection's name (/{parent}/{id}/{prefix}) writes into that collection; write to the collection's own prefix")}, nil
	}
	return nil, nil
}

// ---- query parameters ----

// Operator suffixes json-server reads on a filter's name.
var (
	equalOps  = []string{"_ne"}
	refuseOps = []string{"_gte", "_lte", "_gt", "_lt", "_like"}
)

// reserved parameters: json-server's paging, sorting, embedding and
// full-text search; they never compare a field's value, except q and
// _sort, which are checked.
var reserved = []string{"_page", "_limit", "_order", "_start", "_end", "_embed", "_expand", "_delay", "callback", "_"}

type param struct {
	start, end int // raw[start:end] is "name=value"
	name       string
	rawValue   string
	hasValue   bool
}

// parseQuery splits at '&' (express's qs does not split at ';'); names
// and values are unescaped with '+' as a space.
func parseQuery(raw string) ([]param, *datastore.Refusal) {
	var out []param
	for start := 0; start <= len(raw); {
		end := strings.IndexByte(raw[start:], '&')
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		seg := raw[start:end]
		if seg != "" {
			n, v, has := strings.Cut(seg, "=")
			name, err := url.QueryUnescape(n)
			if err != nil {
				return nil, datastore.BadRequest("rest: a query parameter name has an invalid percent-escape")
			}
			out = append(out, param{start: start, end: end, name: name, rawValue: v, hasValue: has})
		}
		start = end + 1
	}
	return out, nil
}

// filter reads a parameter as json-server does: the field path, and the
// operator suffix. ok is false for reserved parameters.
func filter(name string) (field, op string, ok bool) {
	for _, r := range reserved {
		if name == r {
			return "", "", false
		}
	}
	for _, o := range append(append([]string{}, equalOps...), refuseOps...) {
		if f, found := strings.CutSuffix(name, o); found && f != "" {
			return f, o, true
		}
	}
	return name, "", true
}

// checkQuery refuses what cannot be sealed, before any key is resolved.
func (q *req) checkQuery() *datastore.Refusal {
	params, ref := parseQuery(q.r.RawQuery)
	if ref != nil {
		return ref
	}
	for _, prm := range params {
		_, ref := q.paramField(prm)
		if ref != nil {
			return ref
		}
	}
	return nil
}

// paramField returns the searchable field whose value a parameter
// compares (nil when it compares none), or why it is refused.
func (q *req) paramField(prm param) (*datastore.Field, *datastore.Refusal) {
	name := prm.name
	switch {
	case name == "q":
		return nil, datastore.Unsupported("rest: q searches every field for a plaintext term, encrypted fields included (json-server would compare it with the tokens and send the term in plaintext); refused on a protected prefix: filter on a searchable field instead")
	case name == "_sort":
		v, err := url.QueryUnescape(prm.rawValue)
		if err != nil {
			return nil, datastore.BadRequest("rest: a query parameter value has an invalid percent-escape")
		}
		for _, s := range strings.Split(v, ",") {
			if f, inside := q.c.FieldAt(strings.Split(strings.TrimPrefix(s, "-"), ".")); f != nil {
				if inside {
					return nil, insideRefusal(f)
				}
				return nil, datastore.Unsupported("rest: sorting on the encrypted field %q cannot work: ciphertext order is not value order", f.Name)
			}
		}
		return nil, nil
	}
	base := name
	if i := strings.IndexByte(base, '['); i >= 0 {
		base = base[:i]
	}
	field, op, ok := filter(base)
	if !ok {
		return nil, nil
	}
	f, inside := q.c.FieldAt(strings.Split(field, "."))
	if f == nil {
		return nil, nil
	}
	switch {
	case base != name:
		return nil, datastore.BadRequest("rest: a filter on the encrypted field %q is written with brackets, which the store's query parser reads as an object or array", f.Name)
	case inside:
		return nil, insideRefusal(f)
	case !searchable(f):
		return nil, datastore.Unsupported("rest: field %q is encrypted in random mode: it cannot be compared; make it searchable if it must be looked up", f.Name)
	case op != "" && op != "_ne":
		return nil, datastore.Unsupported("rest: %s on the encrypted field %q cannot work: a searchable field keeps equality only (field=value, field_ne=value), not order or patterns", op, f.Name)
	}
	return f, nil
}

func insideRefusal(f *datastore.Field) *datastore.Refusal {
	return datastore.Unsupported("rest: the query names a path inside the encrypted field %q: the store holds that field as one token; use %q itself", f.Name, f.Name)
}

// sealQuery replaces the value of each parameter that compares a
// searchable field (every occurrence of a repeated one) by its
// deterministic token, exactly as the document's field was sealed. The
// rest of the query string is kept byte for byte.
func (q *req) sealQuery(ctx context.Context, raw string, keys fieldcrypt.Keyring) (string, error) {
	params, ref := parseQuery(raw)
	if ref != nil {
		return "", ref
	}
	s := seal.New(ctx, keys, "rest")
	var b strings.Builder
	last := 0
	for _, prm := range params {
		f, ref := q.paramField(prm)
		if ref != nil {
			return "", ref
		}
		v, err := url.QueryUnescape(prm.rawValue)
		if err != nil {
			return "", datastore.BadRequest("rest: a query parameter value has an invalid percent-escape")
		}
		if f == nil {
			// No rule protects it, but a token of a key this sidecar
			// reveals has no business in a request.
			if err := fieldcrypt.CheckLooseValue(ctx, v); err != nil {
				return "", err
			}
			continue
		}
		tok := []byte(v)
		keep, err := s.Keep(f, fieldcrypt.ModeDeterministic, v)
		if err != nil {
			return "", err
		}
		if !keep {
			if tok, err = s.String(f, fieldcrypt.ModeDeterministic, v); err != nil {
				return "", err
			}
		}
		nameEnd := prm.start + strings.IndexByte(raw[prm.start:prm.end]+"=", '=')
		b.WriteString(raw[last:nameEnd])
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(string(tok)))
		last = prm.end
	}
	b.WriteString(raw[last:])
	return b.String(), nil
}

func methodName(m string) string {
	switch strings.ToUpper(m) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return "(an unknown method)"
}
