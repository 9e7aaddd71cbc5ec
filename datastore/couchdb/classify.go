package couchdb

import (
	"context"
	"mime"
	"net/url"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Endpoint names (Operation.Endpoint), stable for logs, metrics and audit.
const (
	EpPath           = "couchdb.path"            // a path the profile cannot read unambiguously
	EpServer         = "couchdb.server"          // server-wide endpoints that carry no document
	EpSystemDB       = "couchdb.system_db"       // _users, _replicator, _global_changes
	EpReplicate      = "couchdb.replicate"       // POST /_replicate, writes to _replicator
	EpConfig         = "couchdb.config"          // /_config, /_node/{node}/_config
	EpRewrite        = "couchdb.rewrite"         // a _rewrite handler, wherever the URL names it
	EpRestart        = "couchdb.restart"         // /_restart, /_node/{node}/_restart
	EpReshard        = "couchdb.reshard"         // /_reshard
	EpUnknown        = "couchdb.unknown"         // an endpoint the profile does not know
	EpOptions        = "couchdb.options"         // OPTIONS (CORS preflight)
	EpDB             = "couchdb.db"              // /{db}
	EpDoc            = "couchdb.doc"             // /{db}/{docid}, POST /{db}
	EpLocal          = "couchdb.local"           // /{db}/_local/{id}
	EpDesign         = "couchdb.design"          // /{db}/_design/{ddoc}
	EpDesignFunction = "couchdb.design_function" // _show, _list, _update, _rewrite, _search, ...
	EpAttachment     = "couchdb.attachment"      // /{db}/{docid}/{attachment}
	EpBulkDocs       = "couchdb.bulk_docs"       // POST /{db}/_bulk_docs
	EpAllDocs        = "couchdb.all_docs"        // _all_docs, _design_docs, _local_docs
	EpBulkGet        = "couchdb.bulk_get"        // POST /{db}/_bulk_get
	EpRevs           = "couchdb.revs"            // _revs_diff, _missing_revs
	EpPurge          = "couchdb.purge"           // _purge, _purged_infos
	EpFind           = "couchdb.find"            // POST /{db}/_find
	EpExplain        = "couchdb.explain"         // POST /{db}/_explain
	EpIndex          = "couchdb.index"           // /{db}/_index
	EpChanges        = "couchdb.changes"         // /{db}/_changes
	EpView           = "couchdb.view"            // /{db}/_design/{ddoc}/_view/{view}
	EpAdmin          = "couchdb.admin"           // _security, _revs_limit, _compact, _shards, ...
	EpPartition      = "couchdb.partition"       // GET /{db}/_partition/{p}
	EpTempView       = "couchdb.temp_view"       // /{db}/_temp_view
)

// Classify implements datastore.Profile. It reads the method, the escaped
// path, the raw query and the headers, never the body, and never returns
// nil.
func (p *Profile) Classify(r *datastore.Request) *datastore.Operation {
	op := p.classify(r)
	if op == nil {
		op = &datastore.Operation{Endpoint: EpUnknown, Refusal: datastore.Refuse("couchdb: the request was not classified")}
	}
	if op.Refusal == nil && rewriteURL(r) && !p.schema.Allows(OpRewrite) && !preflight(r) {
		// pouchdb-server hands any URL that contains
		// "/{db}/_design/{d}/_rewrite/" to that rewrite handler before
		// routing, and resolves "../" in the target: the request can land
		// in a protected database whatever its path says.
		return &datastore.Operation{Collection: op.Collection, Endpoint: EpRewrite, Refusal: datastore.Refuse(
			`couchdb: the URL names a design document's _rewrite handler, which can forward the request to any database (pouchdb-server resolves ../ in rewrite targets); refused unless the rule file's allow: lists "rewrite"`)}
	}
	if op.Refusal == nil && op.Collection != nil && op.Body >= datastore.BodyJSON && r.HasBody && multipart(r) {
		return &datastore.Operation{Collection: op.Collection, Endpoint: op.Endpoint, Refusal: datastore.Refuse(
			"couchdb: a multipart body on a protected database cannot be inspected: the document part would reach the datastore in plaintext")}
	}
	p.respond(r, op)
	return op
}

func multipart(r *datastore.Request) bool {
	for _, ct := range r.Header.Values("Content-Type") {
		if !mayBeMultipart(ct) {
			continue // the common case, without ParseMediaType's map
		}
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			mt = strings.ToLower(strings.TrimSpace(ct))
		}
		if strings.HasPrefix(mt, "multipart/") {
			return true
		}
	}
	return false
}

// mayBeMultipart is false when ct cannot be read as a multipart type by
// multipart: it is ASCII and holds no "multipart/" in any case. (A
// non-ASCII byte could lower-case to an ASCII letter: the Kelvin sign is
// "k" to strings.ToLower.)
func mayBeMultipart(ct string) bool {
	for i := 0; i < len(ct); i++ {
		if ct[i] >= 0x80 {
			return true
		}
	}
	for i := 0; i+len("multipart/") <= len(ct); i++ {
		if strings.EqualFold(ct[i:i+len("multipart/")], "multipart/") {
			return true
		}
	}
	return false
}

