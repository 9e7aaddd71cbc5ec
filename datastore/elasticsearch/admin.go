package elasticsearch

import (
	"context"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/datastore/internal/seal"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// msearch handles _msearch: header and body lines, read as
// Elasticsearch's MultiSearchRequest reads them. A header is a JSON
// object or a blank line (an empty header); its index (a string, a comma
// list or an array) replaces the path's; each body is a search body,
// transformed against the indices its header names.
func (q *req) msearch(t *target) *datastore.Operation {
	if op := q.checkParams(EpMsearch, t); op != nil {
		return op
	}
	p := q.p
	def := t
	return &datastore.Operation{Collection: t.first(), Endpoint: EpMsearch, Body: datastore.BodyNDJSON, Keys: p.all().keys(true),
		Lines: func(ctx context.Context, env *datastore.LinesEnv) datastore.LineTransformer {
			return &msearchLines{p: p, env: env, def: def, s: seal.New(ctx, env.Keys, "elasticsearch")}
		}}
}

type msearchLines struct {
	p      *Profile
	env    *datastore.LinesEnv
	def    *target
	s      *seal.Sealer
	line   int
	expect bool // the next line is a search body
	cur    *target
}

func (m *msearchLines) Line(line []byte) ([]byte, error) {
	m.line++
	body, _, ok := cutEOL(line)
	if !ok {
		return nil, datastore.BadRequest("elasticsearch: the _msearch body must be terminated by a newline, as Elasticsearch requires")
	}
	if !m.expect {
		m.expect = true
		m.cur = m.def
		if len(body) == 0 {
			return line, nil // an empty header
		}
		h, err := m.p.parse(body, m.env, "_msearch header")
		if err != nil {
			return nil, err
		}
		if h.Kind != jsontree.Object {
			return nil, datastore.BadRequest("elasticsearch: line %d of the _msearch body: a header must be a JSON object", m.line)
		}
		if idx := h.Get("index"); idx != nil {
			t := &target{}
			var names []*jsontree.Node
			if idx.Kind == jsontree.Array {
				names = idx.Elems
			} else {
				names = []*jsontree.Node{idx}
			}
			for _, n := range names {
				s, ok := n.Text()
				if !ok {
					return nil, datastore.BadRequest("elasticsearch: line %d of the _msearch body: index must be a string or an array of strings", m.line)
				}
				t.merge(m.p.resolve(s))
			}
			m.cur = t
		}
		return line, nil
	}
	m.expect = false
	if !m.cur.protected() {
		return line, nil
	}
	_, eol, _ := cutEOL(line)
	root, err := m.p.parse(body, m.env, "_msearch body line")
	if err != nil {
		return nil, err
	}
	w := &qwalk{t: m.cur, s: m.s}
	if err := w.body(root, "_msearch search", searchBody); err != nil {
		return nil, err
	}
	return append(root.Bytes(), eol...), nil
}

func (m *msearchLines) End() ([]byte, error) {
	if m.expect {
		return nil, datastore.BadRequest("elasticsearch: the _msearch body ends with a header without its search body")
	}
	return nil, nil
}

// template refuses search templates on protected indices: a template
// renders its params, in plaintext, into a query the sidecar never sees.
func (q *req) template(t *target) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpTemplate, Body: datastore.BodyPass}
	}
	return q.refuse(EpTemplate, t, "a search template renders its params, in plaintext, into a query the sidecar cannot see; refused on a protected index: send the query itself")
}

// transformOp builds a body check that leaves the body unchanged unless
// fn rewrites it.
func (q *req) transformOp(ep string, t *target, keys []string, fn func(context.Context, *jsontree.Node, fieldcrypt.Keyring) error) *datastore.Operation {
	p := q.p
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Body: datastore.BodyTransform, Keys: keys,
		Transform: func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
			root, err := p.parse(body, nil, ep)
			if err != nil {
				return nil, err
			}
			if root.Kind != jsontree.Object {
				return nil, datastore.BadRequest("elasticsearch: the request body must be a JSON object")
			}
			if err := fn(ctx, root, keys); err != nil {
				return nil, err
			}
			return root.Bytes(), nil
		}}
}

