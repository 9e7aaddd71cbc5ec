package fieldcrypt

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// Token formats (docs/FORMAT.md is the normative text).
//
// Version 2, written by this package:
//
//	token  = "sc2." base64url-without-padding(body)
//	body   = header || sealed
//	header = 0x02 || mode || keylen || key name || key version (uint32 BE)
//	inner  = value || type || 0x00 * Z        (padding, section 4.5)
//	sealed = nonce(12) || AES-256-GCM(inner) || tag(16)   (random)
//	       | SIV(16) || AES-SIV(inner)                    (deterministic)
//
// The JSON type travels inside the ciphertext, after the value and before
// the zero padding: the layout of TLS 1.3's TLSInnerPlaintext (RFC 8446
// section 5.4), where the last non-zero byte is the type, so the padding
// needs no length field and cannot be misread.
//
// Version 1, still read, no longer written:
//
//	header = 0x01 || mode || type || keylen || key name || key version
//	sealed = the same, over the value alone
//
// In both, the header is the associated data of the AEAD, so no part of it
// can be changed or moved to another token without failing authentication;
// its first byte also keeps the two formats apart under one key.
const (
	formatV1 byte = 0x01
	formatV2 byte = 0x02

	headerFixedV1 = 8 // version, mode, type, keylen, key version
	headerFixedV2 = 7 // version, mode, keylen, key version

	// gcmNonceSize is the standard 96-bit GCM nonce: with random nonces,
	// NIST SP 800-38D section 8.3 limits one key to 2^32 invocations so
	// that the chance of a repeated nonce stays below 2^-32 (a repeat
	// reveals the XOR of two plaintexts and the authentication key).
	gcmNonceSize = 12
	gcmTagSize   = 16
	sivSize      = 16

	// GCMMessageLimit is how many values one key version may seal in
	// random mode, across all processes, before it must be rotated (NIST
	// SP 800-38D, 8.3). Tokens of both formats count against it: they
	// share the subkey. What enforces it is the keystore's shared seal
	// counter per version, which rotates a key at keystore.DefaultSealLimit
	// (2^30, a quarter of this, for margin) or SIDECRYPT_SEAL_LIMIT, never
	// above this; the key cache's per-entry usage limit only bounds one
	// cached copy's share.
	GCMMessageLimit = 1 << 32

	// maxHeaderSize is the largest header (format 1, a 64-byte key name).
	maxHeaderSize = headerFixedV1 + maxKeyNameLen
)

// b64 is strict: the unused low bits of the last character must be zero, so
// each body has exactly one spelling and any changed character is noticed.
var b64 = base64.RawURLEncoding.Strict()

// Token parse errors; none carries token bytes.
var (
	errTokPrefix  = &detailError{ErrNotToken, `missing "sc2." or "sc1." prefix`}
	errTokBase64  = &detailError{ErrNotToken, "body is not unpadded base64url"}
	errTokShort   = &detailError{ErrNotToken, "body too short"}
	errTokMode    = &detailError{ErrNotToken, "unknown mode"}
	errTokType    = &detailError{ErrNotToken, "unknown value type"}
	errTokKeyName = &detailError{ErrNotToken, "invalid key name"}
	errTokKeyVer  = &detailError{ErrNotToken, "key version 0"}
	errTokChars   = &detailError{ErrNotToken, `string starts like a token ("sc1." or "sc2.") but is not one`}
	errTokVersion = &detailError{ErrTokenVersion, "only format versions 1 and 2 are understood, and the body must be of the version its prefix names"}
	errTokAuth    = &detailError{ErrAuthentication, "wrong key or modified token"}
	errTokContent = &detailError{ErrTokenContent, "the opened value is not of the type its token declares"}
	errTokPadding = &detailError{ErrTokenContent, "the opened value has no type byte before its padding"}
	errTokKey     = &detailError{ErrUnknownKey, "token names a different key or version"}
)

// parsedToken is a decoded token. Its slices point into the decode buffer.
type parsedToken struct {
	format  byte
	mode    Mode
	typ     Type // format 1: from the header; format 2: TypeHidden
	name    []byte
	version uint32
	header  []byte // the associated data
	sealed  []byte
}

