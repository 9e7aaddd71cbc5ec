package fieldcrypt

import (
	"context"
	"strings"
	"unicode/utf8"
)

// PolicyFunc adapts a function to the Policy interface.
type PolicyFunc func(key string) (Action, Masker)

// Action implements Policy.
func (f PolicyFunc) Action(key string) (Action, Masker) { return f(key) }

// KeyPolicy is the usual decrypt policy, as a rule file states it: tokens of
// the keys in Open are opened, those in Mask are masked with their Masker,
// all others are left as tokens (least privilege). A key in both is masked.
type KeyPolicy struct {
	Open []string
	Mask map[string]Masker
}

// Action implements Policy.
func (p *KeyPolicy) Action(key string) (Action, Masker) {
	if m, ok := p.Mask[key]; ok && m != nil {
		return ActionMask, m
	}
	for _, k := range p.Open {
		if k == key {
			return ActionOpen, nil
		}
	}
	return ActionLeave, nil
}

// MaskString returns a Masker that replaces every opened value by the JSON
// string s, whatever its type ("***" is the usual choice). It reveals
// nothing about the value, not even its length.
func MaskString(s string) Masker {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	q := append(appendCanonicalString([]byte{'"'}, s), '"')
	return func(_ context.Context, dst []byte, _ TokenInfo, _ []byte, _ Keyring) ([]byte, error) {
		return append(dst, q...), nil
	}
}

var (
	_ Policy = PolicyFunc(nil)
	_ Policy = (*KeyPolicy)(nil)
)
