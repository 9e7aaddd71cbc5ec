package sweep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// KeyVersion names one version of a data key, written "pii:3".
type KeyVersion struct {
	Key     string `json:"key"`
	Version uint32 `json:"version"`
}

func (kv KeyVersion) String() string {
	return kv.Key + ":" + strconv.FormatUint(uint64(kv.Version), 10)
}

// ParseKeyVersion parses "pii:3".
func ParseKeyVersion(s string) (KeyVersion, error) {
	name, ver, ok := strings.Cut(strings.TrimSpace(s), ":")
	v, err := strconv.ParseUint(ver, 10, 32)
	if !ok || err != nil || v == 0 || !fieldcrypt.ValidKeyName(name) {
		return KeyVersion{}, fmt.Errorf("sweep: %q is not KEY:VERSION (for example pii:3)", s)
	}
	return KeyVersion{Key: name, Version: uint32(v)}, nil
}

// FieldSpec is a protected field as a sweep remembers it: enough to find
// its values again after the rules stop naming it.
type FieldSpec struct {
	// Name as written in the rule file ("ssn", "card.number").
	Name string `json:"name"`
	// Path is Name split at unescaped dots.
	Path []string `json:"path"`
	Key  string   `json:"key"`
}

// specsOf lists a collection's fields.
func specsOf(c *datastore.Collection) []FieldSpec {
	out := make([]FieldSpec, 0, len(c.Fields))
	for _, f := range c.Fields {
		out = append(out, FieldSpec{Name: f.Name, Path: append([]string(nil), f.Path...), Key: f.Key})
	}
	return out
}

// collectionOf builds a collection whose fields are specs, so that
// FieldAt gives removed fields the meaning the rules gave them: a single
// name at any depth, a dotted path from the root, arrays transparent.
func collectionOf(specs []FieldSpec) *datastore.Collection {
	c := &datastore.Collection{}
	for _, s := range specs {
		c.Fields = append(c.Fields, &datastore.Field{Name: s.Name, Path: s.Path, AnyDepth: len(s.Path) == 1, Key: s.Key})
	}
	return c
}

// plan is what a sweep does to documents of one collection under one set
// of rules.
type plan struct {
	col *datastore.Collection
	// enc seals plaintext in protected fields: the collection's
	// DocumentRules in the streaming encryptor, exactly as the proxy
	// seals a document written through it. It leaves valid tokens alone.
	enc *fieldcrypt.Encryptor
	// from: re-seal only tokens of these versions; when empty, every
	// token of a version that is not its key's primary.
	from map[KeyVersion]bool
	// removed are fields the rules no longer protect whose tokens are
	// opened (decrypt) when the sweep may do so.
	removed *datastore.Collection
	decrypt bool
}

func newPlan(col *datastore.Collection, from []KeyVersion, removed []FieldSpec, decrypt bool) (*plan, error) {
	rules, err := col.DocumentRules()
	if err != nil {
		return nil, err
	}
	enc, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		return nil, fmt.Errorf("sweep: collection %q: %w", col.Name, err)
	}
	p := &plan{col: col, enc: enc, removed: collectionOf(removed), decrypt: decrypt}
	if len(from) > 0 {
		p.from = map[KeyVersion]bool{}
		for _, kv := range from {
			p.from[kv] = true
		}
	}
	return p, nil
}

// tokenAt is one token found in a document.
type tokenAt struct {
	node *jsontree.Node
	info fieldcrypt.TokenInfo
	// field protects the token's place (nil: no current rule does).
	field *datastore.Field
	// removed is the removed field at the token's place, when no
	// current rule protects it.
	removed *datastore.Field
}

// plainAt is a plaintext value in a protected field.
type plainAt struct {
	field *datastore.Field
}

// scan is what a walk of one document found.
type scan struct {
	tokens []tokenAt
	plain  []plainAt
}

