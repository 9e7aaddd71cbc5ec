package rules

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync/atomic"
	"unicode/utf8"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Mask names, as written in decrypt.mask. Any other text is a literal that
// replaces the value.
const (
	MaskFull  = "full"  // the value becomes "***"
	MaskLast4 = "last4" // "***" and the last four characters
	MaskHash  = "hash"  // "hmac-sha256:<base64url>", keyed, stable across rotations
)

// DefaultMaskText is what the full mask shows.
const DefaultMaskText = "***"

// HashMaskPrefix starts every hash mask.
const HashMaskPrefix = "hmac-sha256:"

// last4MinLen is the shortest value last4 shows any of. A value of fewer
// than eight characters is masked in full: showing four of them would show
// half or more of the value, which is more than "last four" promises. (A
// card number has 13 to 19 digits, so PCI DSS display is unaffected.)
const last4MinLen = 8

// hashKeyVersion is the version of a key whose mask subkey keys the hash
// mask. Always version 1, so that a value hashes the same before and after
// the key is rotated and joins on the hash keep working; see
// docs/RULES.md, "Masks", for what destroying version 1 does.
const hashKeyVersion = 1

type maskKind uint8

const (
	maskLiteral maskKind = iota + 1 // full, or a literal text
	maskLast4
	maskHash
)

// maskRule is one compiled decrypt.mask entry.
type maskRule struct {
	kind   maskKind
	text   string // the literal shown, for maskLiteral
	quoted []byte // text as a JSON string
}

func newMaskRule(spec string) maskRule {
	switch spec {
	case MaskLast4:
		return maskRule{kind: maskLast4}
	case MaskHash:
		return maskRule{kind: maskHash}
	case MaskFull:
		spec = DefaultMaskText
	}
	q, _ := json.Marshal(spec) // a string always marshals
	return maskRule{kind: maskLiteral, text: spec, quoted: q}
}

// String names the mask as it would be written in the file.
func (m maskRule) String() string {
	switch m.kind {
	case maskLast4:
		return MaskLast4
	case maskHash:
		return MaskHash
	}
	if m.text == DefaultMaskText {
		return MaskFull
	}
	return string(m.quoted)
}

// Stats are counters that compiled plans update while they work. The
// metrics layer reads them; a FileSource hands the same Stats to every
// plan it compiles, so they survive reloads.
type Stats struct {
	hashMaskFallbacks atomic.Uint64
}

// HashMaskFallbacks counts values that a hash mask showed as the full mask
// instead, because version 1 of their key could not be opened (destroyed,
// or not available to this sidecar).
func (s *Stats) HashMaskFallbacks() uint64 {
	if s == nil {
		return 0
	}
	return s.hashMaskFallbacks.Load()
}

// masker returns the fieldcrypt.Masker for a rule. Maskers never fail: a
// value they cannot mask as asked is masked in full, which reveals less.
func (m maskRule) masker(stats *Stats) fieldcrypt.Masker {
	full := func(dst []byte) []byte { return append(dst, `"`+DefaultMaskText+`"`...) }
	switch m.kind {
	case maskLast4:
		return func(_ context.Context, dst []byte, tok fieldcrypt.TokenInfo, plaintext []byte, _ fieldcrypt.Keyring) ([]byte, error) {
			return appendLast4(dst, tok.Type, plaintext), nil
		}
	case maskHash:
		return func(ctx context.Context, dst []byte, tok fieldcrypt.TokenInfo, plaintext []byte, keys fieldcrypt.Keyring) ([]byte, error) {
			out, ok := appendHash(ctx, dst, tok, plaintext, keys)
			if !ok {
				stats.hashMaskFallbacks.Add(1)
				return full(dst), nil
			}
			return out, nil
		}
	default:
		quoted := m.quoted
		return func(_ context.Context, dst []byte, _ fieldcrypt.TokenInfo, _ []byte, _ fieldcrypt.Keyring) ([]byte, error) {
			return append(dst, quoted...), nil
		}
	}
}

// appendLast4 writes "***" followed by the last four characters of a
// string's or a number's text; any other value, and any value shorter than
// last4MinLen characters, becomes "***".
func appendLast4(dst []byte, typ fieldcrypt.Type, plaintext []byte) []byte {
	var text []byte
	switch typ {
	case fieldcrypt.TypeString:
		var s string
		if json.Unmarshal(plaintext, &s) != nil {
			return append(dst, `"`+DefaultMaskText+`"`...)
		}
		text = []byte(s)
		defer clear(text)
	case fieldcrypt.TypeNumber:
		text = bytes.TrimSpace(plaintext)
	default:
		return append(dst, `"`+DefaultMaskText+`"`...)
	}
	if utf8.RuneCount(text) < last4MinLen {
		return append(dst, `"`+DefaultMaskText+`"`...)
	}
	cut := len(text)
	for range 4 {
		_, size := utf8.DecodeLastRune(text[:cut])
		cut -= size
	}
	q, _ := json.Marshal(DefaultMaskText + string(text[cut:]))
	return append(dst, q...)
}

// appendHash writes "hmac-sha256:" and the unpadded base64url HMAC-SHA256
// (RFC 2104, FIPS 180-4) of the value's canonical form, keyed by the mask
// subkey of version 1 of the token's key. ok is false when that key cannot
// be had.
//
// The canonical form is one type byte, a zero byte, then: a string's
// UTF-8 text after JSON unescaping (so "a\u0062" and "ab" hash alike), or
// the compact JSON text of any other value. The type byte keeps the
// string "1" and the number 1 apart.
func appendHash(ctx context.Context, dst []byte, tok fieldcrypt.TokenInfo, plaintext []byte, keys fieldcrypt.Keyring) (_ []byte, ok bool) {
	if keys == nil {
		return dst, false
	}
	k, err := keys.OpenKey(ctx, tok.Key, hashKeyVersion)
	if err != nil || k == nil {
		return dst, false
	}
	input := make([]byte, 0, len(plaintext)+2)
	defer func() { clear(input) }()
	input = append(input, byte(tok.Type), 0)
	if tok.Type == fieldcrypt.TypeString {
		var s string
		if json.Unmarshal(plaintext, &s) != nil {
			return dst, false
		}
		input = append(input, s...)
	} else {
		var buf bytes.Buffer
		if json.Compact(&buf, plaintext) != nil {
			return dst, false
		}
		input = append(input, buf.Bytes()...)
		clear(buf.Bytes())
	}
	var sum []byte
	if err := k.MaskKey(func(key []byte) {
		mac := hmac.New(sha256.New, key)
		mac.Write(input)
		sum = mac.Sum(nil)
	}); err != nil {
		return dst, false
	}
	dst = append(dst, '"')
	dst = append(dst, HashMaskPrefix...)
	dst = base64.RawURLEncoding.AppendEncode(dst, sum)
	return append(dst, '"'), true
}

// policy is the decrypt section as a fieldcrypt.Policy.
type policy struct {
	open  map[string]bool
	masks map[string]fieldcrypt.Masker
}

// Action implements fieldcrypt.Policy: open the keys listed in
// decrypt.keys, mask those in decrypt.mask, leave every other token.
func (p *policy) Action(key string) (fieldcrypt.Action, fieldcrypt.Masker) {
	if p.open[key] {
		return fieldcrypt.ActionOpen, nil
	}
	if m, ok := p.masks[key]; ok {
		return fieldcrypt.ActionMask, m
	}
	return fieldcrypt.ActionLeave, nil
}

var _ fieldcrypt.Policy = (*policy)(nil)
