package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/datastore/internal/seal"
)

// _bulk bodies are read as Elasticsearch's BulkRequestParser reads them:
// lines end at "\n" (a "\r" before it is whitespace); a blank or
// whitespace-only line where an action is expected is skipped; an action
// line is one JSON object with exactly one member (index, create, update
// or delete) whose value holds the action's parameters; index, create and
// update are followed by a source line, delete is not; the body must end
// with a newline. Each action's index is its _index or the path's index.
// A source line for a protected index is parsed alone (one JSON object,
// nothing after it) and its fields sealed; an update's doc and upsert are
// documents, its script is refused unless allowed. Every other line is
// forwarded byte for byte.

// actionParams are the parameters an action line may carry
// (Elasticsearch 7 and 8, OpenSearch 2, with the underscore spellings of
// older versions). Elasticsearch refuses any other with 400.
var actionParams = []string{"_index", "_id", "_type", "routing", "_routing", "pipeline", "if_seq_no", "if_primary_term",
	"version", "_version", "version_type", "_version_type", "retry_on_conflict", "_retry_on_conflict", "require_alias",
	"require_data_stream", "dynamic_templates", "_source", "list_executed_pipelines", "op_type", "parent", "_parent"}

func (q *req) bulk(t *target, all bool) *datastore.Operation {
	def := t
	if all {
		def = nil // /_bulk: every action names its index
	}
	p := q.p
	indexRaw := q.indexRaw
	return &datastore.Operation{Collection: t.first(), Endpoint: EpBulk, Body: datastore.BodyNDJSON, Keys: p.all().keys(false),
		Lines: func(ctx context.Context, env *datastore.LinesEnv) datastore.LineTransformer {
			return &bulkLines{p: p, ctx: ctx, env: env, def: def, defRaw: indexRaw, s: seal.New(ctx, env.Keys, "elasticsearch")}
		}}
}

type bulkLines struct {
	p      *Profile
	ctx    context.Context
	env    *datastore.LinesEnv
	def    *target // the path's index; nil for /_bulk
	defRaw string
	s      *seal.Sealer

	line   int
	expect bool // the next line is a source line
	act    bulkAction

	// With masks, every output piece is held until End, so that one
	// _mget reads the stored documents of all writes that need them.
	held []bulkPiece
}

type bulkAction struct {
	kind string      // index, create, update, delete
	col  *collection // nil: not a protected index
	meta docMeta
}

type bulkPiece struct {
	out   []byte         // ready
	doc   *jsontree.Node // pending: a source whose masked values need the stored document
	cands []datastore.MaskCandidate
	act   bulkAction
	eol   string
}

func (b *bulkLines) Line(line []byte) ([]byte, error) {
	b.line++
	body, eol, ok := cutEOL(line)
	if !ok {
		return nil, datastore.BadRequest("elasticsearch: the _bulk body must be terminated by a newline, as Elasticsearch requires")
	}
	if !b.expect {
		if len(bytes.TrimSpace(body)) == 0 {
			return b.emit(line) // skipped by Elasticsearch
		}
		if err := b.action(body); err != nil {
			return nil, err
		}
		return b.emit(line)
	}
	b.expect = false
	if b.act.col == nil {
		return b.emit(line)
	}
	doc, err := b.p.parse(body, b.env, "_bulk source line")
	if err != nil {
		return nil, err
	}
	if doc.Kind != jsontree.Object {
		return nil, datastore.BadRequest("elasticsearch: line %d of the _bulk body: a source line must be one JSON object", b.line)
	}
	part := doc
	if b.act.kind == "update" {
		part = doc.Get("doc")
	}
	if b.env.Write != nil && part != nil && part.Kind == jsontree.Object && !b.act.meta.fresh && b.act.meta.id != "" {
		if cands := b.act.col.es.MaskCandidates(part, b.env.Write); len(cands) > 0 {
			b.held = append(b.held, bulkPiece{doc: doc, cands: cands, act: b.act, eol: eol})
			return nil, nil
		}
	}
	if err := b.seal(doc, b.act); err != nil {
		return nil, err
	}
	return b.emit(append(doc.Bytes(), eol...))
}

// seal seals one source line: a document, or an update body.
func (b *bulkLines) seal(doc *jsontree.Node, act bulkAction) error {
	if act.kind == "update" {
		// Masked values were handled by the caller: no reads here.
		env := &datastore.LinesEnv{Keys: b.env.Keys, MaxDepth: b.env.MaxDepth}
		return b.p.sealUpdate(b.ctx, env, act.col, act.meta, doc)
	}
	return sealDoc(act.col, b.s, doc)
}

func (b *bulkLines) emit(out []byte) ([]byte, error) {
	if b.env.Write == nil {
		return out, nil
	}
	b.held = append(b.held, bulkPiece{out: bytes.Clone(out)})
	return nil, nil
}

// cutEOL splits a line's terminator off: "\n" or "\r\n". ok is false
// for a last line without "\n".
func cutEOL(line []byte) (body []byte, eol string, ok bool) {
	if !bytes.HasSuffix(line, []byte("\n")) {
		return line, "", false
	}
	body = line[:len(line)-1]
	if bytes.HasSuffix(body, []byte("\r")) {
		return body[:len(body)-1], "\r\n", true
	}
	return body, "\n", true
}

