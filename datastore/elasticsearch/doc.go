// Package elasticsearch is sidecrypt's datastore profile for the document
// and search APIs of Elasticsearch 7.x and 8.x and OpenSearch 2.x, which
// agree on everything the profile reads. A version 2 rule file selects it
// with "datastore: elasticsearch"; a collection is an index name or
// pattern ("orders", "tenant-*"), which also protects the backing indices
// of a data stream of that name (.ds-{name}-*). Aliases are collections
// too: name each alias the application uses, since the sidecar cannot see
// which index an alias points to (and it refuses alias changes on
// protected indices unless allowed).
//
// The profile was built from the Elasticsearch and OpenSearch REST
// specifications and tested with the official @elastic/elasticsearch
// client (8.x) against a recording fake upstream in internal/testenv/esfake
// that speaks the subset of the API the tests use; no Elasticsearch server
// can be run in the project's test environment.
//
// # Reading requests as Elasticsearch does
//
// The escaped path is split at '/' and each segment unescaped once, as
// Elasticsearch's router does: "%2F" inside an id belongs to the id, and
// endpoint names are matched on the raw text, so an escaped one
// ("%5Fsearch", which Elasticsearch would read as an index name) is
// refused. An index expression is a comma list of names, wildcards
// ("ord*", "*", _all), exclusions ("-old", counted as reached: the
// profile does not subtract), remote indices ("cluster:orders") and
// date-math names ("<orders-{now/d}>", read as "orders-*"); it reaches a
// protected collection when any of its names could match the collection's
// pattern. A request that reaches a protected collection gets the
// collection's rules; a write must then name one index. Empty segments,
// "." and "..", and invalid escapes are refused on every path. Methods
// are compared exactly; PATCH and unknown methods are refused on a
// protected index. The source query parameter (Elasticsearch reads a
// request body from it) and q (a Lucene query string) are refused on a
// protected index; pipeline is refused on every write unless allowed.
//
// # Documents
//
// Document bodies (index, create, an update's doc and upsert, _bulk
// source lines) are read as Elasticsearch reads them: a member name with
// dots is a path ({"card.number": x} and {"card": {"number": x}} are the
// same field), arrays are transparent, and a rule field written with an
// escaped dot ("meta\.tag") is the path meta.tag. Each selected value is
// sealed whole with its field's key and mode, exactly as the streaming
// encryptor of the other profiles seals it. A source must be one JSON
// object (two values on a line, an array, duplicate member names are
// refused, as Elasticsearch refuses them after they reached it). Fields
// named after metadata fields (_id, _routing, ...) are refused when the
// profile is built: ids and routing travel in URLs.
//
// # _bulk and _msearch
//
// Newline-delimited bodies (application/x-ndjson, or Elasticsearch 8's
// application/vnd.elasticsearch+x-ndjson) use the BodyNDJSON rule: the
// proxy hands each line to the profile as it is read and forwards nothing
// until every line was accepted, so one refused line refuses the request.
// _bulk: lines end at "\n" (a "\r" before it is kept); blank lines where
// an action is expected are skipped, as Elasticsearch skips them; an
// action line is one object with one member (index, create, update,
// delete) and only the parameters Elasticsearch knows; index, create and
// update take the next line as their source, whatever it looks like;
// each action's _index (or the path's) decides whether the source is
// sealed; the body must end with a newline. Update scripts and pipeline
// parameters are refused unless allowed. _msearch: a header (an object,
// or a blank line) and a search body per search; the header's index (or
// the path's) decides how the body is transformed.
//
// # Queries
//
// Search bodies (_search, _count, _explain, _validate/query, _field_caps
// index_filter, _async_search, _terms_enum, _knn_search, each _msearch
// body) are read as the query DSL parsers read them: a query is an
// object with exactly one member, its type; compound queries (bool,
// constant_score, dis_max, boosting, function_score, nested, has_child,
// has_parent, pinned) are walked at any depth. term, terms (values),
// match and match_phrase on a searchable field have their values sealed
// deterministically; match and match_phrase become term queries, because
// an analysed token would match every token of its key. A path inside a
// searchable field ("email.keyword", a multi-field) holds the same value
// and is sealed the same way. ids, exists and terms lookups pass. Any
// other query on an encrypted field (range, prefix, wildcard, regexp,
// fuzzy, match_phrase_prefix, span, interval, geo, vector), any
// comparison on a random field, query_string, and simple_query_string,
// multi_match, combined_fields and more_like_this unless their fields
// name only unprotected fields, are refused with 400 unsupported_query
// naming the field and the clause; so are sort, aggregations, highlight,
// collapse, suggest and knn on an encrypted field (field name patterns
// included), scripts anywhere in a search, runtime mappings, wrapper,
// percolate and search templates. Unknown query types, aggregation types
// and body members are refused. Protected searchable fields should be
// mapped as keyword: a token has no words.
//
// # Server-wide operations
//
// Refused unless the rule file's allow: names them: reindex (_reindex at
// a protected source or destination, _clone/_split/_shrink into one from
// elsewhere), update_by_query, delete_by_query, pipelines (the pipeline
// parameter and action member anywhere, default and final pipelines in
// settings, /_ingest writes and _simulate), scripts (update scripts on
// protected indices, /_scripts writes, painless _execute), aliases,
// templates, snapshots (_restore, _mount, /_dangling), jobs (transforms,
// rollups, CCR, watcher, enrich, ML, OpenSearch replication and
// alerting) and sql (_sql, _query, OpenSearch SQL and PPL). Cluster,
// node, task, security and information endpoints pass; any other server
// endpoint is refused.
//
// # Masked values written back
//
// With a key shown masked, a write that carries a value the mask could
// show (index, an update's doc, _bulk index and update sources) reads the
// stored document with the app's credentials (GET, or one _mget for a
// _bulk body) and keeps the stored token where the value equals the mask
// of it. With if_seq_no and if_primary_term the stored revision must be
// the one named, else 409 masked_value_write; without them the current
// document is compared. Creates and automatic ids hold new data.
//
// # Tokens in requests and responses
//
// A request may carry a token only where the field's rule would have put
// it (fieldcrypt.CheckToken under the request's token policy): a token of
// a key this sidecar opens or masks, in a document member, a compared
// value or a query parameter that no rule protects, or in another field,
// is refused with 403 token_not_allowed. Answers are opened by bound
// decryptors only in the protected fields of the documents they carry
// (_source of a GET, an update's get, _mget docs, search hits and their
// fields sections, _msearch responses, _bulk update gets), with dotted
// member spellings; write results, counts and everything outside the
// protected indices open nothing, so a token copied into another field,
// document or index stays closed.
//
// # The store sweep
//
// [Profile.Sweeper] walks an index with a point in time and search_after
// on _shard_doc (OpenSearch's point-in-time endpoint as a fallback),
// resumable from a cursor that holds the point in time and the last sort
// values (an expired one starts the walk again), and writes with one
// _bulk of index actions carrying if_seq_no, if_primary_term and routing:
// a document changed meanwhile conflicts. Compact expunges the replaced
// versions from the segments (_forcemerge?only_expunge_deletes=true).
//
// # Limits
//
// The profile cannot see aliases, default pipelines or templates that
// were configured before the sidecar was put in front of the cluster:
// name every alias as a collection, and check index settings. Equality on
// numbers matches only the same JSON type and spelling (5 and "5" differ
// once sealed). A mask written back in a member with a dotted name
// ({"card.number": "***1111"}) is taken as new data. A field written as
// a single name is sealed under any dotted spelling ({"patient.ssn": x}),
// but answers open it only where the member is named ssn itself: the
// application sees such a value as a token.
//
// [Profile.Coverage] lists the endpoint table for `rules report` and
// docs/RULES.md.
package elasticsearch
