package couchdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Views. A view's key is whatever its map function emits, which the
// sidecar cannot read; the rule file declares it (views: "ddoc/view":
// fields [...]), and the profile seals each compared key position that
// holds a searchable field, as the document encryptor sealed the field.
// The compared values travel as JSON in the query parameters key, keys,
// startkey (start_key) and endkey (end_key), and as the same members of a
// POST body or of each element of its "queries".

// keyParam reports a view parameter (or body member) that holds a
// compared key.
func keyParam(name string) bool {
	switch name {
	case "key", "keys", "startkey", "start_key", "endkey", "end_key":
		return true
	}
	return false
}

type posKind uint8

const (
	posPlain  posKind = iota // no protected field: untouched
	posSealed                // a searchable field: sealed deterministically
	posRandom                // a random-mode field: cannot be compared
	posInside                // a path inside a protected value: cannot be compared
)

type position struct {
	kind posKind
	f    *datastore.Field
}

// viewPlan is what the profile compiled for one declared view.
type viewPlan struct {
	name      string // "ddoc/view", for messages (from the rule file)
	array     bool
	pos       []position
	protected bool // some position is not plain
	keys      []string
	maxDepth  int
}

func newViewPlan(c *datastore.Collection, name string, vk datastore.ViewKey) *viewPlan {
	v := &viewPlan{name: name, array: vk.Array, maxDepth: fieldcrypt.DefaultMaxDepth}
	fields := vk.Fields
	if !vk.Array && len(fields) > 1 {
		fields = fields[:1]
	}
	for _, name := range fields {
		f, inside := c.FieldAt(splitFieldName(name))
		p := position{f: f}
		switch {
		case f == nil:
		case inside:
			p.kind = posInside
		case searchable(f):
			p.kind = posSealed
			if !slices.Contains(v.keys, f.Key) {
				v.keys = append(v.keys, f.Key)
			}
		default:
			p.kind = posRandom
		}
		if p.kind != posPlain {
			v.protected = true
		}
		v.pos = append(v.pos, p)
	}
	if !vk.Array && len(v.pos) == 0 {
		v.pos = []position{{}}
	}
	slices.Sort(v.keys)
	return v
}

// splitFieldName splits a rule file's field name as the rules package
// does for datastore.Field.Path: at unescaped dots, "\." being a dot
// inside a member ("a\.b" is one member "a.b") and "\\" a backslash.
func splitFieldName(name string) []string {
	if strings.IndexByte(name, '\\') < 0 {
		return strings.Split(name, ".")
	}
	var out []string
	var cur []byte
	for i := 0; i < len(name); i++ {
		switch {
		case name[i] == '\\' && i+1 < len(name) && (name[i+1] == '.' || name[i+1] == '\\'):
			cur = append(cur, name[i+1])
			i++
		case name[i] == '.':
			out = append(out, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, name[i])
		}
	}
	return append(out, string(cur))
}

// keyGroup is the compared keys of one query: exact keys (keys), and the
// range ends (key counts as both).
type keyGroup struct {
	exact []*jsontree.Node
	ends  []rangeEnd
}

type rangeEnd struct {
	n          *jsontree.Node
	start, end bool
}

func (g *keyGroup) add(name string, n *jsontree.Node) error {
	switch name {
	case "key":
		g.ends = append(g.ends, rangeEnd{n: n, start: true, end: true})
	case "keys":
		if n.Kind != jsontree.Array {
			return datastore.BadRequest("couchdb: a view's keys must be an array of keys")
		}
		g.exact = append(g.exact, n.Elems...)
	case "startkey", "start_key":
		g.ends = append(g.ends, rangeEnd{n: n, start: true})
	case "endkey", "end_key":
		g.ends = append(g.ends, rangeEnd{n: n, end: true})
	}
	return nil
}

func (v *viewPlan) apply(s *sealer, g *keyGroup) error {
	for _, n := range g.exact {
		if err := v.exactKey(s, n); err != nil {
			return err
		}
	}
	return v.ranges(s, g.ends)
}

