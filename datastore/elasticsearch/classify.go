package elasticsearch

import (
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// Endpoint names (Operation.Endpoint), stable for logs, metrics and audit.
const (
	EpPath        = "elasticsearch.path"            // a path the profile cannot read unambiguously
	EpServer      = "elasticsearch.server"          // server-wide endpoints that carry no document
	EpUnknown     = "elasticsearch.unknown"         // an endpoint the profile does not know
	EpOptions     = "elasticsearch.options"         // OPTIONS without a body (CORS preflight)
	EpIndex       = "elasticsearch.index"           // /{index}: create, read, delete
	EpDoc         = "elasticsearch.doc"             // /{index}/_doc/{id}, _create, _source
	EpUpdate      = "elasticsearch.update"          // /{index}/_update/{id}
	EpBulk        = "elasticsearch.bulk"            // _bulk
	EpMget        = "elasticsearch.mget"            // _mget
	EpSearch      = "elasticsearch.search"          // _search, _count, _explain, _validate, _field_caps, ...
	EpMsearch     = "elasticsearch.msearch"         // _msearch
	EpTemplate    = "elasticsearch.search_template" // _search/template, _msearch/template, _render/template
	EpScroll      = "elasticsearch.scroll"          // _search/scroll, _pit, point in time
	EpAdmin       = "elasticsearch.admin"           // _refresh, _stats, _mapping, ... (no document)
	EpSettings    = "elasticsearch.settings"        // /{index}/_settings, /_settings
	EpAlias       = "elasticsearch.alias"           // _alias, _aliases
	EpCopy        = "elasticsearch.copy"            // _clone, _split, _shrink, _rollover
	EpAnalyze     = "elasticsearch.analyze"         // _analyze
	EpTermVectors = "elasticsearch.termvectors"     // _termvectors, _mtermvectors
	EpQueryText   = "elasticsearch.query_text"      // _eql, _graph, _rank_eval: queries the sidecar cannot read
	EpReindex     = "elasticsearch.reindex"         // _reindex
	EpByQuery     = "elasticsearch.by_query"        // _update_by_query, _delete_by_query
	EpPipeline    = "elasticsearch.pipeline"        // ?pipeline=, /_ingest
	EpScript      = "elasticsearch.script"          // /_scripts
	EpTemplates   = "elasticsearch.templates"       // /_index_template, /_template, /_component_template
	EpSnapshot    = "elasticsearch.snapshot"        // /_snapshot/.../_restore, _mount, /_dangling
	EpJobs        = "elasticsearch.jobs"            // transforms, rollups, CCR, watcher, enrich, ML
	EpSQL         = "elasticsearch.sql"             // /_sql, /_query
)

// Classify implements datastore.Profile. It reads the method, the escaped
// path, the raw query and the headers, never the body, and never returns
// nil.
func (p *Profile) Classify(r *datastore.Request) *datastore.Operation {
	q := &req{p: p, r: r}
	op := p.classify(q)
	if op == nil {
		op = &datastore.Operation{Endpoint: EpUnknown, Refusal: datastore.Refuse("elasticsearch: the request was not classified")}
	}
	if op.Refusal == nil && op.Body != datastore.BodyPass && sourceParam(r.RawQuery) {
		// Elasticsearch reads a request body from the source parameter
		// when the request has none: a second body the profile would
		// not see, wherever it reads the first (a _msearch or _bulk on
		// an unprotected index may name protected ones).
		return &datastore.Operation{Collection: op.Collection, Endpoint: op.Endpoint, Refusal: datastore.Refuse(
			"elasticsearch: the source query parameter carries a request body in the URL, where the sidecar does not read it; send the body as the request body")}
	}
	p.respond(r, op, q.t)
	return op
}

func sourceParam(raw string) bool {
	params, _ := parseQuery(raw)
	_, a := lookup(params, "source")
	_, b := lookup(params, "source_content_type")
	return a || b
}

// req carries one request through the handlers.
type req struct {
	p      *Profile
	r      *datastore.Request
	params []param
	m      string // the method, HEAD read as GET
	// indexRaw is the index segment as sent (for reading stored
	// documents back).
	indexRaw string
	// t is what the request's index expression reaches (nil for
	// server-wide endpoints).
	t *target
}

func (p *Profile) classify(q *req) *datastore.Operation {
	r := q.r
	segs, ref := splitPath(r.Path)
	if ref != nil {
		return &datastore.Operation{Endpoint: EpPath, Refusal: ref}
	}
	params, ref := parseQuery(r.RawQuery)
	if ref != nil {
		return &datastore.Operation{Endpoint: EpPath, Refusal: ref}
	}
	q.params, q.m = params, r.Method
	if q.m == "HEAD" {
		q.m = "GET"
	}
	if r.Method == "OPTIONS" && !r.HasBody {
		return &datastore.Operation{Endpoint: EpOptions, Body: datastore.BodyPass}
	}
	if _, ok := lookup(params, "pipeline"); ok && !p.schema.Allows(OpPipelines) {
		return q.refuseServer(EpPipeline, `the pipeline parameter runs an ingest pipeline on the documents inside the datastore, which can create fields from others in plaintext or send a document to another index (set _index, reroute), a protected one included; refused unless the rule file's allow: lists "pipelines"`)
	}
	if len(segs) == 0 {
		if q.m == "GET" && !r.HasBody {
			return passServer(EpServer)
		}
		return q.refuseServer(EpServer, "%s / is not an operation the Elasticsearch profile knows", methodName(r.Method))
	}
	first := segs[0]
	if strings.HasPrefix(first.name, "_") {
		if first.escaped() {
			return q.bad(EpPath, nil, "a server endpoint name is spelled with percent-escapes, which Elasticsearch's router does not unescape")
		}
		return q.server(segs)
	}
	t := p.resolve(first.name, first.raw)
	q.indexRaw = first.raw
	return q.index(t, segs[1:], false)
}

// ---- operation builders ----

func passServer(ep string) *datastore.Operation {
	return &datastore.Operation{Endpoint: ep, Body: datastore.BodyPass}
}

func (q *req) refuseServer(ep, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Endpoint: ep, Refusal: datastore.Refuse("elasticsearch: "+format, args...)}
}

