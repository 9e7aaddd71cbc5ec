package couchdb

import (
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Query parameters on a protected database. A query string reaches the
// datastore and its access log as it is, so inside a protected database
// each endpoint takes only the parameters CouchDB 3 documents for it and
// pouchdb-server reads (express-pouchdb hands the whole query to PouchDB,
// after JSON-parsing each value), each with a value of its type:
//
//	boolean    true or false
//	integer    decimal digits, no sign, no leading zero, at most 13 digits
//	           (every limit, skip, timeout and heartbeat fits; a card
//	           number does not)
//	enum       one of the documented words (feed, style, stale, update, batch)
//	key        JSON: a view key, sealed where the view is declared (views.go)
//	id, rev,   text, free by the API's meaning: a document id, a revision,
//	sequence   an update sequence, a view name
//
// An unknown name, a name written with brackets (which pouchdb-server's
// query parser reads as an object), a value of the wrong type and a raw
// ';' (CouchDB splits at it, pouchdb-server does not) are refused with 400
// bad_request. Messages name the endpoint, and the parameter only when it
// is a plain lower-case identifier: any other name could be the value.

// paramKind is the type of a parameter's value.
type paramKind uint8

const (
	pBool     paramKind = iota + 1
	pInt                // a count or a duration
	pBeat               // heartbeat: an integer, or true (CouchDB's default interval)
	pText               // an id, a revision, a sequence: free by the API's meaning
	pEnum               // one of paramSpec.words
	pKey                // a JSON view key
	pKeys               // a JSON array of view keys
	pID                 // a JSON string: a document id as an _all_docs key
	pIDs                // a JSON array of strings: ids, revisions
	pOpenRevs           // "all" or a JSON array of revisions
)

// paramSpec is one parameter an endpoint takes.
type paramSpec struct {
	kind  paramKind
	words []string // pEnum
}

// params is what one endpoint takes, for its query string and (where the
// API takes the same options as JSON) its body.
type params struct {
	what  string // "GET /{db}/{docid}": the endpoint, for messages
	names map[string]paramSpec
}

// maxIntDigits bounds an integer parameter. Date.now() (PouchDB's cache
// buster) has 13 digits; a payment card number has at least 15.
const maxIntDigits = 13

var (
	tBool      = paramSpec{kind: pBool}
	tInt       = paramSpec{kind: pInt}
	tText      = paramSpec{kind: pText}
	tKey       = paramSpec{kind: pKey}
	tKeys      = paramSpec{kind: pKeys}
	tID        = paramSpec{kind: pID}
	tIDs       = paramSpec{kind: pIDs}
	tBatch     = paramSpec{kind: pEnum, words: []string{"ok"}}
	tStale     = paramSpec{kind: pEnum, words: []string{"ok", "update_after"}}
	tUpdate    = paramSpec{kind: pEnum, words: []string{"true", "false", "lazy"}}
	tFeed      = paramSpec{kind: pEnum, words: []string{"normal", "longpoll", "continuous", "eventsource"}}
	tStyle     = paramSpec{kind: pEnum, words: []string{"main_only", "all_docs"}}
	tFilter    = paramSpec{kind: pEnum, words: []string{"_doc_ids", "_selector", "_view", "_design"}}
	tHeartbeat = paramSpec{kind: pBeat}
	tOpenRevs  = paramSpec{kind: pOpenRevs}
)

// newParams builds an endpoint's parameter list from groups of names.
func newParams(what string, groups ...map[string]paramSpec) *params {
	p := &params{what: what, names: map[string]paramSpec{}}
	for _, g := range groups {
		for n, s := range g {
			p.names[n] = s
		}
	}
	return p
}

// The groups the endpoints share.
var (
	// cacheBust: PouchDB's HTTP adapter adds _nonce=Date.now() to every
	// GET in Internet Explorer and old Edge. Servers ignore it; typed as
	// an integer it carries no more than limit does.
	cacheBust = map[string]paramSpec{"_nonce": tInt}
	// docRead: GET /{db}/{docid} (CouchDB 3), plus r (the read quorum
	// chttpd reads) and update_seq (which PouchDB's HTTP adapter sends).
	docRead = map[string]paramSpec{
		"attachments": tBool, "att_encoding_info": tBool, "atts_since": tIDs, "conflicts": tBool,
		"deleted_conflicts": tBool, "latest": tBool, "local_seq": tBool, "meta": tBool,
		"open_revs": tOpenRevs, "rev": tText, "revs": tBool, "revs_info": tBool, "r": tInt, "update_seq": tBool,
	}
	// docWrite: PUT, DELETE and COPY of a document; w is the write
	// quorum chttpd reads.
	docWrite = map[string]paramSpec{"rev": tText, "batch": tBatch, "new_edits": tBool, "w": tInt}
	// viewRows: the options of every view-like read (CouchDB 3's view
	// parameters that _all_docs shares).
	viewRows = map[string]paramSpec{
		"conflicts": tBool, "descending": tBool, "endkey_docid": tText, "end_key_doc_id": tText,
		"include_docs": tBool, "attachments": tBool, "att_encoding_info": tBool, "inclusive_end": tBool,
		"limit": tInt, "skip": tInt, "sorted": tBool, "stable": tBool, "stale": tStale,
		"startkey_docid": tText, "start_key_doc_id": tText, "update": tUpdate, "update_seq": tBool,
	}
	// viewKeys are a view's compared keys, any JSON.
	viewKeys = map[string]paramSpec{"key": tKey, "keys": tKeys, "startkey": tKey, "start_key": tKey, "endkey": tKey, "end_key": tKey}
	// idKeys are _all_docs's keys: document ids, JSON strings.
	idKeys = map[string]paramSpec{"key": tID, "keys": tIDs, "startkey": tID, "start_key": tID, "endkey": tID, "end_key": tID}
	// reduce: the options of views with a reduce function.
	reduce = map[string]paramSpec{"reduce": tBool, "group": tBool, "group_level": tInt}
	// changesFeed: GET|POST /{db}/_changes (CouchDB 3), plus update_seq
	// (PouchDB's HTTP adapter sends it).
	changesFeed = map[string]paramSpec{
		"doc_ids": tIDs, "conflicts": tBool, "descending": tBool, "feed": tFeed, "filter": tFilter,
		"heartbeat": tHeartbeat, "include_docs": tBool, "attachments": tBool, "att_encoding_info": tBool,
		"last-event-id": tText, "limit": tInt, "since": tText, "style": tStyle, "timeout": tInt,
		"view": tText, "seq_interval": tInt, "update_seq": tBool,
	}
)

// The endpoints' parameter lists. noParams takes none.
var (
	noParams          = &params{what: "this endpoint"}
	dbReadParams      = newParams("GET /{db}", cacheBust)
	dbCreateParams    = newParams("PUT /{db}", map[string]paramSpec{"q": tInt, "n": tInt, "partitioned": tBool})
	dbPostParams      = newParams("POST /{db}", map[string]paramSpec{"batch": tBatch, "w": tInt})
	docReadParams     = newParams("GET /{db}/{docid}", docRead, cacheBust)
	docWriteParams    = newParams("PUT|DELETE|COPY /{db}/{docid}", docWrite)
	docWriteIDParams  = newParams("PUT /{db}/{docid}", docWrite, map[string]paramSpec{"id": tText}) // design documents allowed: pouchdb-server's id parameter
	bulkDocsParams    = newParams("POST /{db}/_bulk_docs", map[string]paramSpec{"new_edits": tBool, "w": tInt})
	attReadParams     = newParams("GET /{db}/{docid}/{attachment}", map[string]paramSpec{"rev": tText}, cacheBust)
	attWriteParams    = newParams("PUT|DELETE /{db}/{docid}/{attachment}", map[string]paramSpec{"rev": tText, "batch": tBatch, "w": tInt})
	allDocsParams     = newParams("/{db}/_all_docs", viewRows, idKeys, cacheBust)
	viewParams        = newParams("/{db}/_design/{ddoc}/_view/{view}", viewRows, viewKeys, reduce, cacheBust)
	changesParams     = newParams("/{db}/_changes", changesFeed, cacheBust)
	bulkGetParams     = newParams("POST /{db}/_bulk_get", map[string]paramSpec{"revs": tBool, "latest": tBool, "attachments": tBool, "att_encoding_info": tBool})
	indexListParams   = newParams("GET /{db}/_index", map[string]paramSpec{"limit": tInt, "skip": tInt}, cacheBust)
	indexDeleteParams = newParams("DELETE /{db}/_index/...", map[string]paramSpec{"w": tInt})
	getOnlyParams     = newParams("this endpoint", cacheBust)
)

// check refuses a raw query string that this endpoint does not take.
func (ps *params) check(raw string) *datastore.Refusal {
	if raw == "" {
		return nil
	}
	if ps == nil {
		ps = noParams
	}
	if strings.IndexByte(raw, ';') >= 0 {
		return datastore.BadRequest("couchdb: a query string on a protected database must not use ';', which CouchDB splits at and pouchdb-server does not (write it as %%3B inside a value)")
	}
	list, ref := parseQuery(raw)
	if ref != nil {
		return ref
	}
	for i := range list {
		if ref := ps.checkParam(&list[i]); ref != nil {
			return ref
		}
	}
	return nil
}

func (ps *params) checkParam(prm *param) *datastore.Refusal {
	spec, ok := ps.names[prm.name]
	if !ok && prm.base() == "_method" {
		return datastore.Refuse("couchdb: method override (a _method parameter) is refused on a protected database: the datastore could apply another method than the one the sidecar checked")
	}
	if !ok {
		if base := prm.base(); base != prm.name {
			if _, known := ps.names[base]; known {
				return datastore.BadRequest("couchdb: the query parameter %s of %s is written with brackets, which pouchdb-server reads as an object or array that reaches the datastore unread", base, ps.what)
			}
		}
		if n := paramName(prm.name); n != "" {
			return datastore.BadRequest("couchdb: %s does not take the query parameter %s; on a protected database unknown parameters are refused, since they would reach the datastore and its access log unread", ps.what, n)
		}
		return datastore.BadRequest("couchdb: %s does not take one of the query parameters (its name is not shown: it is not a plain identifier); on a protected database unknown parameters are refused, since they would reach the datastore and its access log unread", ps.what)
	}
	if !prm.hasValue {
		return badValue(ps.what, prm.name, spec)
	}
	v, err := prm.value()
	if err != nil {
		return datastore.BadRequest("couchdb: the query parameter %s of %s has an invalid percent-escape", prm.name, ps.what)
	}
	if !spec.text(v) {
		return badValue(ps.what, prm.name, spec)
	}
	return nil
}

// text reports whether a query-string value has the parameter's type.
func (s paramSpec) text(v string) bool {
	switch s.kind {
	case pBool:
		return v == "true" || v == "false"
	case pInt:
		return integer(v)
	case pBeat:
		return v == "true" || integer(v)
	case pText:
		return true
	case pEnum:
		return contains(s.words, v)
	case pOpenRevs:
		if v == "all" {
			return true
		}
	}
	n, err := jsontree.Parse([]byte(v), maxParamDepth)
	return err == nil && s.json(n)
}

// json reports whether a JSON value (a member of a POST body that takes
// the same options) has the parameter's type.
func (s paramSpec) json(n *jsontree.Node) bool {
	switch s.kind {
	case pBool:
		return n.Kind == jsontree.Bool
	case pInt:
		return n.Kind == jsontree.Number && integer(string(n.Raw()))
	case pBeat:
		return n.Kind == jsontree.Bool && string(n.Raw()) == "true" || n.Kind == jsontree.Number && integer(string(n.Raw()))
	case pText:
		return n.Kind == jsontree.String
	case pEnum:
		t, ok := n.Text()
		return ok && contains(s.words, t) || n.Kind == jsontree.Bool && contains(s.words, string(n.Raw()))
	case pKey:
		return true
	case pKeys:
		return n.Kind == jsontree.Array
	case pID:
		return n.Kind == jsontree.String
	case pIDs:
		return stringArray(n)
	case pOpenRevs:
		t, ok := n.Text()
		return ok && t == "all" || stringArray(n)
	}
	return false
}

// maxParamDepth bounds the nesting of a JSON query parameter, as it
// bounds the views' own reading of keys.
const maxParamDepth = fieldcrypt.DefaultMaxDepth

func badValue(what, name string, s paramSpec) *datastore.Refusal {
	return datastore.BadRequest("couchdb: the query parameter %s of %s must be %s", name, what, s.want())
}

// want says what a value of the type is, for messages.
func (s paramSpec) want() string {
	switch s.kind {
	case pBool:
		return "true or false"
	case pInt:
		return "an integer of at most 13 digits"
	case pBeat:
		return "an integer of at most 13 digits, or true"
	case pText:
		return "a string"
	case pEnum:
		return "one of " + strings.Join(s.words, ", ")
	case pKey:
		return "JSON"
	case pKeys:
		return "a JSON array"
	case pID:
		return "a JSON string (a document id)"
	case pIDs:
		return "a JSON array of strings"
	case pOpenRevs:
		return "all or a JSON array of revisions"
	}
	return "a value"
}

// integer reports decimal digits without sign or leading zero, at most
// maxIntDigits: read alike by CouchDB (list_to_integer) and pouchdb-server
// (JSON.parse, which would keep "007" a string).
func integer(s string) bool {
	if s == "" || len(s) > maxIntDigits || len(s) > 1 && s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func stringArray(n *jsontree.Node) bool {
	if n.Kind != jsontree.Array {
		return false
	}
	for _, e := range n.Elems {
		if e.Kind != jsontree.String {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, w := range list {
		if w == s {
			return true
		}
	}
	return false
}

// paramName returns a parameter or member name for a message when it is a
// plain lower-case identifier ([a-z_]{1,32}), and "" otherwise: a name
// that is not an identifier could be the value itself.
func paramName(s string) string {
	if len(s) == 0 || len(s) > 32 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '_' && (c < 'a' || c > 'z') {
			return ""
		}
	}
	return s
}

// members checks the members of a JSON object that takes the endpoint's
// options as JSON (POST /{db}/_all_docs, a view's POST body, each of
// their queries). extra lists further members and their checks.
func (ps *params) members(obj *jsontree.Node, what string, extra map[string]func(*jsontree.Node) error) error {
	if obj.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: %s must be a JSON object", what)
	}
	for i := range obj.Members {
		m := &obj.Members[i]
		if f, ok := extra[m.Name]; ok {
			if err := f(m.Value); err != nil {
				return err
			}
			continue
		}
		spec, ok := ps.names[m.Name]
		if !ok || m.Name == "_nonce" {
			return unknownBodyMember(what, m.Name)
		}
		if !spec.json(m.Value) {
			return datastore.BadRequest("couchdb: the member %s of %s must be %s", m.Name, what, spec.want())
		}
	}
	return nil
}

// unknownBodyMember refuses a member the profile does not know in a body
// it checks: 400 bad_request, naming the member only when it is a plain
// identifier.
func unknownBodyMember(what, name string) *datastore.Refusal {
	if n := paramName(name); n != "" {
		return datastore.BadRequest("couchdb: %s has a member %s that the profile does not know; on a protected database a body may hold only what the profile reads, and anything else would reach the datastore unread", what, n)
	}
	return datastore.BadRequest("couchdb: %s has a member the profile does not know (its name is not shown: it is not a plain identifier); on a protected database a body may hold only what the profile reads, and anything else would reach the datastore unread", what)
}
