package elasticsearch

import (
	"github.com/sidecrypt/sidecrypt/datastore"
)

// passFamilies are server-wide endpoint families that carry no document
// and no compared value, whatever the method: cluster, node and task
// administration, security, licensing, lifecycle policies, information.
var passFamilies = map[string]bool{
	"_cluster": true, "_nodes": true, "_cat": true, "_tasks": true, "_license": true, "_xpack": true,
	"_security": true, "_ilm": true, "_slm": true, "_features": true, "_migration": true,
	"_health_report": true, "_remote": true, "_resolve": true, "_ssl": true, "_autoscaling": true,
	"_info": true, "_data_stream": true, "_stats": true, "_refresh": true, "_flush": true,
	"_forcemerge": true, "_cache": true, "_segments": true, "_recovery": true, "_shard_stores": true,
	"_script_context": true, "_script_language": true, "_render": true, "_analyze": true,
	"_search_shards": true, "_lifecycle": true,
}

// operationFamilies pass GET and HEAD; their writes are the server-wide
// operations named.
var operationFamilies = map[string]struct {
	op, what, why string
}{
	"_index_template":     {OpTemplates, "a write to /_index_template", "attaches aliases, default pipelines and mappings to every index created under its patterns, protected ones included"},
	"_template":           {OpTemplates, "a write to /_template", "attaches aliases, default pipelines and mappings to every index created under its patterns, protected ones included"},
	"_component_template": {OpTemplates, "a write to /_component_template", "is part of index templates, which attach aliases, default pipelines and mappings to protected indices"},
	"_ingest":             {OpPipelines, "a write under /_ingest (a pipeline definition or a simulation)", "changes what runs on documents inside the datastore (a pipeline can create protected fields in plaintext or send a document to a protected index), or sends documents in plaintext to be run through one"},
	"_scripts":            {OpScripts, "a write under /_scripts (a stored script, or painless _execute)", "stores code that any request can run by id on protected documents with plaintext params, or runs one on a document sent in plaintext"},
	"_transform":          {OpJobs, "a write to /_transform", "runs a job that writes documents built from one index into another"},
	"_data_frame":         {OpJobs, "a write to /_data_frame", "runs a job that writes documents built from one index into another"},
	"_rollup":             {OpJobs, "a write to /_rollup", "runs a job that writes documents built from one index into another"},
	"_ccr":                {OpJobs, "a write to /_ccr", "replicates documents as they are stored in a remote cluster into a follower index"},
	"_watcher":            {OpJobs, "a write to /_watcher", "runs watches whose actions index documents, with plaintext payloads, into any index"},
	"_enrich":             {OpJobs, "a write to /_enrich", "builds enrich indices whose fields ingest pipelines copy into documents"},
	"_ml":                 {OpJobs, "a write to /_ml", "runs jobs that read indices and write results, or are sent data in plaintext"},
	"_dangling":           {OpSnapshots, "a write to /_dangling", "imports an index with its documents from a node's disk"},
}