// elems returns the key positions of a compared key: the key itself for a
// single-field view, its elements for a compound one.
func (v *viewPlan) elems(n *jsontree.Node) ([]*jsontree.Node, error) {
	if !v.array {
		return []*jsontree.Node{n}, nil
	}
	switch n.Kind {
	case jsontree.Array:
	case jsontree.Null:
		return nil, nil // the lowest key: compares nothing
	default:
		return nil, datastore.BadRequest("couchdb: view %s has a compound key: a key compared with it must be an array", v.name)
	}
	if len(n.Elems) > len(v.pos) {
		return nil, datastore.BadRequest("couchdb: a key of view %s has more positions than its views: entry declares", v.name)
	}
	return n.Elems, nil
}

func (v *viewPlan) exactKey(s *sealer, n *jsontree.Node) error {
	es, err := v.elems(n)
	if err != nil {
		return err
	}
	for i, e := range es {
		p := v.pos[i]
		switch p.kind {
		case posSealed:
			if err := s.seal(p.f, e); err != nil {
				return err
			}
		case posRandom:
			if !marker(e, p.f) {
				return randomRefusal(p.f)
			}
		case posInside:
			if !marker(e, p.f) {
				return insideRefusal(p.f)
			}
		}
	}
	return nil
}

// marker reports a key position that bounds a range without comparing a
// value: {} (the highest key) or, where nulls stay in plaintext, null
// (the lowest).
func marker(e *jsontree.Node, f *datastore.Field) bool {
	return (e.Kind == jsontree.Object && len(e.Members) == 0) || (e.Kind == jsontree.Null && !f.EncryptNull)
}

// ranges seals the range ends. A range over ciphertext is meaningless
// (tokens do not sort like values), so a protected position must hold
// the same value in every end, which then works as equality
// (startkey=["a@b"]&endkey=["a@b",{}]), or no value at all (absent or a
// marker) in every end.
func (v *viewPlan) ranges(s *sealer, ends []rangeEnd) error {
	if len(ends) == 0 {
		return nil
	}
	var starts, stops int
	all := make([][]*jsontree.Node, len(ends))
	for i, e := range ends {
		es, err := v.elems(e.n)
		if err != nil {
			return err
		}
		all[i] = es
		if e.start {
			starts++
		}
		if e.end {
			stops++
		}
	}
	for i, p := range v.pos {
		if p.kind == posPlain {
			continue
		}
		at := func(j int) *jsontree.Node {
			if i < len(all[j]) {
				return all[j][i]
			}
			return nil
		}
		constrained := false
		for j := range ends {
			if e := at(j); e != nil && !marker(e, p.f) {
				constrained = true
			}
		}
		if !constrained {
			continue
		}
		switch {
		case p.kind == posRandom:
			return randomRefusal(p.f)
		case p.kind == posInside:
			return insideRefusal(p.f)
		case starts == 0 || stops == 0:
			return v.rangeRefusal(p.f)
		}
		var first []byte
		for j := range ends {
			e := at(j)
			if e == nil || marker(e, p.f) {
				return v.rangeRefusal(p.f)
			}
			if err := s.seal(p.f, e); err != nil {
				return err
			}
			if first == nil {
				first = e.Raw()
			} else if !bytes.Equal(first, e.Raw()) {
				return v.rangeRefusal(p.f)
			}
		}
	}
	return nil
}

func (v *viewPlan) rangeRefusal(f *datastore.Field) *datastore.Refusal {
	return datastore.Unsupported("couchdb: view %s: a range (startkey/endkey) on the encrypted field %q works only with the same value at both ends (tokens do not sort like values)", v.name, f.Name)
}

// parseKey parses a JSON key parameter. A value that is not JSON is
// refused: CouchDB would reject it, but pouchdb-server would use the text
// itself as a string key, in plaintext.
func (v *viewPlan) parseKey(name, text string) (*jsontree.Node, error) {
	n, err := jsontree.Parse([]byte(text), v.maxDepth)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, fieldcrypt.ErrSyntax) {
		return nil, datastore.BadRequest("couchdb: the view parameter %s is not JSON (pouchdb-server would compare its text in plaintext)", name)
	}
	return nil, fmt.Errorf("couchdb: view parameter %s: %w", name, err)
}

