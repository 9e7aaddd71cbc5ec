package fieldcrypt

import (
	"unicode/utf16"
	"unicode/utf8"
)

// Deterministic tokens must not depend on how a client happened to spell a
// string: "\u0061" and "a" are the same value and must give the same token,
// or an equality query would miss. So before sealing in deterministic mode a
// string is rewritten into the canonical spelling of RFC 8785 (JSON
// Canonicalization Scheme), section 3.2.2.2, which is also what
// ECMAScript's JSON.stringify produces:
//
//   - '"' and '\' are written \" and \\;
//   - U+0008, U+0009, U+000A, U+000C, U+000D are written \b \t \n \f \r;
//   - the other controls below U+0020 are written \u00hh, lower-case hex;
//   - everything else is written as itself, in UTF-8 (including '/', DEL,
//     U+2028 and U+2029, and characters written as surrogate-pair escapes);
//   - a lone surrogate escape (which JSON allows and UTF-8 cannot carry)
//     stays an escape, \udhhh in lower-case hex.

const hexLower = "0123456789abcdef"

// appendCanonical appends the canonical spelling of raw, the text between
// the quotes of a valid JSON string, to dst.
func appendCanonical(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		// Runs without escapes are canonical already: valid JSON cannot
		// hold a raw '"', '\' or control byte.
		j := i
		for j < len(raw) && raw[j] != '\\' {
			j++
		}
		dst = append(dst, raw[i:j]...)
		if j == len(raw) {
			break
		}
		i = j
		switch c := raw[i+1]; c {
		case 'u':
			r := rune(hex4(raw[i+2 : i+6]))
			i += 6
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if lo := rune(hex4(raw[i+2 : i+6])); lo >= 0xdc00 && lo <= 0xdfff {
						dst = utf8.AppendRune(dst, utf16.DecodeRune(r, lo))
						i += 6
						continue
					}
				}
				dst = appendUEscape(dst, r)
				continue
			}
			dst = appendCanonicalRune(dst, r)
		case '/':
			dst = append(dst, '/')
			i += 2
		default: // " \ b f n r t: already in their canonical short form
			dst = append(dst, '\\', c)
			i += 2
		}
	}
	return dst
}

// appendCanonicalRune appends the canonical spelling of one code point that
// is not a surrogate.
func appendCanonicalRune(dst []byte, r rune) []byte {
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	if r < 0x20 {
		return appendUEscape(dst, r)
	}
	return utf8.AppendRune(dst, r)
}

func appendUEscape(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexLower[r>>12&0xf], hexLower[r>>8&0xf], hexLower[r>>4&0xf], hexLower[r&0xf])
}

func hex4(b []byte) int {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// appendCanonicalString appends the canonical spelling of the Go string s
// (without quotes). s must be valid UTF-8.
func appendCanonicalString(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if strPlain[c] || c >= 0x80 {
			j := i + 1
			for j < len(s) && (strPlain[s[j]] || s[j] >= 0x80) {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		dst = appendCanonicalRune(dst, rune(c))
		i++
	}
	return dst
}

// decodeString appends the value of raw, the text between the quotes of a
// valid JSON string, to dst, as UTF-8 (lone surrogates become U+FFFD, as
// encoding/json does). It is used for object keys, which are compared by
// value: "s\u0073n" is the member "ssn".
func decodeString(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		j := i
		for j < len(raw) && raw[j] != '\\' {
			j++
		}
		dst = append(dst, raw[i:j]...)
		if j == len(raw) {
			break
		}
		i = j
		c := raw[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := rune(hex4(raw[i : i+4]))
			i += 4
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if lo := rune(hex4(raw[i+2 : i+6])); lo >= 0xdc00 && lo <= 0xdfff {
						r = utf16.DecodeRune(r, lo)
						i += 6
					}
				}
			}
			dst = utf8.AppendRune(dst, r) // a lone surrogate becomes U+FFFD
		default: // " \ /
			dst = append(dst, c)
		}
	}
	return dst
}
