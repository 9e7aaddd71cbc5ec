// Package rest is sidecrypt's datastore profile for JSON REST stores whose
// collections live under path prefixes, with json-server 0.17 as the
// reference: GET and POST /{prefix}, GET, PUT, PATCH and DELETE
// /{prefix}/{id}, filters as query parameters. A version 2 rule file
// selects it with "datastore: rest"; a collection is a path prefix
// ("/customers", "/api/v1/patients", "/tenants/*/records"), compared
// without regard to case, as express routes are.
//
// # What is covered
//
//	endpoint         request                                     treatment
//	rest.collection  POST /{prefix}; PUT|PATCH /{prefix}         document encrypted (a singular resource
//	                                                             for PUT and PATCH)
//	rest.item        PUT|PATCH /{prefix}/{id}                    document encrypted; masked values written
//	                                                             back keep their stored tokens
//	                 GET|HEAD|DELETE /{prefix}[/{id}]            passes; query parameters below
//	rest.nested      GET /{prefix}/{id}/{sub} (no query)         passes
//	                 writes to nested routes, under a protected  refused: json-server stores the body in the
//	                 prefix or ending in one; nested reads with  nested collection, which the profile cannot
//	                 query parameters                            tell
//	rest.item        POST /{prefix}/{id}, PATCH/PUT/POST on      refused (deny by default)
//	                 deeper paths, unknown methods, OPTIONS or
//	                 GET/DELETE with a body
//	rest.path        . or .. segments, bad escapes; // or %2F    refused (400): read differently by stores
//	                 where they decide whether a prefix is       and proxies
//	                 reached
//
// Query parameters on any request under a protected prefix are read as
// json-server (express's qs) reads them: split at '&', '+' is a space, a
// name is a dotted field path with an optional operator suffix.
// field=value and field_ne=value on a searchable field are sealed
// deterministically, exactly as the document's field was sealed; every
// occurrence of a repeated parameter is sealed (json-server ORs them).
// _gte, _lte and _like on an encrypted field, any filter on a random field
// or on a path inside an encrypted value, a filter written with brackets
// (email[]=x, which qs reads as an array or object), _sort on an
// encrypted field, and q are refused with 400. q is refused rather than
// passed: json-server would compare the plaintext term with every field,
// so it finds nothing in encrypted fields and sends the term (which may
// well be a protected value) in plaintext. Paging, ordering and embedding
// parameters pass. Responses, objects or arrays, are decrypted by the
// proxy.
//
// Documents are encrypted by the streaming encryptor with the
// collection's field rules; a dotted path ("card.number") also protects
// a member literally named "card.number", which json-server's filters
// (lodash get) read when a record has one.
//
// # Tokens in requests and responses
//
// A token in a request is kept only as its own field's
// (fieldcrypt.CheckToken); one of a key this sidecar opens or masks in a
// query parameter no rule protects is refused (token_not_allowed), as
// the document encryptor refuses it elsewhere in a body. Answers are
// opened by bound decryptors only in the protected fields of the records
// they carry (a record or an array of them under a protected prefix, a
// nested read's collection, json-server's GET /db by collection name);
// everything else opens nothing.
//
// # The store sweep
//
// [Profile.Sweeper] walks a prefix's listing by id
// (?_sort=id&_order=asc&_limit=N&id_gte=LAST), resumable from the last id.
// json-server has no conditional writes, so the Sweeper declares no
// concurrency control and the sweep engine writes only when the operator
// accepts that; each write still reads the record again and PUTs only
// over the version the walk read. A pattern prefix cannot be listed and
// is not swept.
//
// # Limits
//
// A filter value is a string; it matches only fields stored as strings
// once sealed (json-server compares "5" with 5, ciphertext cannot).
// json-server has no conditional writes, so a masked value written back
// is compared with the record stored when the write arrives. Rewrites
// configured in the store (json-server --routes) are not seen: name the
// paths the application uses.
package rest