func (q *req) refuse(ep string, t *target, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Refusal: datastore.Refuse("elasticsearch: "+format, args...)}
}

func (q *req) bad(ep string, t *target, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Refusal: datastore.BadRequest("elasticsearch: "+format, args...)}
}

// pass lets a request through: untouched when it reaches no protected
// collection, with the body rule otherwise.
func (q *req) pass(ep string, t *target, body datastore.BodyRule) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: ep, Body: datastore.BodyPass}
	}
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Body: body}
}

// unknown refuses a method on an endpoint the profile does not list as
// safe on a protected index.
func (q *req) unknown(ep string, t *target, endpoint string) *datastore.Operation {
	if !t.protected() {
		return &datastore.Operation{Endpoint: ep, Body: datastore.BodyPass}
	}
	return q.refuse(ep, t, "%s %s is not an operation the Elasticsearch profile knows to be safe on a protected index", methodName(q.r.Method), endpoint)
}

// allowed passes an operation the file allows and refuses it otherwise.
func (q *req) allowed(op, ep string, t *target, what, why string) *datastore.Operation {
	if q.p.schema.Allows(op) {
		return &datastore.Operation{Collection: t.first(), Endpoint: ep, Body: datastore.BodyPass}
	}
	return &datastore.Operation{Collection: t.first(), Endpoint: ep, Refusal: datastore.Refuse(
		"elasticsearch: %s %s; refused unless the rule file's allow: lists %q", what, why, op)}
}

// methodOK checks the method on a protected index: Elasticsearch uses
// GET, HEAD, POST, PUT and DELETE (names are case-sensitive).
func (q *req) methodOK(t *target) *datastore.Operation {
	switch q.r.Method {
	case "GET", "HEAD", "POST", "PUT", "DELETE":
		return nil
	case "OPTIONS":
		return q.refuse(EpOptions, t, "OPTIONS with a body on a protected index: Elasticsearch ignores the body, but it would reach the datastore unread")
	}
	return q.refuse(EpUnknown, t, "method %s is not one the Elasticsearch API uses (methods are case-sensitive); refused on a protected index", methodName(q.r.Method))
}

