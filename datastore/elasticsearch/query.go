package elasticsearch

import (
	"context"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/datastore/internal/seal"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// The query DSL is read as Elasticsearch's query parsers read it: a query
// is an object with exactly one member, the query's type; compound
// queries (bool, constant_score, dis_max, boosting, function_score,
// nested, has_child, has_parent, pinned) are walked at any depth; field
// names are dotted paths ("card.number"), and a path inside a searchable
// field ("email.keyword", a multi-field) holds the same value. For each
// compared value:
//
//   - term, terms (values, not a terms lookup), match and match_phrase on
//     a searchable field: the value is sealed deterministically, exactly
//     as the document's field was; match and match_phrase become a term
//     query (a token has no words to analyse, and an analysed token
//     would match every document of its key by its header);
//   - ids, exists, match_all, match_none and terms lookups pass;
//   - any other query on an encrypted field (range, prefix, wildcard,
//     regexp, fuzzy, match_phrase_prefix, intervals, span queries,
//     geo and vector queries, ...), any comparison on a random field,
//     and queries that search every field or take query text
//     (query_string, simple_query_string, multi_match, combined_fields
//     and more_like_this without a field list naming only unprotected
//     fields) are refused with 400 unsupported_query, naming the field
//     and the clause;
//   - scripts (script, script_score, script_fields, runtime mappings),
//     wrapper (a query in base64) and percolate (a document) are refused
//     on a protected index;
//   - unknown query types are refused.
//
// Sorting, aggregating, highlighting, collapsing and suggesting on an
// encrypted field are refused (ciphertext order is not value order, and
// a bucket, highlight or suggestion of a token means nothing). Unknown
// members of a search body are refused.

// bodyKind says which members a search-like body may have.
type bodyKind uint8

const (
	searchBody bodyKind = iota
	countBody
	fieldCapsBody
	termsEnumBody
	knnSearchBody
)

var kindMembers = map[bodyKind][]string{
	countBody:     {"query"},
	fieldCapsBody: {"index_filter", "fields"},
	termsEnumBody: {"field", "string", "size", "timeout", "case_insensitive", "index_filter", "search_after"},
	knnSearchBody: {"knn", "filter", "_source", "fields", "docvalue_fields", "stored_fields"},
}

// search handles a search-like endpoint.
func (q *req) search(ep string, t *target, what string, kind bodyKind) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: ep, Body: datastore.BodyPass}
	}
	for _, prm := range q.params {
		switch prm.name {
		case "q":
			return &datastore.Operation{Collection: t.first(), Endpoint: ep, Refusal: datastore.Unsupported(
				"elasticsearch: the q parameter is a Lucene query string, which can name any field and compares it with plaintext; refused on a protected index: send a query in the body")}
		case "sort", "suggest_field":
			for _, part := range strings.Split(prm.value, ",") {
				name, _, _ := strings.Cut(part, ":")
				w := &qwalk{t: t}
				if err := w.noValues(prm.name+" parameter", name); err != nil {
					return &datastore.Operation{Collection: t.first(), Endpoint: ep, Refusal: err.(*datastore.Refusal)}
				}
			}
		}
	}
	p := q.p
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Body: datastore.BodyTransform, Keys: t.keys(true),
		Transform: func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
			root, err := p.parse(body, nil, what)
			if err != nil {
				return nil, err
			}
			w := &qwalk{t: t, s: seal.New(ctx, keys, "elasticsearch")}
			if err := w.body(root, what, kind); err != nil {
				return nil, err
			}
			return root.Bytes(), nil
		}}
}

// qwalk transforms the queries of one request against a target.
type qwalk struct {
	t *target
	s *seal.Sealer
}