func (p *Profile) classify(r *datastore.Request) *datastore.Operation {
	segs, empty, ref := splitPath(r.Path)
	if ref != nil {
		return &datastore.Operation{Endpoint: EpPath, Refusal: ref}
	}
	if empty {
		// CouchDB drops empty segments ("//clinic/x" is /clinic/x),
		// express does not. Harmless on an unprotected database, which
		// every reading agrees on; ambiguous anywhere else.
		if len(segs) == 0 || strings.HasPrefix(segs[0].name, "_") || strings.HasPrefix(pouchName(segs[0].name), "_") || p.match(segs[0]) != nil {
			return &datastore.Operation{Endpoint: EpPath, Refusal: datastore.BadRequest(
				"couchdb: the request path has an empty segment (//), which CouchDB drops and other readers keep")}
		}
		return &datastore.Operation{Endpoint: dbEndpoint(segs[1:]), Body: datastore.BodyPass}
	}
	if len(segs) == 0 {
		return p.root(r)
	}
	first := segs[0]
	if strings.HasPrefix(first.name, "_") {
		if first.escaped() {
			// CouchDB unescapes "%5Freplicate" to _replicate; express
			// matches routes on the raw path and would not: two readings.
			return &datastore.Operation{Endpoint: EpPath, Refusal: datastore.BadRequest(
				"couchdb: a server endpoint name is spelled with percent-escapes, which CouchDB and pouchdb-server read differently")}
		}
		return p.server(r, segs)
	}
	c := p.match(first)
	if c == nil && strings.HasPrefix(pouchName(first.name), "_") {
		// pouchdb-server would store it in a system database:
		// "/%3F_replicator" is _replicator there.
		return &datastore.Operation{Endpoint: EpPath, Refusal: datastore.BadRequest(
			"couchdb: a database name that pouchdb-server reads as a system database (it drops characters such as ? : * | and trailing dots)")}
	}
	if c == nil {
		return &datastore.Operation{Endpoint: dbEndpoint(segs[1:]), Body: datastore.BodyPass}
	}
	return p.database(r, c, segs[1:])
}

// dbEndpoint names a request to an unprotected database, for metrics.
func dbEndpoint(rest []segment) string {
	if len(rest) == 0 {
		return EpDB
	}
	switch n := rest[0].name; {
	case n == "_design" || strings.HasPrefix(n, "_design/"):
		if len(rest) >= 3 && rest[2].name == "_view" || len(rest) >= 2 && rest[1].name == "_view" {
			return EpView
		}
		return EpDesign
	case n == "_local" || strings.HasPrefix(n, "_local/"):
		return EpLocal
	case n == "_bulk_docs":
		return EpBulkDocs
	case n == "_all_docs" || n == "_design_docs" || n == "_local_docs":
		return EpAllDocs
	case n == "_bulk_get":
		return EpBulkGet
	case n == "_find":
		return EpFind
	case n == "_explain":
		return EpExplain
	case n == "_index":
		return EpIndex
	case n == "_changes":
		return EpChanges
	case n == "_partition":
		return EpPartition
	case strings.HasPrefix(n, "_"):
		return EpAdmin
	case len(rest) > 1:
		return EpAttachment
	}
	return EpDoc
}

// ---- server-wide endpoints ----

func (p *Profile) root(r *datastore.Request) *datastore.Operation {
	if read(r) {
		return &datastore.Operation{Endpoint: EpServer, Body: datastore.BodyPass}
	}
	return &datastore.Operation{Endpoint: EpServer, Refusal: datastore.Refuse("couchdb: %s / is not a CouchDB operation the profile knows", methodName(r.Method))}
}

// read reports a request that reads: GET, HEAD, or a preflight.
func read(r *datastore.Request) bool {
	return r.Method == "GET" || r.Method == "HEAD" || preflight(r)
}

// preflight reports OPTIONS without a body (a CORS preflight), which
// passes everywhere: it carries nothing and changes nothing.
func preflight(r *datastore.Request) bool { return r.Method == "OPTIONS" && !r.HasBody }

func passServer(ep string) *datastore.Operation {
	return &datastore.Operation{Endpoint: ep, Body: datastore.BodyPass}
}

func refuseServer(ep, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Endpoint: ep, Refusal: datastore.Refuse("couchdb: "+format, args...)}
}

// allowed passes a server-wide operation the file allows, and refuses it
// otherwise with why.
func (p *Profile) allowed(op, ep, what, why string) *datastore.Operation {
	if p.schema.Allows(op) {
		return passServer(ep)
	}
	return refuseServer(ep, "%s %s; refused unless the rule file's allow: lists %q", what, why, op)
}