// pipelineSettings refuses index settings that make every write to the
// index run an ingest pipeline (index.default_pipeline,
// index.final_pipeline, flattened or nested), unless allowed.
func (p *Profile) pipelineSettings(n *jsontree.Node, prefix string) error {
	if p.schema.Allows(OpPipelines) {
		return nil
	}
	if n.Kind != jsontree.Object {
		return nil
	}
	for i := range n.Members {
		m := &n.Members[i]
		name := m.Name
		if prefix != "" {
			name = prefix + "." + name
		}
		if strings.HasSuffix(name, "default_pipeline") || strings.HasSuffix(name, "final_pipeline") {
			if v, ok := m.Value.Text(); ok && v == "_none" {
				continue
			}
			if m.Value.Kind == jsontree.Null {
				continue
			}
			return datastore.Refuse(`elasticsearch: the settings name a default or final ingest pipeline, which runs on every document written to the index and can create fields in plaintext or send documents to a protected index; refused unless the rule file's allow: lists "pipelines"`)
		}
		if err := p.pipelineSettings(m.Value, name); err != nil {
			return err
		}
	}
	return nil
}

// createIndex handles PUT /{index} (and the body of _clone, _split,
// _shrink and _rollover): settings are checked for default pipelines on
// every index; aliases on a protected index need "aliases"; mappings
// pass.
func (q *req) createIndex(ep string, t *target) *datastore.Operation {
	p := q.p
	return q.transformOp(ep, t, nil, func(ctx context.Context, root *jsontree.Node, _ fieldcrypt.Keyring) error {
		for i := range root.Members {
			m := &root.Members[i]
			switch m.Name {
			case "settings":
				if err := p.pipelineSettings(m.Value, ""); err != nil {
					return err
				}
			case "aliases":
				if t.protected() && !m.Value.IsEmpty() && !p.schema.Allows(OpAliases) {
					return datastore.Refuse(`elasticsearch: aliases on a protected index are second names under which writes would pass unencrypted unless the rule file names them too; refused unless the rule file's allow: lists "aliases"`)
				}
			}
		}
		return nil
	})
}

// settings handles PUT /{index}/_settings and PUT /_settings.
func (q *req) settings(t *target) *datastore.Operation {
	p := q.p
	return q.transformOp(EpSettings, t, nil, func(ctx context.Context, root *jsontree.Node, _ fieldcrypt.Keyring) error {
		return p.pipelineSettings(root, "")
	})
}

// alias handles /{index}/_alias[es][/{name}].
func (q *req) alias(t *target, sub []segment) *datastore.Operation {
	switch q.m {
	case "GET", "DELETE":
		// Reading aliases, or removing one: no second name appears.
		return q.pass(EpAlias, t, datastore.BodyNone)
	case "PUT", "POST":
		if !t.protected() {
			return &datastore.Operation{Endpoint: EpAlias, Body: datastore.BodyPass}
		}
		return q.aliasesBody(t, "an alias on a protected index")
	}
	return q.unknown(EpAlias, t, "/{index}/_alias")
}

// aliasesBody handles alias writes: refused unless allowed; when allowed,
// an alias filter (a query) is sealed like a search's, against every
// protected collection (the actions may name any index).
func (q *req) aliasesBody(t *target, what string) *datastore.Operation {
	if !q.p.schema.Allows(OpAliases) {
		return q.refuse(EpAlias, t, `%s is a second name for an index, under which writes would pass unencrypted unless the rule file names it too; refused unless the rule file's allow: lists "aliases"`, what)
	}
	all := q.p.all()
	return q.transformOp(EpAlias, t, all.keys(true), func(ctx context.Context, root *jsontree.Node, keys fieldcrypt.Keyring) error {
		w := &qwalk{t: all, s: seal.New(ctx, keys, "elasticsearch")}
		return w.filters(root)
	})
}