func (w *qwalk) body(root *jsontree.Node, what string, kind bodyKind) error {
	if root.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: the %s body must be a JSON object", what)
	}
	for i := range root.Members {
		m := &root.Members[i]
		if kind != searchBody {
			if !slices.Contains(kindMembers[kind], m.Name) {
				return unknownMember(what)
			}
		}
		var err error
		switch m.Name {
		case "query", "post_filter", "index_filter":
			err = w.query(m.Value)
		case "filter":
			err = w.queries(m.Value, "filter")
		case "aggs", "aggregations":
			err = w.aggs(m.Value)
		case "sort":
			err = w.sort(m.Value)
		case "highlight":
			err = w.highlight(m.Value)
		case "suggest":
			err = w.scan("suggest", m.Value)
		case "collapse":
			err = w.collapse(m.Value)
		case "rescore":
			err = w.rescore(m.Value)
		case "knn":
			err = w.knn(m.Value)
		case "field":
			if s, ok := m.Value.Text(); ok {
				err = w.noValues("_terms_enum", s)
			}
		case "script_fields", "runtime_mappings":
			err = datastore.Unsupported("elasticsearch: %s runs scripts that read every field of a protected index; refused on a protected index", m.Name)
		case "from", "size", "_source", "fields", "stored_fields", "docvalue_fields", "track_total_hits", "track_scores",
			"timeout", "terminate_after", "version", "seq_no_primary_term", "explain", "min_score", "search_after",
			"pit", "slice", "indices_boost", "stats", "profile", "string", "case_insensitive":
		default:
			err = unknownMember(what)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func unknownMember(what string) *datastore.Refusal {
	return datastore.Refuse("elasticsearch: the %s body has a member the profile does not know (retriever, rank, ext, ... included); unknown members are refused on a protected index", what)
}

// field returns the protected field a field name in a query reaches in
// any collection of the target. Two collections that protect the name
// differently cannot both be served by one sealed value.
func (w *qwalk) field(name string) (*datastore.Field, bool, error) {
	if strings.IndexByte(name, '*') >= 0 {
		return w.patternField(name), false, nil
	}
	path := strings.Split(name, ".")
	var best *datastore.Field
	bestInside := false
	for _, c := range w.t.cols {
		f, inside := c.es.FieldAt(path)
		if f == nil {
			continue
		}
		if best == nil {
			best, bestInside = f, inside
			continue
		}
		if f.Key != best.Key || f.Mode != best.Mode || f.EncryptNull != best.EncryptNull || inside != bestInside {
			return nil, false, datastore.BadRequest("elasticsearch: field %q is protected differently in the indices the request reaches; query them one at a time", best.Name)
		}
	}
	return best, bestInside, nil
}

// patternField returns a protected field that a field name pattern
// ("e*", "*") could name.
func (w *qwalk) patternField(pat string) *datastore.Field {
	for _, c := range w.t.cols {
		for _, f := range c.es.Fields {
			name := strings.Join(f.Path, ".")
			cands := []string{name, name + ".*"}
			if f.AnyDepth {
				cands = append(cands, "*."+name, "*."+name+".*")
			}
			for _, cand := range cands {
				if globsIntersect(pat, cand) {
					return f
				}
			}
		}
	}
	return nil
}

// noValues refuses a field that a clause uses in a way ciphertext cannot
// serve (sorting, aggregating, a range...).
func (w *qwalk) noValues(clause, name string) error {
	f, _, err := w.field(name)
	if err != nil {
		return err
	}
	if f != nil {
		return unsupported(clause, f)
	}
	return nil
}

func unsupported(clause string, f *datastore.Field) *datastore.Refusal {
	if !searchable(f) {
		return datastore.Unsupported("elasticsearch: %s on field %q cannot work: the field is encrypted in random mode and cannot be compared, sorted or aggregated", safeClause(clause), f.Name)
	}
	return datastore.Unsupported("elasticsearch: %s on the encrypted field %q cannot work: a searchable field keeps equality only (term, terms, match, match_phrase, ids, exists), not order, ranges, patterns, words or buckets", safeClause(clause), f.Name)
}

// safeClause names a clause in a message when it looks like one.
func safeClause(s string) string {
	if len(s) > 0 && len(s) <= 48 {
		ok := true
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c == '_' || c == ' ' || c == '.' || c == '/' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
				ok = false
				break
			}
		}
		if ok {
			return s
		}
	}
	return "a clause"
}

