package datastore

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// The store sweep (issue 15; the engine is internal/sweep) walks a
// protected collection and rewrites its documents in place: tokens of an
// old key version sealed again under the primary, plaintext that predates
// sidecrypt encrypted, and tokens of fields whose protection was removed
// opened (with approval). The engine knows tokens, rules, checkpoints and
// rates, and nothing about any datastore's API; a profile knows its API
// and nothing about tokens. This file is the contract between the two.
//
// A profile whose datastore can be swept implements SweepProfile. The
// engine asks it for a Sweeper bound to one datastore, then, per concrete
// collection: Count (for progress), Scan pages from a cursor it stores
// durably after each page, Write each page's changed documents with
// optimistic concurrency, and Get a document again when its write lost to
// a concurrent update, to apply its change to the newer version.

// SweepProfile is implemented by profiles whose datastore the store sweep
// can walk and rewrite.
type SweepProfile interface {
	Profile
	// Sweeper returns a Sweeper that reaches the datastore through t. It
	// does no I/O.
	Sweeper(t SweepTarget) (Sweeper, error)
}

// SweepTarget is how a Sweeper reaches the datastore: the same upstream
// and credentials as the proxy (SIDECRYPT_UPSTREAM), but directly, not
// through the rules.
type SweepTarget struct {
	// Base is the datastore's base URL; its path is the prefix every
	// request path is appended to. User information in it is sent as
	// basic authentication.
	Base *url.URL
	// Client sends every request; nil means a client with no proxy and
	// the default transport settings. Its timeout bounds each request.
	Client *http.Client
	// Header is added to every request (Authorization, for example).
	Header http.Header
}

// Sweeper walks and rewrites the documents of one datastore's
// collections. Every method is safe for concurrent use, never includes a
// document's content (or a value from it) in an error or a log line, and
// honours ctx.
//
// Implementations must guarantee what each method's comment says; the
// engine's correctness (no lost update, nothing skipped after a crash)
// rests on it. A datastore that cannot give a guarantee says so in
// [SweeperInfo], and the engine refuses what it would make unsafe.
type Sweeper interface {
	// Info describes what the Sweeper guarantees.
	Info() SweeperInfo

	// Collections lists the concrete collections (databases, indices,
	// path prefixes) whose names match pattern, as Glob matches (a
	// Collection.Name such as "clinic" or "tenant-*"), sorted. System
	// collections of the datastore (CouchDB's _users, _replicator) are
	// never listed.
	Collections(ctx context.Context, pattern string) ([]string, error)

	// Count returns about how many documents collection holds, for
	// progress and ETA only; -1 when the datastore cannot tell cheaply.
	Count(ctx context.Context, collection string) (int64, error)

	// Scan returns the next page of at most limit documents of
	// collection, starting after cursor ("" starts a new walk), and the
	// cursor that continues after them. It must guarantee:
	//
	//   - Completeness: a walk continued page by page until Done returns
	//     every document that existed when the walk started (cursor "")
	//     and has not changed since, at least once. A document created,
	//     changed or deleted after the start may be returned (in its
	//     current version) or not: that change was written after the
	//     sweep began, through the sidecar, under the rules and keys in
	//     force then (the sweep's own writes are such changes, which is
	//     why a walk need not chase them). A document with several
	//     current versions (CouchDB conflicts) is returned once per
	//     current version, each with its own Version.
	//   - Resumability: the cursor is a printable string of at most
	//     MaxCursorLen bytes that the engine stores durably; handed to
	//     Scan again, in the same process or another one after a crash,
	//     the walk goes on from there with the same completeness
	//     guarantee. A document may be returned again after a resume;
	//     none is skipped.
	//   - Policy: documents that the collection's rules keep out of the
	//     sidecar's hands (CouchDB design documents unless the file
	//     allows them, local documents, deletions) are not returned;
	//     they are counted in ScanPage.Skipped by reason.
	//   - Bodies are the documents as stored, as JSON objects in UTF-8
	//     (attachments as stubs, not inline), metadata members included.
	//
	// A page may hold fewer than limit documents, even none, without the
	// walk being done; Done says when it is.
	Scan(ctx context.Context, collection, cursor string, limit int) (*ScanPage, error)

	// Write stores each document's Body over the version it was read
	// at, with the datastore's optimistic concurrency: a document is
	// written only if its stored version is still doc.Version, and
	// otherwise not at all (WriteResult.Conflict). Documents are written
	// independently of each other (no batch atomicity); the results are
	// in the order of docs, one per document. The body is written as
	// given, except for metadata members that the datastore requires to
	// carry the version (CouchDB's _rev), which Write sets. The returned
	// error is for a failure of the whole call; when it is not nil, any
	// of the documents may or may not have been written, and the engine
	// reads them again before it retries.
	Write(ctx context.Context, collection string, docs []StoredDoc) ([]WriteResult, error)

	// Get reads the current version of one document (the winning one,
	// where the datastore keeps several). It returns ErrNoDocument when
	// the document no longer exists (deleted meanwhile).
	Get(ctx context.Context, collection, id string) (*StoredDoc, error)
}

// Compactor is implemented by Sweepers whose datastore keeps the bodies
// of earlier versions of a document (CouchDB's revision tree keeps them
// until the database is compacted): after a sweep, those still hold the
// values as they were, plaintext included, for anyone who asks for an old
// revision. Compact asks the datastore to drop them; it returns once the
// datastore has accepted the request (the work may finish later).
type Compactor interface {
	Compact(ctx context.Context, collection string) error
}

// MaxCursorLen bounds a Scan cursor: it is stored in the keystore next to
// the sweep's counts.
const MaxCursorLen = 4096

// SweeperInfo says what a Sweeper guarantees.
type SweeperInfo struct {
	// Concurrency names the optimistic concurrency Write uses ("_rev",
	// "if_seq_no/if_primary_term", "If-Match"); empty when the datastore
	// has none. Without it a write can overwrite a concurrent update by
	// the application: the engine refuses to write then, unless the
	// operator accepts that explicitly.
	Concurrency string
	// Walk names how Scan walks the collection ("_changes feed",
	// "point in time + search_after", "listing"), for status and logs.
	Walk string
}

// StoredDoc is one document as the datastore holds it.
type StoredDoc struct {
	// ID is the document's id within its collection.
	ID string
	// Version is the datastore's version of the document, which Write
	// hands back for its optimistic concurrency (CouchDB: the _rev).
	// Opaque to the engine.
	Version string
	// Body is the document's JSON text.
	Body []byte
}

// ScanPage is one page of a walk.
type ScanPage struct {
	Docs []StoredDoc
	// Cursor continues the walk after this page; store it only once
	// every document of the page is done.
	Cursor string
	// Done: the walk has returned everything it must (see Scan).
	Done bool
	// Skipped counts the documents of this page left out by policy, by
	// reason ("design", "deleted", ...). Reasons are fixed words, never
	// ids.
	Skipped map[string]int
}

// WriteResult is the outcome of writing one document.
type WriteResult struct {
	ID string
	// Version is the document's new version when it was written.
	Version string
	// Conflict: the stored version was no longer the one read; nothing
	// was written.
	Conflict bool
	// Err is any other per-document failure (refused by a validation
	// function, for example); nothing was written. It names no content.
	Err error
}

// ErrNoDocument is returned by Sweeper.Get for a document that no longer
// exists.
var ErrNoDocument = errors.New("datastore: no such document")
