// Package esfake is a small Elasticsearch stand-in for sidecrypt's tests:
// no Elasticsearch server can be installed where the tests run. It speaks
// the subset of the Elasticsearch 8 REST API that the tests drive through
// the official @elastic/elasticsearch client (index, create, get, update,
// delete, bulk, mget, search with term, terms, match, match_phrase, ids,
// exists and bool, count, msearch, refresh, index create/exists/delete),
// in Elasticsearch's response shapes and with its product header, stores
// the documents it is sent, and records every request byte for byte.
//
// Matching is exact: term, match and match_phrase compare the JSON value
// at a field's path (dotted names and nested objects alike, any element
// of an array, "x.keyword" as x), as Elasticsearch does on keyword
// fields. It does not analyse text, score, sort or aggregate; hits come
// in the order the documents were first written.
package esfake

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Request is one request the fake received, as it received it.
type Request struct {
	Method string
	URI    string // escaped path and query
	Header http.Header
	Body   []byte
}

// Server is the fake. Serve it with httptest or any http.Server.
type Server struct {
	mu       sync.Mutex
	indices  map[string]*index
	requests []Request
	// pits are the open points in time: an index and the ids it held.
	pits map[string]*pit
	npit int
}

type pit struct {
	index string
	ids   []string
}

type index struct {
	docs  map[string]*doc
	order []string
	seq   int64
	autoN int
}

type doc struct {
	source  json.RawMessage
	version int64
	seqNo   int64
}

// New returns an empty fake.
func New() *Server { return &Server{indices: map[string]*index{}, pits: map[string]*pit{}} }

// Requests returns every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Received returns every request received so far as one byte stream
// (request line, headers, body), for searching.
func (s *Server) Received() []byte {
	var b bytes.Buffer
	for _, r := range s.Requests() {
		fmt.Fprintf(&b, "%s %s\n", r.Method, r.URI)
		_ = r.Header.Write(&b)
		b.WriteString("\n")
		b.Write(r.Body)
		b.WriteString("\n")
	}
	return b.Bytes()
}

// Stored returns every stored document's source, index by index, in
// write order: what a dump of the store would hold.
func (s *Server) Stored() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.indices {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		ix := s.indices[n]
		for _, id := range ix.order {
			if d := ix.docs[id]; d != nil {
				fmt.Fprintf(&b, "%s/%s %s\n", n, id, d.source)
			}
		}
	}
	return b.Bytes()
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body})
	ct := "application/json"
	if strings.Contains(r.Header.Get("Accept"), "vnd.elasticsearch") {
		ct = "application/vnd.elasticsearch+json;compatible-with=8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	status, resp := s.route(r, body)
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	out, _ := json.Marshal(resp)
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

type obj = map[string]any

func errorBody(status int, typ, reason string) (int, any) {
	return status, obj{"error": obj{"type": typ, "reason": reason, "root_cause": []any{obj{"type": typ, "reason": reason}}}, "status": status}
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	raw := strings.Split(p, "/")
	out := make([]string, len(raw))
	for i, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil {
			u = s
		}
		out[i] = u
	}
	return out
}

var shards = obj{"total": 2, "successful": 1, "failed": 0}