func (p *Profile) server(r *datastore.Request, segs []segment) *datastore.Operation {
	name := segs[0].name
	if preflight(r) {
		return passServer(EpOptions)
	}
	switch name {
	case "_users", "_replicator", "_global_changes":
		// System databases. A file that protects one by pattern gets
		// the database treatment; replication writes are refused first.
		if name == "_replicator" && !read(r) {
			return p.allowed(OpReplicate, EpReplicate, "a write to the _replicator database", "starts a replication, which copies documents as they are stored and can write plaintext into a protected database")
		}
		if c := p.match(segs[0]); c != nil {
			return p.database(r, c, segs[1:])
		}
		if name == "_users" || read(r) {
			// _users holds accounts (names, roles, password hashes
			// that CouchDB derives itself), not protected data.
			return passServer(EpSystemDB)
		}
		return refuseServer(EpSystemDB, "%s on /_global_changes is not an operation the profile knows", methodName(r.Method))
	case "_replicate":
		return p.allowed(OpReplicate, EpReplicate, "/_replicate", "copies documents as they are stored, so a replication from an unprotected database or another server writes plaintext into a protected one")
	case "_config":
		if read(r) {
			return passServer(EpConfig)
		}
		return p.allowed(OpConfig, EpConfig, "a write under /_config", "changes which database a path reaches (vhosts, rewrites) and what runs inside the datastore")
	case "_node":
		return p.node(r, segs)
	case "_restart":
		if len(segs) == 1 {
			return p.allowed(OpRestart, EpRestart, "/_restart", "restarts the datastore")
		}
	case "_reshard":
		if read(r) {
			return passServer(EpReshard)
		}
		return p.allowed(OpReshard, EpReshard, "a write under /_reshard", "moves shards of every database")
	case "_session":
		// Log in and out: names and passwords, not protected data.
		if len(segs) == 1 && (read(r) || r.Method == "POST" || r.Method == "DELETE") {
			return passServer(EpServer)
		}
	case "_dbs_info":
		if len(segs) == 1 && (read(r) || r.Method == "POST") {
			return passServer(EpServer)
		}
	case "_all_dbs", "_active_tasks", "_membership", "_up", "_uuids",
		"_log", "_stats", "_db_updates", "_utils", "_scheduler", "_cluster_setup", "_prometheus":
		// Read-only views of the server: database names, tasks, nodes,
		// counters, logs, the Fauxton UI, the replication scheduler.
		// _log, _stats and _db_updates are pouchdb-server's (and
		// CouchDB 1.x's). Deeper paths exist only for _utils (files),
		// _stats (counters), _scheduler (jobs, docs).
		if read(r) && (len(segs) == 1 || name == "_utils" || name == "_stats" || name == "_scheduler") {
			return passServer(EpServer)
		}
		return refuseServer(EpServer, "%s on /%s is not an operation the profile knows to be safe", methodName(r.Method), name)
	}
	return refuseServer(EpUnknown, "/%s is a server endpoint the CouchDB profile does not know; unknown server endpoints are refused, since they could move data into a protected database", safeName(name))
}

// node handles /_node/{node}/...: the node-local interface. CouchDB
// forwards unknown paths under it to the node-local HTTP handler, and
// pouchdb-server strips "/_node/node1@127.0.0.1" and serves the rest as
// the path: /_node/{node}/{db}/{docid} is /{db}/{docid}. Only the known
// read-only endpoints pass.
func (p *Profile) node(r *datastore.Request, segs []segment) *datastore.Operation {
	if len(segs) >= 3 && segs[2].escaped() && strings.HasPrefix(segs[2].name, "_") {
		return &datastore.Operation{Endpoint: EpPath, Refusal: datastore.BadRequest(
			"couchdb: a server endpoint name is spelled with percent-escapes, which CouchDB and pouchdb-server read differently")}
	}
	if len(segs) >= 3 {
		switch segs[2].name {
		case "_config":
			if read(r) {
				return passServer(EpConfig)
			}
			return p.allowed(OpConfig, EpConfig, "a write under /_node/{node}/_config", "changes which database a path reaches (vhosts, rewrites) and what runs inside the datastore")
		case "_restart":
			if len(segs) == 3 {
				return p.allowed(OpRestart, EpRestart, "/_node/{node}/_restart", "restarts the datastore")
			}
		case "_stats", "_system", "_versions", "_prometheus", "_smoosh":
			if read(r) && (len(segs) == 3 || segs[2].name == "_stats" || segs[2].name == "_smoosh") {
				return passServer(EpServer)
			}
		}
	}
	return refuseServer(EpUnknown, "/_node/{node}/... reaches the node-local interface, and on pouchdb-server is an alias of any path (/_node/{node}/{db}/{docid} is /{db}/{docid}); only _stats, _system, _versions, _prometheus, _smoosh/status (GET) and _config pass")
}

// ---- a protected database ----

// req carries one request through the database handlers.
type req struct {
	r *datastore.Request
	c *collection
	m string // the method, HEAD read as GET
	p *Profile
	// params is what the endpoint takes in its query string: set by the
	// handler that recognises the request, checked once it has decided
	// (params.go). Nil takes no parameter.
	params *params
}

// takes records the query parameters the endpoint takes.
func (q *req) takes(ps *params) { q.params = ps }

func (q *req) pass(ep string, body datastore.BodyRule) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Body: body}
}

func (q *req) refuse(ep, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Refusal: datastore.Refuse("couchdb: "+format, args...)}
}

func (q *req) bad(ep, format string, args ...any) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Refusal: datastore.BadRequest("couchdb: "+format, args...)}
}

// unknown refuses a method on an endpoint that the profile does not list
// as safe.
func (q *req) unknown(ep, endpoint string) *datastore.Operation {
	return q.refuse(ep, "%s %s is not an operation the CouchDB profile knows to be safe on a protected database", methodName(q.r.Method), endpoint)
}

