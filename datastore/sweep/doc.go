// Package sweep is the store sweep: it walks a protected collection
// through its datastore profile and rewrites documents in place, so that
// what is already stored follows the keys and the rules, not only what is
// written from now on (issue 15; docs/KEYS.md, "Rotating the data, not
// only the key" and "Adopting sidecrypt on a store that already holds
// plaintext").
//
// # What a sweep does to a document
//
//   - A token of a version that is not its key's primary (or of the
//     versions named with --from) is opened with its version and sealed
//     again under the primary: same key, same mode, same place. Never
//     under another key: a token pasted into another key's field must
//     not become readable to whoever may open that key.
//   - A plaintext value in a protected field is sealed, by the same
//     streaming encryptor and the same field rules
//     (datastore.Collection.DocumentRules) that the proxy applies to a
//     document written through it; valid tokens are left alone.
//   - A token in a field whose protection was removed (a field the
//     rules protected at the last sweep and protect no more, or one
//     named with --removed-fields) is opened and written back in
//     plaintext, only with --decrypt-removed and an approved request
//     (dual control, see Grant), and only when the token is of the key
//     that field had.
//   - A token that is due to change and cannot be opened (a destroyed
//     version, a compromised one without an override, a tampered token)
//     is counted and left as it is. The encryptor takes any string that
//     does not open for plaintext, so a document that holds such a token
//     in a protected field and plaintext in another is not encrypted
//     (Blocked): sealing the token again would hide it inside a new one.
//
// Documents are rewritten byte for byte except the values that change
// (datastore/internal/jsontree), which is why the engine lives under
// datastore/ rather than internal/: it shares that tree with the
// profiles. The engine knows nothing of any datastore's API; a profile
// implements datastore.Sweeper.
//
// # Concurrency, checkpoints, resumption
//
// Every write uses the datastore's optimistic concurrency (CouchDB:
// _bulk_docs with each document's _rev): a document the application
// changed since the sweep read it is not written; the sweep reads it
// again, applies its change to the new version and writes that, up to
// DefaultAttempts times, then counts it as failed and leaves it for the
// next sweep. The application's update is never lost, and a rotation
// never puts plaintext in the store: a value goes from one token to
// another in one write.
//
// After every page the walk's cursor and the counts so far are written to
// the keystore as a sealed note (keystore.Manager.PutNote), with
// compare-and-swap, so a sweep killed at any point resumes from its last
// page: documents of the page in flight that were written already are
// found under their new version (or not at all: they moved to the end of
// the changes feed), and none is written twice. The note is also where
// the admin API's pause reaches a running sweep (State.Desired), and
// where `keys destroy` finds the last count of values under a version
// (State.Last).
//
// Only one process sweeps a collection at a time: a run records its
// owner (host/pid) and a heartbeat, and another process refuses to start
// while the owner is alive, unless forced. A forced take-over is safe
// too: the first process's next checkpoint fails its compare-and-swap
// and it stops (ErrTakenOver).
//
// # Dry runs
//
// A dry run reads every document and counts, without opening anything:
// tokens per key version (from their headers), plaintext values per
// protected field, and what a sweep would change. That is the inventory a
// compliance team asks for, and the check after a sweep that nothing is
// left under a version about to be destroyed.
package sweep