func (s *Server) route(r *http.Request, body []byte) (int, any) {
	segs := splitPath(r.URL.EscapedPath())
	m := r.Method
	if len(segs) == 0 {
		return 200, obj{"name": "esfake", "cluster_name": "esfake", "cluster_uuid": "esfake-uuid",
			"version": obj{"number": "8.15.0", "build_flavor": "default", "lucene_version": "9.11.1",
				"minimum_wire_compatibility_version": "7.17.0", "minimum_index_compatibility_version": "7.0.0"},
			"tagline": "You Know, for Search"}
	}
	if segs[0] == "_bulk" {
		return s.bulk("", body)
	}
	if segs[0] == "_cat" && len(segs) >= 2 && segs[1] == "indices" {
		var rows []any
		var names []string
		for n := range s.indices {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if len(segs) < 3 || glob(segs[2], n) {
				rows = append(rows, obj{"index": n})
			}
		}
		if rows == nil {
			rows = []any{}
		}
		return 200, rows
	}
	if segs[0] == "_pit" && m == http.MethodDelete {
		var req struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &req)
		if s.pits[req.ID] == nil {
			return 404, obj{"succeeded": false, "num_freed": 0}
		}
		delete(s.pits, req.ID)
		return 200, obj{"succeeded": true, "num_freed": 1}
	}
	if segs[0] == "_search" && bytes.Contains(body, []byte(`"pit"`)) {
		return s.pitSearch(body)
	}
	if segs[0] == "_mget" {
		return s.mget("", body)
	}
	if segs[0] == "_msearch" {
		return s.msearch("", body)
	}
	if segs[0] == "_search" || segs[0] == "_count" {
		return s.search("", segs[0], body)
	}
	if strings.HasPrefix(segs[0], "_") {
		return errorBody(400, "illegal_argument_exception", "esfake: unsupported endpoint")
	}
	name := segs[0]
	if len(segs) == 1 {
		switch m {
		case http.MethodPut:
			if s.indices[name] != nil {
				return errorBody(400, "resource_already_exists_exception", "index ["+name+"] already exists")
			}
			s.indices[name] = &index{docs: map[string]*doc{}}
			return 200, obj{"acknowledged": true, "shards_acknowledged": true, "index": name}
		case http.MethodHead, http.MethodGet:
			if s.indices[name] == nil {
				return 404, obj{}
			}
			return 200, obj{name: obj{"aliases": obj{}, "mappings": obj{}, "settings": obj{}}}
		case http.MethodDelete:
			delete(s.indices, name)
			return 200, obj{"acknowledged": true}
		}
	}
	switch ep := segs[1]; {
	case ep == "_doc" && len(segs) == 2 && m == http.MethodPost:
		return s.index(name, "", body, false)
	case (ep == "_doc" || ep == "_create") && len(segs) == 3 && (m == http.MethodPut || m == http.MethodPost):
		return s.index(name, segs[2], body, ep == "_create" || r.URL.Query().Get("op_type") == "create")
	case ep == "_doc" && len(segs) == 3 && (m == http.MethodGet || m == http.MethodHead):
		return s.get(name, segs[2])
	case ep == "_doc" && len(segs) == 3 && m == http.MethodDelete:
		return s.delete(name, segs[2])
	case ep == "_update" && len(segs) == 3 && m == http.MethodPost:
		return s.update(name, segs[2], body)
	case ep == "_bulk":
		return s.bulk(name, body)
	case ep == "_mget":
		return s.mget(name, body)
	case ep == "_msearch":
		return s.msearch(name, body)
	case ep == "_search" || ep == "_count":
		return s.search(name, ep, body)
	case ep == "_refresh" || ep == "_forcemerge":
		return 200, obj{"_shards": shards}
	case ep == "_pit" && m == http.MethodPost:
		ix := s.indices[name]
		if ix == nil {
			return errorBody(404, "index_not_found_exception", "no such index ["+name+"]")
		}
		s.npit++
		id := fmt.Sprintf("pit-%d", s.npit)
		p := &pit{index: name}
		for _, docID := range ix.order {
			if ix.docs[docID] != nil {
				p.ids = append(p.ids, docID)
			}
		}
		s.pits[id] = p
		return 200, obj{"id": id}
	}
	return errorBody(400, "illegal_argument_exception", "esfake: unsupported endpoint")
}

func (s *Server) ix(name string) *index {
	ix := s.indices[name]
	if ix == nil {
		ix = &index{docs: map[string]*doc{}}
		s.indices[name] = ix
	}
	return ix
}

func (s *Server) index(name, id string, body []byte, create bool) (int, any) {
	var src map[string]any
	if err := json.Unmarshal(body, &src); err != nil || src == nil {
		return errorBody(400, "document_parsing_exception", "esfake: the source is not a JSON object")
	}
	ix := s.ix(name)
	if id == "" {
		ix.autoN++
		id = fmt.Sprintf("auto-%d", ix.autoN)
	}
	d := ix.docs[id]
	if d != nil && create {
		return errorBody(409, "version_conflict_engine_exception", "["+id+"]: version conflict, document already exists")
	}
	result, status := "created", 201
	if d == nil {
		d = &doc{}
		ix.docs[id] = d
		ix.order = append(ix.order, id)
	} else {
		result, status = "updated", 200
	}
	d.source = bytes.Clone(body)
	d.version++
	d.seqNo = ix.seq
	ix.seq++
	return status, s.writeResult(name, id, d, result)
}

