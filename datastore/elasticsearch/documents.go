package elasticsearch

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/datastore/internal/seal"
)

// Documents are read as Elasticsearch reads them: a member name with dots
// is a path ({"card.number": x} is the field card.number, as
// {"card": {"number": x}} is), arrays are transparent, and each value a
// field rule selects is sealed whole under the field's key and mode, with
// the same token the streaming encryptor would give it. The walk holds one
// document (one _bulk source line) at a time.

// sealDoc seals the protected fields of one document.
func sealDoc(c *collection, s *seal.Sealer, doc *jsontree.Node) error {
	if doc.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: a document's source must be a JSON object")
	}
	return sealWalk(c, s, doc, nil)
}

func sealWalk(c *collection, s *seal.Sealer, n *jsontree.Node, path []string) error {
	switch n.Kind {
	case jsontree.Object:
		for i := range n.Members {
			m := &n.Members[i]
			sub := append(slices.Clip(path), strings.Split(m.Name, ".")...)
			if f, _ := c.es.FieldAt(sub); f != nil {
				// Sealed whole; "ssn.x" (inside ssn) is sealed with
				// ssn's key.
				if _, err := s.Node(f, f.Mode, m.Value); err != nil {
					return err
				}
				continue
			}
			if err := sealWalk(c, s, m.Value, sub); err != nil {
				return err
			}
		}
	case jsontree.String:
		return s.Loose(n)
	case jsontree.Array:
		for _, e := range n.Elems {
			if err := sealWalk(c, s, e, path); err != nil {
				return err
			}
		}
	}
	return nil
}

// whole is a LineTransformer that reads the body whole and transforms it
// at End: a single document (PUT /{index}/_doc/{id}) or an update body.
type whole struct {
	buf bytes.Buffer
	fn  func(body []byte) ([]byte, error)
}

func (w *whole) Line(line []byte) ([]byte, error) {
	w.buf.Write(line)
	return nil, nil
}

func (w *whole) End() ([]byte, error) {
	defer func() {
		clear(w.buf.Bytes()[:w.buf.Cap()])
		w.buf.Reset()
	}()
	return w.fn(w.buf.Bytes())
}

// docMeta says where a written document is stored, for reading it back
// when a masked value is written back.
type docMeta struct {
	indexRaw, idRaw   string // path segments as sent (escaped)
	index, id         string // unescaped, for _mget
	routing           string
	ifSeqNo, ifTerm   string
	fresh             bool // a create or an automatic id: no stored document
	hasRouting, hasIf bool
}

func (q *req) meta(id segment, fresh bool) docMeta {
	m := docMeta{indexRaw: q.indexRaw, idRaw: id.raw, id: id.name, fresh: fresh || id.raw == ""}
	m.index, _ = url.PathUnescape(q.indexRaw)
	m.routing, m.hasRouting = lookup(q.params, "routing")
	m.ifSeqNo, m.hasIf = lookup(q.params, "if_seq_no")
	m.ifTerm, _ = lookup(q.params, "if_primary_term")
	if v, _ := lookup(q.params, "op_type"); v == "create" {
		m.fresh = true
	}
	return m
}

// single returns the one collection a write reaches.
func (q *req) single(ep string, t *target) (*collection, *datastore.Operation) {
	if len(t.cols) > 1 || t.multi {
		return nil, q.bad(ep, t, "a write must name one index (not a list, a wildcard or _all) when it may reach a protected index")
	}
	return t.cols[0], nil
}

// write handles a document write: index, create, or an automatic id.
func (q *req) write(t *target, id segment, autoID, create bool) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpDoc, Body: datastore.BodyPass}
	}
	c, op := q.single(EpDoc, t)
	if op != nil {
		return op
	}
	meta := q.meta(id, autoID || create)
	p := q.p
	return &datastore.Operation{Collection: c.orig, Endpoint: EpDoc, Body: datastore.BodyNDJSON, Keys: c.keys,
		Lines: func(ctx context.Context, env *datastore.LinesEnv) datastore.LineTransformer {
			return &whole{fn: func(body []byte) ([]byte, error) {
				doc, err := p.parse(body, env, "document")
				if err != nil {
					return nil, err
				}
				if doc.Kind != jsontree.Object {
					return nil, datastore.BadRequest("elasticsearch: a document's source must be a JSON object")
				}
				s := seal.New(ctx, env.Keys, "elasticsearch")
				if env.Write != nil && !meta.fresh {
					if err := preserveOne(ctx, env.Write, c, meta, doc, false); err != nil {
						return nil, err
					}
				}
				if err := sealDoc(c, s, doc); err != nil {
					return nil, err
				}
				return doc.Bytes(), nil
			}}
		}}
}

// update handles POST /{index}/_update/{id}.
func (q *req) update(t *target, id segment) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpUpdate, Body: datastore.BodyPass}
	}
	c, op := q.single(EpUpdate, t)
	if op != nil {
		return op
	}
	meta := q.meta(id, false)
	p := q.p
	return &datastore.Operation{Collection: c.orig, Endpoint: EpUpdate, Body: datastore.BodyNDJSON, Keys: c.keys,
		Lines: func(ctx context.Context, env *datastore.LinesEnv) datastore.LineTransformer {
			return &whole{fn: func(body []byte) ([]byte, error) {
				root, err := p.parse(body, env, "_update")
				if err != nil {
					return nil, err
				}
				if err := p.sealUpdate(ctx, env, c, meta, root); err != nil {
					return nil, err
				}
				return root.Bytes(), nil
			}}
		}}
}

