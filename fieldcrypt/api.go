package fieldcrypt

// This file declares the public API of the transformer and the token codec.
// The bodies are filled in by the implementation; the signatures are the
// contract that rules/, proxy/ and the CLI code against.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// Mode is the encryption mode of a field.
type Mode uint8

const (
	// ModeRandom is AES-256-GCM with a fresh random 96-bit nonce per value:
	// equal plaintexts give different tokens.
	ModeRandom Mode = 1
	// ModeDeterministic is AES-SIV (RFC 5297): equal plaintexts under the
	// same key version give equal tokens, so equality queries still match.
	ModeDeterministic Mode = 2
)

// String returns "random" or "deterministic".
func (m Mode) String() string {
	switch m {
	case ModeRandom:
		return "random"
	case ModeDeterministic:
		return "deterministic"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses "random" or "deterministic".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "random":
		return ModeRandom, nil
	case "deterministic":
		return ModeDeterministic, nil
	}
	return 0, fmt.Errorf("fieldcrypt: unknown mode %q (want random or deterministic)", s)
}

// Type is the JSON type of the value a token carries, recorded so that the
// value comes back as the same JSON.
type Type byte

const (
	TypeString Type = 's'
	TypeNumber Type = 'n'
	TypeBool   Type = 'b'
	TypeNull   Type = 'z'
	TypeObject Type = 'o'
	TypeArray  Type = 'a'

	// TypeHidden is the Type of a format 2 token before it is opened: the
	// type is sealed with the value, so ParseTokenInfo cannot know it,
	// and neither can anyone without the key. OpenToken returns the real
	// type, and a Masker is handed the opened type.
	TypeHidden Type = 0
)

// FieldRule says: encrypt the values that Selector matches under Key in Mode.
type FieldRule struct {
	Selector Selector
	Key      string
	Mode     Mode
	// EncryptNull: encrypt JSON null values too. By default a null is left
	// as it is, so that "field absent" queries keep working.
	EncryptNull bool
	// Leaves: when the selected value is an object or an array, encrypt
	// every string, number and boolean inside it (at any depth) on its
	// own, and keep the structure, instead of encrypting the container as
	// one value. Meant for query documents: with $.selector.email and
	// Leaves, {"email": "a@b"}, {"email": {"$eq": "a@b"}} and
	// {"email": {"$in": ["a@b", "c@d"]}} all reach the datastore with each
	// compared value a token, and the operators intact. Member names are
	// never encrypted. A scalar selected directly is sealed as usual.
	Leaves bool
	// Pad pads each sealed value of this field to a bucket size, so that
	// its token shows which bucket the value's length falls in, not the
	// length itself (docs/FORMAT.md, section 4.5). The zero Padding still
	// pads every value to at least 5 bytes, which makes true, false, null
	// and short values tokens of one length. Deterministic tokens stay
	// deterministic (padding is a function of the value), but a change of
	// Pad changes them, as a change of key would: a query rule comparing
	// against this field must use the same Pad (SealStringPadded).
	Pad Padding
	// Check, when set, makes this a rule that inspects instead of
	// encrypting: the selected value (its JSON text and type) is handed to
	// Check and forwarded as it is, unless Check returns an error, which
	// fails the whole call (wrapped in a *PathError that errors.Is
	// ErrFieldRefused, and errors.As the Check's own error). Key and Mode
	// are ignored. Datastore profiles use it to refuse what must not pass
	// in a body (an inline attachment, a design document's id) in the same
	// streaming pass that encrypts the rest. text must not be retained.
	Check func(typ Type, text []byte) error
}

// Limits bound the work one document may cause.
type Limits struct {
	// MaxDepth is the deepest nesting of objects and arrays accepted.
	// Zero means DefaultMaxDepth.
	MaxDepth int
	// MaxKeyVersions bounds the distinct key versions (name and version)
	// that one call looks up in the Keyring to open tokens, successful
	// lookups or not. Zero means DefaultMaxKeyVersions. Past the bound a
	// Decrypt leaves each token of a further version as it is and reports
	// it (ErrTooManyKeys), and an Encrypt that meets one in a protected
	// field fails.
	MaxKeyVersions int
}