func (p *Profile) database(r *datastore.Request, c *collection, rest []segment) *datastore.Operation {
	q := &req{r: r, c: c, p: p}
	ep := dbEndpoint(rest)
	if len(rest) > 0 && strings.HasSuffix(r.Path, "/") {
		// pouchdb-server (express) reads PUT /{db}/{docid}/ as an
		// attachment named "" and keeps the slash in a _local or
		// _design id or an attachment name; CouchDB drops it. Only
		// /{db}/ is read alike.
		return q.bad(EpPath, "a trailing slash after a path inside a protected database changes what pouchdb-server reads (an attachment named \"\", an id or attachment name ending in a slash); only /{db}/ may end with one")
	}
	switch r.Method {
	case "GET", "HEAD":
		q.m = "GET"
	case "PUT", "POST", "DELETE", "COPY":
		q.m = r.Method
	case "OPTIONS":
		if !r.HasBody {
			return p.preflightDB(q, rest)
		}
		return q.refuse(EpOptions, "OPTIONS with a body on a protected database: CouchDB ignores the body, but it would reach the datastore unread")
	case "PATCH":
		return q.refuse(ep, "PATCH on a protected database: CouchDB has no PATCH except through update handlers, which run code inside the datastore with the request's data in plaintext")
	default:
		return q.refuse(ep, "method %s is not one the CouchDB API uses (methods are case-sensitive); refused on a protected database", methodName(r.Method))
	}
	op := p.route(q, rest)
	if op.Refusal == nil && !(rewriteURL(r) && !p.schema.Allows(OpRewrite)) {
		// (A URL that names a _rewrite handler is refused for that in
		// Classify, with the reason that matters.)
		if ref := q.params.check(r.RawQuery); ref != nil {
			return &datastore.Operation{Collection: c.Collection, Endpoint: op.Endpoint, Refusal: ref}
		}
	}
	return op
}

// preflightDB passes a CORS preflight (OPTIONS without a body). Its query
// string is the one of the request it announces, and reaches the
// datastore too: it must be one that request's endpoint takes, read for
// the method in Access-Control-Request-Method (GET if none or another).
func (p *Profile) preflightDB(q *req, rest []segment) *datastore.Operation {
	if q.r.RawQuery != "" {
		as := *q.r
		switch m := strings.TrimSpace(q.r.Header.Get("Access-Control-Request-Method")); m {
		case "PUT", "POST", "DELETE", "COPY":
			as.Method, as.HasBody = m, m != "DELETE" && m != "COPY"
		default:
			as.Method = "GET"
		}
		announced := &req{r: &as, c: q.c, m: as.Method, p: p}
		p.route(announced, rest)
		if ref := announced.params.check(q.r.RawQuery); ref != nil {
			return &datastore.Operation{Collection: q.c.Collection, Endpoint: EpOptions, Refusal: ref}
		}
	}
	return q.pass(EpOptions, datastore.BodyNone)
}

// route sends a request in a protected database to its endpoint's
// handler, which decides and records the query parameters it takes.
func (p *Profile) route(q *req, rest []segment) *datastore.Operation {
	c := q.c
	r := q.r
	ep := dbEndpoint(rest)
	if len(rest) == 0 {
		return q.dbRoot()
	}
	s0 := rest[0]
	if !strings.HasPrefix(s0.name, "_") {
		return q.doc(EpDoc, s0.name, rest[1:])
	}
	if s0.escaped() {
		// "_design%2Fx" is design document _design/x for both servers
		// (CouchDB unescapes the segment, pouchdb-server's /:db/:id(*)
		// route decodes it). Any other escaped '_' endpoint ("%5Ffind",
		// "%5Fdesign/x") is routed by the raw path in express and by the
		// unescaped one in CouchDB: two readings.
		switch {
		case strings.HasPrefix(s0.name, "_design/"):
			return q.design(strings.TrimPrefix(s0.name, "_design/"), rest[1:])
		case strings.HasPrefix(s0.name, "_local/"):
			return q.local(s0.name, rest[1:])
		}
		return q.bad(ep, "a database endpoint name is spelled with percent-escapes, which CouchDB and pouchdb-server read differently")
	}
	sub := rest[1:]
	switch s0.name {
	case "_design":
		if len(sub) == 0 {
			return q.refuse(EpDesign, "/{db}/_design without a design document name")
		}
		return q.design(sub[0].name, sub[1:])
	case "_local":
		if len(sub) == 0 {
			return q.refuse(EpLocal, "/{db}/_local without a document id")
		}
		return q.local("_local/"+sub[0].name, sub[1:])
	case "_bulk_docs":
		if len(sub) == 0 && q.m == "POST" {
			q.takes(bulkDocsParams)
			return &datastore.Operation{Collection: c.Collection, Endpoint: EpBulkDocs, Body: datastore.BodyEncrypt, Encryptor: c.bulk, Keys: c.keys,
				Check: bulkShape, Preserve: preserveBulk(c.Collection, r)}
		}
		return q.unknown(EpBulkDocs, "/{db}/_bulk_docs")
	case "_all_docs", "_design_docs", "_local_docs":
		// Their keys are document ids, which the rules never protect.
		return q.allDocs(s0.name, sub)
	case "_bulk_get":
		if len(sub) == 0 && q.m == "POST" {
			q.takes(bulkGetParams)
			return q.checked(EpBulkGet, bulkGetBody)
		}
		return q.unknown(EpBulkGet, "/{db}/_bulk_get")
	case "_revs_diff", "_missing_revs":
		if len(sub) == 0 && q.m == "POST" {
			return q.checked(EpRevs, revsMap(s0.name))
		}
		return q.unknown(EpRevs, "/{db}/"+s0.name)
	case "_purge":
		if len(sub) == 0 && q.m == "POST" {
			return q.checked(EpPurge, revsMap("_purge"))
		}
		return q.unknown(EpPurge, "/{db}/_purge")
	case "_purged_infos":
		if len(sub) == 0 && q.m == "GET" {
			q.takes(getOnlyParams)
			return q.pass(EpPurge, datastore.BodyNone)
		}
		return q.unknown(EpPurge, "/{db}/_purged_infos")
	case "_security", "_revs_limit", "_purged_infos_limit", "_auto_purge":
		// Database settings: members, limits. No document travels, and
		// the body must be the setting's documented shape.
		if len(sub) == 0 {
			switch q.m {
			case "GET":
				q.takes(getOnlyParams)
				return q.pass(EpAdmin, datastore.BodyNone)
			case "PUT":
				return q.checked(EpAdmin, settingBody(s0.name))
			}
		}
		return q.unknown(EpAdmin, "/{db}/"+s0.name)
	case "_time_seq":
		if len(sub) == 0 && (q.m == "GET" || q.m == "DELETE") {
			if q.m == "GET" {
				q.takes(getOnlyParams)
			}
			return q.pass(EpAdmin, datastore.BodyNone)
		}
		return q.unknown(EpAdmin, "/{db}/_time_seq")
	case "_compact":
		// /_compact/{ddoc} compacts a design document's view indexes.
		if len(sub) <= 1 && q.m == "POST" {
			return q.checked(EpAdmin, emptyBody)
		}
		return q.unknown(EpAdmin, "/{db}/_compact")
	case "_view_cleanup", "_ensure_full_commit", "_search_cleanup", "_nouveau_cleanup", "_sync_shards":
		if len(sub) == 0 && q.m == "POST" {
			return q.checked(EpAdmin, emptyBody)
		}
		return q.unknown(EpAdmin, "/{db}/"+s0.name)
	case "_shards":
		// /_shards/{docid} tells which shard holds a document.
		if len(sub) <= 1 && q.m == "GET" {
			q.takes(getOnlyParams)
			return q.pass(EpAdmin, datastore.BodyNone)
		}
		return q.unknown(EpAdmin, "/{db}/_shards")
	case "_index":
		return q.index(p, sub)
	case "_find":
		if len(sub) == 0 && q.m == "POST" {
			return q.transform(EpFind, p.findTransform(c, "_find"))
		}
		return q.unknown(EpFind, "/{db}/_find")
	case "_explain":
		if len(sub) == 0 && q.m == "POST" {
			return q.transform(EpExplain, p.findTransform(c, "_explain"))
		}
		return q.unknown(EpExplain, "/{db}/_explain")
	case "_changes":
		if len(sub) == 0 {
			return q.changes(p)
		}
		return q.unknown(EpChanges, "/{db}/_changes/...")
	case "_partition":
		return q.partition(p, sub)
	case "_temp_view":
		return q.refuse(EpTempView, "/{db}/_temp_view runs a map function sent in the request inside the datastore; refused on a protected database")
	}
	return q.refuse(EpUnknown, "/{db}/%s is not an endpoint the CouchDB profile knows; unknown endpoints are refused on a protected database", safeName(s0.name))
}