// updateMembers are the members of an update body besides doc, upsert and
// script.
var updateMembers = []string{"doc_as_upsert", "detect_noop", "_source", "lang", "scripted_upsert", "if_seq_no", "if_primary_term"}

// sealUpdate seals an update body: doc and upsert are documents; a script
// (which writes any field, with plaintext params) is refused unless the
// file allows scripts.
func (p *Profile) sealUpdate(ctx context.Context, env *datastore.LinesEnv, c *collection, meta docMeta, root *jsontree.Node) error {
	if root.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: an update body must be a JSON object")
	}
	s := seal.New(ctx, env.Keys, "elasticsearch")
	for i := range root.Members {
		m := &root.Members[i]
		switch {
		case m.Name == "doc":
			if m.Value.Kind != jsontree.Object {
				return datastore.BadRequest("elasticsearch: an update's doc must be a JSON object")
			}
			if env.Write != nil && !meta.fresh {
				if err := preserveOne(ctx, env.Write, c, meta, m.Value, true); err != nil {
					return err
				}
			}
			if err := sealDoc(c, s, m.Value); err != nil {
				return err
			}
		case m.Name == "upsert":
			// Inserted when the document does not exist: new data.
			if err := sealDoc(c, s, m.Value); err != nil {
				return err
			}
		case m.Name == "script" || m.Name == "params":
			if !p.schema.Allows(OpScripts) {
				return datastore.Refuse(`elasticsearch: an update script on a protected index runs inside the datastore, can write any field, and takes its params in plaintext; refused unless the rule file's allow: lists "scripts"`)
			}
		case slices.Contains(updateMembers, m.Name):
		default:
			return datastore.Refuse("elasticsearch: the update body has a member the profile does not know; unknown members are refused on a protected index")
		}
	}
	return nil
}

// parse parses a body or line the profile transforms.
func (p *Profile) parse(body []byte, env *datastore.LinesEnv, what string) (*jsontree.Node, error) {
	depth := p.maxDepth
	if env != nil && env.MaxDepth > 0 && env.MaxDepth < depth {
		depth = env.MaxDepth
	}
	root, err := jsontree.Parse(body, depth)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %s: %w", what, err)
	}
	return root, nil
}

// ---- masked values written back ----

// preserveOne keeps the stored token of each masked value a single write
// sends back unchanged. The stored document is read with the app's
// credentials; when the write names a revision (if_seq_no and
// if_primary_term), the stored one must be it. A document that does not
// exist yet holds no stored value: the values are new data. partial: doc
// is an update's partial document, merged into the stored source.
func preserveOne(ctx context.Context, env *datastore.WriteEnv, c *collection, meta docMeta, doc *jsontree.Node, partial bool) error {
	cands := c.es.MaskCandidates(doc, env)
	if len(cands) == 0 {
		return nil
	}
	field := cands[0].Field.Name
	rq := ""
	if meta.hasRouting {
		rq = "routing=" + url.QueryEscape(meta.routing)
	}
	status, resp, err := env.Fetch(ctx, http.MethodGet, "/"+meta.indexRaw+"/_doc/"+meta.idRaw, rq, nil)
	if err != nil {
		return datastore.MaskedWrite("elasticsearch: the document carries a masked value in field %s, and the stored document could not be read to keep the stored value (the datastore did not answer); nothing was forwarded", field)
	}
	if status == http.StatusNotFound {
		return nil
	}
	if status != http.StatusOK {
		return datastore.MaskedWrite("elasticsearch: the document carries a masked value in field %s, and the datastore answered %d when the stored document was read; nothing was forwarded", field, status)
	}
	got, err := datastore.ParseDocument(resp)
	if err != nil || got.Kind != jsontree.Object {
		return datastore.MaskedWrite("elasticsearch: the stored document could not be read as JSON; nothing was forwarded")
	}
	return keepStored(ctx, env, cands, got, meta, field)
}

// keepStored checks the stored revision a write names and keeps the
// stored tokens. got is a GET or _mget answer for one document.
func keepStored(ctx context.Context, env *datastore.WriteEnv, cands []datastore.MaskCandidate, got *jsontree.Node, meta docMeta, field string) error {
	if found := got.Get("found"); found != nil && string(found.Raw()) == "false" {
		return nil
	}
	if meta.hasIf {
		seq, term := got.Get("_seq_no"), got.Get("_primary_term")
		if seq == nil || string(seq.Raw()) != meta.ifSeqNo || term == nil || string(term.Raw()) != meta.ifTerm {
			return datastore.MaskedWrite("elasticsearch: the document carries a masked value in field %s, and the revision it names (if_seq_no, if_primary_term) is no longer the stored one, so the stored value cannot be kept; send the real value; nothing was forwarded", field)
		}
	}
	src := got.Get("_source")
	if src == nil {
		return datastore.MaskedWrite("elasticsearch: the document carries a masked value in field %s, and the stored document has no _source to keep it from; nothing was forwarded", field)
	}
	datastore.PreserveMasked(ctx, cands, src, env)
	return nil
}