func (s *Server) writeResult(name, id string, d *doc, result string) obj {
	return obj{"_index": name, "_id": id, "_version": d.version, "result": result, "_shards": shards, "_seq_no": d.seqNo, "_primary_term": 1}
}

func (s *Server) get(name, id string) (int, any) {
	if ix := s.indices[name]; ix != nil {
		if d := ix.docs[id]; d != nil {
			return 200, obj{"_index": name, "_id": id, "_version": d.version, "_seq_no": d.seqNo, "_primary_term": 1, "found": true, "_source": d.source}
		}
	}
	return 404, obj{"_index": name, "_id": id, "found": false}
}

func (s *Server) delete(name, id string) (int, any) {
	ix := s.indices[name]
	if ix == nil || ix.docs[id] == nil {
		return 404, obj{"_index": name, "_id": id, "result": "not_found", "_shards": shards}
	}
	d := ix.docs[id]
	delete(ix.docs, id)
	d.version++
	return 200, s.writeResult(name, id, d, "deleted")
}

func (s *Server) update(name, id string, body []byte) (int, any) {
	var u struct {
		Doc         map[string]any `json:"doc"`
		Upsert      map[string]any `json:"upsert"`
		DocAsUpsert bool           `json:"doc_as_upsert"`
	}
	if err := json.Unmarshal(body, &u); err != nil {
		return errorBody(400, "x_content_parse_exception", "esfake: bad update body")
	}
	ix := s.ix(name)
	d := ix.docs[id]
	if d == nil {
		src := u.Upsert
		if u.DocAsUpsert {
			src = u.Doc
		}
		if src == nil {
			return errorBody(404, "document_missing_exception", "["+id+"]: document missing")
		}
		b, _ := json.Marshal(src)
		return s.index(name, id, b, false)
	}
	var cur map[string]any
	_ = json.Unmarshal(d.source, &cur)
	merge(cur, u.Doc)
	b, _ := json.Marshal(cur)
	d.source = b
	d.version++
	d.seqNo = ix.seq
	ix.seq++
	return 200, s.writeResult(name, id, d, "updated")
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func lines(body []byte) []string {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var out []string
	for sc.Scan() {
		out = append(out, strings.TrimSuffix(sc.Text(), "\r"))
	}
	return out
}

func (s *Server) bulk(def string, body []byte) (int, any) {
	ls := lines(body)
	var items []any
	errs := false
	for i := 0; i < len(ls); i++ {
		if strings.TrimSpace(ls[i]) == "" {
			continue
		}
		var action map[string]map[string]any
		if err := json.Unmarshal([]byte(ls[i]), &action); err != nil || len(action) != 1 {
			return errorBody(400, "illegal_argument_exception", fmt.Sprintf("Malformed action/metadata line [%d]", i+1))
		}
		for kind, meta := range action {
			name, _ := meta["_index"].(string)
			if name == "" {
				name = def
			}
			id, _ := meta["_id"].(string)
			var status int
			var resp any
			if seq, ok := meta["if_seq_no"].(float64); ok {
				var cur *doc
				if ix := s.indices[name]; ix != nil {
					cur = ix.docs[id]
				}
				if cur == nil || float64(cur.seqNo) != seq {
					if kind != "delete" {
						i++
					}
					items = append(items, obj{kind: obj{"_index": name, "_id": id, "status": 409,
						"error": obj{"type": "version_conflict_engine_exception", "reason": "version conflict"}}})
					errs = true
					continue
				}
			}
			switch kind {
			case "delete":
				status, resp = s.delete(name, id)
			case "index", "create", "update":
				i++
				if i >= len(ls) {
					return errorBody(400, "illegal_argument_exception", "esfake: action without its source")
				}
				src := []byte(ls[i])
				switch kind {
				case "update":
					status, resp = s.update(name, id, src)
				default:
					status, resp = s.index(name, id, src, kind == "create")
				}
			default:
				return errorBody(400, "illegal_argument_exception", "esfake: unknown action")
			}
			item := obj{"status": status}
			if m, ok := resp.(obj); ok {
				for k, v := range m {
					item[k] = v
				}
			}
			if status >= 300 {
				errs = true
			}
			items = append(items, obj{kind: item})
		}
	}
	return 200, obj{"took": 1, "errors": errs, "items": items}
}

func (s *Server) mget(def string, body []byte) (int, any) {
	var req struct {
		Docs []struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		} `json:"docs"`
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errorBody(400, "x_content_parse_exception", "esfake: bad mget body")
	}
	var docs []any
	for _, d := range req.Docs {
		name := d.Index
		if name == "" {
			name = def
		}
		_, r := s.get(name, d.ID)
		docs = append(docs, r)
	}
	for _, id := range req.IDs {
		_, r := s.get(def, id)
		docs = append(docs, r)
	}
	return 200, obj{"docs": docs}
}