func (b *bulkLines) action(body []byte) error {
	root, err := b.p.parse(body, b.env, "_bulk action line")
	if err != nil {
		return err
	}
	if root.Kind != jsontree.Object || len(root.Members) != 1 {
		return datastore.BadRequest("elasticsearch: line %d of the _bulk body: an action line must be a JSON object with one member (index, create, update or delete)", b.line)
	}
	m := root.Members[0]
	act := bulkAction{kind: m.Name}
	switch m.Name {
	case "index", "create", "update", "delete":
	default:
		return datastore.BadRequest("elasticsearch: line %d of the _bulk body: unknown action; Elasticsearch knows index, create, update and delete", b.line)
	}
	if m.Value.Kind != jsontree.Object {
		return datastore.BadRequest("elasticsearch: line %d of the _bulk body: an action's parameters must be a JSON object", b.line)
	}
	t := b.def
	for _, prm := range m.Value.Members {
		if !slices.Contains(actionParams, prm.Name) {
			return datastore.BadRequest("elasticsearch: line %d of the _bulk body: an action line has a parameter Elasticsearch does not know", b.line)
		}
		str, _ := prm.Value.Text()
		switch prm.Name {
		case "_index":
			if prm.Value.Kind != jsontree.String {
				return datastore.BadRequest("elasticsearch: line %d of the _bulk body: _index must be a string", b.line)
			}
			t = b.p.resolve(str)
			act.meta.index = str
		case "_id":
			act.meta.id = str
		case "routing", "_routing":
			act.meta.routing, act.meta.hasRouting = str, true
		case "if_seq_no":
			act.meta.ifSeqNo, act.meta.hasIf = string(prm.Value.Raw()), true
		case "if_primary_term":
			act.meta.ifTerm = string(prm.Value.Raw())
		case "pipeline":
			if !b.p.schema.Allows(OpPipelines) {
				return datastore.Refuse(`elasticsearch: line %d of the _bulk body: the pipeline parameter runs an ingest pipeline on the document inside the datastore, which can create fields in plaintext or send it to a protected index; refused unless the rule file's allow: lists "pipelines"`, b.line)
			}
		case "op_type":
			if str == "create" {
				act.meta.fresh = true
			}
		}
	}
	if t == nil {
		return datastore.BadRequest("elasticsearch: line %d of the _bulk body: the action names no index, and the path has none", b.line)
	}
	if act.meta.index == "" {
		act.meta.index, _ = url.PathUnescape(b.defRaw)
	}
	if t.protected() {
		if len(t.cols) > 1 || t.multi {
			return datastore.BadRequest("elasticsearch: line %d of the _bulk body: an action must name one index (not a list or a wildcard) when it may reach a protected one", b.line)
		}
		act.col = t.cols[0]
	}
	if act.kind == "create" || act.meta.id == "" {
		act.meta.fresh = act.meta.fresh || act.kind == "create"
	}
	b.act = act
	b.expect = act.kind != "delete"
	return nil
}

func (b *bulkLines) End() ([]byte, error) {
	if b.expect {
		return nil, datastore.BadRequest("elasticsearch: the _bulk body ends with an action line without its source line")
	}
	if b.env.Write == nil {
		return nil, nil
	}
	if err := b.resolveHeld(); err != nil {
		return nil, err
	}
	var out []byte
	for _, h := range b.held {
		out = append(out, h.out...)
	}
	return out, nil
}

// resolveHeld reads, in one _mget, the stored documents of the held
// writes that carry masked values, keeps their stored tokens, and seals
// them.
func (b *bulkLines) resolveHeld() error {
	type ref struct {
		Index   string `json:"_index"`
		ID      string `json:"_id"`
		Routing string `json:"routing,omitempty"`
	}
	var req struct {
		Docs []ref `json:"docs"`
	}
	var pending []int
	for i, h := range b.held {
		if h.doc != nil {
			pending = append(pending, i)
			req.Docs = append(req.Docs, ref{h.act.meta.index, h.act.meta.id, h.act.meta.routing})
		}
	}
	if len(pending) > 0 {
		first := b.held[pending[0]].cands[0].Field.Name
		body, _ := json.Marshal(req)
		status, resp, err := b.env.Write.Fetch(b.ctx, http.MethodPost, "/_mget", "", body)
		if err != nil {
			return datastore.MaskedWrite("elasticsearch: the _bulk body carries masked values, and the stored documents could not be read to keep the stored values (the datastore did not answer); nothing was forwarded")
		}
		if status != http.StatusOK {
			return datastore.MaskedWrite("elasticsearch: the _bulk body carries a masked value in field %s, and the datastore answered %d when the stored documents were read; nothing was forwarded", first, status)
		}
		root, err := datastore.ParseDocument(resp)
		docs := (*jsontree.Node)(nil)
		if err == nil {
			docs = root.Get("docs")
		}
		if docs == nil || docs.Kind != jsontree.Array || len(docs.Elems) != len(pending) {
			return datastore.MaskedWrite("elasticsearch: the stored documents the _bulk body writes could not be read back; nothing was forwarded")
		}
		for j, i := range pending {
			h := &b.held[i]
			if err := keepStored(b.ctx, b.env.Write, h.cands, docs.Elems[j], h.act.meta, h.cands[0].Field.Name); err != nil {
				return err
			}
			if err := b.seal(h.doc, h.act); err != nil {
				return err
			}
			h.out = append(h.doc.Bytes(), h.eol...)
			h.doc = nil
		}
	}
	return nil
}