func (q *req) transform(ep string, fn func(context.Context, []byte, fieldcrypt.Keyring) ([]byte, error)) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Body: datastore.BodyTransform, Transform: fn, Keys: q.c.searchKeys}
}

// checked passes a JSON body that holds nothing to seal once f has read
// it whole and found only the members, and types, the endpoint takes.
func (q *req) checked(ep string, f func(*jsontree.Node) error) *datastore.Operation {
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Body: datastore.BodyJSON, Check: q.p.treeCheck(f)}
}

// settingBody returns the shape check of a database setting's body.
func settingBody(name string) func(*jsontree.Node) error {
	switch name {
	case "_security":
		return securityBody
	case "_auto_purge":
		return autoPurgeBody
	}
	return limitBody(name)
}

func (q *req) dbRoot() *datastore.Operation {
	switch q.m {
	case "GET":
		q.takes(dbReadParams)
		return q.pass(EpDB, datastore.BodyNone)
	case "DELETE":
		return q.pass(EpDB, datastore.BodyNone)
	case "PUT":
		// Create the database. CouchDB and pouchdb-server ignore a
		// body, so none may travel.
		q.takes(dbCreateParams)
		return q.pass(EpDB, datastore.BodyNone)
	case "POST":
		q.takes(dbPostParams)
		return q.docWrite(EpDoc, false)
	}
	return q.unknown(EpDB, "/{db}")
}

// docWrite encrypts a document body with the collection's rules.
// queryID: the URL names the document, and pouchdb-server takes the id
// from an "id" query parameter when the body has none.
func (q *req) docWrite(ep string, queryID bool) *datastore.Operation {
	if multipart(q.r) {
		return q.refuse(ep, "a multipart document upload carries the document and its attachments in one body, which the sidecar cannot encrypt; send the document as JSON and attachments separately")
	}
	if queryID && q.c.DesignDocs != datastore.PolicyAllow {
		params, ref := parseQuery(q.r.RawQuery)
		if ref != nil {
			return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Refusal: ref}
		}
		for i := range params {
			if params[i].base() == "id" {
				return q.refuse(ep, "the id query parameter on a document write makes pouchdb-server take the document id from the query string (a design document's, possibly); refused on a protected database")
			}
		}
	}
	docURL := ""
	if queryID {
		docURL = q.r.Path // PUT /{db}/{docid}: the document's own URL
		q.takes(docWriteParams)
		if q.c.DesignDocs == datastore.PolicyAllow {
			q.takes(docWriteIDParams)
		}
	}
	return &datastore.Operation{Collection: q.c.Collection, Endpoint: ep, Body: datastore.BodyEncrypt, Encryptor: q.c.doc, Keys: q.c.keys,
		Check: documentShape, Preserve: preserveDoc(q.c.Collection, q.r, docURL)}
}