// DefaultMaxDepth is the nesting limit when Limits.MaxDepth is zero.
const DefaultMaxDepth = 512

// DefaultMaxKeyVersions is the bound on distinct key versions per call
// when Limits.MaxKeyVersions is zero.
//
// Why 64: a token header names any key version its writer likes, and each
// new one costs a keystore read and an unwrap by the HSM, so without a bound
// one request of N made-up headers costs N of them. A legitimate document
// names a few keys in one or two versions each, and a listing that spans
// years of rotation a few dozen; 64 leaves room for that while capping what
// a forged document can make the HSM do. Raise it (Limits) where keys rotate
// often and responses span many of their versions.
const DefaultMaxKeyVersions = 64

// KeyUse counts the fields sealed or opened with one key version.
type KeyUse struct {
	Name    string
	Version uint32
	Fields  int
}

// Failure describes a token that could not be opened. Path is the field's
// path in selector syntax; no field content is ever included.
type Failure struct {
	Path    string
	Key     string
	Version uint32
	Err     error
}

// Report says what one Encrypt or Decrypt call did.
type Report struct {
	Keys     []KeyUse  // key versions used, with field counts
	Tokens   int       // encrypt: values left alone because they already were valid tokens
	Masked   int       // decrypt: values masked instead of opened
	Failures []Failure // decrypt, non-strict: tokens left as they were
	// Misplaced (bound decrypt): tokens left closed because they stood
	// where no field sealed under their key and mode is: copied there.
	Misplaced int
}

// FieldEvent describes one transformed value, for `rules test --explain`.
type FieldEvent struct {
	Path    string
	Key     string
	Version uint32
	Mode    Mode
	Type    Type   // the value's type; TypeHidden for a format 2 token left closed or failed
	Action  string // "encrypted", "already-token", "decrypted", "masked", "left", "failed"
}

// CallOptions are per-call settings of Encrypt and Decrypt.
type CallOptions struct {
	// OnField, when set, is called for every transformed value. Building
	// paths costs time; leave it nil on the request path.
	OnField func(FieldEvent)
	// Strict (decrypt): fail the call on the first token that cannot be
	// opened, instead of leaving it in place and reporting it.
	Strict bool
	// Stream: accept a sequence of JSON values separated by whitespace
	// (NDJSON, CouchDB continuous feeds) instead of one value, and write
	// and flush each as soon as it is done. A number or literal at the top
	// level must be followed by whitespace ("12" is one number).
	Stream bool
	// Lenient (decrypt): on malformed input, copy the rest through
	// unchanged instead of failing, and list the syntax error in
	// Report.Failures. Responses are never failed for the sake of a syntax
	// error upstream. Encrypt ignores it: a request body is refused, never
	// forwarded half-encrypted.
	Lenient bool
	// MaxDepth, when positive and lower than the Encryptor's or
	// Decryptor's Limits.MaxDepth, is this call's nesting limit: the
	// proxy's SIDECRYPT_MAX_DEPTH applied to rules compiled with the
	// default.
	MaxDepth int
	// Flush, when set, is called after output has been written and before
	// the transformer blocks reading more input, so a streaming response
	// reaches the client without waiting for the end.
	Flush func() error
}

// Encryptor rewrites the values matched by a set of field rules.
type Encryptor struct {
	impl *encryptor
}

// NewEncryptor compiles rules. It fails if two rules select the same
// selector text with a different key or mode.
func NewEncryptor(rules []FieldRule, lim Limits) (*Encryptor, error) {
	e, err := compileEncryptor(rules, lim)
	if err != nil {
		return nil, err
	}
	return &Encryptor{impl: e}, nil
}

// Encrypt reads one JSON document from src and writes it to dst with every
// matched value replaced by a token. On error, dst may hold partial output
// that the caller must discard; EncryptBytes does that for you.
func (e *Encryptor) Encrypt(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	return e.impl.run(ctx, dst, src, keys, opt)
}