// validType reports whether t is one of the six type bytes.
func validType(t Type) bool {
	switch t {
	case TypeString, TypeNumber, TypeBool, TypeNull, TypeObject, TypeArray:
		return true
	}
	return false
}

// tokenFormat gives the format version that a string's first four bytes
// claim ("sc" digit "."): 1 or 2 for the formats this package reads, 0xff
// for another digit, 0 for a string that is no token at all.
func tokenFormat(b []byte) byte {
	if len(b) < 4 || b[0] != 's' || b[1] != 'c' || b[3] != '.' || b[2]-'0' > 9 {
		return 0
	}
	switch b[2] {
	case '1':
		return formatV1
	case '2':
		return formatV2
	}
	return 0xff
}

// decodeToken parses token (without quotes) into buf, which it reuses and
// returns. It checks structure only.
func decodeToken(buf, token []byte) (parsedToken, []byte, error) {
	var p parsedToken
	switch p.format = tokenFormat(token); p.format {
	case 0:
		return p, buf, errTokPrefix
	case 0xff:
		return p, buf, errTokVersion
	}
	enc := token[len(TokenPrefix):]
	// encoding/base64 skips '\r' and '\n'; a token has one spelling, so
	// every character must be from the alphabet.
	for _, c := range enc {
		if !b64url[c] {
			return p, buf, errTokBase64
		}
	}
	n := b64.DecodedLen(len(enc))
	if cap(buf) < n {
		buf = make([]byte, n, n+n/2)
	}
	n, err := b64.Decode(buf[:n], enc)
	if err != nil {
		return p, buf, errTokBase64
	}
	body := buf[:n]
	if len(body) < 1 {
		return p, buf, errTokShort
	}
	if body[0] != p.format {
		return p, buf, errTokVersion
	}
	fixed, off := headerFixedV2, 2 // off: where the key name length is
	if p.format == formatV1 {
		fixed, off = headerFixedV1, 3
	}
	if len(body) < fixed {
		return p, buf, errTokShort
	}
	p.mode = Mode(body[1])
	if p.mode != ModeRandom && p.mode != ModeDeterministic {
		return p, buf, errTokMode
	}
	p.typ = TypeHidden
	if p.format == formatV1 {
		if p.typ = Type(body[2]); !validType(p.typ) {
			return p, buf, errTokType
		}
	}
	kl := int(body[off])
	if kl == 0 || kl > maxKeyNameLen || len(body) < fixed+kl {
		return p, buf, errTokKeyName
	}
	p.name = body[off+1 : off+1+kl]
	if !ValidKeyName(string(p.name)) {
		return p, buf, errTokKeyName
	}
	p.version = binary.BigEndian.Uint32(body[off+1+kl:])
	if p.version == 0 {
		return p, buf, errTokKeyVer
	}
	hl := fixed + kl
	p.header, p.sealed = body[:hl], body[hl:]
	min := sivSize
	if p.mode == ModeRandom {
		min = gcmNonceSize + gcmTagSize
	}
	if p.format == formatV2 {
		min++ // the type byte: format 2 never seals nothing
	}
	if len(p.sealed) < min {
		return p, buf, errTokShort
	}
	return p, buf, nil
}

// appendHeader appends a token header of the given format (typ is only
// written in format 1).
func appendHeader(dst []byte, format byte, mode Mode, typ Type, name string, version uint32) []byte {
	if format == formatV1 {
		dst = append(dst, formatV1, byte(mode), byte(typ), byte(len(name)))
	} else {
		dst = append(dst, formatV2, byte(mode), byte(len(name)))
	}
	dst = append(dst, name...)
	return binary.BigEndian.AppendUint32(dst, version)
}

// appendInner appends the format 2 plaintext of a value: the value, its
// type byte, and zeros up to the padded length (padding.go).
func appendInner(dst, value []byte, typ Type, buckets []int) []byte {
	t := paddedLen(len(value), buckets)
	n := len(dst)
	dst = slices.Grow(dst, t+1)[:n+t+1]
	copy(dst[n:], value)
	dst[n+len(value)] = byte(typ)
	clear(dst[n+len(value)+1:])
	return dst
}