// filters seals every member named filter (alias filters) as a query.
func (w *qwalk) filters(n *jsontree.Node) error {
	switch n.Kind {
	case jsontree.Object:
		for i := range n.Members {
			m := &n.Members[i]
			if m.Name == "filter" {
				if err := w.query(m.Value); err != nil {
					return err
				}
				continue
			}
			if err := w.filters(m.Value); err != nil {
				return err
			}
		}
	case jsontree.Array:
		for _, e := range n.Elems {
			if err := w.filters(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyIndex handles /{index}/_clone|_split|_shrink/{target}: the target
// index gets the source's documents as they are stored. Into a protected
// index from another collection that is plaintext arriving where the
// rules promise ciphertext.
func (q *req) copyIndex(src *target, name string, sub []segment) *datastore.Operation {
	if len(sub) != 1 || (q.m != "PUT" && q.m != "POST") {
		return q.unknown(EpCopy, src, "/{index}/"+name)
	}
	dst := q.p.resolve(sub[0].name, sub[0].raw)
	if dst.protected() {
		same := len(src.cols) == 1 && len(dst.cols) == 1 && src.cols[0] == dst.cols[0]
		if !same && !q.p.schema.Allows(OpReindex) {
			return q.refuse(EpCopy, dst, `/{index}/%s into a protected index copies the source's documents as they are stored, and the source is not the same protected collection; refused unless the rule file's allow: lists "reindex"`, name)
		}
	}
	t := &target{}
	t.merge(src)
	t.merge(dst)
	return q.createIndex(EpCopy, t)
}

// rollover handles /{alias}/_rollover[/{new_index}].
func (q *req) rollover(t *target, sub []segment) *datastore.Operation {
	if q.m != "POST" || len(sub) > 1 {
		return q.unknown(EpCopy, t, "/{index}/_rollover")
	}
	all := &target{}
	all.merge(t)
	if len(sub) == 1 {
		all.merge(q.p.resolve(sub[0].name, sub[0].raw))
	}
	return q.createIndex(EpCopy, all)
}

// analyze handles /{index}/_analyze: text analysed as a field of a
// protected index is that field's plaintext.
func (q *req) analyze(t *target) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpAnalyze, Body: datastore.BodyPass}
	}
	if f, ok := lookup(q.params, "field"); ok {
		w := &qwalk{t: t}
		if err := w.noValues("_analyze", f); err != nil {
			return &datastore.Operation{Collection: t.first(), Endpoint: EpAnalyze, Refusal: err.(*datastore.Refusal)}
		}
	}
	return q.transformOp(EpAnalyze, t, nil, func(ctx context.Context, root *jsontree.Node, _ fieldcrypt.Keyring) error {
		w := &qwalk{t: t}
		if f := root.Get("field"); f != nil {
			if s, ok := f.Text(); ok {
				return w.noValues("_analyze", s)
			}
		}
		return nil
	})
}

// mtermvectors handles /{index}/_mtermvectors: ids pass; an artificial
// document (doc) is a document in plaintext.
func (q *req) mtermvectors(t *target) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpTermVectors, Body: datastore.BodyPass}
	}
	return q.transformOp(EpTermVectors, t, nil, func(ctx context.Context, root *jsontree.Node, _ fieldcrypt.Keyring) error {
		var find func(n *jsontree.Node) error
		find = func(n *jsontree.Node) error {
			switch n.Kind {
			case jsontree.Object:
				for i := range n.Members {
					if n.Members[i].Name == "doc" {
						return datastore.Refuse("elasticsearch: _mtermvectors with an artificial document (doc) sends a document in plaintext; refused on a protected index")
					}
					if err := find(n.Members[i].Value); err != nil {
						return err
					}
				}
			case jsontree.Array:
				for _, e := range n.Elems {
					if err := find(e); err != nil {
						return err
					}
				}
			}
			return nil
		}
		return find(root)
	})
}