// EncryptBytes is Encrypt on a complete document in memory. It returns nil
// output on any error.
func (e *Encryptor) EncryptBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	return e.impl.runBytes(ctx, src, keys, opt)
}

// Action says what a Decryptor does with a token of a given key.
type Action uint8

const (
	ActionLeave Action = iota // leave the token as it is
	ActionOpen                // replace it by the original value
	ActionMask                // replace it by the Masker's output
)

// Masker writes the masked form of an opened value: it appends one JSON
// value to dst. plaintext is the original JSON text of the value (for a
// string, including its quotes). It must not retain plaintext.
type Masker func(ctx context.Context, dst []byte, tok TokenInfo, plaintext []byte, keys Keyring) ([]byte, error)

// Policy decides, per key name, what happens to tokens in a document.
type Policy interface {
	Action(key string) (Action, Masker)
}

// Decryptor opens tokens wherever they appear in a document.
type Decryptor struct {
	impl *decryptor
}

// NewDecryptor returns a Decryptor that applies policy to every token.
func NewDecryptor(policy Policy, lim Limits) *Decryptor {
	return &Decryptor{impl: newDecryptor(policy, lim)}
}

// NewBoundDecryptor returns a Decryptor that opens (or masks) a token only
// at a place that one of places selects, and only if the token is of that
// place's Key and Mode; every other token stays as it is and is counted in
// Report.Misplaced. places are the fields of the documents a response
// carries (a datastore profile knows where documents travel): a token
// copied into another field, another document or another collection is
// never opened, so nobody can have the sidecar reveal a token they found
// by pasting it where they can read it back (docs/FORMAT.md §7). Only
// Selector, Key and Mode of places are used.
func NewBoundDecryptor(policy Policy, places []FieldRule, lim Limits) (*Decryptor, error) {
	d := newDecryptor(policy, lim)
	var sels []Selector
	idx := map[string]int{}
	for i, r := range places {
		if r.Selector.IsZero() {
			return nil, fmt.Errorf("fieldcrypt: place %d: no selector", i)
		}
		if !ValidKeyName(r.Key) {
			return nil, fmt.Errorf("fieldcrypt: place %d (%s): invalid key name %q", i, r.Selector, r.Key)
		}
		if r.Mode != ModeRandom && r.Mode != ModeDeterministic {
			return nil, fmt.Errorf("fieldcrypt: place %d (%s): invalid mode %d", i, r.Selector, r.Mode)
		}
		k, ok := idx[r.Key]
		if !ok {
			k = len(d.keyNames)
			idx[r.Key] = k
			d.keyNames = append(d.keyNames, r.Key)
		}
		d.rules = append(d.rules, compiledRule{text: r.Selector.String(), key: k, mode: r.Mode})
		sels = append(sels, r.Selector)
	}
	d.auto = compileAutomaton(sels)
	return &Decryptor{impl: d}, nil
}

// Token binding (docs/FORMAT.md §7). A request carries tokens only where
// this sidecar itself would have put them; the token policy says what the
// sidecar reveals of each key (the decrypt Policy of its rules: open,
// mask, leave).

type tokenPolicyKey struct{}

// WithTokenPolicy returns a context under which Encrypt, EncryptBytes and
// CheckToken bind tokens to their fields: in a selected field, a string
// that is a token is kept only if it is of that field's key and mode and
// the policy does not open its key (and it opens); a token of a key the
// policy opens or masks is refused anywhere else with ErrTokenNotAllowed;
// any other token-like string is sealed as data. Without a token policy
// the encryptor keeps every string that opens as a token under any key.
func WithTokenPolicy(ctx context.Context, p Policy) context.Context {
	return context.WithValue(ctx, tokenPolicyKey{}, p)
}

// TokenPolicyFrom returns the context's token policy, or nil.
func TokenPolicyFrom(ctx context.Context) Policy {
	if ctx == nil {
		return nil
	}
	p, _ := ctx.Value(tokenPolicyKey{}).(Policy)
	return p
}

