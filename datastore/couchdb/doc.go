// Package couchdb is sidecrypt's datastore profile for the CouchDB 3 HTTP
// API, as Apache CouchDB 3 and pouchdb-server (express-pouchdb) serve it.
// A version 2 rule file selects it with "datastore: couchdb"; a collection
// is a database name or pattern ("clinic", "tenant-*").
//
// For every request the proxy asks [Profile.Classify] what to do. The
// profile knows where documents, parts of documents and compared values
// travel in the API, and applies the collection's field rules there: in
// documents that are written, and in the values that queries compare with
// stored fields. Inside a protected database it refuses whatever it does
// not know to be safe (403 unprotected_operation), and nothing is
// forwarded. Responses are not the profile's business: the proxy opens
// tokens wherever they appear.
//
// # Reading requests as CouchDB does
//
// The escaped path is split at '/' and each segment unescaped once, as
// chttpd and express do: "/clinic/a%2Fb" is document "a/b" of database
// clinic, "/clinic/_design%2Fapp" is design document _design/app, and
// "/cl%69nic" is database clinic. A database segment is protected when
// any reading of it matches a collection: its unescaped name, the name
// CouchDB reads with '+' as a space, and the name pouchdb-server stores
// the database under (express-pouchdb runs sanitize-filename on it, which
// drops / ? < > \ : * | " and control characters and trailing dots and
// spaces, so "/clinic%3F", "/clinic." and "/cli%2Fnic" are clinic there,
// and a protected "org/records" is stored as "orgrecords"). A name that
// pouchdb-server would read as a system database ("/%3F_replicator") is
// refused. One trailing slash is ignored on a server path and on the
// database itself ("/clinic/"); after anything deeper in a protected
// database it is refused with 400 bad_request, since pouchdb-server reads
// PUT /{db}/{docid}/ as a write of an attachment named "" and keeps the
// slash in a _local or _design id and in an attachment name, where
// CouchDB drops it. Paths that servers and
// proxies in between read differently are refused with 400 bad_request:
// on every database, a "." or ".." segment raw or escaped ("%2e%2e") or
// inside an unescaped segment ("a%2F..%2Fb"), an invalid escape, and an
// underscore endpoint spelled with escapes ("%5Ffind", "%5Fdesign/x",
// "%5Freplicate"), which express routes on the raw path and CouchDB on
// the unescaped one; an empty segment ("//clinic/x", which CouchDB drops
// and express keeps) unless the path is in an unprotected database by
// every reading. The one-segment forms "_design%2F{name}" and
// "_local%2F{id}" are read alike by both and classified as design and
// local documents.
//
// Methods are compared exactly (RFC 9110): "post" is not POST, and an
// unknown method is refused inside a protected database. HEAD is GET.
// OPTIONS without a body (a CORS preflight) passes everywhere, server
// paths included; with a body it is refused inside a protected database.
// PATCH is refused: CouchDB has none except through update handlers. The proxy checks charsets, byte-order marks and method
// overrides for every protected request; the profile also refuses a
// multipart body wherever it expects JSON.
//
// Query strings are split at '&' and ';' (mochiweb splits at both),
// names and values unescaped with '+' as a space, every occurrence of a
// repeated parameter handled.
//
// # Query parameters
//
// A query string reaches the datastore and its access log as it is. Inside
// a protected database each endpoint takes only the parameters CouchDB 3
// documents for it and pouchdb-server reads (express-pouchdb hands the
// whole query to PouchDB, after JSON-parsing each value), each with a
// value of its type (params.go):
//
//	boolean    true or false
//	integer    decimal digits, no sign, no leading zero, at most 13 digits
//	           (every limit, skip, timeout or heartbeat fits; a card number,
//	           15 digits or more, does not)
//	enum       feed normal|longpoll|continuous|eventsource, style
//	           main_only|all_docs, stale ok|update_after, update
//	           true|false|lazy, batch ok, filter _doc_ids|_selector|_view|
//	           _design, heartbeat an integer or true
//	JSON       view keys (sealed where the view is declared, below);
//	           _all_docs keys are ids: JSON strings (keys an array of them);
//	           open_revs all or an array of strings, atts_since and
//	           doc_ids arrays of strings
//	text       free by the API's meaning: rev, since, last-event-id,
//	           startkey_docid/endkey_docid (and _doc_id aliases), view
//	           (ddoc/view), id (pouchdb-server, where design documents are
//	           allowed)
//
//	GET|HEAD /{db}/{docid}  attachments att_encoding_info atts_since conflicts deleted_conflicts
//	 (_local, _design)      latest local_seq meta open_revs rev revs revs_info r update_seq
//	PUT|DELETE|COPY         rev batch new_edits w (and id where design documents are allowed)
//	POST /{db}              batch w
//	PUT /{db}               q n partitioned; GET /{db} none; DELETE /{db} none
//	attachments             GET rev; PUT|DELETE rev batch w
//	_all_docs, _design_docs conflicts descending key keys startkey start_key endkey end_key
//	 _local_docs            startkey_docid start_key_doc_id endkey_docid end_key_doc_id include_docs
//	                        attachments att_encoding_info inclusive_end limit skip sorted stable
//	                        stale update update_seq
//	views                   the same, keys any JSON, and reduce group group_level
//	_changes                doc_ids conflicts descending feed filter heartbeat include_docs
//	                        attachments att_encoding_info last-event-id limit since style timeout
//	                        view seq_interval update_seq
//	_bulk_docs              new_edits w
//	_bulk_get               revs latest attachments att_encoding_info
//	_index                  GET limit skip; DELETE w
//	everything else         none (GET: _nonce only)
//
// _nonce is kept, as an integer, on every GET: PouchDB's HTTP adapter adds
// _nonce=Date.now() to each GET it sends from Internet Explorer and old
// Edge, servers ignore it, and typed as an integer it carries no more than
// limit does. An unknown name, a known name written with brackets
// (pouchdb-server's qs parser reads key[x]=... as an object), a value of
// the wrong type, and a raw ';' anywhere in the query (CouchDB splits at
// it, pouchdb-server does not, so the two would read different
// parameters) are refused with 400 bad_request; a _method parameter is a
// method override (403). Messages name the endpoint, and the parameter
// only when it is a plain lower-case identifier ([a-z_]{1,32}): any other
// name could itself be the value. A CORS preflight's query string is that
// of the request it announces, and is checked as that request's (its
// Access-Control-Request-Method, GET if none).
//
// # Endpoints
//
// {db} is a protected database. Requests to databases the file does not
// protect pass untouched (BodyPass), except the server-wide refusals at
// the end. "passes" below means: forwarded with the body rule shown, no
// protected value travels in it; "checked" that the body is read whole and
// holds only the members shown, of their types (below). Every request
// also has its query parameters checked (above).
//
//	endpoint                     request                                        treatment
//	couchdb.db                   GET|HEAD|DELETE /{db}                          passes (no body)
//	                             PUT /{db}                                      passes; no body (CouchDB ignores one)
//	couchdb.doc                  POST /{db}, PUT /{db}/{docid}                  document encrypted; an object; checks below
//	                             GET|HEAD|DELETE /{db}/{docid}                  passes (rev, revs, open_revs...: ids, flags)
//	                             COPY /{db}/{docid}                             passes; Destination under _design/ needs design_docs: allow
//	                             POST /{db}/{docid}                             refused: multipart form upload
//	couchdb.local                /{db}/_local/{id} (or _local%2F{id})           as documents; no attachments (/_local/{id}/... refused)
//	couchdb.design               GET|HEAD /{db}/_design/{ddoc}[/_info]          passes
//	                             PUT|DELETE|COPY /{db}/_design/{ddoc}           refused unless design_docs: allow (then PUT encrypted)
//	couchdb.design_function      /{db}/_design/{ddoc}/_show|_list|_update|      refused, any method: design document code runs
//	                             _rewrite|_search|_search_info|_nouveau|_geo|   inside the datastore with the request's body,
//	                             any other _name                                query string and path in plaintext
//	couchdb.attachment           GET|HEAD|DELETE /{db}/{docid}/{att...}         passes
//	                             PUT /{db}/{docid}/{att...}                     refused unless attachments: allow (then opaque)
//	                             PUT|DELETE /{db}/_design/{ddoc}/{att...}       needs design_docs (and for PUT attachments) allowed
//	couchdb.bulk_docs            POST /{db}/_bulk_docs (new_edits=false too)    {docs: [objects], new_edits, all_or_nothing}:
//	                                                                            $.docs[*] encrypted, same checks; any other
//	                                                                            shape refused before anything is sealed
//	couchdb.all_docs             GET|POST /{db}/_all_docs|_design_docs|         passes: keys are document ids; POST checked:
//	                             _local_docs[/queries]                          the typed options ([queries] of them)
//	couchdb.bulk_get             POST /{db}/_bulk_get                           checked: {docs: [{id, rev, atts_since}]}
//	couchdb.revs                 POST /{db}/_revs_diff|_missing_revs            checked: {docid: [rev, ...]}
//	couchdb.purge                POST /{db}/_purge, GET /{db}/_purged_infos     checked: {docid: [rev, ...]}
//	couchdb.find, .explain       POST /{db}/_find, /{db}/_explain               selector transformed, other members typed (below)
//	couchdb.index                GET /{db}/_index                               passes
//	                             POST /{db}/_index                              partial_filter_selector transformed; names,
//	                                                                            field names untouched, typed; type other
//	                                                                            than json refused
//	                             DELETE /{db}/_index/{ddoc}/{type}/{name}       passes
//	                             POST /{db}/_index/_bulk_delete                 checked: {docids: [...], w}
//	couchdb.changes              GET|POST /{db}/_changes, every feed            filter absent, _doc_ids, _view, _design: passes;
//	                                                                            _selector: the body's selector transformed;
//	                                                                            custom ddoc/name filter and a selector query
//	                                                                            parameter refused; see "The changes feed"
//	couchdb.view                 GET|POST /{db}/_design/{ddoc}/_view/{view}     compared keys sealed; POST checked: the typed
//	                             [/queries], GET .../_view/{view}/_info         options ([queries] of them) (below)
//	couchdb.admin                PUT _security                                  checked: {admins, members: {names, roles}}
//	                             PUT _revs_limit, _purged_infos_limit           checked: a positive integer
//	                             PUT _auto_purge                                checked: {deleted_document_ttl: "3_hour"}
//	                             GET of the four                                passes
//	                             POST _compact[/{ddoc}], _view_cleanup,         passes: no body or {} (else 400
//	                             _ensure_full_commit, _sync_shards,             unexpected_body)
//	                             _search_cleanup, _nouveau_cleanup
//	                             GET _shards[/{docid}]; GET|DELETE _time_seq    passes
//	couchdb.partition            GET /{db}/_partition/{p}; _partition/{p}/      as the database's own endpoints; anything else
//	                             _all_docs|_find|_explain|_index|               under a partition refused
//	                             _design/{ddoc}/_view/{view}
//	couchdb.temp_view            /{db}/_temp_view                               refused: runs a map function from the request
//	couchdb.unknown              any other /{db}/_name                          refused (deny by default)
//	couchdb.options              OPTIONS without a body                         passes (CORS preflight); query checked
//	couchdb.path                 a trailing slash after /{db}/...               refused (400): pouchdb-server reads another path
//
// Document writes are encrypted in one streaming pass by encryptors
// compiled once per collection. Their Check rules come first, so that a
// refusal wins over an encryption where both select a value: an inline
// attachment ($._attachments[*].data, or .follows: true) is refused unless
// the collection allows attachments (stubs pass), and an _id starting
// with "_design/" unless it allows design documents (pouchdb-server takes
// a PUT's id from the body, and POST /{db} and _bulk_docs always do). A
// document PUT with an "id" query parameter (which pouchdb-server uses
// when the body has no _id) and a multipart/related upload (document and
// attachments in one body) are refused.
//
// # Bodies
//
// Nothing that the profile has not read and understood reaches a
// protected database. A body it seals (documents) or transforms (Mango,
// view keys) is read by the encryptor or the transform; every other body
// is read whole before it is forwarded (Operation.Check, shapes.go) and
// may hold only the members its endpoint documents, with values of their
// types, as in the table. Anything else is refused with 400 bad_request,
// naming the member only when it is a plain identifier: an unknown member
// of _security would be stored by pouchdb-server as it was sent, and one of
// _bulk_get, _revs_diff or _all_docs would reach the datastore (and, for
// _revs_diff, come back in its answer) in plaintext. PUT /{db} takes no
// body (400 unexpected_body), the maintenance commands none or {}.
//
// A document write must be a JSON object, and a _bulk_docs body an object
// whose members are docs (an array of objects), new_edits and
// all_or_nothing (booleans), each at most once: the fields are sealed in
// docs[*] only, so a document at the top, an extra member holding a
// dotted field, a bare array or a string would reach the datastore with
// nothing sealed. The _bulk_docs check reads the top level and the first
// byte of each document in one pass without building a tree (bulkShape,
// about 1 ms per MiB, against tens of milliseconds for the encryption it
// precedes); the encryptor reads everything right after, and refuses
// whatever is not one valid JSON document.
//
// # Mango selectors
//
// _find, _explain, _index's partial_filter_selector and _changes's
// selector are read as mango_selector:normalize reads them: a member
// whose name starts with '$' is an operator, any other a field name (a
// dotted path; "\." is a literal dot; a backslash that CouchDB and
// pouchdb-find read differently is refused); an object of field names is
// a nested path ({"card": {"number": x}} is card.number); a scalar, an
// array or {} is compared for equality; several members are an implicit
// $and. $and, $or, $nor and $not recurse at any depth, also under a
// field; $elemMatch and $allMatch recurse with the array's path (arrays
// are transparent, as in the rules). A numeric member ("accounts.0.iban")
// is read both as an array index and as a member name, and the more
// protective reading wins. For each compared value:
//
//   - on a searchable field: $eq, $ne, $in and $nin values are sealed
//     deterministically, exactly as the document encryptor sealed the
//     field (strings canonicalised, so "\u0061" and "a" match; a null
//     only when the field encrypts nulls; a string that already is a
//     token opening under its key is left, as the encryptor leaves it);
//     $exists (true or false) passes; any other operator is refused with 400
//     unsupported_query (ciphertext keeps equality, not order, pattern,
//     size, type or content);
//   - on a random field: only $exists (true or false); anything else is
//     refused;
//   - inside a protected value ("address.city" when address is
//     protected): refused, also $exists, a fields projection and a sort:
//     the datastore holds one token there;
//   - on an unprotected field: untouched, unless the compared value is an
//     object or array that contains a protected field (comparing a parent
//     whole), which is refused; the arguments that are not compared values
//     must have their documented type: $exists a boolean, $regex and
//     $beginsWith a string, $size a non-negative integer, $mod two
//     integers (the divisor not 0), $type one of null, boolean, number,
//     string, array, object, $all, $in and $nin an array, $and, $or and
//     $nor an array, $not, $elemMatch and $allMatch an object; anything
//     else is refused with 400 bad_request, since it would reach the
//     datastore unread. $keyMapMatch (member names, never sealed) takes
//     operators only, with those types;
//   - $text and $default (full-text search over every field), unknown
//     operators: refused.
//
// _find's sort on a protected field is refused (ciphertext order is not
// value order); sort and index field entries must be a name or a
// one-member {name: "asc"|"desc"}. The other _find members pass with
// their types: limit, skip and r integers; conflicts, update, stable,
// execution_stats and allow_fallback booleans; stale "ok" or
// "update_after"; bookmark and partition strings; use_index a name or
// [ddoc, name]. _index's name and ddoc are strings, w an integer,
// partitioned a boolean. Unknown members are refused (403). The output keeps member order, and every
// subtree that was not changed byte for byte (numbers keep their digits).
//
// # Views
//
// A view's key is whatever its map function emits, which the sidecar
// cannot read. The rule file declares it under the collection's views:
// ("ddoc/view": the field each key position holds, and whether the key is
// an array). For a declared view, the JSON in the query parameters key,
// keys, startkey/start_key and endkey/end_key, and the same members of a
// POST body and of each element of its queries, is decoded; each position
// that holds a searchable field is sealed like the field; a position on a
// random field, or inside a protected value, is refused unless it holds
// no value ({} or a plaintext null). A range is meaningless on ciphertext:
// a protected position must hold the same value at both ends (which makes
// startkey=["a@b"]&endkey=["a@b",{}] work) or no value at either.
// startkey_docid and endkey_docid are ids and pass. The rest of the query
// string is kept byte for byte. A view's POST body (declared or not) may
// hold the view's options only, typed as in the query string, and
// queries, an array of objects of the same. Key parameters written with
// brackets (key[0]=..., which pouchdb-server's qs reads as an object), a
// ';' in a query string (pouchdb-server does not split at ';'), and a key
// that is not JSON (pouchdb-server would compare its text as a string)
// are refused. A view the file does not declare passes only when no key
// parameter or member is present.
//
// # The changes feed and pouchdb-server
//
// pouchdb-server 4.2 leaves an error of its changes feed unhandled, and
// the process stops: every database it serves goes down with it. It
// happens on filter=_selector (which it does not implement: it looks for
// a design document _design/_selector), on filter=_design (the same), on
// filter=_view naming a view that does not exist or without a view, and on
// filter=_doc_ids without doc_ids. The profile refuses (400 bad_request)
// what no server answers: filter=_selector without a selector in a POST
// body, filter=_view without view, filter=_doc_ids without doc_ids (in the
// query string or a POST body), filter given twice. It does not refuse
// POST filter=_selector with a selector, nor filter=_design: they are
// CouchDB 3's documented filters (PouchDB replication with a selector
// uses the first), they carry nothing unsealed, and the same crash
// follows any _view filter naming a view that does not exist, which no
// check of the request can rule out. Confidentiality is this profile's
// business; a datastore that a well-formed request stops is not made
// safe by refusing some of those requests. Run CouchDB, or keep
// pouchdb-server (a test and development store) away from clients that
// use these filters.
//
// # Server-wide endpoints
//
// Pass: GET /, /_all_dbs, /_dbs_info (GET, POST), /_active_tasks,
// /_membership, /_up, /_uuids, /_session (GET, POST, DELETE),
// /_utils/..., /_scheduler/..., /_cluster_setup (GET), /_reshard (GET),
// /_node/{node}/_stats|_system|_versions|_prometheus|_smoosh (GET),
// /_config and /_node/{node}/_config (GET), /_users/... (accounts, not
// protected data), /_replicator and /_global_changes (GET), and
// pouchdb-server's /_log, /_stats and /_db_updates (GET).
//
// Refused unless the rule file's allow: names the operation:
//
//	operation  requests                                                  why
//	replicate  POST /_replicate, any write to /_replicator               a replication copies documents as stored: from an
//	                                                                     unprotected source it writes plaintext into {db}
//	config     writes under /_config and /_node/{node}/_config           vhosts and rewrites change which database a path
//	           (vhosts included)                                         reaches; query servers change what runs inside
//	rewrite    a URL naming /{any}/_design/{d}/_rewrite/ anywhere,       pouchdb-server matches it before routing and
//	           query string included                                     resolves ../ in targets, so any rewrite can reach
//	                                                                     {db}; on {db} itself _rewrite is always refused
//	restart    POST /_restart, /_node/{node}/_restart                    administration; refused like any unknown command
//	reshard    writes under /_reshard                                    administration; refused like any unknown command
//
// Always refused: any other /_{name} (_cluster_setup POST,
// _reload_query_servers, _search_analyze, ...) and any other path under
// /_node/{node}/, which CouchDB forwards to the node-local interface and
// pouchdb-server serves as an alias of the rest of the path
// (/_node/node1@127.0.0.1/clinic/doc is /clinic/doc). A file that
// protects a system database by pattern ("*") gets the database treatment
// there; replication writes are refused first.
//
// # Limits
//
// Virtual hosts configured in the datastore before the sidecar was put in
// front of it are not seen: a Host header that such a vhost rewrites to a
// protected database reaches it under a path the profile does not see as
// protected. Keep [vhosts] empty; writes to it are refused from then on.
// Where a Check rule and a field rule select the same value, the Check
// rule wins and the value is not encrypted: a field named _id or
// _attachments would lose out, which is why the rules refuse protected
// members starting with "_" (CouchDB reserves them and needs ids in
// plaintext). Deterministic equality on numbers, objects and arrays matches
// only the same spelling (1.0 is not 1); strings are canonicalised.
//
// [Profile.Coverage] lists the same table for one collection, with its
// attachment, design document and view decisions filled in, for `rules
// report` and for docs/RULES.md.
package couchdb