// server handles a path whose first segment starts with '_'.
func (q *req) server(segs []segment) *datastore.Operation {
	name := segs[0].name
	sub := segs[1:]
	switch name {
	case "_all":
		return q.index(q.p.all(), sub, false)
	case "_search", "_msearch", "_mget", "_bulk", "_count", "_field_caps", "_validate", "_async_search",
		"_mtermvectors", "_rank_eval", "_knn_search", "_terms_enum", "_explain":
		if name == "_search" && len(sub) >= 1 && sub[0].name == "scroll" {
			// Scroll ids only.
			return q.scroll()
		}
		if name == "_search" && len(sub) >= 1 && sub[0].name == "point_in_time" {
			return q.scroll()
		}
		if name == "_async_search" && len(sub) >= 1 {
			// Fetching or deleting a running search by id.
			if q.m == "GET" || q.m == "DELETE" {
				return passServer(EpScroll)
			}
			return q.refuseServer(EpUnknown, "%s /_async_search/{id} is not an operation the profile knows", methodName(q.r.Method))
		}
		// Every index, protected ones included.
		return q.index(q.p.all(), segs, true)
	case "_pit":
		if len(sub) == 0 && q.m == "DELETE" {
			return &datastore.Operation{Endpoint: EpScroll, Body: datastore.BodyJSON}
		}
	case "_reindex":
		if len(sub) == 0 && q.m == "POST" {
			return q.reindex()
		}
		if len(sub) == 2 && sub[1].name == "_rethrottle" && q.m == "POST" {
			return passServer(EpReindex)
		}
	case "_update_by_query", "_delete_by_query":
		if len(sub) == 2 && sub[1].name == "_rethrottle" && q.m == "POST" {
			return passServer(EpByQuery)
		}
	case "_aliases":
		if q.m == "GET" {
			return passServer(EpAlias)
		}
		if q.m == "POST" && len(sub) == 0 {
			return q.aliasesBody(q.p.all(), "POST /_aliases")
		}
	case "_alias":
		if q.m == "GET" {
			return passServer(EpAlias)
		}
	case "_mapping", "_mappings":
		switch q.m {
		case "GET":
			return passServer(EpAdmin)
		case "PUT", "POST":
			return &datastore.Operation{Endpoint: EpAdmin, Body: datastore.BodyJSON}
		}
	case "_settings":
		switch q.m {
		case "GET":
			return passServer(EpSettings)
		case "PUT", "POST":
			return q.settings(q.p.all())
		}
	case "_snapshot":
		if len(sub) == 3 && (sub[2].name == "_restore" || sub[2].name == "_mount") {
			return q.allowed(OpSnapshots, EpSnapshot, nil, "/_snapshot/{repository}/{snapshot}/"+sub[2].name, "creates or overwrites indices with the snapshot's documents as they were stored, plaintext included, protected indices too")
		}
		return passServer(EpSnapshot)
	case "_sql", "_query":
		return q.allowed(OpSQL, EpSQL, nil, "/"+name, "carries a query text the sidecar cannot read, which names any index and compares fields with plaintext values")
	case "_plugins", "_opendistro":
		return q.plugins(sub)
	}
	if f, ok := operationFamilies[name]; ok {
		if q.m == "GET" {
			return passServer(EpServer)
		}
		if (name == "_index_template" || name == "_template") && len(sub) >= 1 && (sub[0].name == "_simulate" || sub[0].name == "_simulate_index") {
			// A simulation resolves settings; it writes nothing.
			return passServer(EpTemplates)
		}
		ep := map[string]string{OpTemplates: EpTemplates, OpPipelines: EpPipeline, OpScripts: EpScript, OpJobs: EpJobs, OpSnapshots: EpSnapshot}[f.op]
		return q.allowed(f.op, ep, nil, f.what, f.why)
	}
	if passFamilies[name] {
		return passServer(EpServer)
	}
	return q.refuseServer(EpUnknown, "/%s is a server endpoint the Elasticsearch profile does not know; unknown server endpoints are refused, since they could move data into a protected index", safeName(name))
}

// scroll handles /_search/scroll and OpenSearch's point in time: scroll
// and point-in-time ids only.
func (q *req) scroll() *datastore.Operation {
	switch q.m {
	case "GET", "POST", "DELETE":
		return &datastore.Operation{Endpoint: EpScroll, Body: datastore.BodyJSON}
	}
	return q.refuseServer(EpScroll, "%s on a scroll is not an operation the profile knows", methodName(q.r.Method))
}

// plugins handles OpenSearch's (and Open Distro's) plugin APIs.
func (q *req) plugins(sub []segment) *datastore.Operation {
	if len(sub) == 0 {
		return q.refuseServer(EpUnknown, "/_plugins is not an endpoint by itself")
	}
	switch sub[0].name {
	case "_sql", "_ppl":
		return q.allowed(OpSQL, EpSQL, nil, "/_plugins/"+sub[0].name, "carries a query text the sidecar cannot read, which names any index and compares fields with plaintext values")
	case "_replication", "_transform", "_rollup", "_alerting", "_ml", "_anomaly_detection", "_flow_framework":
		if q.m == "GET" {
			return passServer(EpJobs)
		}
		return q.allowed(OpJobs, EpJobs, nil, "a write to /_plugins/"+sub[0].name, "runs a job that copies or writes documents between indices, or replicates them from another cluster")
	case "_security", "_ism", "_knn", "_query", "_notifications", "_performanceanalyzer":
		return passServer(EpServer)
	}
	return q.refuseServer(EpUnknown, "/_plugins/%s is a plugin endpoint the Elasticsearch profile does not know; unknown server endpoints are refused", safeName(sub[0].name))
}
