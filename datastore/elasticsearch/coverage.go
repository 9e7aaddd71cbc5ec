package elasticsearch

import "github.com/sidecrypt/sidecrypt/datastore"

// Coverage implements datastore.Describer: what the profile does with each
// endpoint family of the Elasticsearch/OpenSearch API for a protected
// collection. Server-wide rows come last; their treatment depends on the
// file's allow: list, which they name.
func (p *Profile) Coverage(c *datastore.Collection) []datastore.Coverage {
	pass := func(ep, req, why string) datastore.Coverage {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "passes: no protected value travels", Why: why}
	}
	refused := func(ep, req, why string) datastore.Coverage {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "refused", Refused: true, Why: why}
	}
	op := func(name, ep, req, why string) datastore.Coverage {
		if p.schema.Allows(name) {
			return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "passes: allowed by the rule file (allow: " + name + ")", Why: why}
		}
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "refused unless allow: lists " + name, Refused: true, Why: why}
	}
	return []datastore.Coverage{
		pass(EpIndex, "GET|HEAD|DELETE /{index}", "index information and deletion carry no document"),
		{Endpoint: EpIndex, Request: "PUT /{index}", Treatment: "settings and aliases checked",
			Why: "mappings pass; aliases need allow: aliases; settings default_pipeline/final_pipeline need allow: pipelines (on every index)"},
		{Endpoint: EpDoc, Request: "PUT|POST /{index}/_doc/{id}, POST /{index}/_doc, PUT|POST /{index}/_create/{id} (and ES 7 typed /{index}/{type}/{id}[/_create])", Treatment: "document encrypted",
			Why: "fields are sealed where Elasticsearch reads them: dotted member names are paths ({\"card.number\": x} is card.number), arrays are transparent; the source must be one JSON object"},
		pass(EpDoc, "GET|HEAD|DELETE /{index}/_doc/{id}, GET /{index}/_source/{id}", "ids, routing and source filters; the response is decrypted"),
		{Endpoint: EpUpdate, Request: "POST /{index}/_update/{id}", Treatment: "doc and upsert encrypted",
			Why: "doc and upsert are sealed as documents; a script is refused unless allow: scripts (it writes any field and takes plaintext params); unknown members refused"},
		{Endpoint: EpBulk, Request: "POST|PUT /_bulk, /{index}/_bulk (application/x-ndjson)", Treatment: "source lines encrypted",
			Why: "read line by line as Elasticsearch does; each action's _index (or the path's) decides; index/create sources sealed, update doc/upsert sealed, update scripts and pipeline parameters refused unless allowed; a malformed action line, a source line that is not one JSON object, a missing source line or final newline refuses the whole request, and nothing is forwarded"},
		pass(EpMget, "GET|POST /_mget, /{index}/_mget", "ids, routing and source filters; the documents in the response are decrypted"),
		{Endpoint: EpSearch, Request: "GET|POST /{index}/_search, _count, _explain/{id}, _validate/query, _field_caps, _async_search, _terms_enum, _knn_search (and /_search, /_all/...)", Treatment: "compared values sealed",
			Why: "term, terms, match and match_phrase values on a searchable field are sealed (match and match_phrase become term queries) at any depth of bool, constant_score, dis_max, boosting, function_score, nested, has_child, has_parent; ids and exists pass; range, prefix, wildcard, regexp, fuzzy, span, geo and vector queries, query_string and the other full-text queries over encrypted fields, and sort, aggregations, highlight, collapse or suggest on an encrypted field are refused (400 unsupported_query, naming field and clause); scripts, runtime mappings, the q and source parameters are refused"},
		{Endpoint: EpMsearch, Request: "GET|POST /_msearch, /{index}/_msearch (application/x-ndjson)", Treatment: "compared values sealed",
			Why: "each header's index (or the path's) decides; each search body is transformed like _search's"},
		refused(EpTemplate, "/{index}/_search/template, _msearch/template", "a template renders plaintext params into a query the sidecar never sees"),
		pass(EpScroll, "/_search/scroll, /_pit, /{index}/_pit, point_in_time", "scroll and point-in-time ids"),
		pass(EpAdmin, "/{index}/_refresh, _flush, _forcemerge, _cache/clear, _stats, _segments, _recovery, _open, _close, _block, _mapping (GET, PUT), ...", "index maintenance, field names and types; no document"),
		{Endpoint: EpSettings, Request: "PUT /{index}/_settings, /_settings", Treatment: "settings checked", Why: "default_pipeline and final_pipeline need allow: pipelines"},
		op(OpAliases, EpAlias, "PUT|POST /{index}/_alias/{name}, POST /_aliases, aliases in PUT /{index}", "an alias the rule file does not name is a second name for a protected index, under which writes pass unencrypted; when allowed, alias filters are sealed like queries"),
		{Endpoint: EpCopy, Request: "/{index}/_clone|_split|_shrink/{target}, /{alias}/_rollover", Treatment: "into a protected index: same collection only, unless allow: reindex",
			Why: "the target gets the source's documents as stored"},
		{Endpoint: EpAnalyze, Request: "/{index}/_analyze", Treatment: "passes unless it names an encrypted field", Why: "text analysed as an encrypted field is that field's plaintext, and is refused"},
		{Endpoint: EpTermVectors, Request: "/{index}/_termvectors, _mtermvectors", Treatment: "ids pass; artificial documents refused", Why: "a doc in the request is a document in plaintext"},
		refused(EpQueryText, "/{index}/_eql, _graph, _rank_eval", "queries and rated documents the sidecar does not read, with compared values in plaintext"),
		op(OpUpdateByQuery, EpByQuery, "POST /{index}/_update_by_query", "rewrites every matching document inside the datastore; when allowed, the query is sealed and a script still needs allow: scripts"),
		op(OpDeleteByQuery, EpByQuery, "POST /{index}/_delete_by_query", "deletes every matching document; when allowed, the query is sealed"),
		op(OpReindex, EpReindex, "POST /_reindex (source or dest protected)", "copies documents as stored: plaintext into a protected index from an unprotected one or a remote cluster; when allowed, the source query is sealed, scripts and pipelines need their own allow"),
		op(OpPipelines, EpPipeline, "?pipeline= on any write, pipeline in _bulk action lines, writes under /_ingest, _simulate", "a pipeline can create fields in plaintext (json, kv, grok, enrich) or send a document to a protected index (set _index, reroute)"),
		op(OpScripts, EpScript, "update scripts on protected indices, writes to /_scripts, painless _execute", "scripts write any field and take plaintext params"),
		op(OpTemplates, EpTemplates, "writes to /_index_template, /_template, /_component_template", "templates attach aliases, default pipelines and mappings to protected indices"),
		op(OpSnapshots, EpSnapshot, "POST /_snapshot/{repo}/{snapshot}/_restore|_mount, writes to /_dangling", "restores documents as they were stored elsewhere"),
		op(OpJobs, EpJobs, "writes to /_transform, /_rollup, /_ccr, /{index}/_ccr/follow, /_watcher, /_enrich, /_ml, OpenSearch _plugins/_replication|_transform|_rollup|_alerting", "background jobs copy or write documents between indices and clusters"),
		op(OpSQL, EpSQL, "/_sql, /_query, OpenSearch _plugins/_sql|_ppl", "query text the sidecar cannot read, naming any index, with plaintext compared values"),
		pass(EpServer, "GET /, /_cluster, /_nodes, /_cat, /_tasks, /_security, /_license, /_ilm, /_slm, /_snapshot (except restore), /_data_stream, /_resolve, /_analyze, GET of templates, pipelines and scripts", "administration and information; no document"),
		pass(EpOptions, "OPTIONS without a body", "a CORS preflight carries nothing"),
		refused(EpUnknown, "any other /{index}/_{name} on a protected index, any other /_{name}", "deny by default: the profile refuses what it does not know to be safe"),
		refused(EpPath, "paths with //, . or .. segments, bad escapes, an escaped endpoint (%5Fsearch), an id starting with _ after _doc", "read differently by Elasticsearch, its versions and proxies in between"),
	}
}