// CheckToken decides, like the encryptor under the context's token policy,
// about a value a request compares with a field sealed under key and mode
// (a query parameter, a compared value in a query document): keep it as
// it is (keep true), seal it like any value (keep false), or refuse the
// request (ErrTokenNotAllowed). value is the value's text, unescaped. A
// value that does not look like a token is never kept.
func CheckToken(ctx context.Context, keys Keyring, key string, mode Mode, value string) (keep bool, err error) {
	if !HasTokenPrefix(value) {
		return false, nil
	}
	tok := []byte(value)
	info, err := ParseTokenInfo(tok)
	if err != nil {
		return false, nil
	}
	pol := TokenPolicyFrom(ctx)
	if pol != nil {
		act, _ := pol.Action(info.Key)
		own := info.Key == key && info.Mode == mode
		switch {
		case act == ActionOpen, act == ActionMask && !own:
			return false, fmt.Errorf("fieldcrypt: %w: a token of key %q", ErrTokenNotAllowed, info.Key)
		case !own:
			return false, nil
		}
	}
	if keys == nil {
		return false, nil
	}
	k, err := keys.OpenKey(ctx, info.Key, info.KeyVersion)
	if err != nil || k == nil {
		return false, nil
	}
	_, plain, err := OpenToken(k, tok)
	clear(plain)
	return err == nil, nil
}

// CheckLooseValue refuses (ErrTokenNotAllowed), under the context's token
// policy, a value that no rule protects but that is a token of a key this
// sidecar opens or masks: a query parameter or compared value the rules
// leave alone. value is unescaped.
func CheckLooseValue(ctx context.Context, value string) error {
	pol := TokenPolicyFrom(ctx)
	if pol == nil || !HasTokenPrefix(value) {
		return nil
	}
	info, err := ParseTokenInfo([]byte(value))
	if err != nil {
		return nil
	}
	if act, _ := pol.Action(info.Key); act == ActionOpen || act == ActionMask {
		return fmt.Errorf("fieldcrypt: %w: a token of key %q", ErrTokenNotAllowed, info.Key)
	}
	return nil
}

// Decrypt reads JSON from src and writes it to dst with every token that
// the policy permits opened (or masked). Tokens that fail to open are left
// as they are and listed in Report.Failures, unless opt.Strict.
func (d *Decryptor) Decrypt(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	return d.impl.run(ctx, dst, src, keys, opt)
}

// DecryptBytes is Decrypt on a complete document in memory.
func (d *Decryptor) DecryptBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	return d.impl.runBytes(ctx, src, keys, opt)
}

// TokenPrefix starts every token this package writes: format version 2.
// The digit is the format version.
const TokenPrefix = "sc2."

// TokenPrefixV1 starts tokens of format version 1, which this package no
// longer writes and still opens.
const TokenPrefixV1 = "sc1."

// HasTokenPrefix reports whether s starts with the prefix of a token format
// this package reads ("sc1." or "sc2."). It says nothing about the rest.
func HasTokenPrefix(s string) bool {
	return len(s) >= len(TokenPrefix) && (s[:len(TokenPrefix)] == TokenPrefix || s[:len(TokenPrefixV1)] == TokenPrefixV1)
}

// MayHoldTokens reports whether doc has a JSON string that starts like a
// token of a format this package reads (a quote, then "sc1." or "sc2.").
// A document without one has nothing for a Decryptor to open: a cheap
// pre-check before a decryption. Tokens spelled with escapes are not
// recognised by the Decryptor either.
func MayHoldTokens(doc []byte) bool {
	for {
		i := bytes.Index(doc, []byte(`"sc`))
		if i < 0 || len(doc)-i < 5 {
			return false
		}
		if d := doc[i+3]; (d == '1' || d == '2') && doc[i+4] == '.' {
			return true
		}
		doc = doc[i+3:]
	}
}

// TokenInfo is the header of a token: everything but the nonce and
// ciphertext. It is safe to log.
type TokenInfo struct {
	// Format is the token format version, 1 ("sc1.") or 2 ("sc2.").
	Format int
	Mode   Mode
	// Type is the JSON type of the value. A format 1 header shows it; a
	// format 2 token seals it with the value, so ParseTokenInfo gives
	// TypeHidden and only opening the token tells (OpenToken's result;
	// the TokenInfo handed to a Masker carries the opened type).
	Type       Type
	Key        string
	KeyVersion uint32
}