// walk finds every token in the document and every value in a
// protected field that is not one. Arrays are transparent to the field
// paths, as for FieldAt.
func (p *plan) walk(doc *jsontree.Node) *scan {
	s := &scan{}
	var visit func(n *jsontree.Node, names []string, guarded bool)
	visit = func(n *jsontree.Node, names []string, guarded bool) {
		switch n.Kind {
		case jsontree.Object:
			for _, m := range n.Members {
				sub := append(names[:len(names):len(names)], m.Name)
				if guarded {
					// Inside a protected value: it is sealed whole, but
					// tokens in it are still values under their version.
					visit(m.Value, sub, true)
					continue
				}
				f, inside := p.col.FieldAt(sub)
				if f != nil && !inside {
					p.protected(s, m.Value, sub, f)
					continue
				}
				visit(m.Value, sub, false)
			}
		case jsontree.Array:
			for _, e := range n.Elems {
				visit(e, names, guarded)
			}
		case jsontree.String:
			if info, ok := tokenInfo(n); ok {
				t := tokenAt{node: n, info: info}
				if !guarded {
					if rf, inside := p.removed.FieldAt(names); rf != nil && !inside {
						t.removed = rf
					}
				}
				s.tokens = append(s.tokens, t)
			}
		}
	}
	visit(doc, nil, false)
	return s
}

// protected records the value v of protected field f.
func (p *plan) protected(s *scan, v *jsontree.Node, names []string, f *datastore.Field) {
	switch v.Kind {
	case jsontree.String:
		if info, ok := tokenInfo(v); ok {
			s.tokens = append(s.tokens, tokenAt{node: v, info: info, field: f})
			return
		}
	case jsontree.Null:
		if !f.EncryptNull {
			return
		}
	case jsontree.Object, jsontree.Array:
		// Sealed whole; tokens inside (from older rules) count too.
		inner := &scan{}
		var visit func(n *jsontree.Node)
		visit = func(n *jsontree.Node) {
			switch n.Kind {
			case jsontree.Object:
				for _, m := range n.Members {
					visit(m.Value)
				}
			case jsontree.Array:
				for _, e := range n.Elems {
					visit(e)
				}
			case jsontree.String:
				if info, ok := tokenInfo(n); ok {
					inner.tokens = append(inner.tokens, tokenAt{node: n, info: info})
				}
			}
		}
		visit(v)
		s.tokens = append(s.tokens, inner.tokens...)
	}
	s.plain = append(s.plain, plainAt{field: f})
}

// misplaced counts the tokens of a scan that stand in a protected field
// of another key or mode.
func (s *scan) misplaced(o *Outcome) {
	for _, t := range s.tokens {
		if f := t.field; f != nil && (f.Key != t.info.Key || f.Mode != t.info.Mode) {
			addName(&o.Misplaced, f.Name, 1)
		}
	}
}

// tokenInfo reports whether a string node holds a token, as the
// transformer recognises one: written without escapes, with a header that
// parses. Whether it opens is another matter.
func tokenInfo(n *jsontree.Node) (fieldcrypt.TokenInfo, bool) {
	raw := n.Raw()
	if len(raw) < 2+len(fieldcrypt.TokenPrefix) || bytes.IndexByte(raw, '\\') >= 0 {
		return fieldcrypt.TokenInfo{}, false
	}
	content := raw[1 : len(raw)-1]
	if !fieldcrypt.HasTokenPrefix(string(content[:len(fieldcrypt.TokenPrefix)])) {
		return fieldcrypt.TokenInfo{}, false
	}
	info, err := fieldcrypt.ParseTokenInfo(content)
	if err != nil {
		return fieldcrypt.TokenInfo{}, false
	}
	return info, true
}

// Outcome is what the sweep did, or would do, to one document.
type Outcome struct {
	// Body is the document to write; nil when it stays as it is.
	Body []byte
	// Reencrypted, Encrypted, Decrypted count values changed.
	Reencrypted, Encrypted, Decrypted int
	// Tokens counts the tokens the document holds afterwards (as it is
	// written, or as it stays), by key version.
	Tokens map[KeyVersion]int
	// Plaintext counts values left in plaintext in protected fields, by
	// field name: what a dry run would encrypt, or what a sweep could not.
	Plaintext map[string]int
	// Unopenable counts tokens that were due to be re-encrypted or
	// decrypted and could not be opened (destroyed version, compromised
	// without override, tampered), by key version.
	Unopenable map[KeyVersion]int
	// Removed counts tokens left in fields the rules no longer protect,
	// by field name.
	Removed map[string]int
	// Misplaced counts tokens in protected fields that are not of the
	// field's key and mode (pasted there, or from older rules), by field
	// name: the proxy never opens a token there (bound responses), and
	// the sweep leaves it as it is.
	Misplaced map[string]int
	// Blocked: the document holds plaintext in protected fields and
	// tokens there that cannot be opened, so it was not encrypted (the
	// encryptor would take such a token for plaintext and seal it
	// again, hiding it).
	Blocked bool
}

