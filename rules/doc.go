// Package rules reads the rule file that says which fields sidecrypt
// protects, checks it, compiles it into a Plan that the proxy consults on
// every request, compares two versions of it, and keeps it in force while
// it is edited (hot reload). docs/RULES.md is the reference for the file
// itself, written for the compliance people who write it.
//
// # The file
//
// A YAML document, version 1:
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
// It is read through gopkg.in/yaml.v3 nodes so that every problem can be
// reported as FILE:LINE:COL with a hint (Diagnostic). All problems are
// reported at once. Errors refuse the file; warnings (a route that can
// match nothing or is shadowed by an earlier one, a key no rule uses,
// overlapping selectors with different keys, ...) do not. YAML anchors,
// aliases and merge keys are refused, so that every route can be read and
// reviewed on its own.
//
// # Matching
//
// Plan.Match picks the first route, in file order, whose methods, path
// patterns and hosts fit the request. It does not allocate for clean
// paths. Paths are cleaned before matching ("//db/./x/" is "/db/x") so no
// spelling of a protected resource escapes its route; methods are
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
// # Reviewing changes
//
// Compare describes what changes in protection between two plans: routes
// added or removed, fields newly protected or no longer protected, key and
// mode changes (existing data keeps its old tokens), where routes apply,
// and the decrypt policy. Changes that weaken protection or reveal more
// are flagged for the reviewer.
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
