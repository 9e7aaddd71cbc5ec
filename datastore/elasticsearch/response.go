package elasticsearch

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Responses: where documents travel in Elasticsearch's answers, so that
// tokens are opened only in the protected fields of the documents an
// answer carries (datastore.ResponseBound), never where somebody copied
// one (a decryption oracle, docs/FORMAT.md section 7):
//
//	GET /{index}/_doc/{id}                    $._source
//	GET /{index}/_source/{id}                 $
//	_update with _source                      $.get._source
//	_mget                                     $.docs[*]._source
//	_search, _search/scroll, _knn_search      $.hits.hits[*]._source, $.hits.hits[*].fields[name][*]
//	_async_search                             $.response.hits.hits[*]._source (and fields)
//	_msearch                                  $.responses[*].hits.hits[*]._source (and fields)
//	_bulk (update with _source)               $.items[*].*.get._source
//
// A document's fields are matched as Elasticsearch names them: nested
// objects and dotted member names alike ({"card.number": x}, and the flat
// names of a hit's fields section). An answer reaches the collections its
// request named; _mget, _bulk, _msearch and scrolls, whose bodies may name
// any index, reach every protected collection (where two protect a field
// name differently, the first in the file decides). Everything else opens
// nothing (ResponseNone): write results, counts, information, and every
// request outside the protected indices.

type respKind uint8

const (
	respNone respKind = iota
	respDoc
	respSource
	respUpdate
	respMget
	respSearch
	respAsync
	respMsearch
	respBulk
)

var respPlaces = map[respKind][][]any{
	respDoc:     {{"_source"}},
	respSource:  {nil},
	respUpdate:  {{"get", "_source"}},
	respMget:    {{"docs", all, "_source"}},
	respSearch:  {{"hits", "hits", all, "_source"}},
	respAsync:   {{"response", "hits", "hits", all, "_source"}},
	respMsearch: {{"responses", all, "hits", "hits", all, "_source"}},
	respBulk:    {{"items", all, all, "get", "_source"}},
}

// fieldsPlaces are where a hit's fields section travels: an object of
// flat dotted field names, each holding an array of values.
var fieldsPlaces = map[respKind][]any{
	respSearch:  {"hits", "hits", all, "fields"},
	respAsync:   {"response", "hits", "hits", all, "fields"},
	respMsearch: {"responses", all, "hits", "hits", all, "fields"},
}

var all = struct{}{}

func steps(path []any) []fieldcrypt.Step {
	var out []fieldcrypt.Step
	for _, p := range path {
		if s, ok := p.(string); ok {
			out = append(out, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: s})
		} else {
			out = append(out, fieldcrypt.Step{Kind: fieldcrypt.StepWildcard})
		}
	}
	return out
}

type responseCache struct {
	mu sync.Mutex
	m  map[string]*fieldcrypt.Decryptor
}

// respond sets how op's response is opened.
func (p *Profile) respond(r *datastore.Request, op *datastore.Operation, t *target) {
	if p.schema == nil || p.schema.Reveal == nil {
		return // no decrypt policy to bind: the rule file's decryptor decides
	}
	kind := respNone
	if op.Refusal == nil {
		kind = responseKind(r, op)
	}
	if kind == respMget || kind == respBulk || kind == respMsearch || op.Endpoint == EpScroll {
		t = p.all()
	}
	if kind == respNone || !t.protected() {
		op.Response = datastore.ResponseNone
		return
	}
	d, err := p.decryptor(kind, t)
	if err != nil || d == nil {
		op.Response = datastore.ResponseNone
		return
	}
	op.Response, op.Decryptor = datastore.ResponseBound, d
}

func responseKind(r *datastore.Request, op *datastore.Operation) respKind {
	m := r.Method
	switch op.Endpoint {
	case EpDoc:
		if m != "GET" && m != "HEAD" {
			return respNone
		}
		if strings.Contains(r.Path, "/_source/") || strings.HasSuffix(strings.TrimSuffix(r.Path, "/"), "/_source") {
			return respSource
		}
		return respDoc
	case EpUpdate:
		return respUpdate
	case EpMget:
		return respMget
	case EpSearch, EpScroll:
		if strings.Contains(r.Path, "_async_search") {
			return respAsync
		}
		return respSearch
	case EpMsearch:
		return respMsearch
	case EpBulk:
		return respBulk
	}
	return respNone
}

func (p *Profile) decryptor(kind respKind, t *target) (*fieldcrypt.Decryptor, error) {
	var key strings.Builder
	key.WriteString(strconv.Itoa(int(kind)))
	for _, c := range t.cols {
		key.WriteString("/" + strconv.Itoa(slices.Index(p.cols, c)))
	}
	p.resp.mu.Lock()
	defer p.resp.mu.Unlock()
	if d, ok := p.resp.m[key.String()]; ok {
		return d, nil
	}
	var docs [][]fieldcrypt.Step
	for _, path := range respPlaces[kind] {
		docs = append(docs, steps(path))
	}
	var extra []fieldcrypt.FieldRule
	if prefix, ok := fieldsPlaces[kind]; ok {
		seen := map[string]bool{}
		for _, c := range t.cols {
			for _, f := range c.es.Fields {
				name := strings.Join(f.Path, ".")
				if seen[name] {
					continue
				}
				seen[name] = true
				sel, err := fieldcrypt.NewSelector(append(steps(prefix),
					fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: name}, fieldcrypt.Step{Kind: fieldcrypt.StepWildcard}))
				if err != nil {
					return nil, err
				}
				extra = append(extra, fieldcrypt.FieldRule{Selector: sel, Key: f.Key, Mode: f.Mode})
			}
		}
	}
	d, err := responseCollection(t.cols).ResponseDecryptor(p.schema.Reveal, docs, extra)
	if err != nil {
		return nil, err
	}
	if p.resp.m == nil {
		p.resp.m = map[string]*fieldcrypt.Decryptor{}
	}
	p.resp.m[key.String()] = d
	return d, nil
}

// maxGroupedPath bounds the members of a dotted path whose dotted-name
// spellings are all matched (2^(n-1) of them).
const maxGroupedPath = 6

// responseCollection is the fields of the collections as the documents
// of an answer may spell them: every field path (nested), and each way
// of writing it with dotted member names ("card.number" as one member, or
// "a.b" then "c"). Where two collections protect one spelling, the first
// decides.
func responseCollection(cols []*collection) *datastore.Collection {
	u := &datastore.Collection{Name: cols[0].orig.Name}
	seen := map[string]bool{}
	add := func(f *datastore.Field, path []string) {
		k := strconv.FormatBool(f.AnyDepth) + "\x00" + strings.Join(path, "\x00")
		if seen[k] {
			return
		}
		seen[k] = true
		g := *f
		g.Path = path
		u.Fields = append(u.Fields, &g)
	}
	for _, c := range cols {
		for _, f := range c.es.Fields {
			add(f, f.Path)
			if f.AnyDepth || len(f.Path) < 2 || len(f.Path) > maxGroupedPath {
				continue
			}
			n := len(f.Path)
			for mask := 1; mask < 1<<(n-1); mask++ {
				// Bit i set: members i and i+1 are written as one,
				// joined by a dot.
				var path []string
				cur := f.Path[0]
				for i := 1; i < n; i++ {
					if mask&(1<<(i-1)) != 0 {
						cur += "." + f.Path[i]
					} else {
						path = append(path, cur)
						cur = f.Path[i]
					}
				}
				add(f, append(path, cur))
			}
		}
	}
	return u
}