// byQuery handles _update_by_query and _delete_by_query on an index.
func (q *req) byQuery(t *target, op, name string) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpByQuery, Body: datastore.BodyPass}
	}
	if !q.p.schema.Allows(op) {
		why := "deletes every matching document of a protected index in one request"
		if op == OpUpdateByQuery {
			why = "rewrites every matching document of a protected index inside the datastore, with scripts or pipelines that change fields the sidecar cannot see"
		}
		return q.refuse(EpByQuery, t, "/{index}/%s %s; refused unless the rule file's allow: lists %q", name, why, op)
	}
	if _, ok := lookup(q.params, "q"); ok {
		return &datastore.Operation{Collection: t.first(), Endpoint: EpByQuery, Refusal: datastore.Unsupported(
			"elasticsearch: the q parameter is a Lucene query string, which can name any field and compares it with plaintext; refused on a protected index: send a query in the body")}
	}
	p := q.p
	return q.transformOp(EpByQuery, t, t.keys(true), func(ctx context.Context, root *jsontree.Node, keys fieldcrypt.Keyring) error {
		w := &qwalk{t: t, s: seal.New(ctx, keys, "elasticsearch")}
		for i := range root.Members {
			m := &root.Members[i]
			switch m.Name {
			case "query":
				if err := w.query(m.Value); err != nil {
					return err
				}
			case "script":
				if !p.schema.Allows(OpScripts) {
					return datastore.Refuse(`elasticsearch: an update_by_query script runs inside the datastore on protected documents, can write any field, and takes its params in plaintext; refused unless the rule file's allow: lists "scripts"`)
				}
			case "slice", "max_docs", "conflicts", "size":
			default:
				return unknownMember(name)
			}
		}
		return nil
	})
}

// reindex handles POST /_reindex. Its source and destination are in the
// body, so the decision is made there: a reindex that reaches a protected
// index at either end needs "reindex"; then the source query is sealed
// against the source, a script needs "scripts", a destination pipeline
// "pipelines", and a remote source is refused into a protected index.
func (q *req) reindex() *datastore.Operation {
	p := q.p
	all := p.all()
	return q.transformOp(EpReindex, &target{}, all.keys(true), func(ctx context.Context, root *jsontree.Node, keys fieldcrypt.Keyring) error {
		src, dst := root.Get("source"), root.Get("dest")
		if src == nil || src.Kind != jsontree.Object || dst == nil || dst.Kind != jsontree.Object {
			return datastore.BadRequest("elasticsearch: a _reindex body needs a source and a dest object")
		}
		st, dt := &target{}, &target{}
		for _, pair := range []struct {
			n *jsontree.Node
			t *target
		}{{src.Get("index"), st}, {dst.Get("index"), dt}} {
			if pair.n == nil {
				continue
			}
			names := []*jsontree.Node{pair.n}
			if pair.n.Kind == jsontree.Array {
				names = pair.n.Elems
			}
			for _, n := range names {
				s, ok := n.Text()
				if !ok {
					return datastore.BadRequest("elasticsearch: a _reindex index must be a string or an array of strings")
				}
				pair.t.merge(p.resolve(s))
			}
		}
		if dp := dst.Get("pipeline"); dp != nil && !p.schema.Allows(OpPipelines) {
			return datastore.Refuse(`elasticsearch: a _reindex destination pipeline runs on every copied document inside the datastore and can send it to a protected index; refused unless the rule file's allow: lists "pipelines"`)
		}
		if !st.protected() && !dt.protected() {
			return nil
		}
		if !p.schema.Allows(OpReindex) {
			return datastore.Refuse(`elasticsearch: _reindex copies documents as they are stored; into or out of a protected index it can write plaintext where the rules promise ciphertext (from an unprotected index or a remote cluster) or copy ciphertext under another name; refused unless the rule file's allow: lists "reindex"`)
		}
		if dt.protected() && src.Get("remote") != nil {
			return datastore.Refuse("elasticsearch: _reindex from a remote cluster into a protected index copies the remote documents as they are stored there, plaintext included; refused")
		}
		if root.Get("script") != nil && !p.schema.Allows(OpScripts) {
			return datastore.Refuse(`elasticsearch: a _reindex script runs inside the datastore on every copied document and can write any field; refused unless the rule file's allow: lists "scripts"`)
		}
		if sq := src.Get("query"); sq != nil && st.protected() {
			w := &qwalk{t: st, s: seal.New(ctx, keys, "elasticsearch")}
			if err := w.query(sq); err != nil {
				return err
			}
		}
		if srt := src.Get("sort"); srt != nil && st.protected() {
			w := &qwalk{t: st}
			return w.sort(srt)
		}
		return nil
	})
}