// doc handles /{db}/{docid} and its attachments.
func (q *req) doc(ep, id string, sub []segment) *datastore.Operation {
	if len(sub) > 0 {
		return q.attachment(sub)
	}
	switch q.m {
	case "GET":
		// rev, revs, open_revs, attachments...: ids and flags.
		q.takes(docReadParams)
		return q.pass(ep, datastore.BodyNone)
	case "DELETE":
		q.takes(docWriteParams)
		return q.pass(ep, datastore.BodyNone)
	case "PUT":
		return q.docWrite(ep, true)
	case "COPY":
		return q.copyDoc(ep)
	case "POST":
		return q.refuse(ep, "POST /{db}/{docid} uploads attachments as a multipart form, which the sidecar cannot inspect; refused on a protected database")
	}
	return q.unknown(ep, "/{db}/{docid}")
}

// copyDoc checks COPY's Destination header: a document id (CouchDB
// unescapes it, pouchdb-server does not), optionally with "?rev=".
func (q *req) copyDoc(ep string) *datastore.Operation {
	q.takes(docWriteParams)
	dests := q.r.Header.Values("Destination")
	if len(dests) > 1 {
		return q.bad(ep, "COPY with more than one Destination header")
	}
	if len(dests) == 1 {
		raw := strings.TrimSpace(dests[0])
		id, _, _ := strings.Cut(raw, "?")
		dec, err := url.QueryUnescape(id)
		if err != nil {
			return q.bad(ep, "COPY's Destination header has an invalid percent-escape")
		}
		if (strings.HasPrefix(raw, "_design/") || strings.HasPrefix(dec, "_design/")) && q.c.DesignDocs != datastore.PolicyAllow {
			return q.refuse(EpDesign, "COPY to a _design/ document writes a design document, which carries code that runs inside the datastore; the collection's design_docs policy is refuse")
		}
	}
	return q.pass(ep, datastore.BodyNone)
}

func (q *req) attachment(sub []segment) *datastore.Operation {
	switch q.m {
	case "GET":
		q.takes(attReadParams)
		return q.pass(EpAttachment, datastore.BodyNone)
	case "DELETE":
		q.takes(attWriteParams)
		return q.pass(EpAttachment, datastore.BodyNone)
	case "PUT":
		if q.c.Attachments == datastore.PolicyAllow {
			q.takes(attWriteParams)
			return q.pass(EpAttachment, datastore.BodyOpaque)
		}
		return q.refuse(EpAttachment, "PUT /{db}/{docid}/{attachment} stores the body as an attachment, which the sidecar cannot encrypt; the collection's attachments policy is refuse")
	}
	return q.unknown(EpAttachment, "/{db}/{docid}/{attachment}")
}

// local handles _local/{id}: documents that do not replicate, encrypted
// like any other. They have no attachments.
func (q *req) local(id string, sub []segment) *datastore.Operation {
	if len(sub) > 0 {
		return q.refuse(EpLocal, "_local documents have no attachments; /{db}/_local/{id}/... is refused")
	}
	if strings.TrimPrefix(id, "_local/") == "" {
		return q.refuse(EpLocal, "/{db}/_local/ without a document id")
	}
	return q.doc(EpLocal, id, nil)
}

// design handles /{db}/_design/{name}/... .
func (q *req) design(name string, sub []segment) *datastore.Operation {
	if name == "" {
		return q.refuse(EpDesign, "a design document without a name")
	}
	if len(sub) == 0 {
		return q.designDoc()
	}
	s := sub[0]
	if !strings.HasPrefix(s.name, "_") {
		return q.designAttachment()
	}
	if s.escaped() {
		return q.bad(EpDesign, "an endpoint under a design document is spelled with percent-escapes, which CouchDB and pouchdb-server read differently")
	}
	switch s.name {
	case "_view":
		if len(sub) < 2 {
			return q.unknown(EpView, "/{db}/_design/{ddoc}/_view")
		}
		return q.view(name, sub[1].name, sub[2:])
	case "_info":
		if len(sub) == 1 && q.m == "GET" {
			q.takes(getOnlyParams)
			return q.pass(EpDesign, datastore.BodyNone)
		}
		return q.unknown(EpDesign, "/{db}/_design/{ddoc}/_info")
	case "_show", "_list", "_update", "_rewrite", "_search", "_search_info", "_search_disk_size",
		"_nouveau", "_nouveau_info", "_geo", "_geo_info", "_spatial":
		return q.refuse(EpDesignFunction, "/{db}/_design/{ddoc}/%s runs design document code inside the datastore with the request's data (body, query string, path) in plaintext; refused on a protected database", s.name)
	}
	return q.refuse(EpDesignFunction, "/{db}/_design/{ddoc}/%s is not an endpoint the CouchDB profile knows; endpoints under a design document run code inside the datastore and unknown ones are refused on a protected database", safeName(s.name))
}