func (o *Outcome) addToken(kv KeyVersion, n int) {
	if o.Tokens == nil {
		o.Tokens = map[KeyVersion]int{}
	}
	o.Tokens[kv] += n
}

// target reports whether a token is to be sealed again under its key's
// primary version.
func (p *plan) target(info fieldcrypt.TokenInfo, prim func(string) (uint32, error)) bool {
	kv := KeyVersion{info.Key, info.KeyVersion}
	if p.from != nil {
		return p.from[kv]
	}
	v, err := prim(info.Key)
	return err == nil && v != info.KeyVersion
}

// errDocument marks a failure that concerns one document only.
type errDocument struct{ err error }

func (e *errDocument) Error() string { return e.err.Error() }
func (e *errDocument) Unwrap() error { return e.err }

// inventory counts what a document holds without changing it: the dry
// run. It needs no key.
func (p *plan) inventory(ctx context.Context, body []byte, prim func(string) (uint32, error)) (*Outcome, error) {
	doc, err := jsontree.Parse(body, fieldcrypt.DefaultMaxDepth)
	if err != nil {
		return nil, &errDocument{fmt.Errorf("sweep: document is not JSON the sweep can read: %w", err)}
	}
	s := p.walk(doc)
	o := &Outcome{}
	s.misplaced(o)
	for _, t := range s.tokens {
		kv := KeyVersion{t.info.Key, t.info.KeyVersion}
		o.addToken(kv, 1)
		switch {
		case t.removed != nil && t.info.Key == t.removed.Key:
			if p.decrypt {
				o.Decrypted++
			} else {
				addName(&o.Removed, t.removed.Name, 1)
			}
		case p.target(t.info, prim):
			o.Reencrypted++
		}
	}
	for _, pl := range s.plain {
		addName(&o.Plaintext, pl.field.Name, 1)
	}
	o.Encrypted = len(s.plain)
	return o, nil
}