// sealQuery is the Operation.Query of a declared view: it seals the
// compared key positions of the query string and leaves every other byte
// as it was (parameter order, escaping, separators).
func (v *viewPlan) sealQuery(ctx context.Context, raw string, keys fieldcrypt.Keyring) (string, error) {
	params, ref := parseQuery(raw)
	if ref != nil {
		return "", ref
	}
	type edit struct {
		p *param
		n *jsontree.Node
	}
	var edits []edit
	var g keyGroup
	for i := range params {
		prm := &params[i]
		base := prm.base()
		if !keyParam(base) {
			continue
		}
		if base != prm.name {
			return "", datastore.BadRequest("couchdb: the view parameter %s is written with brackets, which pouchdb-server reads as an object or array in plaintext", base)
		}
		if strings.IndexByte(raw, ';') >= 0 {
			// CouchDB splits at ';' too, pouchdb-server (qs) does not:
			// "key=1;x" is key 1 for one and key "1;x" for the other.
			return "", datastore.BadRequest("couchdb: a query string with view keys must not use ';', which CouchDB and pouchdb-server split differently")
		}
		if !prm.hasValue {
			continue
		}
		text, err := prm.value()
		if err != nil {
			return "", datastore.BadRequest("couchdb: the view parameter %s has an invalid percent-escape", base)
		}
		n, err := v.parseKey(base, text)
		if err != nil {
			return "", err
		}
		if err := g.add(base, n); err != nil {
			return "", err
		}
		edits = append(edits, edit{p: prm, n: n})
	}
	if err := v.apply(newSealer(ctx, keys), &g); err != nil {
		return "", err
	}
	var b strings.Builder
	copied := 0
	for _, e := range edits {
		if !e.n.Changed() {
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(raw) + 128)
		}
		valueStart := e.p.start + len(e.p.rawName) + 1
		b.WriteString(raw[copied:valueStart])
		b.WriteString(url.QueryEscape(string(e.n.Bytes())))
		copied = e.p.end
	}
	if copied == 0 {
		return raw, nil
	}
	b.WriteString(raw[copied:])
	return b.String(), nil
}

// sealBody returns the Operation.Transform of a declared view's POST: the
// body's members are checked as the view's options (params.go), then the
// key members of the body and of each of its queries are sealed. multi:
// the /queries endpoint, whose body holds queries only.
func (v *viewPlan) sealBody(multi bool) func(context.Context, []byte, fieldcrypt.Keyring) ([]byte, error) {
	shape := viewLikeBody(viewParams, "the view's POST body", multi)
	return func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
		root, err := jsontree.Parse(body, v.maxDepth)
		if err != nil {
			return nil, fmt.Errorf("couchdb: view body: %w", err)
		}
		if err := shape(root); err != nil {
			return nil, err
		}
		s := newSealer(ctx, keys)
		if err := v.sealGroup(s, root); err != nil {
			return nil, err
		}
		if qs := root.Get("queries"); qs != nil {
			for _, q := range qs.Elems {
				if err := v.sealGroup(s, q); err != nil {
					return nil, err
				}
			}
		}
		return root.Bytes(), nil
	}
}

func (v *viewPlan) sealGroup(s *sealer, obj *jsontree.Node) error {
	var g keyGroup
	for i := range obj.Members {
		m := &obj.Members[i]
		if keyParam(m.Name) {
			if err := g.add(m.Name, m.Value); err != nil {
				return err
			}
		}
	}
	return v.apply(s, &g)
}

// undeclaredViewBody checks the POST body of a view the file does not
// declare: it passes unchanged when it compares no key and holds only the
// view's options.
func undeclaredViewBody(ddoc, view string, multi bool) func(*jsontree.Node) error {
	shape := viewLikeBody(viewParams, "the view's POST body", multi)
	return func(root *jsontree.Node) error {
		if root.Kind != jsontree.Object {
			return datastore.BadRequest("couchdb: a view's POST body must be a JSON object")
		}
		objs := []*jsontree.Node{root}
		if qs := root.Get("queries"); qs != nil && qs.Kind == jsontree.Array {
			objs = append(objs, qs.Elems...)
		}
		for _, o := range objs {
			if o.Kind != jsontree.Object {
				continue // the shape check refuses it
			}
			for i := range o.Members {
				if keyParam(o.Members[i].Name) {
					return datastore.Refuse("couchdb: "+undeclaredViewMsg, safeName(ddoc), safeName(view), o.Members[i].Name)
				}
			}
		}
		return shape(root)
	}
}
