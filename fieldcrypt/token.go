package fieldcrypt

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"
)

// Token format, version 1 (docs/FORMAT.md is the normative text):
//
//	token  = "sc1." base64url-without-padding(body)
//	body   = header || sealed
//	header = 0x01 || mode || type || keylen || key name || key version (uint32 BE)
//	sealed = nonce(12) || AES-256-GCM(ciphertext || tag(16))   (random)
//	       | SIV(16) || ciphertext                             (deterministic)
//
// The header is the associated data of both AEADs, so no part of it can be
// changed or moved to another token without failing authentication.
const (
	formatVersion   byte = 0x01
	headerFixedSize      = 8 // version, mode, type, keylen, key version

	// gcmNonceSize is the standard 96-bit GCM nonce: with random nonces,
	// NIST SP 800-38D section 8.3 limits one key to 2^32 invocations so
	// that the chance of a repeated nonce stays below 2^-32 (a repeat
	// reveals the XOR of two plaintexts and the authentication key).
	gcmNonceSize = 12
	gcmTagSize   = 16
	sivSize      = 16

	// GCMMessageLimit is how many values one key version may seal in
	// random mode, across all processes, before it must be rotated (NIST
	// SP 800-38D, 8.3). The key cache's per-entry usage limit only bounds
	// one process's share; the rotation schedule must bound the total.
	GCMMessageLimit = 1 << 32

	// maxHeaderSize is the largest header (a 64-byte key name).
	maxHeaderSize = headerFixedSize + maxKeyNameLen
)

// b64 is strict: the unused low bits of the last character must be zero, so
// each body has exactly one spelling and any changed character is noticed.
var b64 = base64.RawURLEncoding.Strict()

// Token parse errors; none carries token bytes.
var (
	errTokPrefix  = &detailError{ErrNotToken, `missing "sc1." prefix`}
	errTokBase64  = &detailError{ErrNotToken, "body is not unpadded base64url"}
	errTokShort   = &detailError{ErrNotToken, "body too short"}
	errTokMode    = &detailError{ErrNotToken, "unknown mode"}
	errTokType    = &detailError{ErrNotToken, "unknown value type"}
	errTokKeyName = &detailError{ErrNotToken, "invalid key name"}
	errTokKeyVer  = &detailError{ErrNotToken, "key version 0"}
	errTokChars   = &detailError{ErrNotToken, `string starts with "sc1." but is not a token`}
	errTokVersion = &detailError{ErrTokenVersion, "only format version 1 is understood"}
	errTokAuth    = &detailError{ErrAuthentication, "wrong key or modified token"}
	errTokContent = &detailError{ErrTokenContent, "the opened value is not of the type its header declares"}
	errTokKey     = &detailError{ErrUnknownKey, "token names a different key or version"}
)

