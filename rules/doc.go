// Package rules reads the rule file that says which fields sidecrypt
// protects, checks it, compiles it into a Plan that the proxy consults on
// every request, compares two versions of it, and keeps it in force while
// it is edited (hot reload). docs/RULES.md is the reference for the file
// itself, written for the compliance people who write it.
//
// # The file
//
// A YAML document. Version 2 names data: the datastore whose API the
// sidecar reads, its collections and the fields of their documents.
//
//	version: 2
//	datastore: couchdb
//	collections:
//	  - name: clinic              # a database, or a pattern: "tenant-*"
//	    fields:
//	      ssn:         {key: pii}                   # at any depth
//	      card.number: {key: card}                  # exactly this path
//	      email:       {key: contact, searchable: true}
//	    attachments: refuse       # or allow
//	    views: {patients/by_email: {key: email}}
//	allow: [replicate]            # server-wide operations the profile refuses
//	decrypt:
//	  keys: [pii, contact]
//	  mask: {card: last4}
//
// It compiles into a datastore.Schema (Plan.Schema) and the datastore's
// profile (Plan.Profile, built by datastore.New), which the proxy asks to
// classify every request: the profile applies the fields wherever its API
// carries documents or compared values, and refuses what it does not know
// to be safe. Profiles register themselves; this package imports the ones
// the build carries (profiles.go).
//
// Version 1 names routes and JSONPath selectors, and loads unchanged:
//
//	version: 1
//	routes:
//	  - name: patients-write
//	    match: {methods: [POST, PUT], paths: ["/clinic/*"]}
//	    encrypt:
//	      - fields: ["$.ssn", "$..diagnosis"]
//	        key: pii
//	        mode: random          # or deterministic; default random
//	        nulls: leave          # or encrypt; default leave
//	    query:
//	      - params: [email]
//	        key: contact
//	        mode: deterministic
//	decrypt:
//	  keys: [pii]                 # opened in responses
//	  mask: {card: last4}         # opened, then masked: full, last4, hash or a literal
//
// Either is read through gopkg.in/yaml.v3 nodes so that every problem can
// be reported as FILE:LINE:COL with a hint (Diagnostic). All problems are
// reported at once. Errors refuse the file; warnings (a route or
// collection that is shadowed, a field that lies inside another sealed
// whole, a view keyed on a field that cannot be compared, a key no rule
// uses, ...) do not. YAML anchors, aliases and merge keys are refused, so
// that every part can be read and reviewed on its own.
//
// # Matching (version 1)
//
// Plan.Match picks the first route, in file order, whose methods, path
// patterns and hosts fit the request. It does not allocate for clean
// paths. The proxy hands it the path as the datastore reads it: split at
// '/' before unescaping, a "%2F" inside a segment kept in that segment
// ("/clinic/a%2Fb" is one document, matched by "/clinic/*"), "." and ".."
// segments refused before matching. Paths are cleaned too ("//db/x/" is
// "/db/x") so no spelling of a protected resource escapes its route; methods are
// compared without regard to case, and GET also covers HEAD. Content type
// does not select routes: Route.AcceptsContentType tells the proxy whether
// a body may go through the route's body rules, and the proxy refuses the
// request (415) when it may not, so a JSON body labelled text/plain cannot
// slip past the encryption.
//
// # Decrypting and masking
//
// Plan.Decryptor applies the decrypt section to responses: tokens of keys
// in decrypt.keys are opened, those in decrypt.mask are opened and masked,
// all others stay tokens (least privilege). The masks are: full or a
// literal text (replaces the value), last4 ("***" and the last four
// characters of a string or number of at least eight characters, for PCI
// DSS display), and hash ("hmac-sha256:" and the base64url HMAC-SHA256 of
// the value, keyed by the mask subkey of version 1 of the token's key, so
// that it is stable across rotations and can be joined on, and never
// reversible). When version 1 cannot be opened, a hash mask shows the full
// mask instead and Stats.HashMaskFallbacks counts it.
//
// # Reviewing, reporting, converting
//
// Compare describes what changes in protection between two plans, of
// either version: collections, routes and fields added or removed, key
// and mode changes (existing data keeps its old tokens), attachments,
// design documents and server-wide operations allowed, hosts, views and
// the decrypt policy. Where a rule is removed it decides, with the
// selectors' automata (coveredBy), whether the remaining rules still
// protect every value it protected, and says so. Changes that weaken
// protection or reveal more are flagged for the reviewer (Diff.Flagged).
//
// Plan.WriteReport writes the data-protection inventory (Markdown or a
// self-contained HTML page). Convert writes the version 2 equivalent of a
// version 1 plan and lists what it cannot carry.
//
// # Hot reload
//
// A FileSource loads the file at start (refusing to start on an invalid
// file), then reloads it when it changes (Run polls it) and when asked
// (Reload, on SIGHUP). Each reload is parsed and validated in full and
// swapped in with one atomic store; an invalid file is refused, the last
// good plan stays, and the refusal is logged, counted (Status, Hooks) and
// audited. Every successful change writes an audit event "rules.reload"
// with the old and new hash and a one-line diff summary; a change the
// audit log refuses is not put in force.
//
// The proxy takes Source.Current once per request and uses that plan for
// the whole request, so no request is handled half under old and half
// under new rules.
package rules