func (q *req) designDoc() *datastore.Operation {
	switch q.m {
	case "GET":
		q.takes(docReadParams)
		return q.pass(EpDesign, datastore.BodyNone)
	case "PUT", "DELETE", "COPY":
		if q.c.DesignDocs != datastore.PolicyAllow {
			return q.refuse(EpDesign, "%s of a design document: design documents carry code that runs inside the datastore (views, filters, update handlers, validate_doc_update); the collection's design_docs policy is refuse", q.m)
		}
		switch q.m {
		case "PUT":
			// A design document is a document too: its fields are
			// encrypted by the same rules.
			return q.docWrite(EpDesign, true)
		case "COPY":
			return q.copyDoc(EpDesign)
		}
		q.takes(docWriteParams)
		return q.pass(EpDesign, datastore.BodyNone)
	case "POST":
		return q.refuse(EpDesign, "POST /{db}/_design/{ddoc} uploads attachments as a multipart form, which the sidecar cannot inspect; refused on a protected database")
	}
	return q.unknown(EpDesign, "/{db}/_design/{ddoc}")
}

func (q *req) designAttachment() *datastore.Operation {
	switch q.m {
	case "GET":
		q.takes(attReadParams)
		return q.pass(EpAttachment, datastore.BodyNone)
	case "PUT":
		if q.c.DesignDocs == datastore.PolicyAllow && q.c.Attachments == datastore.PolicyAllow {
			q.takes(attWriteParams)
			return q.pass(EpAttachment, datastore.BodyOpaque)
		}
		return q.refuse(EpAttachment, "PUT of a design document attachment needs both design_docs and attachments allowed for the collection")
	case "DELETE":
		if q.c.DesignDocs == datastore.PolicyAllow {
			q.takes(attWriteParams)
			return q.pass(EpAttachment, datastore.BodyNone)
		}
		return q.refuse(EpAttachment, "DELETE of a design document attachment changes the design document; the collection's design_docs policy is refuse")
	}
	return q.unknown(EpAttachment, "/{db}/_design/{ddoc}/{attachment}")
}

// allDocs handles _all_docs, _design_docs and _local_docs: their keys
// are document ids, which the rules never protect, and their options
// those of a view, typed (params.go), in the query string and in a POST
// body alike.
func (q *req) allDocs(name string, sub []segment) *datastore.Operation {
	q.takes(allDocsParams)
	switch {
	case len(sub) == 0 && q.m == "GET":
		return q.pass(EpAllDocs, datastore.BodyNone)
	case len(sub) == 0 && q.m == "POST":
		return q.checked(EpAllDocs, viewLikeBody(allDocsParams, "the /{db}/"+name+" body", false))
	case len(sub) == 1 && sub[0].name == "queries" && q.m == "POST":
		return q.checked(EpAllDocs, viewLikeBody(allDocsParams, "the /{db}/"+name+"/queries body", true))
	}
	return q.unknown(EpAllDocs, "/{db}/"+name)
}

func (q *req) index(p *Profile, sub []segment) *datastore.Operation {
	switch {
	case len(sub) == 0 && q.m == "GET":
		q.takes(indexListParams)
		return q.pass(EpIndex, datastore.BodyNone)
	case len(sub) == 0 && q.m == "POST":
		return q.transform(EpIndex, p.indexTransform(q.c))
	case len(sub) == 1 && sub[0].name == "_bulk_delete" && q.m == "POST":
		return q.checked(EpIndex, indexBulkDelete)
	case q.m == "DELETE" && (len(sub) == 3 || len(sub) == 4 && sub[0].name == "_design"):
		// /_index/{ddoc}/{type}/{name}: names only.
		q.takes(indexDeleteParams)
		return q.pass(EpIndex, datastore.BodyNone)
	}
	return q.unknown(EpIndex, "/{db}/_index")
}

// changes handles the changes feed in every feed mode. The filter decides:
// the built-in ones see no request values (_doc_ids: ids; _view, _design:
// code already in the datastore), _selector's selector is transformed;
// a custom ddoc/name filter runs code that receives the query string in
// plaintext, and is refused.
func (q *req) changes(p *Profile) *datastore.Operation {
	if q.m != "GET" && q.m != "POST" {
		return q.unknown(EpChanges, "/{db}/_changes")
	}
	params, ref := parseQuery(q.r.RawQuery)
	if ref != nil {
		return &datastore.Operation{Collection: q.c.Collection, Endpoint: EpChanges, Refusal: ref}
	}
	var filter string
	var filters int
	var hasView, hasDocIDs bool
	for i := range params {
		prm := &params[i]
		switch prm.base() {
		case "selector":
			return q.refuse(EpChanges, "a selector query parameter on _changes (pouchdb-server reads it) would carry compared values in plaintext; send the selector in a POST body with filter=_selector")
		case "filter":
			if prm.name != "filter" {
				return q.bad(EpChanges, "the filter parameter of _changes is written with brackets")
			}
			v, err := prm.value()
			if err != nil {
				return q.bad(EpChanges, "the filter parameter of _changes has an invalid percent-escape")
			}
			switch v {
			case "_doc_ids", "_view", "_design", "_selector":
				filter = v
				filters++
			case "":
				// Ill-typed: refused with the other parameters.
			default:
				return q.refuse(EpChanges, "a custom _changes filter (ddoc/name) runs design document code that receives the query string in plaintext; only _doc_ids, _selector, _view and _design filters pass on a protected database")
			}
		case "view":
			hasView = true
		case "doc_ids":
			hasDocIDs = true
		}
	}
	q.takes(changesParams)
	// Requests that no server answers, each of which also stops
	// pouchdb-server 4.2 (an unhandled error in its changes feed; doc.go,
	// "The changes feed and pouchdb-server").
	switch {
	case filters > 1:
		return q.bad(EpChanges, "the filter parameter of _changes is given more than once (pouchdb-server would read a list)")
	case filter == "_view" && !hasView:
		return q.bad(EpChanges, "filter=_view needs the view parameter (ddoc/view)")
	case filter == "_doc_ids" && !hasDocIDs && (q.m == "GET" || !q.r.HasBody):
		return q.bad(EpChanges, "filter=_doc_ids needs doc_ids, in the query string or in a POST body")
	case filter == "_selector" && (q.m == "GET" || !q.r.HasBody):
		return q.bad(EpChanges, "filter=_selector needs a selector in a POST body")
	}
	if q.m == "GET" {
		return q.pass(EpChanges, datastore.BodyNone)
	}
	// POST: the body holds doc_ids, or a selector, which is transformed
	// whatever the filter says (a selector the datastore ignores still
	// reaches it).
	return q.transform(EpChanges, p.changesTransform(q.c, filter, hasDocIDs))
}