// checkParams refuses query parameters that carry a query or a document
// on a protected index: source (Elasticsearch reads the request body from
// it when there is none) and q (a Lucene query string, which can name any
// field and compare it with plaintext).
func (q *req) checkParams(ep string, t *target) *datastore.Operation {
	if !t.protected() {
		return nil
	}
	for _, prm := range q.params {
		switch prm.name {
		case "source", "source_content_type":
			return q.refuse(ep, t, "the source query parameter carries a request body in the URL, where the sidecar does not read it; send the body as the request body")
		}
	}
	return nil
}

// ---- an index expression ----

// index handles /{index}/... ; t is what the index expression reaches and
// rest the segments after it. all: the request named no index (/_search).
func (q *req) index(t *target, rest []segment, all bool) *datastore.Operation {
	q.t = t
	if t.protected() {
		if op := q.methodOK(t); op != nil {
			return op
		}
		if op := q.checkParams(EpIndex, t); op != nil {
			return op
		}
	}
	if len(rest) == 0 {
		if all {
			return q.refuseServer(EpUnknown, "/_all is not an endpoint by itself")
		}
		return q.indexRoot(t)
	}
	s := rest[0]
	if strings.HasPrefix(s.name, "_") && s.escaped() {
		return q.bad(EpPath, t, "an endpoint name is spelled with percent-escapes, which Elasticsearch's router does not unescape")
	}
	if !strings.HasPrefix(s.name, "_") {
		if all {
			return q.refuseServer(EpUnknown, "/_all/{type} is not an endpoint the profile knows")
		}
		return q.typed(t, rest[1:])
	}
	sub := rest[1:]
	switch s.name {
	case "_doc":
		return q.doc(t, sub, "_doc")
	case "_create":
		if len(sub) == 1 && (q.m == "PUT" || q.m == "POST") {
			return q.write(t, sub[0], false, true)
		}
		return q.unknown(EpDoc, t, "/{index}/_create")
	case "_update":
		if len(sub) == 1 && q.m == "POST" {
			return q.update(t, sub[0])
		}
		return q.unknown(EpUpdate, t, "/{index}/_update")
	case "_source":
		if len(sub) == 1 && q.m == "GET" {
			return q.pass(EpDoc, t, datastore.BodyNone)
		}
		return q.unknown(EpDoc, t, "/{index}/_source")
	case "_bulk":
		if len(sub) == 0 && (q.m == "POST" || q.m == "PUT") {
			return q.bulk(t, all)
		}
		return q.unknown(EpBulk, t, "/{index}/_bulk")
	case "_mget":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") {
			// Ids, routing and source filters: nothing protected
			// travels. The documents in the answer are decrypted.
			return q.pass(EpMget, t, datastore.BodyJSON)
		}
		return q.unknown(EpMget, t, "/{index}/_mget")
	case "_search":
		switch {
		case len(sub) == 0 && (q.m == "GET" || q.m == "POST"):
			return q.search(EpSearch, t, "_search", searchBody)
		case len(sub) == 1 && sub[0].name == "template":
			return q.template(t)
		case len(sub) == 1 && sub[0].name == "point_in_time" && q.m == "POST" && !all:
			// OpenSearch: opens a point in time (no body).
			return q.pass(EpScroll, t, datastore.BodyNone)
		}
		return q.unknown(EpSearch, t, "/{index}/_search/...")
	case "_async_search":
		if len(sub) == 0 && q.m == "POST" {
			return q.search(EpSearch, t, "_async_search", searchBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_async_search")
	case "_count":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") {
			return q.search(EpSearch, t, "_count", countBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_count")
	case "_explain":
		if len(sub) == 1 && (q.m == "GET" || q.m == "POST") && !all {
			return q.search(EpSearch, t, "_explain", countBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_explain/{id}")
	case "_validate":
		if len(sub) == 1 && sub[0].name == "query" && (q.m == "GET" || q.m == "POST") {
			return q.search(EpSearch, t, "_validate/query", countBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_validate")
	case "_field_caps":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") {
			return q.search(EpSearch, t, "_field_caps", fieldCapsBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_field_caps")
	case "_terms_enum":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") && !all {
			return q.search(EpSearch, t, "_terms_enum", termsEnumBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_terms_enum")
	case "_knn_search":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") && !all {
			return q.search(EpSearch, t, "_knn_search", knnSearchBody)
		}
		return q.unknown(EpSearch, t, "/{index}/_knn_search")
	case "_msearch":
		switch {
		case len(sub) == 0 && (q.m == "GET" || q.m == "POST"):
			return q.msearch(t)
		case len(sub) == 1 && sub[0].name == "template":
			return q.template(t)
		}
		return q.unknown(EpMsearch, t, "/{index}/_msearch/...")
	case "_search_shards", "_refresh", "_flush", "_forcemerge", "_cache", "_stats", "_segments", "_recovery",
		"_shard_stores", "_disk_usage", "_field_usage_stats", "_open", "_close", "_block", "_freeze",
		"_unfreeze", "_upgrade", "_ilm", "_resolve", "_data_stream", "_lifecycle", "_migration":
		// Index maintenance and information: no document, no
		// compared value.
		return q.pass(EpAdmin, t, datastore.BodyNone)
	case "_mapping", "_mappings":
		switch q.m {
		case "GET":
			return q.pass(EpAdmin, t, datastore.BodyNone)
		case "PUT", "POST":
			// Field names and types, never a document's values.
			return q.pass(EpAdmin, t, datastore.BodyJSON)
		}
		return q.unknown(EpAdmin, t, "/{index}/_mapping")
	case "_settings":
		switch q.m {
		case "GET":
			return q.pass(EpSettings, t, datastore.BodyNone)
		case "PUT", "POST":
			return q.settings(t)
		}
		return q.unknown(EpSettings, t, "/{index}/_settings")
	case "_alias", "_aliases":
		return q.alias(t, sub)
	case "_clone", "_split", "_shrink":
		return q.copyIndex(t, s.name, sub)
	case "_rollover":
		return q.rollover(t, sub)
	case "_pit":
		if len(sub) == 0 && q.m == "POST" {
			return q.pass(EpScroll, t, datastore.BodyNone)
		}
		return q.unknown(EpScroll, t, "/{index}/_pit")
	case "_analyze":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") {
			return q.analyze(t)
		}
		return q.unknown(EpAnalyze, t, "/{index}/_analyze")
	case "_termvectors":
		if len(sub) <= 1 && (q.m == "GET" || q.m == "POST") {
			return q.pass(EpTermVectors, t, datastore.BodyNone)
		}
		return q.unknown(EpTermVectors, t, "/{index}/_termvectors")
	case "_mtermvectors":
		if len(sub) == 0 && (q.m == "GET" || q.m == "POST") {
			return q.mtermvectors(t)
		}
		return q.unknown(EpTermVectors, t, "/{index}/_mtermvectors")
	case "_update_by_query":
		if len(sub) == 0 && q.m == "POST" {
			return q.byQuery(t, OpUpdateByQuery, "_update_by_query")
		}
		return q.unknown(EpByQuery, t, "/{index}/_update_by_query")
	case "_delete_by_query":
		if len(sub) == 0 && q.m == "POST" {
			return q.byQuery(t, OpDeleteByQuery, "_delete_by_query")
		}
		return q.unknown(EpByQuery, t, "/{index}/_delete_by_query")
	case "_ccr":
		if len(sub) == 1 && sub[0].name == "follow" && q.m != "GET" {
			if t.protected() {
				return q.allowed(OpJobs, EpJobs, t, "/{index}/_ccr/follow", "makes the index a follower that replicates documents as they are stored in a remote cluster, plaintext included")
			}
			return q.pass(EpJobs, t, datastore.BodyPass)
		}
		return q.pass(EpJobs, t, datastore.BodyNone)
	case "_eql", "_graph", "_rank_eval":
		if t.protected() {
			return q.refuse(EpQueryText, t, "/{index}/%s carries queries or rated documents the profile does not read (EQL text, graph vertices, rank evaluation requests), with compared values in plaintext; refused on a protected index", s.name)
		}
		return q.pass(EpQueryText, t, datastore.BodyPass)
	}
	if !t.protected() {
		return &datastore.Operation{Endpoint: EpUnknown, Body: datastore.BodyPass}
	}
	return q.refuse(EpUnknown, t, "/{index}/%s is not an endpoint the Elasticsearch profile knows; unknown endpoints are refused on a protected index", safeName(s.name))
}

// indexRoot handles /{index}: create, read, delete.
func (q *req) indexRoot(t *target) *datastore.Operation {
	switch q.m {
	case "GET", "DELETE":
		return q.pass(EpIndex, t, datastore.BodyNone)
	case "PUT":
		// settings (default pipelines), aliases; mappings pass.
		return q.createIndex(EpIndex, t)
	}
	return q.unknown(EpIndex, t, "/{index}")
}

// doc handles /{index}/_doc[/{id}[/{endpoint}]] (the last form is ES 7's
// typed API with the type _doc).
func (q *req) doc(t *target, sub []segment, typ string) *datastore.Operation {
	if len(sub) == 0 {
		if q.m == "POST" {
			return q.write(t, segment{}, true, false)
		}
		return q.unknown(EpDoc, t, "/{index}/"+typ)
	}
	id := sub[0]
	if strings.HasPrefix(id.name, "_") && t.protected() {
		return q.bad(EpPath, t, "a document id starting with _ after /{index}/%s is read as an endpoint by some Elasticsearch versions (typed APIs) and as an id by others", safeName(typ))
	}
	if len(sub) == 1 {
		switch q.m {
		case "PUT", "POST":
			return q.write(t, id, false, false)
		case "GET", "DELETE":
			return q.pass(EpDoc, t, datastore.BodyNone)
		}
		return q.unknown(EpDoc, t, "/{index}/_doc/{id}")
	}
	e := sub[1]
	if e.escaped() && strings.HasPrefix(e.name, "_") {
		return q.bad(EpPath, t, "an endpoint name is spelled with percent-escapes, which Elasticsearch's router does not unescape")
	}
	if len(sub) == 2 {
		switch {
		case e.name == "_create" && (q.m == "PUT" || q.m == "POST"):
			return q.write(t, id, false, true)
		case e.name == "_update" && q.m == "POST":
			return q.update(t, id)
		case e.name == "_source" && q.m == "GET":
			return q.pass(EpDoc, t, datastore.BodyNone)
		case e.name == "_explain" && (q.m == "GET" || q.m == "POST"):
			return q.search(EpSearch, t, "_explain", countBody)
		case e.name == "_termvectors" && (q.m == "GET" || q.m == "POST"):
			return q.pass(EpTermVectors, t, datastore.BodyNone)
		}
	}
	return q.unknown(EpDoc, t, "/{index}/{type}/{id}/...")
}

// typed handles Elasticsearch 7's typed API, /{index}/{type}/...,
// which Elasticsearch 8 still serves to clients that ask for REST API
// compatibility with version 7.
func (q *req) typed(t *target, rest []segment) *datastore.Operation {
	if len(rest) == 0 {
		if q.m == "POST" {
			return q.write(t, segment{}, true, false)
		}
		return q.unknown(EpDoc, t, "/{index}/{type}")
	}
	s := rest[0]
	if strings.HasPrefix(s.name, "_") {
		if s.escaped() {
			return q.bad(EpPath, t, "an endpoint name is spelled with percent-escapes, which Elasticsearch's router does not unescape")
		}
		switch s.name {
		case "_search", "_count", "_msearch", "_mget", "_bulk", "_validate", "_update_by_query",
			"_delete_by_query", "_mapping", "_mtermvectors", "_termvectors":
			return q.index(t, rest, false)
		}
		return q.unknown(EpUnknown, t, "/{index}/{type}/_{endpoint}")
	}
	return q.doc(t, rest, "{type}")
}