// unpad splits a format 2 plaintext into value and type: the type is the
// last non-zero byte, everything after it padding.
func unpad(inner []byte) (value []byte, typ Type, ok bool) {
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, 0, false
	}
	return inner[:i], Type(inner[i]), true
}

// appendEncoded appends the token text (without quotes) of a header and its
// sealed bytes, given as one body whose first byte is its format.
func appendEncoded(dst, body []byte) []byte {
	if body[0] == formatV1 {
		dst = append(dst, TokenPrefixV1...)
	} else {
		dst = append(dst, TokenPrefix...)
	}
	return b64.AppendEncode(dst, body)
}

// marshal gives the token text of p. For a token that decodeToken accepted
// it is the same bytes (the format has one spelling per body).
func (p *parsedToken) marshal() []byte {
	body := appendHeader(nil, p.format, p.mode, p.typ, string(p.name), p.version)
	body = append(body, p.sealed...)
	return appendEncoded(nil, body)
}

// sealer seals and opens tokens with reusable scratch space, so that the
// transformer does not allocate per value (except inside AES-SIV).
type sealer struct {
	body  []byte
	canon []byte
	rand  io.Reader // nonce source; nil means crypto/rand
	check scanner   // validates opened plaintext
	// v1 makes seal write format 1 tokens, for the known-answer vectors of
	// that format only: nothing else may write the format that shows types.
	v1 bool
}

// seal appends the token text for plaintext pt (for strings, the text
// between the quotes, already canonical in deterministic mode) to dst,
// padded to buckets (a valid Padding's).
func (z *sealer) seal(dst []byte, k *DataKey, mode Mode, typ Type, pt []byte, buckets []int) ([]byte, error) {
	if mode != ModeRandom && mode != ModeDeterministic {
		return dst, fmt.Errorf("fieldcrypt: invalid mode %d", mode)
	}
	format := formatV2
	if z.v1 {
		format = formatV1
	}
	body := appendHeader(z.body[:0], format, mode, typ, k.name, k.version)
	hl := len(body)
	if mode == ModeRandom {
		body = append(body, make([]byte, gcmNonceSize)...)
	}
	ps := len(body)
	// The plaintext is built in place and sealed over itself; with room
	// for the tag (or the SIV) reserved first, sealing never moves it, so
	// no copy of the plaintext is left behind in a discarded buffer.
	if format == formatV1 {
		body = slices.Grow(body, len(pt)+gcmTagSize)
		body = append(body, pt...)
	} else {
		body = slices.Grow(body, paddedLen(len(pt), buckets)+1+gcmTagSize)
		body = appendInner(body, pt, typ, buckets)
	}
	inner := body[ps:]
	var err error
	if mode == ModeRandom {
		nonce := body[hl:ps]
		if z.rand == nil {
			rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
		} else if _, err := io.ReadFull(z.rand, nonce); err != nil {
			clear(inner)
			z.body = body[:0]
			return dst, fmt.Errorf("fieldcrypt: nonce: %w", err)
		}
		body, err = k.sealRandom(body[:ps], nonce, inner, body[:hl])
	} else {
		body, err = k.sealDeterministic(body[:ps], inner, body[:hl])
	}
	if err != nil {
		clear(inner)
		z.body = body[:0]
		return dst, err
	}
	z.body = body
	return appendEncoded(dst, body), nil
}

// open decodes and opens token with k and appends the JSON text of the
// value (strings with their quotes) to dst. On error dst is returned as it
// was.
func (z *sealer) open(dst []byte, k *DataKey, token []byte) ([]byte, Type, error) {
	p, buf, err := decodeToken(z.body, token)
	z.body = buf
	if err != nil {
		return dst, 0, err
	}
	return z.openParsed(dst, k, &p)
}