// parsedToken is a decoded token. Its slices point into the decode buffer.
type parsedToken struct {
	mode    Mode
	typ     Type
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

// decodeToken parses token (without quotes) into buf, which it reuses and
// returns. It checks structure only.
func decodeToken(buf, token []byte) (parsedToken, []byte, error) {
	var p parsedToken
	if len(token) < len(TokenPrefix) || string(token[:len(TokenPrefix)]) != TokenPrefix {
		if len(token) >= 4 && token[0] == 's' && token[1] == 'c' && token[2]-'0' <= 9 && token[3] == '.' {
			return p, buf, errTokVersion
		}
		return p, buf, errTokPrefix
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
	if body[0] != formatVersion {
		return p, buf, errTokVersion
	}
	if len(body) < headerFixedSize {
		return p, buf, errTokShort
	}
	p.mode, p.typ = Mode(body[1]), Type(body[2])
	if p.mode != ModeRandom && p.mode != ModeDeterministic {
		return p, buf, errTokMode
	}
	if !validType(p.typ) {
		return p, buf, errTokType
	}
	kl := int(body[3])
	if kl == 0 || kl > maxKeyNameLen || len(body) < headerFixedSize+kl {
		return p, buf, errTokKeyName
	}
	p.name = body[4 : 4+kl]
	if !ValidKeyName(string(p.name)) {
		return p, buf, errTokKeyName
	}
	p.version = binary.BigEndian.Uint32(body[4+kl:])
	if p.version == 0 {
		return p, buf, errTokKeyVer
	}
	hl := headerFixedSize + kl
	p.header, p.sealed = body[:hl], body[hl:]
	min := sivSize
	if p.mode == ModeRandom {
		min = gcmNonceSize + gcmTagSize
	}
	if len(p.sealed) < min {
		return p, buf, errTokShort
	}
	return p, buf, nil
}

// appendHeader appends a token header.
func appendHeader(dst []byte, mode Mode, typ Type, name string, version uint32) []byte {
	dst = append(dst, formatVersion, byte(mode), byte(typ), byte(len(name)))
	dst = append(dst, name...)
	return binary.BigEndian.AppendUint32(dst, version)
}

// appendEncoded appends the token text (without quotes) of a header and its
// sealed bytes, given as one body.
func appendEncoded(dst, body []byte) []byte {
	dst = append(dst, TokenPrefix...)
	return b64.AppendEncode(dst, body)
}

// marshal gives the token text of p. For a token that decodeToken accepted
// it is the same bytes (the format has one spelling per body).
func (p *parsedToken) marshal() []byte {
	body := appendHeader(nil, p.mode, p.typ, string(p.name), p.version)
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
}

// seal appends the token text for plaintext pt (for strings, the text
// between the quotes, already canonical in deterministic mode) to dst.
func (z *sealer) seal(dst []byte, k *DataKey, mode Mode, typ Type, pt []byte) ([]byte, error) {
	body := appendHeader(z.body[:0], mode, typ, k.name, k.version)
	hl := len(body)
	var err error
	switch mode {
	case ModeRandom:
		body = append(body, make([]byte, gcmNonceSize)...)
		nonce := body[hl:]
		if z.rand == nil {
			rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
		} else if _, err := io.ReadFull(z.rand, nonce); err != nil {
			return dst, fmt.Errorf("fieldcrypt: nonce: %w", err)
		}
		body, err = k.sealRandom(body, nonce, pt, body[:hl])
	case ModeDeterministic:
		body, err = k.sealDeterministic(body, pt, body[:hl])
	default:
		err = fmt.Errorf("fieldcrypt: invalid mode %d", mode)
	}
	z.body = body
	if err != nil {
		return dst, err
	}
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

func (z *sealer) openParsed(dst []byte, k *DataKey, p *parsedToken) ([]byte, Type, error) {
	if string(p.name) != k.name || p.version != k.version {
		return dst, 0, errTokKey
	}
	n := len(dst)
	out := dst
	if p.typ == TypeString {
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
	ok := false
	if p.typ == TypeString {
		ok = validStringContent(out[start:])
		out = append(out, '"')
	} else {
		ok = z.check.validValue(out[start:], p.typ)
	}
	if !ok {
		clear(out[n:])
		return dst[:n], 0, errTokContent
	}
	return out, p.typ, nil
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
	return TokenInfo{Mode: p.mode, Type: p.typ, Key: string(p.name), KeyVersion: p.version}, nil
}

func appendSeal(dst []byte, k *DataKey, mode Mode, typ Type, jsonText []byte) ([]byte, error) {
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
	return z.seal(dst, k, mode, typ, z.sealPlaintext(mode, typ, jsonText, escaped))
}

func sealString(k *DataKey, mode Mode, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("fieldcrypt: string: %w", ErrInvalidUTF8)
	}
	var z sealer
	return z.seal(nil, k, mode, TypeString, appendCanonicalString(nil, s))
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
	}
	return fmt.Sprintf("Type(%#x)", byte(t))
}