// compare seals a value compared for equality with the field name.
func (w *qwalk) compare(clause, name string, n *jsontree.Node) (bool, error) {
	f, inside, err := w.field(name)
	if err != nil {
		return false, err
	}
	if f == nil {
		return false, w.s.Loose(n)
	}
	if !searchable(f) {
		return false, unsupported(clause, f)
	}
	if strings.IndexByte(name, '*') >= 0 {
		return false, unsupported(clause, f)
	}
	_ = inside // a multi-field ("email.keyword") holds the field's value
	if n.Kind == jsontree.Object || n.Kind == jsontree.Array {
		return false, datastore.BadRequest("elasticsearch: %s on field %q compares an object or an array", safeClause(clause), f.Name)
	}
	_, err = w.s.Node(f, fieldcrypt.ModeDeterministic, n)
	return true, err
}

// queries walks a query or an array of queries.
func (w *qwalk) queries(n *jsontree.Node, where string) error {
	if n.Kind == jsontree.Array {
		for _, e := range n.Elems {
			if err := w.query(e); err != nil {
				return err
			}
		}
		return nil
	}
	return w.query(n)
}

func (w *qwalk) query(n *jsontree.Node) error {
	if n.Kind != jsontree.Object || len(n.Members) != 1 {
		return datastore.BadRequest("elasticsearch: a query must be a JSON object with exactly one member, its type")
	}
	typ, body := n.Members[0].Name, n.Members[0].Value
	switch typ {
	case "match_all", "match_none", "ids", "exists", "parent_id":
		return nil
	case "bool":
		return w.members(typ, body, map[string]bool{"must": true, "should": true, "filter": true, "must_not": true})
	case "constant_score":
		return w.members(typ, body, map[string]bool{"filter": true})
	case "dis_max":
		return w.members(typ, body, map[string]bool{"queries": true})
	case "boosting":
		return w.members(typ, body, map[string]bool{"positive": true, "negative": true})
	case "pinned", "rule", "rule_query":
		return w.members(typ, body, map[string]bool{"organic": true})
	case "nested", "has_child", "has_parent":
		if err := w.members(typ, body, map[string]bool{"query": true}); err != nil {
			return err
		}
		if ih := body.Get("inner_hits"); ih != nil {
			return w.innerHits(ih)
		}
		return nil
	case "function_score":
		return w.functionScore(body)
	case "term":
		return w.term(body)
	case "terms":
		return w.terms(body)
	case "match", "match_phrase":
		return w.match(n, typ, body)
	case "multi_match", "combined_fields", "simple_query_string", "more_like_this":
		if body.Kind == jsontree.Object && body.Get("fields") == nil {
			if f := w.patternField("*"); f != nil {
				return datastore.Unsupported("elasticsearch: %s without a fields list searches every field, the encrypted field %q included, with text in plaintext; list the unprotected fields to search", typ, f.Name)
			}
		}
		return w.scan(typ, body)
	case "query_string":
		if f := w.patternField("*"); f != nil {
			return datastore.Unsupported("elasticsearch: query_string takes a query text that can name any field (the encrypted field %q included) and compare it with plaintext; refused on a protected index", f.Name)
		}
		return nil
	case "script", "script_score", "wrapper", "percolate", "template":
		if len(w.t.cols) > 0 {
			return datastore.Unsupported("elasticsearch: a %s query runs code or carries a query or document the sidecar cannot read; refused on a protected index", typ)
		}
		return nil
	case "range", "prefix", "wildcard", "regexp", "fuzzy", "match_phrase_prefix", "match_bool_prefix", "terms_set",
		"intervals", "span_term", "span_multi", "span_near", "span_or", "span_not", "span_first", "span_containing",
		"span_within", "field_masking_span", "distance_feature", "geo_distance", "geo_bounding_box", "geo_polygon",
		"geo_shape", "geo_grid", "shape", "rank_feature", "knn", "semantic", "sparse_vector", "text_expansion",
		"weighted_tokens", "type":
		return w.scan(typ, body)
	}
	return datastore.Unsupported("elasticsearch: %q is not a query type the profile knows; unknown queries are refused on a protected index", safeClause(typ))
}