// partition handles /{db}/_partition/{p}/...: the same endpoints as the
// database's, restricted to one partition.
func (q *req) partition(p *Profile, sub []segment) *datastore.Operation {
	if len(sub) == 0 {
		return q.unknown(EpPartition, "/{db}/_partition")
	}
	rest := sub[1:]
	if len(rest) == 0 {
		if q.m == "GET" {
			q.takes(getOnlyParams)
			return q.pass(EpPartition, datastore.BodyNone)
		}
		return q.unknown(EpPartition, "/{db}/_partition/{partition}")
	}
	s := rest[0]
	if s.escaped() && strings.HasPrefix(s.name, "_") {
		return q.bad(EpPartition, "a database endpoint name is spelled with percent-escapes, which CouchDB and pouchdb-server read differently")
	}
	switch s.name {
	case "_all_docs":
		return q.allDocs("_partition/{partition}/_all_docs", rest[1:])
	case "_find", "_explain":
		ep := EpFind
		if s.name == "_explain" {
			ep = EpExplain
		}
		if len(rest) == 1 && q.m == "POST" {
			return q.transform(ep, p.findTransform(q.c, s.name))
		}
		return q.unknown(ep, "/{db}/_partition/{partition}/"+s.name)
	case "_index":
		return q.index(p, rest[1:])
	case "_design":
		if len(rest) >= 4 && rest[2].name == "_view" && !rest[2].escaped() {
			return q.view(rest[1].name, rest[3].name, rest[4:])
		}
	}
	return q.refuse(EpPartition, "/{db}/_partition/{partition}/... serves _all_docs, _find, _explain, _index and views only; anything else is refused on a protected database")
}

// view handles /_design/{ddoc}/_view/{view}[/queries|/_info].
func (q *req) view(ddoc, view string, sub []segment) *datastore.Operation {
	multi := false
	switch {
	case len(sub) == 0 && (q.m == "GET" || q.m == "POST"):
	case len(sub) == 1 && sub[0].name == "queries" && q.m == "POST":
		multi = true
	case len(sub) == 1 && sub[0].name == "_info" && q.m == "GET":
		q.takes(getOnlyParams)
		return q.pass(EpView, datastore.BodyNone)
	default:
		return q.unknown(EpView, "/{db}/_design/{ddoc}/_view/{view}")
	}
	q.takes(viewParams)
	plan := q.c.views[ddoc+"/"+view]
	if plan == nil {
		return q.undeclaredView(ddoc, view, multi)
	}
	if !plan.protected {
		// No position holds a protected field: keys pass as they are.
		if q.m == "GET" {
			return q.pass(EpView, datastore.BodyNone)
		}
		return q.checked(EpView, viewLikeBody(viewParams, "the view's POST body", multi))
	}
	op := &datastore.Operation{Collection: q.c.Collection, Endpoint: EpView, Body: datastore.BodyNone}
	params, ref := parseQuery(q.r.RawQuery)
	if ref != nil {
		op.Refusal = ref
		return op
	}
	for i := range params {
		if keyParam(params[i].base()) {
			op.Query = plan.sealQuery
			op.Keys = plan.keys
			break
		}
	}
	if q.m == "POST" {
		op.Body = datastore.BodyTransform
		op.Transform = plan.sealBody(multi)
		op.Keys = plan.keys
	}
	return op
}

// undeclaredView passes a view the file does not declare as long as no
// compared value travels: the profile cannot know which field a position
// of its key holds.
func (q *req) undeclaredView(ddoc, view string, multi bool) *datastore.Operation {
	params, ref := parseQuery(q.r.RawQuery)
	if ref != nil {
		return &datastore.Operation{Collection: q.c.Collection, Endpoint: EpView, Refusal: ref}
	}
	for i := range params {
		if keyParam(params[i].base()) {
			return q.refuse(EpView, undeclaredViewMsg, safeName(ddoc), safeName(view), safeName(params[i].base()))
		}
	}
	if q.m == "GET" {
		return q.pass(EpView, datastore.BodyNone)
	}
	// The body is only checked, never sealed: no keys needed.
	return q.checked(EpView, undeclaredViewBody(ddoc, view, multi))
}

const undeclaredViewMsg = "view %s/%s is not declared under views: for this collection, and its %s parameter compares values the profile cannot attribute to a field; declare which field each position of the view's key holds"