// openParsed opens a parsed token with k, appends the value's JSON text to
// dst and returns its type. On error dst is returned as it was, and
// nothing that was decrypted is left in its spare capacity.
func (z *sealer) openParsed(dst []byte, k *DataKey, p *parsedToken) ([]byte, Type, error) {
	if string(p.name) != k.name || p.version != k.version {
		return dst, 0, errTokKey
	}
	n := len(dst)
	out := dst
	v2 := p.format == formatV2
	if v2 || p.typ == TypeString {
		// Format 2 tells the type only once opened: reserve the quote a
		// string needs, and take it out again for the other types.
		out = append(out, '"')
	}
	start := len(out)
	var err error
	if p.mode == ModeRandom {
		nonce := p.sealed[:gcmNonceSize]
		out, err = k.openRandom(out, nonce, p.sealed[gcmNonceSize:], p.header)
	} else {
		out, err = k.openDeterministic(out, p.sealed, p.header)
	}
	if err == ErrAuthentication {
		err = errTokAuth
	}
	if err != nil {
		return dst[:n], 0, err
	}
	typ := p.typ
	if v2 {
		value, t, ok := unpad(out[start:])
		if !ok || !validType(t) {
			clear(out[n:])
			return dst[:n], 0, errTokPadding
		}
		typ = t
		end := start + len(value)
		clear(out[end:])
		out = out[:end]
		if typ != TypeString {
			copy(out[start-1:], out[start:])
			out[end-1] = 0
			out, start = out[:end-1], start-1
		}
	}
	ok := false
	if typ == TypeString {
		ok = validStringContent(out[start:])
		out = append(out, '"')
	} else {
		ok = z.check.validValue(out[start:], typ)
	}
	if !ok {
		clear(out[n:])
		return dst[:n], 0, errTokContent
	}
	return out, typ, nil
}

// sealPlaintext turns a value's JSON text into the bytes that are sealed:
// the whole text, except for strings, where it is the text between the
// quotes, canonical in deterministic mode.
func (z *sealer) sealPlaintext(mode Mode, typ Type, text []byte, escaped bool) []byte {
	if typ != TypeString {
		return text
	}
	inner := text[1 : len(text)-1]
	if mode == ModeDeterministic && escaped {
		z.canon = appendCanonical(z.canon[:0], inner)
		return z.canon
	}
	return inner
}

func parseTokenInfo(token []byte) (TokenInfo, error) {
	p, _, err := decodeToken(nil, token)
	if err != nil {
		return TokenInfo{}, err
	}
	return TokenInfo{Format: int(p.format), Mode: p.mode, Type: p.typ, Key: string(p.name), KeyVersion: p.version}, nil
}

func appendSeal(dst []byte, k *DataKey, mode Mode, typ Type, jsonText []byte, pad Padding) ([]byte, error) {
	if err := pad.Validate(); err != nil {
		return nil, err
	}
	if mode != ModeRandom && mode != ModeDeterministic {
		return nil, fmt.Errorf("fieldcrypt: invalid mode %d", mode)
	}
	if !validType(typ) {
		return nil, fmt.Errorf("fieldcrypt: invalid type byte %#x", byte(typ))
	}
	if !utf8.Valid(jsonText) {
		return nil, fmt.Errorf("fieldcrypt: value: %w", ErrInvalidUTF8)
	}
	var z sealer
	if !z.check.validValue(jsonText, typ) {
		return nil, fmt.Errorf("fieldcrypt: value is not one JSON %s", typ)
	}
	escaped := typ == TypeString && bytes.IndexByte(jsonText, '\\') >= 0
	return z.seal(dst, k, mode, typ, z.sealPlaintext(mode, typ, jsonText, escaped), pad.Buckets)
}

func sealString(k *DataKey, mode Mode, s string, pad Padding) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("fieldcrypt: string: %w", ErrInvalidUTF8)
	}
	if err := pad.Validate(); err != nil {
		return nil, err
	}
	var z sealer
	pt := appendCanonicalString(nil, s)
	defer clear(pt)
	return z.seal(nil, k, mode, TypeString, pt, pad.Buckets)
}

func openToken(k *DataKey, token []byte) (Type, []byte, error) {
	var z sealer
	out, typ, err := z.open(nil, k, token)
	if err != nil {
		return 0, nil, err
	}
	return typ, out, nil
}

// String returns the type's name: string, number, bool, null, object, array.
func (t Type) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeNumber:
		return "number"
	case TypeBool:
		return "bool"
	case TypeNull:
		return "null"
	case TypeObject:
		return "object"
	case TypeArray:
		return "array"
	case TypeHidden:
		return "hidden"
	}
	return fmt.Sprintf("Type(%#x)", byte(t))
}