// members walks the members of a compound query that hold queries (or
// arrays of queries); its other members are options.
func (w *qwalk) members(typ string, body *jsontree.Node, holders map[string]bool) error {
	if body.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: a %s query must be a JSON object", safeClause(typ))
	}
	for i := range body.Members {
		m := &body.Members[i]
		if holders[m.Name] {
			if err := w.queries(m.Value, typ); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *qwalk) functionScore(body *jsontree.Node) error {
	if body.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: a function_score query must be a JSON object")
	}
	fn := func(m *jsontree.Member) error {
		switch m.Name {
		case "query", "filter":
			return w.query(m.Value)
		case "script_score":
			return datastore.Unsupported("elasticsearch: script_score runs a script that reads every field; refused on a protected index")
		case "field_value_factor", "random_score", "gauss", "linear", "exp":
			return w.scan("function_score "+m.Name, m.Value)
		}
		return nil
	}
	for i := range body.Members {
		m := &body.Members[i]
		if m.Name == "functions" {
			if m.Value.Kind != jsontree.Array {
				return datastore.BadRequest("elasticsearch: function_score functions must be an array")
			}
			for _, e := range m.Value.Elems {
				if e.Kind != jsontree.Object {
					return datastore.BadRequest("elasticsearch: each function_score function must be an object")
				}
				for j := range e.Members {
					if err := fn(&e.Members[j]); err != nil {
						return err
					}
				}
			}
			continue
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// fieldMember returns the one member of a single-field query that names
// the field; opts are the query's option names.
func fieldMember(typ string, body *jsontree.Node, opts ...string) (*jsontree.Member, error) {
	if body.Kind != jsontree.Object {
		return nil, datastore.BadRequest("elasticsearch: a %s query must be a JSON object", typ)
	}
	var fm *jsontree.Member
	for i := range body.Members {
		m := &body.Members[i]
		if slices.Contains(opts, m.Name) {
			continue
		}
		if fm != nil {
			return nil, datastore.BadRequest("elasticsearch: a %s query names more than one field", typ)
		}
		fm = m
	}
	if fm == nil {
		return nil, datastore.BadRequest("elasticsearch: a %s query names no field", typ)
	}
	return fm, nil
}

func (w *qwalk) term(body *jsontree.Node) error {
	fm, err := fieldMember("term", body)
	if err != nil {
		return err
	}
	v := fm.Value
	if v.Kind == jsontree.Object {
		val := v.Get("value")
		if val == nil {
			return datastore.BadRequest("elasticsearch: a term query's object form needs a value")
		}
		for _, o := range v.Members {
			switch o.Name {
			case "value", "boost", "_name":
			case "case_insensitive":
				if string(o.Value.Raw()) == "true" {
					if f, _, _ := w.field(fm.Name); f != nil {
						return unsupported("term with case_insensitive", f)
					}
				}
			default:
				return datastore.BadRequest("elasticsearch: a term query has an option the profile does not know")
			}
		}
		v = val
	}
	_, err = w.compare("term", fm.Name, v)
	return err
}

func (w *qwalk) terms(body *jsontree.Node) error {
	fm, err := fieldMember("terms", body, "boost", "_name")
	if err != nil {
		return err
	}
	switch fm.Value.Kind {
	case jsontree.Array:
		for _, e := range fm.Value.Elems {
			if _, err := w.compare("terms", fm.Name, e); err != nil {
				return err
			}
		}
		return nil
	case jsontree.Object:
		// A terms lookup: index, id, path, routing. The values come
		// from a stored document, as stored.
		return nil
	}
	return datastore.BadRequest("elasticsearch: a terms query takes an array of values or a lookup")
}

// matchDropped are match options that do not change an exact
// comparison; matchKept carry over to the term query.
var (
	matchDropped = []string{"operator", "minimum_should_match", "zero_terms_query", "lenient", "auto_generate_synonyms_phrase_query", "slop"}
	matchKept    = []string{"boost", "_name"}
)

// match seals a match or match_phrase on a searchable field and turns it
// into a term query (the clause object n is rewritten).
func (w *qwalk) match(n *jsontree.Node, typ string, body *jsontree.Node) error {
	fm, err := fieldMember(typ, body)
	if err != nil {
		return err
	}
	f, _, err := w.field(fm.Name)
	if err != nil || f == nil {
		return err
	}
	val := fm.Value
	var kept []jsontree.Member
	if val.Kind == jsontree.Object {
		val = fm.Value.Get("query")
		if val == nil {
			return datastore.BadRequest("elasticsearch: a %s query's object form needs a query", typ)
		}
		for _, o := range fm.Value.Members {
			switch {
			case o.Name == "query", slices.Contains(matchDropped, o.Name):
			case slices.Contains(matchKept, o.Name):
				kept = append(kept, o)
			default:
				// fuzziness, analyzer, prefix_length, ...
				return unsupported(typ+" with "+o.Name, f)
			}
		}
	}
	if _, err := w.compare(typ, fm.Name, val); err != nil {
		return err
	}
	out := []byte(`{"term":{`)
	out = append(out, fm.RawName...)
	out = append(out, `:{"value":`...)
	out = append(out, val.Raw()...)
	for _, o := range kept {
		out = append(out, ',')
		out = append(out, o.RawName...)
		out = append(out, ':')
		out = append(out, o.Value.Raw()...)
	}
	out = append(out, "}}}"...)
	n.Replace(jsontree.Object, out)
	return nil
}

// scan refuses a clause that names a protected field anywhere: as a
// member name (range, prefix, geo_distance, span_term, ...) or as the
// value of field, fields, default_field or path.
func (w *qwalk) scan(clause string, n *jsontree.Node) error {
	switch n.Kind {
	case jsontree.Object:
		for i := range n.Members {
			m := &n.Members[i]
			if err := w.noValues(clause, m.Name); err != nil {
				return err
			}
			switch m.Name {
			case "field", "default_field":
				if s, ok := m.Value.Text(); ok {
					if err := w.noValues(clause, s); err != nil {
						return err
					}
				}
			case "fields":
				if m.Value.Kind == jsontree.Array {
					for _, e := range m.Value.Elems {
						s, ok := e.Text()
						if !ok {
							continue
						}
						s, _, _ = strings.Cut(s, "^") // "name^2": a boost
						if err := w.noValues(clause, s); err != nil {
							return err
						}
					}
				}
			}
			if err := w.scan(clause, m.Value); err != nil {
				return err
			}
		}
	case jsontree.Array:
		for _, e := range n.Elems {
			if err := w.scan(clause, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// sort checks a sort: a field name, an object {field: order | options},
// or an array of those.
func (w *qwalk) sort(n *jsontree.Node) error {
	entries := []*jsontree.Node{n}
	if n.Kind == jsontree.Array {
		entries = n.Elems
	}
	for _, e := range entries {
		switch e.Kind {
		case jsontree.String:
			s, _ := e.Text()
			if err := w.noValues("sort", s); err != nil {
				return err
			}
		case jsontree.Object:
			for i := range e.Members {
				m := &e.Members[i]
				switch m.Name {
				case "_script":
					return datastore.Unsupported("elasticsearch: sorting by a script, which reads every field, is refused on a protected index")
				case "_geo_distance":
					if err := w.scan("sort _geo_distance", m.Value); err != nil {
						return err
					}
					continue
				}
				if err := w.noValues("sort", m.Name); err != nil {
					return err
				}
				if m.Value.Kind == jsontree.Object {
					if nested := m.Value.Get("nested"); nested != nil && nested.Kind == jsontree.Object {
						if f := nested.Get("filter"); f != nil {
							if err := w.query(f); err != nil {
								return err
							}
						}
					}
				}
			}
		default:
			return datastore.BadRequest("elasticsearch: a sort entry must be a field name or an object")
		}
	}
	return nil
}

func (w *qwalk) highlight(n *jsontree.Node) error {
	if n.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: highlight must be a JSON object")
	}
	perField := func(name string, opts *jsontree.Node) error {
		if err := w.noValues("highlight", name); err != nil {
			return err
		}
		if opts != nil && opts.Kind == jsontree.Object {
			if hq := opts.Get("highlight_query"); hq != nil {
				return w.query(hq)
			}
		}
		return nil
	}
	for i := range n.Members {
		m := &n.Members[i]
		switch m.Name {
		case "highlight_query":
			if err := w.query(m.Value); err != nil {
				return err
			}
		case "fields":
			switch m.Value.Kind {
			case jsontree.Object:
				for j := range m.Value.Members {
					if err := perField(m.Value.Members[j].Name, m.Value.Members[j].Value); err != nil {
						return err
					}
				}
			case jsontree.Array:
				for _, e := range m.Value.Elems {
					if e.Kind == jsontree.Object {
						for j := range e.Members {
							if err := perField(e.Members[j].Name, e.Members[j].Value); err != nil {
								return err
							}
						}
					} else if s, ok := e.Text(); ok {
						if err := perField(s, nil); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	return nil
}

func (w *qwalk) collapse(n *jsontree.Node) error {
	if n.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: collapse must be a JSON object")
	}
	if f := n.Get("field"); f != nil {
		if s, ok := f.Text(); ok {
			if err := w.noValues("collapse", s); err != nil {
				return err
			}
		}
	}
	if ih := n.Get("inner_hits"); ih != nil {
		return w.innerHits(ih)
	}
	return nil
}

func (w *qwalk) innerHits(n *jsontree.Node) error {
	list := []*jsontree.Node{n}
	if n.Kind == jsontree.Array {
		list = n.Elems
	}
	for _, ih := range list {
		if ih.Kind != jsontree.Object {
			return datastore.BadRequest("elasticsearch: inner_hits must be a JSON object")
		}
		for i := range ih.Members {
			m := &ih.Members[i]
			var err error
			switch m.Name {
			case "sort":
				err = w.sort(m.Value)
			case "highlight":
				err = w.highlight(m.Value)
			case "collapse":
				err = w.collapse(m.Value)
			case "script_fields":
				err = datastore.Unsupported("elasticsearch: script_fields run scripts that read every field; refused on a protected index")
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *qwalk) rescore(n *jsontree.Node) error {
	list := []*jsontree.Node{n}
	if n.Kind == jsontree.Array {
		list = n.Elems
	}
	for _, r := range list {
		if r.Kind != jsontree.Object {
			return datastore.BadRequest("elasticsearch: rescore must be a JSON object")
		}
		for i := range r.Members {
			m := &r.Members[i]
			switch m.Name {
			case "window_size":
			case "query":
				if m.Value.Kind != jsontree.Object {
					return datastore.BadRequest("elasticsearch: rescore query must be a JSON object")
				}
				for j := range m.Value.Members {
					if m.Value.Members[j].Name == "rescore_query" {
						if err := w.query(m.Value.Members[j].Value); err != nil {
							return err
						}
					}
				}
			default:
				return unknownMember("rescore")
			}
		}
	}
	return nil
}

func (w *qwalk) knn(n *jsontree.Node) error {
	list := []*jsontree.Node{n}
	if n.Kind == jsontree.Array {
		list = n.Elems
	}
	for _, k := range list {
		if k.Kind != jsontree.Object {
			return datastore.BadRequest("elasticsearch: knn must be a JSON object")
		}
		for i := range k.Members {
			m := &k.Members[i]
			switch m.Name {
			case "field":
				if s, ok := m.Value.Text(); ok {
					if err := w.noValues("knn", s); err != nil {
						return err
					}
				}
			case "filter":
				if err := w.queries(m.Value, "knn filter"); err != nil {
					return err
				}
			case "inner_hits":
				if err := w.innerHits(m.Value); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// aggs checks aggregations: each is {type: {...}, "aggs": {...},
// "meta": {...}}; a field (or fields) that names an encrypted field, a
// script, or an unknown aggregation type is refused; filter(s) are
// queries.
func (w *qwalk) aggs(n *jsontree.Node) error {
	if n.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: aggregations must be a JSON object")
	}
	for i := range n.Members {
		def := n.Members[i].Value
		if def.Kind != jsontree.Object {
			return datastore.BadRequest("elasticsearch: an aggregation must be a JSON object")
		}
		for j := range def.Members {
			m := &def.Members[j]
			switch m.Name {
			case "aggs", "aggregations":
				if err := w.aggs(m.Value); err != nil {
					return err
				}
			case "meta":
			default:
				if !knownAggs[m.Name] {
					return datastore.Unsupported("elasticsearch: %q is not an aggregation the profile knows; unknown aggregations are refused on a protected index", safeClause(m.Name))
				}
				if m.Name == "filter" {
					// The filter aggregation's body is a query.
					if err := w.query(m.Value); err != nil {
						return err
					}
					continue
				}
				if err := w.aggBody("aggregation "+m.Name, m.Value); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (w *qwalk) aggBody(clause string, n *jsontree.Node) error {
	switch n.Kind {
	case jsontree.Object:
		for i := range n.Members {
			m := &n.Members[i]
			var err error
			switch m.Name {
			case "field":
				if s, ok := m.Value.Text(); ok {
					err = w.noValues(clause, s)
				}
			case "fields":
				err = w.aggBody(clause, m.Value)
				if m.Value.Kind == jsontree.Array {
					for _, e := range m.Value.Elems {
						if s, ok := e.Text(); ok && err == nil {
							err = w.noValues(clause, s)
						}
					}
				}
			case "script":
				err = datastore.Unsupported("elasticsearch: an aggregation script reads every field; refused on a protected index")
			case "filter", "background_filter":
				err = w.query(m.Value)
			case "filters":
				switch m.Value.Kind {
				case jsontree.Array:
					err = w.queries(m.Value, "filters")
				case jsontree.Object:
					if inner := m.Value.Get("filters"); inner != nil {
						err = w.aggBody(clause, m.Value)
					} else {
						for j := range m.Value.Members {
							if err = w.query(m.Value.Members[j].Value); err != nil {
								break
							}
						}
					}
				}
			case "sort":
				err = w.sort(m.Value)
			case "highlight":
				err = w.highlight(m.Value)
			case "script_fields":
				err = datastore.Unsupported("elasticsearch: script_fields run scripts that read every field; refused on a protected index")
			default:
				err = w.aggBody(clause, m.Value)
			}
			if err != nil {
				return err
			}
		}
	case jsontree.Array:
		for _, e := range n.Elems {
			if err := w.aggBody(clause, e); err != nil {
				return err
			}
		}
	}
	return nil
}

var knownAggs = func() map[string]bool {
	m := map[string]bool{}
	for _, a := range strings.Fields(`avg sum min max value_count cardinality stats extended_stats percentiles
		percentile_ranks median_absolute_deviation weighted_avg geo_bounds geo_centroid geo_line top_hits top_metrics
		string_stats boxplot rate t_test matrix_stats terms multi_terms rare_terms significant_terms significant_text
		histogram date_histogram auto_date_histogram variable_width_histogram range date_range ip_range ip_prefix
		geo_distance geohash_grid geotile_grid geohex_grid filter filters global missing nested reverse_nested
		children parent sampler diversified_sampler random_sampler adjacency_matrix composite categorize_text
		frequent_item_sets time_series avg_bucket sum_bucket min_bucket max_bucket stats_bucket extended_stats_bucket
		percentiles_bucket derivative cumulative_sum cumulative_cardinality moving_percentiles normalize
		serial_diff bucket_sort bucket_count_ks_test bucket_correlation`) {
		m[a] = true
	}
	return m
}()
