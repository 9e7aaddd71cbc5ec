package couchdb

import (
	"sort"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// Coverage implements datastore.Describer: what the profile does with each
// endpoint family of the CouchDB API for a protected collection c (the
// treatments that depend on c's attachments, design_docs and views say
// which way c decides). Server-wide rows come last; their treatment does
// not depend on c, only on the file's allow: list, which they name.
func (p *Profile) Coverage(c *datastore.Collection) []datastore.Coverage {
	att := c != nil && c.Attachments == datastore.PolicyAllow
	ddoc := c != nil && c.DesignDocs == datastore.PolicyAllow
	var views []string
	if c != nil {
		for name := range c.Views {
			views = append(views, name)
		}
		sort.Strings(views)
	}

	pass := func(ep, req, why string) datastore.Coverage {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "passes: no protected value travels", Why: why}
	}
	checked := func(ep, req, why string) datastore.Coverage {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "passes once its body is checked: no protected value travels", Why: why}
	}
	refused := func(ep, req, why string) datastore.Coverage {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "refused", Refused: true, Why: why}
	}
	rows := []datastore.Coverage{
		pass(EpDB, "GET|HEAD|PUT|DELETE /{db}", "database information, creation and deletion carry no document; PUT takes no body (CouchDB ignores one), and a body is refused"),
		{Endpoint: EpDoc, Request: "POST /{db}, PUT /{db}/{docid}", Treatment: "document encrypted",
			Why: "the body must be a JSON object; the collection's fields are sealed in one streaming pass; inline attachments and _design/ ids are checked in the same pass; the id query parameter (pouchdb-server) and multipart/related bodies are refused"},
		pass(EpDoc, "GET|HEAD|DELETE /{db}/{docid}", "rev, revs, open_revs, attachments...: ids and flags; the response is decrypted"),
		{Endpoint: EpDoc, Request: "COPY /{db}/{docid}", Treatment: "passes; Destination checked", Refused: false,
			Why: "the copy is made inside the datastore from the stored (encrypted) document; a Destination under _design/ follows the design_docs policy"},
		refused(EpDoc, "POST /{db}/{docid}", "a multipart form upload of attachments, which the sidecar cannot inspect"),
		{Endpoint: EpLocal, Request: "GET|PUT|DELETE|COPY /{db}/_local/{id}", Treatment: "like documents: PUT encrypted",
			Why: "_local documents hold data like any other; they have no attachments (/{db}/_local/{id}/... refused)"},
		pass(EpDesign, "GET|HEAD /{db}/_design/{ddoc}, GET /{db}/_design/{ddoc}/_info", "reading a design document or its index information"),
		policyRow(ddoc, EpDesign, "PUT|DELETE|COPY /{db}/_design/{ddoc} (also _design%2F{ddoc}, a body _id _design/...)",
			"design documents allowed: PUT encrypted like a document",
			"design documents carry code that runs inside the datastore (views, filters, validate_doc_update, update handlers); design_docs: refuse"),
		refused(EpDesignFunction, "/{db}/_design/{ddoc}/_show|_list|_update|_rewrite|_search|_search_info|_nouveau|_geo|... (any method)",
			"design document code runs inside the datastore with the request's body, query string and path in plaintext; unknown endpoints under a design document are refused too"),
		pass(EpAttachment, "GET|HEAD|DELETE /{db}/{docid}/{attachment}", "reading or removing an attachment"),
		policyRow(att, EpAttachment, "PUT /{db}/{docid}/{attachment}; inline _attachments.*.data and follows",
			"attachments allowed: forwarded opaque and unprotected (a visible decision in the rule file)",
			"the sidecar cannot see into an attachment; attachments: refuse"),
		policyRow(att && ddoc, EpAttachment, "PUT /{db}/_design/{ddoc}/{attachment}",
			"design documents and attachments allowed: forwarded opaque",
			"writes a design document's attachment: needs both design_docs and attachments allowed"),
		{Endpoint: EpBulkDocs, Request: "POST /{db}/_bulk_docs (new_edits=false too)", Treatment: "documents encrypted",
			Why: "the body must be {docs: [objects], new_edits, all_or_nothing} (checked in one pass before sealing); every element of docs is sealed like a single document, with the same checks; a body of another shape (a document at the top, an extra member, a bare array) is refused"},
		checked(EpAllDocs, "GET|POST /{db}/_all_docs|_design_docs|_local_docs[/queries]", "keys are document ids, which are never protected; a POST body holds the typed view options only; rows and included documents are decrypted in the response"),
		checked(EpBulkGet, "POST /{db}/_bulk_get", "the body is {docs: [{id, rev, atts_since}]}: ids and revisions; the documents in the response are decrypted"),
		checked(EpRevs, "POST /{db}/_revs_diff|_missing_revs", "the body maps document ids to arrays of revisions, nothing else"),
		checked(EpPurge, "POST /{db}/_purge, GET /{db}/_purged_infos", "the body maps document ids to arrays of revisions, nothing else"),
		{Endpoint: EpFind, Request: "POST /{db}/_find, POST /{db}/_explain (and under _partition/{p})", Treatment: "compared values sealed",
			Why: "the selector is read as CouchDB normalises it ($and, $or, $nor, $not, $elemMatch, $allMatch at any depth, nested and dotted paths): $eq, $ne, $in and $nin values on a searchable field are sealed deterministically; $exists (a boolean) passes; any other operator on an encrypted field, any comparison on a random field or inside an encrypted value, a whole-object comparison that contains one, $text, a sort on an encrypted field and a fields projection inside one are refused (400 unsupported_query); operator arguments and the other members (limit, sort directions, use_index...) must have their documented types"},
		{Endpoint: EpIndex, Request: "GET|POST /{db}/_index, DELETE /{db}/_index/{ddoc}/{type}/{name}, POST /{db}/_index/_bulk_delete", Treatment: "partial_filter_selector sealed",
			Why: "index names and field names are never encrypted (but typed); partial_filter_selector goes through the selector transform; index types other than json are refused; _bulk_delete's body is {docids, w}"},
		{Endpoint: EpChanges, Request: "GET|POST /{db}/_changes (every feed)", Treatment: "passes; _selector filter sealed",
			Why: "filters _doc_ids, _view and _design pass; _selector's selector is transformed like _find's; a custom ddoc/name filter runs code that gets the query string in plaintext and is refused; so is a selector query parameter; a filter no server answers (_view without view, _doc_ids without doc_ids, _selector without a body selector), which also stops pouchdb-server 4.2, is refused"},
		viewRow(views),
		checked(EpAdmin, "/{db}/_security, _revs_limit, _purged_infos_limit, _auto_purge (GET|PUT); _compact[/{ddoc}], _view_cleanup, _ensure_full_commit, _sync_shards, _search_cleanup, _nouveau_cleanup (POST); _shards[/{docid}] (GET); _time_seq (GET|DELETE)",
			"database settings and maintenance carry no document: _security holds admins and members with names and roles only (pouchdb-server stores anything else as sent), the limits a positive integer, _auto_purge its ttl; maintenance commands take no body or {}"),
		pass(EpPartition, "GET /{db}/_partition/{p}; _partition/{p}/_all_docs|_find|_explain|_index|_design/{ddoc}/_view/{view}", "treated as the database's own endpoints"),
		refused(EpTempView, "/{db}/_temp_view", "runs a map function sent in the request inside the datastore"),
		refused(EpUnknown, "any other /{db}/_{name}, or a _ endpoint spelled with percent-escapes (%5Ffind)", "deny by default: the profile refuses what it does not know to be safe"),
		pass(EpOptions, "OPTIONS without a body, on any path", "a CORS preflight carries nothing and changes nothing"),
		refused(EpDoc, "PATCH, unknown or lower-case methods, OPTIONS with a body on /{db}/...", "CouchDB has no PATCH except update handlers; methods are case-sensitive; an OPTIONS body would reach the datastore unread (OPTIONS without one, a CORS preflight, passes)"),
		refused(EpPath, "paths with . or .. segments (also %2e%2e), bad percent-escapes, // (outside unprotected databases), a trailing slash after /{db}/... (an attachment named \"\" on pouchdb-server), a database name pouchdb-server reads as a system database (/%3F_replicator); a multipart body on a protected database", "read differently by CouchDB, pouchdb-server and proxies in between"),
		refused(EpDB, "a query parameter the endpoint does not take, of another type, written with brackets, or after a raw ';', on /{db}/...", "a query string reaches the datastore and its access log as sent: each endpoint takes the parameters CouchDB 3 documents and pouchdb-server reads, typed (booleans, integers of at most 13 digits, enums, JSON keys, ids and revisions as text)"),
		pass(EpServer, "GET /, /_all_dbs, /_dbs_info, /_active_tasks, /_membership, /_up, /_uuids, /_session, /_utils, /_scheduler/..., /_log, /_stats, /_db_updates, /_node/{node}/_stats|_system|_versions|_prometheus, /_users/..., /_global_changes (GET)",
			"server information, sessions and accounts; no protected document"),
		serverRow(p, OpReplicate, EpReplicate, "POST /_replicate; writes to /_replicator", "a replication copies documents as stored: from an unprotected source it writes plaintext into a protected database"),
		serverRow(p, OpConfig, EpConfig, "PUT|DELETE|POST /_config/..., /_node/{node}/_config/... (vhosts included); GET passes", "the configuration decides which database a path reaches (vhosts, rewrites) and what runs inside the datastore"),
		serverRow(p, OpRewrite, EpRewrite, "a URL naming /{db}/_design/{ddoc}/_rewrite/ anywhere (query string too)", "pouchdb-server resolves ../ in rewrite targets, so a rewrite in any database can forward the request to a protected one; on a protected database _rewrite is refused even when allowed"),
		serverRow(p, OpRestart, EpRestart, "POST /_restart, /_node/{node}/_restart", "an administrative command the sidecar has no reason to relay by default"),
		serverRow(p, OpReshard, EpReshard, "writes under /_reshard", "an administrative command the sidecar has no reason to relay by default"),
		refused(EpUnknown, "any other /_{name} (_cluster_setup POST, _reload_query_servers, _search_analyze, ...), /_node/{node}/{anything else}", "deny by default; on pouchdb-server /_node/{node}/{path} is an alias of /{path}"),
	}
	return rows
}

func policyRow(allowed bool, ep, req, allowText, refuseWhy string) datastore.Coverage {
	if allowed {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: allowText, Why: "allowed by the collection's policy"}
	}
	return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "refused", Refused: true, Why: refuseWhy}
}

func serverRow(p *Profile, op, ep, req, why string) datastore.Coverage {
	if p.schema.Allows(op) {
		return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "passes: allowed by the rule file (allow: " + op + ")", Why: why}
	}
	return datastore.Coverage{Endpoint: ep, Request: req, Treatment: "refused unless allow: lists " + op, Refused: true, Why: why}
}

func viewRow(declared []string) datastore.Coverage {
	why := "key, keys, startkey/start_key, endkey/end_key (query string, POST body, each of queries): on a view declared under views:, each key position holding a searchable field is sealed like the field, ranges on one need the same value at both ends, a random field or a path inside an encrypted value is refused; an undeclared view passes only without compared keys; a POST body holds the typed view options only"
	if len(declared) > 0 {
		why += "; declared: " + strings.Join(declared, ", ")
	}
	return datastore.Coverage{Endpoint: EpView, Request: "GET|POST /{db}/_design/{ddoc}/_view/{view}[/queries]", Treatment: "compared keys sealed", Why: why}
}
