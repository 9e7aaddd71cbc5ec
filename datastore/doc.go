// Package datastore is what sidecrypt knows about the datastores it
// protects, independent of HTTP plumbing and of rule file syntax.
//
// A version 2 rule file (docs/RULES.md) names collections and the fields
// of their documents; it compiles into a [Schema]. A [Profile], one per
// datastore API (the sub-packages couchdb, elasticsearch, rest), knows
// where in that API documents, parts of documents and compared values
// travel, in requests and in responses. For each request the proxy asks
// the profile to [Profile.Classify] it and gets an [Operation]: refuse it,
// or which part of it to encrypt and how. Protection therefore follows the
// data wherever the API carries it, not the routes a rule author foresaw.
//
// # Deny by default
//
// Inside a protected collection, a request that the profile does not
// recognise as safe is refused with 403 unprotected_operation, and nothing
// is forwarded: unknown endpoints, code that runs inside the datastore
// (update handlers, rewrites, design documents unless allowed),
// attachments unless allowed. Server-wide operations that can move data
// into a protected collection (replication, configuration) are refused
// unless the file allows them. Profiles read requests as the datastore
// reads them: the escaped path split at '/', each segment unescaped once,
// so that "%2F" inside a document id belongs to the id.
//
// # Field paths
//
// A field written as one name ("ssn") protects a member of that name at
// any depth of a document; a dotted path ("card.number") protects exactly
// that path. Arrays are transparent in both: "accounts.iban" protects the
// iban of each element when accounts is a list. [Collection.FieldAt]
// answers, for a path that a query names, which field protects it, with
// the same meaning as the selectors that [Collection.DocumentRules]
// compiles for the streaming encryptor.
package datastore
