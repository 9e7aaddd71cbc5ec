// Package fieldcrypt encrypts and decrypts selected fields of JSON documents
// as they stream through sidecrypt, and defines the field token format.
//
// # Tokens
//
// A protected value is replaced by a JSON string token:
//
//	"sc2.AgEDcGlpAAAAA6ChoqOkpaanqKmqqxobOrkc-fIeQmQUtb5ruunDPySHMMN1Z31Kh70"
//
// "sc2." is the prefix and format version; the rest is unpadded base64url
// of a header (format version, mode, key name, key version) and the sealed
// value. The header is the AEAD's associated data, so no part of it can be
// changed or swapped. docs/FORMAT.md specifies the format byte by byte;
// testdata/fieldcrypt/vectors_v2.json holds known-answer vectors (with
// tamper cases) that any implementation can run.
//
// What is sealed is the value's JSON text, so every type comes back exactly:
// a number by its digits (12345678901234567890123 and 0.1000 survive), a
// bool, an object or an array as written. For a string, only the text
// between the quotes is sealed. The value's JSON type is sealed with it,
// after the value, followed by zero padding: every value to at least 5
// bytes (so true, false and null give tokens of one length), and to the
// field's buckets when its rule has a Pad (FieldRule.Pad, Padding).
// ParseTokenInfo therefore reports TypeHidden; OpenToken gives the type.
//
// Format 1 ("sc1.", the type in clear in the header, no padding) is no
// longer written and still opened everywhere format 2 is
// (testdata/fieldcrypt/vectors.json).
//
// # Modes
//
// ModeRandom is AES-256-GCM (NIST SP 800-38D) from the standard library
// with a fresh random 96-bit nonce per value: equal values give different
// tokens. One key version may seal at most GCMMessageLimit (2^32) values in
// this mode, summed over every sidecar and restart; rotate well before.
//
// ModeDeterministic is AES-SIV (RFC 5297) with a 512-bit key, from tink-go's
// daead/subtle: equal values under the same key version give equal tokens,
// in whatever field they appear, so an equality query on an encrypted field
// still matches. It reveals which values are equal, and nothing else beyond
// length. Strings are sealed in the canonical spelling of RFC 8785 section
// 3.2.2.2, so "\u0061" and "a" give the same token; a deterministic string
// token therefore opens to the canonical spelling of the same value.
//
// Each DataKey (64 bytes of root material per key name and version) yields
// independent subkeys for the two modes through HKDF-SHA256 (RFC 5869).
//
// # The transformer
//
// An Encryptor holds compiled FieldRules: a Selector (a JSONPath subset:
// $.a.b, $.a[*].b, $.a[0], $..name, quoted names), a key name and a mode.
// Encrypt reads a document and writes it with each selected value replaced
// by its token; every other byte comes out exactly as it went in
// (whitespace, member order, escapes, number spelling). When several rules
// select the same value, the first rule in order wins. A selected object or
// array is sealed as one value, and nothing inside it is matched again. A
// null is left as it is unless FieldRule.EncryptNull, so that "field is
// absent" queries keep working. A selected string that already is a token
// is left alone if it opens under the key it names; anything else is
// encrypted (a token-lookalike cannot smuggle plaintext through).
//
// A Decryptor opens every token its Policy permits, wherever it appears as a
// string value (not as an object key), or masks it with a Masker, or leaves
// it. Strings that are not tokens pass through, so data written before a
// rule existed stays readable. A string that starts with "sc" digit "."
// claims to be a token: if it cannot be opened it is left in place and
// listed in Report.Failures, or fails the call in Strict mode, naming its
// path. Lenient mode copies the rest of a malformed response through
// unchanged; Stream mode reads a sequence of values (NDJSON, CouchDB
// continuous feeds with blank heartbeat lines) and flushes after each.
//
// Both read through a refillable window: memory is bounded by the nesting
// depth plus the largest value that must be held whole (a selected value, a
// token, an object key on a selector's way), never by the document size.
// Before every read that may block, output produced so far is written and
// CallOptions.Flush is called, so responses stream. The []byte variants scan
// the input in place and return nil output on any error.
//
// # Refusals
//
// The transformer validates as it goes and refuses, with a *PathError
// naming the path and byte offset and wrapping a sentinel (ErrSyntax,
// ErrTooDeep, ErrInvalidUTF8, ErrDuplicateKey), never quoting content:
// malformed JSON (what encoding/json's json.Valid rejects), nesting deeper
// than Limits.MaxDepth (default 512), invalid UTF-8 anywhere (json.Valid
// lets it through inside strings), and an object member name that appears
// twice where a selector advances on it ({"ssn":1,"ssn":2} under $.ssn):
// two readers of such a document may disagree about its value. Member names
// are compared by value, so "s\u0073n" is "ssn".
//
// # What is and is not protected
//
// Protected: the confidentiality and integrity of each selected value and
// its type, and its binding to a key name and version. Not protected: the
// length of a value beyond its padding (without a Pad, values over 5 bytes
// show their exact length; with one, the bucket they fall in), the
// structure and all unselected content of a document, equality of values
// under one key version in deterministic mode, and the position of a
// token: the field path is deliberately not bound, so a token can be moved
// to another field sealed under the same key. Use separate keys for fields
// that must not be interchangeable.
//
// Key bytes never appear in errors, logs or String output; errors and
// events carry paths, key names and versions, never field content.
package fieldcrypt
