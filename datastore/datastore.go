package datastore

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Schema is what a version 2 rule file protects, independent of any API:
// which collections of the datastore hold protected fields, which fields,
// under which keys, and which server-wide operations the operator allows.
// rules compiles a file into a Schema; a Profile applies it to requests.
// A Schema is immutable once built.
type Schema struct {
	// Datastore names the profile: "couchdb", "elasticsearch", "rest".
	Datastore string
	// Collections in file order; the first whose pattern matches a
	// collection name applies.
	Collections []*Collection
	// Allow lists the server-wide operations that the profile refuses by
	// default and the file allows, by the profile's names for them
	// ("replicate", "config", ...). Sorted, no duplicates.
	Allow []string
	// Hosts are the names (host or host:port) under which forward mode
	// reaches the datastore. Reverse mode ignores them: every request goes
	// to the one upstream.
	Hosts []string
	// Reveal is the file's decrypt section as a policy: which keys this
	// sidecar opens, masks or leaves in responses. Profiles build their
	// bound response decryptors with it (Operation.Decryptor). nil
	// leaves every token closed.
	Reveal fieldcrypt.Policy
}

// Collection is one protected collection: a CouchDB database, an
// Elasticsearch index (or index pattern), a REST path prefix.
type Collection struct {
	// Name is the collection's name or pattern as written: "clinic",
	// "tenant-*". '*' stands for any run of characters (also none).
	Name string
	// Fields in file order.
	Fields []*Field
	// Attachments says whether documents of this collection may carry
	// attachments (which the sidecar cannot see into).
	Attachments Policy
	// DesignDocs says whether design documents (which carry code that
	// runs inside the datastore) may be written.
	DesignDocs Policy
	// Views declares, for view (or named query) lookups, which document
	// field each position of a view's key holds, so that compared values
	// can be sealed like the field. Keyed by "ddoc/view".
	Views map[string]ViewKey
	// Line is where the collection is written in the rule file.
	Line int
}

// Policy is an allow-or-refuse decision of the rule file.
type Policy uint8

const (
	// PolicyRefuse is the default: the operation is refused with 403
	// unprotected_operation and nothing is forwarded.
	PolicyRefuse Policy = iota
	// PolicyAllow lets the operation through. For attachments that means
	// opaque and unprotected: a visible decision in the rule file.
	PolicyAllow
)

func (p Policy) String() string {
	if p == PolicyAllow {
		return "allow"
	}
	return "refuse"
}

// Field is one protected field of a collection's documents.
type Field struct {
	// Name as written: "ssn", "card.number".
	Name string
	// Path is Name split at unescaped dots ("a\.b" is one member "a.b").
	Path []string
	// AnyDepth: the field was written as a single name, and protects a
	// member of that name at any depth of the document. A dotted path
	// protects exactly that path from the document's root. In both cases
	// arrays are transparent: "accounts.iban" also protects the iban of
	// every element of a list of accounts.
	AnyDepth bool
	// Key is the data key's name.
	Key string
	// Mode is deterministic for searchable fields, random otherwise.
	Mode fieldcrypt.Mode
	// Searchable: equality lookups on the field keep working (Mode is
	// deterministic).
	Searchable bool
	// EncryptNull: a JSON null is encrypted too (by default it is left,
	// so that "field is null" queries keep working).
	EncryptNull bool
	// Pad pads each value before sealing (fieldcrypt.Padding), so that
	// tokens show less of the value's length. Compared values of a
	// searchable field must be sealed with the same padding, or lookups
	// miss.
	Pad fieldcrypt.Padding
	// Tags and Owner are for the compliance inventory; they change
	// nothing at run time.
	Tags  []string
	Owner string
	// Line is where the field is written in the rule file.
	Line int
}

// ViewKey describes a view's key: the field each position holds. A field
// name that is not protected means "this position holds no protected
// value" and passes in plaintext.
type ViewKey struct {
	// Fields are the field names, one per key position.
	Fields []string
	// Array: the key is an array (a compound key), Fields[i] naming
	// element i; otherwise the key is the single field Fields[0].
	Array bool
}

// Match returns the first collection whose pattern matches name (a
// collection name as the datastore reads it: unescaped), or nil.
func (s *Schema) Match(name string) *Collection {
	if s == nil {
		return nil
	}
	for _, c := range s.Collections {
		if Glob(c.Name, name) {
			return c
		}
	}
	return nil
}

// Allows reports whether the file allows the named server-wide operation.
func (s *Schema) Allows(op string) bool {
	if s == nil {
		return false
	}
	return slices.Contains(s.Allow, op)
}

