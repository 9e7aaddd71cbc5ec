package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// These two methods let the proxy keep a masked value that an application
// writes back unchanged (docs/RULES.md, "Decrypt and masks"): a write that
// carries a value which could be a mask needs the stored document, and
// keeps the stored token where the value equals what the mask shows for
// it.

// MaskCandidate reports whether jsonText, a value written into a field of
// key, could be what the plan's mask for key shows: the literal of a full
// or literal mask, a last4 mask ("***" and up to four characters), a hash
// mask ("hmac-sha256:...", or "***" where a hash could not be computed).
// It is a cheap filter, true for every value a mask can produce; only
// ShownFor decides.
func (p *Plan) MaskCandidate(key string, jsonText []byte) bool {
	if p == nil {
		return false
	}
	m, ok := p.masks[key]
	if !ok {
		return false
	}
	var s string
	if len(jsonText) == 0 || jsonText[0] != '"' || json.Unmarshal(jsonText, &s) != nil {
		return false
	}
	switch m.kind {
	case maskLast4:
		return strings.HasPrefix(s, DefaultMaskText)
	case maskHash:
		return s == DefaultMaskText || strings.HasPrefix(s, HashMaskPrefix)
	}
	return s == m.text
}

// ShownFor returns the JSON text the plan's mask shows for token, the way
// a response would show it; ok is false when the token cannot be opened
// or its key is not masked by this plan.
func (p *Plan) ShownFor(ctx context.Context, token []byte, keys fieldcrypt.Keyring) (shown []byte, ok bool) {
	if p == nil || keys == nil {
		return nil, false
	}
	info, err := fieldcrypt.ParseTokenInfo(token)
	if err != nil {
		return nil, false
	}
	m, masked := p.masks[info.Key]
	if !masked {
		return nil, false
	}
	k, err := keys.OpenKey(ctx, info.Key, info.KeyVersion)
	if err != nil || k == nil {
		return nil, false
	}
	typ, plain, err := fieldcrypt.OpenToken(k, token)
	if err != nil {
		return nil, false
	}
	defer clear(plain)
	info.Type = typ
	out, err := m.masker(p.stats)(ctx, nil, info, plain, keys)
	if err != nil {
		return nil, false
	}
	return bytes.Clone(out), true
}

// TokenPolicy returns the decrypt section as a fieldcrypt.Policy: what this
// sidecar reveals of each key. The proxy puts it on every request's
// context (fieldcrypt.WithTokenPolicy), so that a request can carry a
// token only where the rules would have put it (docs/FORMAT.md §7).
func (p *Plan) TokenPolicy() fieldcrypt.Policy {
	if p == nil || p.policy == nil {
		return nil
	}
	return p.policy
}

// policyRef is Schema.Reveal: the profile is built before the decrypt
// section is compiled, so it gets this reference, which buildDecrypt fills
// in before the plan is used.
type policyRef struct{ p *policy }

func (r *policyRef) Action(key string) (fieldcrypt.Action, fieldcrypt.Masker) {
	if r.p == nil {
		return fieldcrypt.ActionLeave, nil
	}
	return r.p.Action(key)
}
