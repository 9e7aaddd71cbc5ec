// Package memcouch is an in-memory datastore speaking the subset of the
// CouchDB HTTP API that sidecrypt's load tests use, built to be fast so that
// a load test measures the proxy in front of it rather than the datastore.
//
// It is what `sidecrypt loadtest upstream` serves and what `sidecrypt
// loadtest` starts when no other upstream is named. It is not a database: it
// keeps only the latest revision of each document, in memory, and forgets
// everything when it stops.
//
// # Endpoints
//
//	GET    /                          welcome object
//	GET    /_up, /_all_dbs            health, database names
//	PUT    /{db}                      create a database (412 file_exists if present)
//	GET    /{db}                      database info (doc_count, update_seq)
//	DELETE /{db}                      drop a database
//	POST   /{db}                      create a document; the id is generated unless _id is given
//	PUT    /{db}/{id}                 create or update a document (_rev in the body or ?rev=)
//	GET    /{db}/{id}                 read a document (HEAD too)
//	DELETE /{db}/{id}?rev=            delete a document
//	POST   /{db}/_bulk_docs           {"docs": [...]}: create, update, delete (_deleted) many
//	GET    /{db}/_all_docs            rows sorted by id; include_docs, limit, skip
//	POST   /{db}/_find                equality selectors: {"email": "a@b"}, {"card.number": {"$eq": "4111..."}},
//	                                  {"address": {"city": "Oslo"}}, {"$and": [...]}; limit (default 25),
//	                                  skip, fields (top-level names)
//	GET    /{db}/_changes             since, limit, include_docs (normal feed only)
//
// # Compatibility
//
// Revisions are "N-<32 hex>" and follow CouchDB's rules: updating or
// deleting needs the current _rev, otherwise 409 {"error":"conflict"}; a
// missing document is 404 {"error":"not_found","reason":"missing"}, a
// deleted one "deleted". Errors have CouchDB's shape, {"error": "...",
// "reason": "..."}, and its status codes (400, 404, 405, 409, 412, 413,
// 415). POST bodies must be application/json, as with CouchDB.
//
// What it does not do, and refuses with a clear 400 rather than answering
// wrongly: selector operators other than $eq and $and, replication
// (new_edits=false), longpoll and continuous change feeds, attachments.
//
// # Speed
//
// Documents are spread over 64 shards by id, each with its own lock, and
// stored as the JSON bytes that GET returns. _find builds an equality index
// for a field path the first time a query names it and keeps it up to date
// on every write, so after the first query on a path a lookup costs the
// number of matches, not the number of documents (CouchDB's Mango would
// scan without an index; the load test wants the datastore out of the
// way). Memory grows with what is written: about the documents' size plus a
// small overhead per document.
package memcouch