// ParseTokenInfo checks a token's structure and returns its header. It does
// no cryptography: a token that parses may still fail to open. Both formats
// are accepted; for format 2 the Type is TypeHidden.
func ParseTokenInfo(token []byte) (TokenInfo, error) { return parseTokenInfo(token) }

// SealValue seals one JSON value (its JSON text, as it appears in a
// document) into a token string, with no padding beyond the format's
// minimum. typ must agree with the text.
func SealValue(k *DataKey, mode Mode, typ Type, jsonText []byte) ([]byte, error) {
	return appendSeal(nil, k, mode, typ, jsonText, Padding{})
}

// SealValuePadded is SealValue with a field's padding (FieldRule.Pad).
func SealValuePadded(k *DataKey, mode Mode, typ Type, jsonText []byte, pad Padding) ([]byte, error) {
	return appendSeal(nil, k, mode, typ, jsonText, pad)
}

// SealString seals a Go string as a JSON string value, exactly as a
// document holding that string would be sealed by a rule without Pad. It
// is used for URL query parameters, so that ?email=x and {"email":"x"}
// give the same deterministic token.
func SealString(k *DataKey, mode Mode, s string) ([]byte, error) {
	return sealString(k, mode, s, Padding{})
}

// SealStringPadded is SealString for a field whose rule has a Pad: the
// deterministic token of ?email=x equals that of {"email":"x"} only when
// both are sealed with the same padding.
func SealStringPadded(k *DataKey, mode Mode, s string, pad Padding) ([]byte, error) {
	return sealString(k, mode, s, pad)
}

// OpenToken opens a token of either format and returns the JSON type and
// the JSON text of the original value.
func OpenToken(k *DataKey, token []byte) (Type, []byte, error) { return openToken(k, token) }

// Errors from the token codec and the transformer. They never carry field
// content; the wrapping error names the field path.
var (
	// ErrNotToken: the text is not a well-formed token (prefix, base64url,
	// header fields), or a string starting with "sc1." or "sc2." is not
	// one.
	ErrNotToken = errors.New("not a sidecrypt token")
	// ErrTokenVersion: a token of a format version this package does not
	// read ("sc3.", "sc9."), or whose body's first byte is not the
	// version its prefix names.
	ErrTokenVersion = errors.New("unsupported token format version")
	// ErrAuthentication: the token does not open under the key it names:
	// it was changed, or the key material differs.
	ErrAuthentication = errors.New("token failed authentication")
	// ErrSyntax: the document is not JSON (the PathError has the offset).
	ErrSyntax = errors.New("malformed JSON")
	// ErrTooDeep: objects and arrays nest deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("JSON nested too deeply")
	// ErrDuplicateKey: an object has one member name twice where a
	// selector advances on it; readers could disagree on its value.
	ErrDuplicateKey = errors.New("duplicate object key on a protected path")
	// ErrInvalidUTF8: the document is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("invalid UTF-8 in JSON")
	// ErrTokenContent: a token authenticated, but what it holds is not
	// one JSON value of the type its header declares. Only a holder of the
	// key can produce such a token.
	ErrTokenContent = errors.New("token content does not match its type")
	// ErrTokenNotAllowed: under a token policy (WithTokenPolicy), a
	// request carries a token of a key this sidecar opens or masks where
	// the sidecar would not have put it. An application that only ever
	// sees plaintext and masks never sends one; accepted, it would make
	// the sidecar reveal a value to whoever pasted it (docs/FORMAT.md §7).
	ErrTokenNotAllowed = errors.New("token not allowed here")
	// ErrFieldRefused: a FieldRule.Check refused a value.
	ErrFieldRefused = errors.New("field refused")
	// ErrTooManyKeys: a document names more distinct key versions than
	// Limits.MaxKeyVersions; the tokens past the bound were not looked up.
	ErrTooManyKeys = errors.New("too many distinct key versions in one document")
)
