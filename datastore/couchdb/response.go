package couchdb

import (
	"strings"
	"sync"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Responses: where documents travel in the CouchDB API's answers, so that
// tokens are opened only in the protected fields of the documents a
// response carries (datastore.ResponseBound), and never where somebody
// copied one (a decryption oracle, issue 12). The places are compiled once
// per collection:
//
//	GET /{db}/{docid}, _local/{id}, _design/{ddoc}   the body: $
//	  ?open_revs=...                                 $[*].ok
//	_all_docs, _design_docs, _local_docs, views      $.rows[*].doc
//	  .../queries                                    $.results[*].rows[*].doc
//	_find                                            $.docs[*]
//	_changes (normal, longpoll)                      $.results[*].doc
//	  continuous and eventsource lines               $.doc
//	_bulk_get                                        $.results[*].docs[*].ok
//	a declared view's key positions                  $.rows[*].key (or key[i])
//
// Everything else is opened nowhere (ResponseNone): _explain (its selector
// echo keeps the sealed compared values), _index, write results, revision
// lists, attachments, database and server information, and every request
// outside the protected databases, where a token can only have been
// copied.

type responses struct {
	doc, openRevs, rows, queries, find, changes, bulkGet *fieldcrypt.Decryptor
	views                                                map[string]*viewResponses
}

type viewResponses struct {
	rows, queries *fieldcrypt.Decryptor
}

type responseCache struct {
	once sync.Once
	m    map[*datastore.Collection]*responses
	err  error
}

func steps(path ...any) []fieldcrypt.Step {
	var out []fieldcrypt.Step
	for _, p := range path {
		switch v := p.(type) {
		case string:
			out = append(out, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: v})
		case int:
			out = append(out, fieldcrypt.Step{Kind: fieldcrypt.StepIndex, Index: v})
		default: // any element
			out = append(out, fieldcrypt.Step{Kind: fieldcrypt.StepWildcard})
		}
	}
	return out
}

// all is the wildcard step in steps().
var all = struct{}{}

func (p *Profile) buildResponses() {
	p.resp.m = make(map[*datastore.Collection]*responses, len(p.cols))
	for c := range p.cols {
		r, err := compileResponses(p.schema.Reveal, c)
		if err != nil {
			p.resp.err = err
			return
		}
		p.resp.m[c] = r
	}
}

func compileResponses(reveal fieldcrypt.Policy, c *datastore.Collection) (*responses, error) {
	build := func(docs ...[]fieldcrypt.Step) (*fieldcrypt.Decryptor, error) {
		return c.ResponseDecryptor(reveal, docs, nil)
	}
	r := &responses{views: map[string]*viewResponses{}}
	var err error
	for _, b := range []struct {
		dst  **fieldcrypt.Decryptor
		docs [][]fieldcrypt.Step
	}{
		{&r.doc, [][]fieldcrypt.Step{nil}},
		{&r.openRevs, [][]fieldcrypt.Step{steps(all, "ok")}},
		{&r.rows, [][]fieldcrypt.Step{steps("rows", all, "doc")}},
		{&r.queries, [][]fieldcrypt.Step{steps("results", all, "rows", all, "doc")}},
		{&r.find, [][]fieldcrypt.Step{steps("docs", all)}},
		{&r.changes, [][]fieldcrypt.Step{steps("results", all, "doc"), steps("doc")}},
		{&r.bulkGet, [][]fieldcrypt.Step{steps("results", all, "docs", all, "ok")}},
	} {
		if *b.dst, err = build(b.docs...); err != nil {
			return nil, err
		}
	}
	for name, vk := range c.Views {
		keys := func(prefix ...any) ([]fieldcrypt.FieldRule, error) {
			var out []fieldcrypt.FieldRule
			for i, fname := range vk.Fields {
				f, inside := c.FieldAt(strings.Split(fname, "."))
				if f == nil || inside {
					continue
				}
				path := append(append([]any{}, prefix...), "key")
				if vk.Array {
					path = append(path, i)
				}
				sel, err := fieldcrypt.NewSelector(steps(path...))
				if err != nil {
					return nil, err
				}
				out = append(out, fieldcrypt.FieldRule{Selector: sel, Key: f.Key, Mode: f.Mode})
			}
			return out, nil
		}
		rowKeys, err := keys("rows", all)
		if err != nil {
			return nil, err
		}
		qKeys, err := keys("results", all, "rows", all)
		if err != nil {
			return nil, err
		}
		vr := &viewResponses{}
		if vr.rows, err = c.ResponseDecryptor(reveal, [][]fieldcrypt.Step{steps("rows", all, "doc")}, rowKeys); err != nil {
			return nil, err
		}
		if vr.queries, err = c.ResponseDecryptor(reveal, [][]fieldcrypt.Step{steps("results", all, "rows", all, "doc")}, qKeys); err != nil {
			return nil, err
		}
		r.views[name] = vr
	}
	return r, nil
}

// respond sets how op's response is opened. It is called for every
// operation Classify returns.
func (p *Profile) respond(r *datastore.Request, op *datastore.Operation) {
	if op.Refusal != nil || op.Collection == nil {
		op.Response = datastore.ResponseNone
		return
	}
	p.resp.once.Do(p.buildResponses)
	resp := p.resp.m[op.Collection]
	if resp == nil || p.resp.err != nil {
		op.Response = datastore.ResponseNone
		return
	}
	bound := func(d *fieldcrypt.Decryptor) {
		op.Response, op.Decryptor = datastore.ResponseBound, d
	}
	read := r.Method == "GET" || r.Method == "HEAD" || r.Method == "POST"
	switch op.Endpoint {
	case EpDoc, EpLocal, EpDesign:
		if r.Method != "GET" && r.Method != "HEAD" {
			break
		}
		if queryHas(r.RawQuery, "open_revs") {
			bound(resp.openRevs)
		} else {
			bound(resp.doc)
		}
		return
	case EpAllDocs:
		if read {
			if strings.HasSuffix(strings.TrimSuffix(r.Path, "/"), "/queries") {
				bound(resp.queries)
			} else {
				bound(resp.rows)
			}
			return
		}
	case EpFind:
		bound(resp.find)
		return
	case EpChanges:
		bound(resp.changes)
		return
	case EpBulkGet:
		bound(resp.bulkGet)
		return
	case EpView:
		ddoc, view, queries := viewOf(r.Path)
		vr := resp.views[ddoc+"/"+view]
		switch {
		case vr != nil && queries:
			bound(vr.queries)
		case vr != nil:
			bound(vr.rows)
		case queries:
			bound(resp.queries)
		default:
			bound(resp.rows)
		}
		return
	}
	op.Response = datastore.ResponseNone
}

// viewOf finds the design document and view a view path names, and
// whether it is the /queries form.
func viewOf(path string) (ddoc, view string, queries bool) {
	segs, _, ref := splitPath(path)
	if ref != nil {
		return "", "", false
	}
	for i, s := range segs {
		if s.name != "_view" || i == 0 || i+1 >= len(segs) {
			continue
		}
		d := segs[i-1].name
		if rest, ok := strings.CutPrefix(d, "_design/"); ok {
			d = rest
		}
		return d, segs[i+1].name, i+2 < len(segs) && segs[i+2].name == "queries"
	}
	return "", "", false
}

// queryHas reports whether a raw query names a parameter.
func queryHas(raw, name string) bool {
	params, ref := parseQuery(raw)
	if ref != nil {
		return false
	}
	for i := range params {
		if params[i].base() == name {
			return true
		}
	}
	return false
}
