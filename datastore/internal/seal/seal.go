// Package seal seals single JSON values of a request (a compared value in
// a query, a field of a document read into a jsontree) the way the
// streaming document encryptor seals the same field, so that a lookup
// finds what a write stored: the same key, the same mode, strings in their
// canonical spelling (fieldcrypt.SealValue), a null left unless the field
// encrypts nulls, and a string that already is a token opening under the
// key it names left as it is (the encryptor stores such a string
// unchanged, so a lookup must send it unchanged: fieldcrypt.CheckToken
// decides, under the request's token policy).
//
// The datastore profiles for Elasticsearch and REST stores share it; each
// request gets its own Sealer, which resolves every key once.
package seal

import (
	"context"
	"fmt"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Sealer seals values for one request.
type Sealer struct {
	ctx    context.Context
	keys   fieldcrypt.Keyring
	prefix string // the profile's name, which starts every error
	got    map[string]*fieldcrypt.DataKey
}

// New returns a Sealer whose errors start with prefix (the profile's
// package name).
func New(ctx context.Context, keys fieldcrypt.Keyring, prefix string) *Sealer {
	return &Sealer{ctx: ctx, keys: keys, prefix: prefix}
}

// Node replaces n by its token under f's key in mode (f.Mode for a stored
// value, deterministic for a compared one), padded as f says. It reports
// whether it sealed. A string that is a token is decided by
// fieldcrypt.CheckToken under the request's token policy, as the
// streaming encryptor decides: a token of this field's own key and mode
// that this sidecar does not open is kept (the app saw it as a token), a
// token of a key it opens or masks is refused (token_not_allowed), and
// anything else is sealed as data.
func (s *Sealer) Node(f *datastore.Field, mode fieldcrypt.Mode, n *jsontree.Node) (bool, error) {
	if n.Kind == jsontree.Null && !f.EncryptNull {
		return false, nil
	}
	if n.Kind == jsontree.String {
		if text, ok := n.Text(); ok {
			keep, err := fieldcrypt.CheckToken(s.ctx, s.keys, f.Key, mode, text)
			if err != nil {
				return false, err
			}
			if keep {
				return false, nil
			}
		}
	}
	tok, err := s.Value(f, mode, TokenType(n.Kind), n.Raw())
	if err != nil {
		return false, err
	}
	out := make([]byte, 0, len(tok)+2)
	out = append(append(append(out, '"'), tok...), '"')
	n.Replace(jsontree.String, out)
	return true, nil
}

// Loose checks a value that no rule protects (a member of a document or a
// compared value outside every protected field): a token of a key this
// sidecar opens or masks has no business there, and is refused
// (fieldcrypt.CheckLooseValue), so that nobody can store one where the
// sidecar would later open it for them.
func (s *Sealer) Loose(n *jsontree.Node) error {
	if n.Kind != jsontree.String {
		return nil
	}
	text, _ := n.Text()
	return fieldcrypt.CheckLooseValue(s.ctx, text)
}

// Keep reports whether a compared string (a query parameter's value) is
// kept as it is, or must be sealed; see Node.
func (s *Sealer) Keep(f *datastore.Field, mode fieldcrypt.Mode, value string) (bool, error) {
	return fieldcrypt.CheckToken(s.ctx, s.keys, f.Key, mode, value)
}

// Value seals one JSON text of type typ under f's key in mode, padded as
// f says.
func (s *Sealer) Value(f *datastore.Field, mode fieldcrypt.Mode, typ fieldcrypt.Type, jsonText []byte) ([]byte, error) {
	k, err := s.Key(f.Key)
	if err != nil {
		return nil, err
	}
	tok, err := fieldcrypt.SealValuePadded(k, mode, typ, jsonText, f.Pad)
	if err != nil {
		return nil, fmt.Errorf("%s: seal a value of field %q with key %s: %w", s.prefix, f.Name, k, err)
	}
	return tok, nil
}

// String seals a string (a URL query parameter's value) exactly as the
// JSON string holding it is sealed in a document.
func (s *Sealer) String(f *datastore.Field, mode fieldcrypt.Mode, v string) ([]byte, error) {
	k, err := s.Key(f.Key)
	if err != nil {
		return nil, err
	}
	tok, err := fieldcrypt.SealStringPadded(k, mode, v, f.Pad)
	if err != nil {
		return nil, fmt.Errorf("%s: seal a value of field %q with key %s: %w", s.prefix, f.Name, k, err)
	}
	return tok, nil
}

// Key resolves a sealing key once per request.
func (s *Sealer) Key(name string) (*fieldcrypt.DataKey, error) {
	if k := s.got[name]; k != nil {
		return k, nil
	}
	if s.keys == nil {
		return nil, fmt.Errorf("%s: key %q: no keyring", s.prefix, name)
	}
	k, err := s.keys.SealKey(s.ctx, name)
	if err == nil && k == nil {
		err = fieldcrypt.ErrUnknownKey
	}
	if err != nil {
		return nil, fmt.Errorf("%s: key %q: %w", s.prefix, name, err)
	}
	if s.got == nil {
		s.got = make(map[string]*fieldcrypt.DataKey)
	}
	s.got[name] = k
	return k, nil
}

// TokenType is the fieldcrypt type of a JSON kind.
func TokenType(k jsontree.Kind) fieldcrypt.Type {
	switch k {
	case jsontree.Object:
		return fieldcrypt.TypeObject
	case jsontree.Array:
		return fieldcrypt.TypeArray
	case jsontree.String:
		return fieldcrypt.TypeString
	case jsontree.Number:
		return fieldcrypt.TypeNumber
	case jsontree.Bool:
		return fieldcrypt.TypeBool
	}
	return fieldcrypt.TypeNull
}