func (s *Server) msearch(def string, body []byte) (int, any) {
	ls := lines(body)
	var responses []any
	for i := 0; i+1 < len(ls); i += 2 {
		name := def
		if strings.TrimSpace(ls[i]) != "" {
			var h map[string]any
			if err := json.Unmarshal([]byte(ls[i]), &h); err != nil {
				return errorBody(400, "illegal_argument_exception", "esfake: bad msearch header")
			}
			if n, ok := h["index"].(string); ok {
				name = n
			}
		}
		status, resp := s.search(name, "_search", []byte(ls[i+1]))
		if m, ok := resp.(obj); ok {
			m["status"] = status
		}
		responses = append(responses, resp)
	}
	return 200, obj{"took": 1, "responses": responses}
}

func (s *Server) search(name, ep string, body []byte) (int, any) {
	var req struct {
		Query map[string]any `json:"query"`
		Size  *int           `json:"size"`
		From  int            `json:"from"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return errorBody(400, "parsing_exception", "esfake: bad search body")
		}
	}
	var names []string
	if name == "" || name == "_all" || name == "*" {
		for n := range s.indices {
			names = append(names, n)
		}
		sort.Strings(names)
	} else {
		names = strings.Split(name, ",")
	}
	var hits []any
	for _, n := range names {
		ix := s.indices[n]
		if ix == nil {
			if len(names) == 1 {
				return errorBody(404, "index_not_found_exception", "no such index ["+n+"]")
			}
			continue
		}
		for _, id := range ix.order {
			d := ix.docs[id]
			if d == nil {
				continue
			}
			var src map[string]any
			_ = json.Unmarshal(d.source, &src)
			ok, err := matches(req.Query, id, src)
			if err != nil {
				return errorBody(400, "parsing_exception", "esfake: "+err.Error())
			}
			if ok {
				hits = append(hits, obj{"_index": n, "_id": id, "_score": 1.0, "_source": d.source})
			}
		}
	}
	if ep == "_count" {
		return 200, obj{"count": len(hits), "_shards": shards}
	}
	total := len(hits)
	if req.From > 0 {
		if req.From >= len(hits) {
			hits = nil
		} else {
			hits = hits[req.From:]
		}
	}
	size := 10
	if req.Size != nil {
		size = *req.Size
	}
	if len(hits) > size {
		hits = hits[:size]
	}
	if hits == nil {
		hits = []any{}
	}
	var max any = 1.0
	if total == 0 {
		max = nil
	}
	return 200, obj{"took": 1, "timed_out": false, "_shards": shards,
		"hits": obj{"total": obj{"value": total, "relation": "eq"}, "max_score": max, "hits": hits}}
}

// matches evaluates the supported query subset.
func matches(q map[string]any, id string, src map[string]any) (bool, error) {
	if len(q) == 0 {
		return true, nil
	}
	if len(q) != 1 {
		return false, fmt.Errorf("a query has one type")
	}
	for typ, body := range q {
		b, _ := body.(map[string]any)
		switch typ {
		case "match_all":
			return true, nil
		case "match_none":
			return false, nil
		case "ids":
			vals, _ := b["values"].([]any)
			for _, v := range vals {
				if v == id {
					return true, nil
				}
			}
			return false, nil
		case "exists":
			f, _ := b["field"].(string)
			return len(values(src, f)) > 0, nil
		case "term", "match", "match_phrase":
			for field, v := range b {
				if m, ok := v.(map[string]any); ok {
					if typ == "term" {
						v = m["value"]
					} else {
						v = m["query"]
					}
				}
				return anyEqual(values(src, field), v), nil
			}
			return false, fmt.Errorf("%s names no field", typ)
		case "terms":
			for field, v := range b {
				if field == "boost" || field == "_name" {
					continue
				}
				list, _ := v.([]any)
				got := values(src, field)
				for _, want := range list {
					if anyEqual(got, want) {
						return true, nil
					}
				}
				return false, nil
			}
			return false, fmt.Errorf("terms names no field")
		case "bool":
			return boolMatch(b, id, src)
		}
		return false, fmt.Errorf("unsupported query %s", typ)
	}
	return false, nil
}

func clauses(v any) []map[string]any {
	switch x := v.(type) {
	case map[string]any:
		return []map[string]any{x}
	case []any:
		var out []map[string]any
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

func boolMatch(b map[string]any, id string, src map[string]any) (bool, error) {
	for _, k := range []string{"must", "filter"} {
		for _, c := range clauses(b[k]) {
			ok, err := matches(c, id, src)
			if err != nil || !ok {
				return false, err
			}
		}
	}
	for _, c := range clauses(b["must_not"]) {
		ok, err := matches(c, id, src)
		if err != nil || ok {
			return false, err
		}
	}
	should := clauses(b["should"])
	if len(should) == 0 {
		return true, nil
	}
	for _, c := range should {
		ok, err := matches(c, id, src)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	// Without must or filter, one should clause must match.
	return b["must"] != nil || b["filter"] != nil, nil
}

// values collects the values at a dotted field path, reading nested
// objects, dotted member names and arrays as Elasticsearch does.
func values(src any, field string) []any {
	field = strings.TrimSuffix(field, ".keyword")
	var out []any
	var walk func(v any, path []string)
	walk = func(v any, path []string) {
		if a, ok := v.([]any); ok {
			for _, e := range a {
				walk(e, path)
			}
			return
		}
		if len(path) == 0 {
			out = append(out, v)
			return
		}
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for i := 1; i <= len(path); i++ {
			if sub, ok := m[strings.Join(path[:i], ".")]; ok {
				walk(sub, path[i:])
			}
		}
	}
	walk(src, strings.Split(field, "."))
	return out
}

func anyEqual(got []any, want any) bool {
	for _, g := range got {
		if reflect.DeepEqual(g, want) {
			return true
		}
		if gs, ok := g.(string); ok && fmt.Sprint(want) == gs {
			return true
		}
	}
	return false
}

// pitSearch serves a search in a point in time, sorted by _shard_doc
// (the position in the snapshot), with search_after.
func (s *Server) pitSearch(body []byte) (int, any) {
	var req struct {
		Size *int `json:"size"`
		PIT  struct {
			ID string `json:"id"`
		} `json:"pit"`
		SearchAfter []float64 `json:"search_after"`
		SeqNo       bool      `json:"seq_no_primary_term"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errorBody(400, "parsing_exception", "esfake: bad search body")
	}
	p := s.pits[req.PIT.ID]
	if p == nil {
		return errorBody(404, "search_context_missing_exception", "No search context found")
	}
	after := -1
	if len(req.SearchAfter) > 0 {
		after = int(req.SearchAfter[0])
	}
	size := 10
	if req.Size != nil {
		size = *req.Size
	}
	hits := []any{}
	ix := s.indices[p.index]
	for pos := after + 1; pos < len(p.ids) && len(hits) < size; pos++ {
		d := ix.docs[p.ids[pos]]
		if d == nil {
			continue
		}
		h := obj{"_index": p.index, "_id": p.ids[pos], "_score": nil, "_source": d.source, "sort": []any{pos}}
		if req.SeqNo {
			h["_seq_no"], h["_primary_term"] = d.seqNo, 1
		}
		hits = append(hits, h)
	}
	return 200, obj{"pit_id": req.PIT.ID, "took": 1, "timed_out": false, "_shards": shards,
		"hits": obj{"total": obj{"value": len(hits), "relation": "eq"}, "max_score": nil, "hits": hits}}
}

// glob matches '*' patterns, comma lists included.
func glob(pattern, name string) bool {
	for _, p := range strings.Split(pattern, ",") {
		if ok, _ := path.Match(strings.ReplaceAll(p, "?", "\\?"), name); ok {
			return true
		}
	}
	return false
}
