package proxy

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

// sealQuery encrypts the values of the query parameters that qrules name
// and returns the new raw query, leaving every other byte of it as it was
// (parameter order, escaping, separators), so that the upstream sees the
// same request apart from the protected values.
//
// Both '&' and ';' count as separators: CouchDB (mochiweb) splits on both,
// so a parser that knew only '&' would let "?a=1;email=x" through in
// plaintext. A parameter name that does not unescape is refused: it could
// hide a protected name from us but not from the upstream.
//
// Values are sealed with fieldcrypt.SealString, exactly as a JSON string
// holding the same text would be, so a deterministic token in a query
// matches the one stored in a document. A value that already is a token
// is left alone only if it opens, as the body transformer does: plaintext
// dressed up as a token is still encrypted. Which tokens a query may carry
// is fieldcrypt.CheckToken's decision under the request's token policy: a
// token of this parameter's own key and mode that this sidecar does not
// open is left (the app saw it as a token); a token of a key the sidecar
// opens or masks is refused (token_not_allowed), here or in any other
// parameter; anything else is sealed as data.
func sealQuery(ctx context.Context, raw string, qrules []rules.QueryRule, keys fieldcrypt.Keyring, counts map[string]int) (string, *refusal) {
	var out []byte // allocated on the first protected parameter
	copied := 0    // raw[:copied] is already in out
	for start := 0; start <= len(raw); {
		end := strings.IndexAny(raw[start:], "&;")
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		seg := raw[start:end]
		rawName, rawValue, hasValue := strings.Cut(seg, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return "", refBadQuery
		}
		rule := findQueryRule(qrules, name)
		if rule == nil && hasValue {
			// Not protected, but a token of a key this sidecar reveals
			// has no business in a request (docs/FORMAT.md section 7).
			if value, err := url.QueryUnescape(rawValue); err == nil && fieldcrypt.CheckLooseValue(ctx, value) != nil {
				return "", refTokenNotAllowed
			}
		}
		if rule != nil && hasValue {
			value, err := url.QueryUnescape(rawValue)
			if err != nil {
				return "", refBadQuery
			}
			keep, err := fieldcrypt.CheckToken(ctx, keys, rule.Key, rule.Mode, value)
			if err != nil {
				return "", refTokenNotAllowed
			}
			if !keep {
				k, err := keys.SealKey(ctx, rule.Key)
				if err != nil {
					if ctx.Err() != nil {
						return "", refCanceled
					}
					return "", refKeyUnavailable(rule.Key)
				}
				tok, err := fieldcrypt.SealString(k, rule.Mode, value)
				if errors.Is(err, fieldcrypt.ErrInvalidUTF8) {
					return "", refBadQuery
				}
				if err != nil {
					return "", refKeyUnavailable(rule.Key)
				}
				if out == nil {
					out = make([]byte, 0, len(raw)+len(tok)+16)
				}
				valueStart := start + len(rawName) + 1
				out = append(out, raw[copied:valueStart]...)
				// Tokens are "sc2." plus base64url: QueryEscape leaves
				// them as they are, but escaping keeps this correct if
				// the alphabet ever grows.
				out = append(out, url.QueryEscape(string(tok))...)
				copied = end
				counts[rule.Key]++
			}
		}
		start = end + 1
	}
	if out == nil {
		return raw, nil
	}
	out = append(out, raw[copied:]...)
	return string(out), nil
}

func findQueryRule(qrules []rules.QueryRule, name string) *rules.QueryRule {
	for i := range qrules {
		if qrules[i].Param == name {
			return &qrules[i]
		}
	}
	return nil
}
