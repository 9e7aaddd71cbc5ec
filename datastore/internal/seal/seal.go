// Package seal seals single JSON values of a request (a compared value in
// a query, a field of a document read into a jsontree) the way the
// streaming document encryptor seals the same field, so that a lookup
// finds what a write stored: the same key, the same mode, strings in their
// canonical spelling (fieldcrypt.SealValue), a null left unless the field
// encrypts nulls, and a string that already is a token opening under the
// key it names left as it is (the encryptor stores such a string
// unchanged, so a lookup must send it unchanged).
//
// The datastore profiles for Elasticsearch and REST stores share it; each
// request gets its own Sealer, which resolves every key once.
package seal

import (
	"context"
	"fmt"
	"slices"

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
// value, deterministic for a compared one). It reports whether it sealed.
func (s *Sealer) Node(f *datastore.Field, mode fieldcrypt.Mode, n *jsontree.Node) (bool, error) {
	if n.Kind == jsontree.Null && !f.EncryptNull {
		return false, nil
	}
	if n.Kind == jsontree.String && s.IsToken(n.Raw()) {
		return false, nil
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

// Value seals one JSON text of type typ under f's key in mode.
func (s *Sealer) Value(f *datastore.Field, mode fieldcrypt.Mode, typ fieldcrypt.Type, jsonText []byte) ([]byte, error) {
	k, err := s.Key(f.Key)
	if err != nil {
		return nil, err
	}
	tok, err := fieldcrypt.SealValue(k, mode, typ, jsonText)
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
	tok, err := fieldcrypt.SealString(k, mode, v)
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

// IsToken reports whether raw (a JSON string, quotes included, written
// without escapes, as the encryptor requires) is a token that opens under
// the key it names.
func (s *Sealer) IsToken(raw []byte) bool {
	if len(raw) < len(fieldcrypt.TokenPrefix)+2 {
		return false
	}
	return s.IsTokenText(raw[1 : len(raw)-1])
}

// IsTokenText is IsToken on a string's content.
func (s *Sealer) IsTokenText(tok []byte) bool {
	if !fieldcrypt.HasTokenPrefix(string(tok)) || slices.Contains(tok, '\\') || s.keys == nil {
		return false
	}
	info, err := fieldcrypt.ParseTokenInfo(tok)
	if err != nil {
		return false
	}
	k, err := s.keys.OpenKey(s.ctx, info.Key, info.KeyVersion)
	if err != nil || k == nil {
		return false
	}
	_, plain, err := fieldcrypt.OpenToken(k, tok)
	clear(plain)
	return err == nil
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