// apply computes the document to write: tokens of target versions sealed
// again under the primary (same key, same mode, same place), tokens of
// removed fields opened when the sweep may, then plaintext in protected
// fields sealed by the encryptor. Key errors that concern one token
// (a version that cannot be opened) are counted, not returned; errors
// that stop the whole sweep (no primary, keystore or HSM down) are
// returned.
func (p *plan) apply(ctx context.Context, body []byte, keys fieldcrypt.Keyring, prim func(string) (uint32, error)) (*Outcome, error) {
	doc, err := jsontree.Parse(body, fieldcrypt.DefaultMaxDepth)
	if err != nil {
		return nil, &errDocument{fmt.Errorf("sweep: document is not JSON the sweep can read: %w", err)}
	}
	s := p.walk(doc)
	o := &Outcome{}
	s.misplaced(o)
	sealKeys := map[string]*fieldcrypt.DataKey{}
	unopenedInField := false
	for _, t := range s.tokens {
		kv := KeyVersion{t.info.Key, t.info.KeyVersion}
		decrypt := t.removed != nil && t.info.Key == t.removed.Key
		if decrypt && !p.decrypt {
			addName(&o.Removed, t.removed.Name, 1)
			o.addToken(kv, 1)
			continue
		}
		if !decrypt && !p.target(t.info, prim) {
			o.addToken(kv, 1)
			continue
		}
		typ, text, err := openWith(ctx, keys, t.info, t.node.Raw())
		if err != nil {
			if stops(err) {
				return nil, err
			}
			addKV(&o.Unopenable, kv, 1)
			o.addToken(kv, 1)
			if t.field != nil {
				unopenedInField = true
			}
			continue
		}
		if decrypt {
			t.node.Replace(kindOf(typ), text)
			o.Decrypted++
			continue
		}
		pk := sealKeys[t.info.Key]
		if pk == nil {
			if pk, err = keys.SealKey(ctx, t.info.Key); err != nil {
				clear(text)
				return nil, fmt.Errorf("sweep: key %q has no version to seal with: %w", t.info.Key, err)
			}
			sealKeys[t.info.Key] = pk
		}
		// A token in its own field is padded as the field pads (the
		// proxy seals that field and its lookups so: a searchable field
		// must stay findable); a token anywhere else is never opened by
		// the proxy (bound responses), and gets the format's minimum.
		var pad fieldcrypt.Padding
		if f := t.field; f != nil && f.Key == t.info.Key && f.Mode == t.info.Mode {
			pad = f.Pad
		}
		tok, err := fieldcrypt.SealValuePadded(pk, t.info.Mode, typ, text, pad)
		clear(text)
		if err != nil {
			return nil, fmt.Errorf("sweep: seal under %s: %w", pk, err)
		}
		quoted := make([]byte, 0, len(tok)+2)
		quoted = append(append(append(quoted, '"'), tok...), '"')
		t.node.Replace(jsontree.String, quoted)
		o.Reencrypted++
		o.addToken(KeyVersion{pk.Name(), pk.Version()}, 1)
	}
	out := body
	if doc.Changed() {
		out = doc.Bytes()
	}
	if len(s.plain) > 0 {
		if unopenedInField {
			o.Blocked = true
			for _, pl := range s.plain {
				addName(&o.Plaintext, pl.field.Name, 1)
			}
		} else {
			enc, rep, err := p.enc.EncryptBytes(ctx, out, keys, nil)
			if err != nil {
				if stops(err) {
					return nil, err
				}
				return nil, &errDocument{fmt.Errorf("sweep: encrypt the document's protected fields: %w", err)}
			}
			for _, u := range rep.Keys {
				o.Encrypted += u.Fields
				o.addToken(KeyVersion{u.Name, u.Version}, u.Fields)
			}
			out = enc
		}
	}
	if o.Reencrypted+o.Decrypted+o.Encrypted > 0 {
		o.Body = out
	}
	return o, nil
}

// openWith opens a token's JSON text with its own key version.
func openWith(ctx context.Context, keys fieldcrypt.Keyring, info fieldcrypt.TokenInfo, raw []byte) (fieldcrypt.Type, []byte, error) {
	k, err := keys.OpenKey(ctx, info.Key, info.KeyVersion)
	if err != nil {
		return 0, nil, err
	}
	return fieldcrypt.OpenToken(k, raw[1:len(raw)-1])
}

// stops reports whether a key error means that nothing can be sealed or
// opened now (keystore or HSM unreachable, a record that fails its
// integrity check, no primary version, the seal limit): the sweep stops
// and can be resumed, rather than counting one version as unopenable.
func stops(err error) bool {
	for _, s := range []error{context.Canceled, context.DeadlineExceeded, keystore.ErrUnavailable, hsm.ErrUnavailable,
		keystore.ErrIntegrity, keystore.ErrUnsealed, keystore.ErrNoPrimary, keystore.ErrSealLimit} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func kindOf(t fieldcrypt.Type) jsontree.Kind {
	switch t {
	case fieldcrypt.TypeString:
		return jsontree.String
	case fieldcrypt.TypeNumber:
		return jsontree.Number
	case fieldcrypt.TypeBool:
		return jsontree.Bool
	case fieldcrypt.TypeNull:
		return jsontree.Null
	case fieldcrypt.TypeObject:
		return jsontree.Object
	case fieldcrypt.TypeArray:
		return jsontree.Array
	}
	return jsontree.Null
}

func addName(m *map[string]int, name string, n int) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[name] += n
}

func addKV(m *map[KeyVersion]int, kv KeyVersion, n int) {
	if *m == nil {
		*m = map[KeyVersion]int{}
	}
	(*m)[kv] += n
}