// Glob matches name against a pattern in which '*' stands for any run of
// characters, including none and including '/'. Everything else is
// compared byte for byte (datastores compare collection names exactly).
// It runs in O(len(pattern)·len(name)) at worst: on a mismatch it only
// ever backs up to the last '*' seen, never further, so patterns with many
// stars cannot make a request path expensive.
func Glob(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// FieldAt returns the field that protects the value at path (member names
// from the document's root; array positions left out, since arrays are
// transparent). inside is true when an ancestor of path is protected: the
// value at path is then part of a sealed value and cannot be compared or
// projected on its own. An outer protected value always wins over an inner
// one; at one place, a dotted path wins over a single name.
func (c *Collection) FieldAt(path []string) (f *Field, inside bool) {
	if c == nil {
		return nil, false
	}
	for n := 1; n <= len(path); n++ {
		if g := c.fieldExactly(path[:n]); g != nil {
			return g, n < len(path)
		}
	}
	return nil, false
}

// fieldExactly returns the field rule for exactly this path, ignoring
// ancestors.
func (c *Collection) fieldExactly(path []string) *Field {
	for _, f := range c.Fields {
		if !f.AnyDepth && equalPath(f.Path, path) {
			return f
		}
	}
	last := path[len(path)-1]
	for _, f := range c.Fields {
		if f.AnyDepth && f.Path[0] == last {
			return f
		}
	}
	return nil
}

func equalPath(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Keys returns the key names the collection seals with, sorted, without
// duplicates.
func (c *Collection) Keys() []string {
	var keys []string
	for _, f := range c.Fields {
		keys = appendUnique(keys, f.Key)
	}
	slices.Sort(keys)
	return keys
}

// DocumentRules compiles the collection's fields into field rules for
// documents found at prefix (no steps: the body is the document; for
// CouchDB's _bulk_docs, $.docs[*]). Dotted paths come before single names,
// so that at one place the dotted path wins (the transformer applies the
// lowest-numbered rule), and every member step is ThroughArrays.
func (c *Collection) DocumentRules(prefix ...fieldcrypt.Step) ([]fieldcrypt.FieldRule, error) {
	var out []fieldcrypt.FieldRule
	add := func(f *Field) error {
		steps := append([]fieldcrypt.Step(nil), prefix...)
		if f.AnyDepth {
			steps = append(steps, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: f.Path[0], Descendant: true})
		} else {
			for _, name := range f.Path {
				steps = append(steps, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: name, ThroughArrays: true})
			}
		}
		sel, err := fieldcrypt.NewSelector(steps)
		if err != nil {
			return fmt.Errorf("datastore: field %q: %w", f.Name, err)
		}
		out = append(out, fieldcrypt.FieldRule{Selector: sel, Key: f.Key, Mode: f.Mode, EncryptNull: f.EncryptNull, Pad: f.Pad})
		return nil
	}
	for _, f := range c.Fields {
		if !f.AnyDepth {
			if err := add(f); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range c.Fields {
		if f.AnyDepth {
			if err := add(f); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Profile knows one datastore API: for every request, whether it touches
// a protected collection, what in it travels as a document or as a
// compared value, and what the proxy must therefore do. Deny by default:
// inside a protected collection, whatever the profile does not recognise
// as safe is refused.
type Profile interface {
	// Name is the datastore's name in rule files.
	Name() string
	// Classify decides what happens to one request. It reads only the
	// request line and headers (never the body), does no I/O, and is
	// safe for concurrent use. It never returns nil.
	Classify(r *Request) *Operation
}

// Request is what a Profile looks at.
type Request struct {
	// Method as sent; profiles compare it exactly (methods are
	// case-sensitive, RFC 9110 section 9.1).
	Method string
	// Path is the escaped path as it will be forwarded, relative to the
	// upstream's base path: "/clinic/a%2Fb". Profiles split it at '/' and
	// unescape each segment, as the datastore does.
	Path string
	// RawQuery is the query string as it will be forwarded, without '?'.
	RawQuery string
	// Header is the request's header. Read only.
	Header http.Header
	// HasBody: the request carries a body (a non-zero Content-Length, or
	// chunked).
	HasBody bool
}

// Operation is a Profile's decision about one request.
type Operation struct {
	// Collection is the protected collection the request reaches, nil if
	// none.
	Collection *Collection
	// Endpoint names the kind of request for logs, metrics and audit
	// ("couchdb.doc", "couchdb.bulk_docs", "couchdb.find", ...). Never
	// holds a value from the request.
	Endpoint string
	// Refusal, when set, is the answer: nothing is forwarded.
	Refusal *Refusal
	// Query, when set, rewrites the raw query string before it is
	// forwarded (sealing compared values). It returns a *Refusal or a key
	// error when it cannot; the request is then refused.
	Query func(ctx context.Context, raw string, keys fieldcrypt.Keyring) (string, error)
	// Body says what may travel in the request body.
	Body BodyRule
	// Encryptor rewrites a BodyEncrypt body (documents) in one streaming
	// pass; its Check rules refuse what must not pass.
	Encryptor *fieldcrypt.Encryptor
	// Transform rewrites a BodyTransform body (query documents such as a
	// Mango selector), held whole in memory. It returns a *Refusal, a
	// fieldcrypt error (syntax, depth, UTF-8) or a key error.
	Transform func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error)
	// Keys are the keys the operation may seal with; the proxy resolves
	// them before it reads the body, so that a key outage is refused
	// before the client sends it.
	Keys []string
	// Preserve, when set, runs on a document write before Encryptor, if
	// this sidecar shows some key masked: a masked value that the app
	// writes back unchanged (a read-modify-write of a record it was shown
	// masked) is replaced by the stored token it stands for, instead of
	// being encrypted as if "***1111" were the new card number. See
	// PreserveMasked. It returns the body to encrypt, or a *Refusal (409
	// masked_value_write) when the stored value cannot be established.
	Preserve func(ctx context.Context, body []byte, env *WriteEnv) ([]byte, error)
	// Lines starts the line transformer of a BodyNDJSON body (ndjson.go).
	Lines func(ctx context.Context, env *LinesEnv) LineTransformer
	// Check, when set, reads a BodyJSON or BodyEncrypt body (decoded,
	// whole) before anything else is done with it and changes nothing:
	// it checks what the profile knows of the body beyond the fields
	// Encryptor seals (its shape: which members, of which types), and
	// returns a *Refusal, or an error wrapping a fieldcrypt sentinel
	// (ErrSyntax, ErrDuplicateKey, ...), to refuse the request. A
	// BodyJSON body has been validated as one JSON document before Check
	// runs; a BodyEncrypt body has not (Encryptor validates it after),
	// so Check must read malformed input safely. Bodies of megabytes
	// pass here: keep it to one cheap pass.
	Check func(body []byte) error
	// Response says how tokens in the response are opened, and
	// Decryptor does it for ResponseBound.
	Response  ResponseRule
	Decryptor *fieldcrypt.Decryptor
}

// ResponseRule says how a response's tokens are opened.
type ResponseRule uint8

const (
	// ResponseAnywhere: the rule file's decryptor opens tokens wherever
	// they appear, as version 1 does. For profiles that do not (yet)
	// know their responses' shapes.
	ResponseAnywhere ResponseRule = iota
	// ResponseBound: Operation.Decryptor opens a token only in a
	// protected field of a document the response carries, and only if
	// it is of that field's key and mode (fieldcrypt.NewBoundDecryptor).
	// A token copied anywhere else stays closed: no decryption oracle.
	ResponseBound
	// ResponseNone: nothing in the response is opened (no protected
	// document travels in it, or it comes from outside every protected
	// collection, where a token can only have been copied).
	ResponseNone
)

// ResponseDecryptor builds a bound decryptor for responses that carry the
// collection's documents at the given places (each a list of steps from
// the response's root to a document: none for a response that is one
// document), plus extra places that are not documents (a view's key
// positions). reveal is Schema.Reveal.
func (c *Collection) ResponseDecryptor(reveal fieldcrypt.Policy, docs [][]fieldcrypt.Step, extra []fieldcrypt.FieldRule) (*fieldcrypt.Decryptor, error) {
	var places []fieldcrypt.FieldRule
	for _, prefix := range docs {
		rules, err := c.DocumentRules(prefix...)
		if err != nil {
			return nil, err
		}
		places = append(places, rules...)
	}
	places = append(places, extra...)
	return fieldcrypt.NewBoundDecryptor(reveal, places, fieldcrypt.Limits{})
}

// WriteEnv is what a Preserve hook gets from the proxy.
type WriteEnv struct {
	// Keys opens stored tokens to compute what the app was shown.
	Keys fieldcrypt.Keyring
	// Masked reports whether this sidecar shows tokens of key masked.
	Masked func(key string) bool
	// Candidate reports whether a JSON value the app sent in a field of a
	// masked key could be what the mask shows ("***1111" for last4): only
	// writes that carry such a value need the stored document.
	Candidate func(key string, jsonText []byte) bool
	// Shown returns the JSON text the app is shown for a stored token
	// (its mask), or ok false when the token cannot be opened.
	Shown func(ctx context.Context, token []byte) (shown []byte, ok bool)
	// Fetch sends a request straight to the datastore, with the app's
	// credentials, and returns the status and body (bounded in size).
	// Nothing in it passes through the rules.
	Fetch func(ctx context.Context, method, path, rawQuery string, body []byte) (status int, resp []byte, err error)
}

// CodeMaskedWrite (409): a write carries a masked value whose stored value
// cannot be established, so it can be neither kept nor taken as new data.
const CodeMaskedWrite = "masked_value_write"

// MaskedWrite builds a 409 masked_value_write refusal.
func MaskedWrite(format string, args ...any) *Refusal {
	return &Refusal{Status: http.StatusConflict, Code: CodeMaskedWrite, Message: fmt.Sprintf(format, args...)}
}

// Protected reports whether the operation reaches a protected collection
// or is refused: such requests get the strict request checks (UTF-8 only,
// no byte-order mark, no method override).
func (o *Operation) Protected() bool {
	return o.Collection != nil || o.Refusal != nil || o.Body >= BodyJSON
}

// BodyRule says what may travel in a request body.
type BodyRule uint8

const (
	// BodyPass: the request is outside every protected collection; the
	// body streams through untouched.
	BodyPass BodyRule = iota
	// BodyNone: the request must not carry a body; one is refused.
	BodyNone
	// BodyOpaque: the body is forwarded untouched and unread (an
	// attachment the file allows).
	BodyOpaque
	// BodyJSON: the body must be one JSON document (UTF-8, within the
	// depth limit); it is forwarded unchanged (ids, revisions: nothing
	// the rules protect).
	BodyJSON
	// BodyEncrypt: Encryptor rewrites the body.
	BodyEncrypt
	// BodyTransform: Transform rewrites the body.
	BodyTransform
)

// Refusal is a profile's reason to refuse a request. Message says what and
// why in words an operator understands; it names endpoints, fields and
// operators, never a value from the request.
type Refusal struct {
	Status  int
	Code    string
	Message string
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// Refusal codes that profiles use.
const (
	// CodeUnprotected (403): the request reaches a protected collection
	// (or could move data into one) in a way the profile does not know to
	// be safe.
	CodeUnprotected = "unprotected_operation"
	// CodeUnsupportedQuery (400): a comparison that cannot work on an
	// encrypted field (a range or pattern on a searchable field, anything
	// on a random one).
	CodeUnsupportedQuery = "unsupported_query"
	// CodeBadRequest (400): a request the profile cannot read the way
	// the datastore would (a malformed JSON parameter, an ambiguous path).
	CodeBadRequest = "bad_request"
)

// Refuse builds a 403 unprotected_operation refusal.
func Refuse(format string, args ...any) *Refusal {
	return &Refusal{Status: http.StatusForbidden, Code: CodeUnprotected, Message: fmt.Sprintf(format, args...)}
}

// Unsupported builds a 400 unsupported_query refusal.
func Unsupported(format string, args ...any) *Refusal {
	return &Refusal{Status: http.StatusBadRequest, Code: CodeUnsupportedQuery, Message: fmt.Sprintf(format, args...)}
}

// BadRequest builds a 400 bad_request refusal.
func BadRequest(format string, args ...any) *Refusal {
	return &Refusal{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// Constructor builds a Profile for a schema.
type Constructor func(*Schema) (Profile, error)

type registration struct {
	build      Constructor
	operations []string
}

var profiles = map[string]registration{}

// Register makes a profile available under name; profile packages call it
// from init. operations are the names of the server-wide operations the
// profile refuses unless a rule file's allow list names them (rules lint
// checks allow lists against them). It panics on a duplicate name.
func Register(name string, c Constructor, operations ...string) {
	if _, dup := profiles[name]; dup {
		panic("datastore: profile " + name + " registered twice")
	}
	profiles[name] = registration{build: c, operations: slices.Clone(operations)}
}

// New builds the profile that s names.
func New(s *Schema) (Profile, error) {
	r, ok := profiles[s.Datastore]
	if !ok {
		return nil, fmt.Errorf("datastore: unknown datastore %q (known: %s)", s.Datastore, strings.Join(Names(), ", "))
	}
	return r.build(s)
}

// Names lists the registered profiles, sorted.
func Names() []string {
	var out []string
	for n := range profiles {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Operations lists the server-wide operations that the named profile
// refuses unless allowed; ok is false for an unknown profile.
func Operations(name string) (ops []string, ok bool) {
	r, ok := profiles[name]
	return slices.Clone(r.operations), ok
}

// Describer is implemented by profiles that can say what they do with each
// endpoint of their API for a collection: `rules report` prints it for
// auditors, and docs/RULES.md is checked against it.
type Describer interface {
	Coverage(c *Collection) []Coverage
}

// Coverage is one line of a profile's coverage table.
type Coverage struct {
	// Endpoint is the Operation.Endpoint name ("couchdb.find").
	Endpoint string
	// Request shows the requests it covers: "POST /{db}/_find".
	Request string
	// Treatment is what the sidecar does, in words: "documents
	// encrypted", "compared values sealed", "passes: no protected data",
	// "refused".
	Treatment string
	// Refused is true when the sidecar refuses these requests.
	Refused bool
	// Why explains the treatment, for refusals especially.
	Why string
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
