package couchdb

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// This file holds the Mango transforms: the selector walk that _find,
// _explain, _index (partial_filter_selector) and _changes (filter=
// _selector) share, and the checks of _find's fields and sort.
//
// The walk reads a selector as CouchDB's mango_selector:normalize does:
// a member whose name starts with '$' is an operator, any other is a field
// name (a dotted path; "\." is a literal dot); an object of field names is
// a nested path ({"card": {"number": x}} is card.number); a scalar, an
// array or an empty object is compared for equality; several members are
// an implicit $and. For each compared value it asks the collection which
// field the path names, and seals, leaves or refuses.

// sealer seals compared values for one request. It resolves each key once.
type sealer struct {
	ctx  context.Context
	keys fieldcrypt.Keyring
	got  map[string]*fieldcrypt.DataKey
}

func newSealer(ctx context.Context, keys fieldcrypt.Keyring) *sealer {
	return &sealer{ctx: ctx, keys: keys}
}

// seal replaces n by its deterministic token under f's key, as the
// document encryptor seals the same value: a null stays unless the field
// encrypts nulls, and a string that already is a token opening under the
// key it names stays (the encryptor stores such a string as it is, so a
// lookup must send it as it is).
func (s *sealer) seal(f *datastore.Field, n *jsontree.Node) error {
	if n.Kind == jsontree.Null && !f.EncryptNull {
		return nil
	}
	if n.Kind == jsontree.String {
		// A token of this very field that this sidecar does not open
		// is looked up as it is; one of a key it opens or masks is
		// refused (token_not_allowed); anything else is sealed as data
		// (fieldcrypt.CheckToken, docs/FORMAT.md section 7).
		if text, ok := n.Text(); ok {
			keep, err := fieldcrypt.CheckToken(s.ctx, s.keys, f.Key, f.Mode, text)
			if err != nil {
				return err
			}
			if keep {
				return nil
			}
		}
	}
	k, err := s.key(f.Key)
	if err != nil {
		return err
	}
	tok, err := fieldcrypt.SealValuePadded(k, fieldcrypt.ModeDeterministic, tokenType(n.Kind), n.Raw(), f.Pad)
	if err != nil {
		return fmt.Errorf("couchdb: seal a value of field %q with key %s: %w", f.Name, k, err)
	}
	out := make([]byte, 0, len(tok)+2)
	out = append(append(append(out, '"'), tok...), '"')
	n.Replace(jsontree.String, out)
	return nil
}

func (s *sealer) key(name string) (*fieldcrypt.DataKey, error) {
	if k := s.got[name]; k != nil {
		return k, nil
	}
	if s.keys == nil {
		return nil, fmt.Errorf("couchdb: key %q: no keyring", name)
	}
	k, err := s.keys.SealKey(s.ctx, name)
	if err == nil && k == nil {
		err = fieldcrypt.ErrUnknownKey
	}
	if err != nil {
		return nil, fmt.Errorf("couchdb: key %q: %w", name, err)
	}
	if s.got == nil {
		s.got = make(map[string]*fieldcrypt.DataKey)
	}
	s.got[name] = k
	return k, nil
}

func tokenType(k jsontree.Kind) fieldcrypt.Type {
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

// parseField splits a Mango field name into path members. CouchDB
// (mango_util:parse_field) splits at dots not preceded by a backslash and
// then drops every backslash; pouchdb-find (pouchdb-selector-core
// parseField) turns "\." and "\$" into "." and "$" and keeps other
// backslashes. Where the two disagree ("a\b", "a\\.b") the name is
// refused: the sidecar must read a path as the datastore does, and it
// cannot know which one it is talking to.
func parseField(name string) ([]string, *datastore.Refusal) {
	var couch []string
	if strings.IndexByte(name, '\\') < 0 {
		couch = strings.Split(name, ".")
	} else {
		var cur []byte
		for i := 0; i < len(name); i++ {
			if name[i] == '.' && (i == 0 || name[i-1] != '\\') {
				couch = append(couch, strings.ReplaceAll(string(cur), `\`, ""))
				cur = cur[:0]
				continue
			}
			cur = append(cur, name[i])
		}
		couch = append(couch, strings.ReplaceAll(string(cur), `\`, ""))
		if !slices.Equal(couch, pouchParseField(name)) {
			return nil, datastore.BadRequest(`couchdb: a field name in the query uses a backslash that CouchDB and pouchdb-find read differently (only \. is read alike)`)
		}
	}
	for _, p := range couch {
		if p == "" {
			return nil, datastore.BadRequest("couchdb: a field name in the query has an empty member (.. or a leading or trailing dot)")
		}
	}
	return couch, nil
}

func pouchParseField(name string) []string {
	var out []string
	var cur []byte
	for i := 0; i < len(name); i++ {
		ch := name[i]
		switch {
		case i > 0 && name[i-1] == '\\' && (ch == '$' || ch == '.'):
			cur = append(cur[:len(cur)-1], ch)
		case ch == '.':
			out = append(out, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, ch)
		}
	}
	return append(out, string(cur))
}

// maxIndexMembers bounds the numeric members of one field path; each may
// be an array index or an object member, and every reading is checked.
const maxIndexMembers = 6

// fieldAt returns the field that protects the value a query path names.
// CouchDB reads a numeric member ("accounts.0.iban") as an array index
// when it meets an array and as a member name otherwise; documents are
// protected with arrays transparent, so every reading (each numeric member
// kept or dropped) is asked, and the most protective answer wins: inside a
// protected value, then protected. Two readings that reach fields of
// different keys or modes are refused as ambiguous.
func fieldAt(c *datastore.Collection, path []string) (*datastore.Field, bool, *datastore.Refusal) {
	var idx []int
	for i, p := range path {
		if i > 0 && numeric(p) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		f, inside := c.FieldAt(path)
		return f, inside, nil
	}
	if len(idx) > maxIndexMembers {
		return nil, false, datastore.BadRequest("couchdb: a field path in the query has more than %d numeric members", maxIndexMembers)
	}
	var best *datastore.Field
	bestInside := false
	reading := make([]string, 0, len(path))
	for mask := 0; mask < 1<<len(idx); mask++ {
		reading = reading[:0]
		j := 0
		for i, p := range path {
			if j < len(idx) && idx[j] == i {
				drop := mask&(1<<j) != 0
				j++
				if drop {
					continue
				}
			}
			reading = append(reading, p)
		}
		f, inside := c.FieldAt(reading)
		switch {
		case f == nil:
		case best == nil:
			best, bestInside = f, inside
		case inside && !bestInside:
			best, bestInside = f, true
		case inside == bestInside && f != best && (f.Key != best.Key || f.Mode != best.Mode || f.EncryptNull != best.EncryptNull):
			return nil, false, datastore.BadRequest("couchdb: a field path in the query with numeric members reaches encrypted fields %q and %q depending on how it is read", best.Name, f.Name)
		}
	}
	return best, bestInside, nil
}

// numeric reports a member that CouchDB's get_field would use as an array
// index (binary_to_integer accepts a sign and leading zeros).
func numeric(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// selectorWalk transforms one selector.
type selectorWalk struct {
	c *datastore.Collection
	s *sealer
}

func (w *selectorWalk) selector(n *jsontree.Node, where string) error {
	if n.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: %s must be a JSON object", where)
	}
	return w.walk(n, nil)
}

func (w *selectorWalk) walk(n *jsontree.Node, path []string) error {
	if n.Kind != jsontree.Object || len(n.Members) == 0 {
		return w.cond(n, path)
	}
	for i := range n.Members {
		m := &n.Members[i]
		if strings.HasPrefix(m.Name, "$") {
			if err := w.op(m.Name, m.Value, path); err != nil {
				return err
			}
			continue
		}
		sub, ref := parseField(m.Name)
		if ref != nil {
			return ref
		}
		if err := w.walk(m.Value, append(slices.Clip(path), sub...)); err != nil {
			return err
		}
	}
	return nil
}

// cond handles one compared value at path ($eq, $ne, an element of $in or
// $nin, an implicit equality).
func (w *selectorWalk) cond(n *jsontree.Node, path []string) error {
	if len(path) == 0 {
		if n.IsEmpty() {
			return nil // {} selects every document
		}
		return datastore.BadRequest("couchdb: a condition in the selector has no field name")
	}
	f, inside, ref := fieldAt(w.c, path)
	if ref != nil {
		return ref
	}
	switch {
	case inside:
		return insideRefusal(f)
	case f == nil:
		if g, ref := containsProtected(w.c, n, path); ref != nil {
			return ref
		} else if g != nil {
			return datastore.Unsupported("couchdb: the selector compares a whole object or array that contains the encrypted field %q; compare the encrypted field itself", g.Name)
		}
		return nil
	case !searchable(f):
		return randomRefusal(f)
	}
	return w.s.seal(f, n)
}

func (w *selectorWalk) op(name string, n *jsontree.Node, path []string) error {
	switch name {
	case "$and", "$or", "$nor":
		if n.Kind != jsontree.Array {
			return datastore.BadRequest("couchdb: %s in the selector takes an array of selectors", name)
		}
		for _, e := range n.Elems {
			// An element that is not an object is read as CouchDB
			// normalises it: an equality at the field's path (sealed,
			// or refused), or, with no field, refused by cond.
			if err := w.walk(e, path); err != nil {
				return err
			}
		}
		return nil
	case "$not":
		if n.Kind != jsontree.Object {
			return datastore.BadRequest("couchdb: $not in the selector takes a selector object")
		}
		return w.walk(n, path)
	case "$eq", "$ne":
		return w.cond(n, path)
	case "$in", "$nin":
		if n.Kind != jsontree.Array {
			return datastore.BadRequest("couchdb: %s in the selector takes an array", name)
		}
		for _, e := range n.Elems {
			if err := w.cond(e, path); err != nil {
				return err
			}
		}
		return nil
	case "$text", "$default":
		return datastore.Unsupported("couchdb: %s searches every field, encrypted ones included, with the search text in plaintext; refused on a protected database", name)
	}
	if len(path) == 0 {
		return datastore.BadRequest("couchdb: %s in the selector needs a field name", opName(name))
	}
	f, inside, ref := fieldAt(w.c, path)
	if ref != nil {
		return ref
	}
	if inside {
		return insideRefusal(f)
	}
	switch name {
	case "$exists":
		// Whether the field is there, which the token keeps. Only a
		// boolean: any other argument would reach the datastore unread.
		if n.Kind != jsontree.Bool {
			return datastore.BadRequest("couchdb: $exists in the selector takes true or false")
		}
		return nil
	case "$elemMatch", "$allMatch", "$keyMapMatch":
		if f != nil {
			return datastore.Unsupported("couchdb: %s on the encrypted field %q cannot work: the datastore holds the whole value as one token", name, f.Name)
		}
		if n.Kind != jsontree.Object {
			return datastore.BadRequest("couchdb: %s in the selector takes a selector object", name)
		}
		if name == "$keyMapMatch" {
			// It compares the member names of an object, which are
			// never encrypted: operators only, their arguments checked.
			if ref := keyMapSelector(n); ref != nil {
				return ref
			}
			return nil
		}
		// The elements' fields continue the array's path: arrays are
		// transparent to field paths.
		return w.walk(n, path)
	case "$gt", "$gte", "$lt", "$lte", "$regex", "$beginsWith", "$mod", "$size", "$type", "$all":
		if f != nil {
			if !searchable(f) {
				return randomRefusal(f)
			}
			return datastore.Unsupported("couchdb: %s on the encrypted field %q cannot work: a searchable field keeps equality only ($eq, $ne, $in, $nin, $exists), not order, pattern or content", name, f.Name)
		}
		if ref := operand(name, n); ref != nil {
			return ref
		}
		if g, ref := containsProtected(w.c, n, path); ref != nil {
			return ref
		} else if g != nil {
			return datastore.Unsupported("couchdb: %s compares a whole object or array that contains the encrypted field %q", name, g.Name)
		}
		return nil
	}
	if f != nil {
		return datastore.Unsupported("couchdb: %s on the encrypted field %q cannot work: a searchable field keeps equality only ($eq, $ne, $in, $nin, $exists)", opName(name), f.Name)
	}
	return datastore.Unsupported("couchdb: %s is not a Mango operator the profile knows; unknown operators are refused on a protected database", opName(name))
}

// operand checks the argument of a comparison operator on an
// unprotected field against its documented type (mango_selector), so that
// no argument of another type carries a value past the transform.
// $gt, $gte, $lt and $lte compare any JSON value.
func operand(name string, n *jsontree.Node) *datastore.Refusal {
	switch name {
	case "$regex", "$beginsWith":
		if n.Kind != jsontree.String {
			return datastore.BadRequest("couchdb: %s in the selector takes a string", name)
		}
	case "$size":
		if n.Kind != jsontree.Number || !integer(string(n.Raw())) {
			return datastore.BadRequest("couchdb: $size in the selector takes a non-negative integer")
		}
	case "$mod":
		if n.Kind != jsontree.Array || len(n.Elems) != 2 || !signedInteger(n.Elems[0]) || !signedInteger(n.Elems[1]) || string(n.Elems[0].Raw()) == "0" {
			return datastore.BadRequest("couchdb: $mod in the selector takes [divisor, remainder], two integers, the divisor not 0")
		}
	case "$type":
		if t, ok := n.Text(); !ok || !contains(mangoTypes, t) {
			return datastore.BadRequest("couchdb: $type in the selector takes one of %s", strings.Join(mangoTypes, ", "))
		}
	case "$all":
		if n.Kind != jsontree.Array {
			return datastore.BadRequest("couchdb: $all in the selector takes an array")
		}
	}
	return nil
}

// mangoTypes are the arguments of $type.
var mangoTypes = []string{"null", "boolean", "number", "string", "array", "object"}

func signedInteger(n *jsontree.Node) bool {
	if n.Kind != jsontree.Number {
		return false
	}
	return integer(strings.TrimPrefix(string(n.Raw()), "-"))
}

// keyMapSelector checks the argument of $keyMapMatch: a selector applied
// to the member names of an object. Member names are never encrypted, so
// nothing is sealed; but only operators may appear, with arguments of
// their types, so that nothing unread passes inside it.
func keyMapSelector(n *jsontree.Node) *datastore.Refusal {
	for i := range n.Members {
		m := &n.Members[i]
		var ref *datastore.Refusal
		switch m.Name {
		case "$and", "$or", "$nor":
			if m.Value.Kind != jsontree.Array {
				return datastore.BadRequest("couchdb: %s in the selector takes an array of selector objects", m.Name)
			}
			for _, e := range m.Value.Elems {
				if e.Kind != jsontree.Object {
					return datastore.BadRequest("couchdb: %s in the selector takes an array of selector objects", m.Name)
				}
				if ref = keyMapSelector(e); ref != nil {
					return ref
				}
			}
		case "$not":
			if m.Value.Kind != jsontree.Object {
				return datastore.BadRequest("couchdb: $not in the selector takes a selector object")
			}
			ref = keyMapSelector(m.Value)
		case "$eq", "$ne", "$gt", "$gte", "$lt", "$lte":
			if m.Value.Kind != jsontree.String {
				return datastore.BadRequest("couchdb: under $keyMapMatch, %s compares a member name: it takes a string", m.Name)
			}
		case "$in", "$nin":
			if !stringArray(m.Value) {
				return datastore.BadRequest("couchdb: under $keyMapMatch, %s compares member names: it takes an array of strings", m.Name)
			}
		case "$regex", "$beginsWith":
			ref = operand(m.Name, m.Value)
		default:
			return datastore.BadRequest("couchdb: $keyMapMatch takes a selector of operators on member names ($eq, $ne, $in, $nin, $gt, $gte, $lt, $lte, $regex, $beginsWith, $and, $or, $nor, $not); %s is not one", opName(m.Name))
		}
		if ref != nil {
			return ref
		}
	}
	return nil
}

// opName names an operator in a message when it looks like one.
func opName(name string) string {
	if len(name) > 1 && len(name) <= 32 && name[0] == '$' {
		ok := true
		for i := 1; i < len(name); i++ {
			c := name[i]
			if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
				ok = false
				break
			}
		}
		if ok {
			return name
		}
	}
	return "an unknown operator"
}

func insideRefusal(f *datastore.Field) *datastore.Refusal {
	return datastore.Unsupported("couchdb: the query names a path inside the encrypted field %q: the datastore holds that field as one token, so nothing inside it can be compared, sorted or projected on its own; use %q itself", f.Name, f.Name)
}

func randomRefusal(f *datastore.Field) *datastore.Refusal {
	return datastore.Unsupported("couchdb: field %q is encrypted in random mode: it cannot be compared; make it searchable if it must be looked up", f.Name)
}

// containsProtected returns a protected field that a compared object or
// array value at path holds (its member names continue the path; array
// elements stand at the array's path).
func containsProtected(c *datastore.Collection, n *jsontree.Node, path []string) (*datastore.Field, *datastore.Refusal) {
	switch n.Kind {
	case jsontree.Object:
		for i := range n.Members {
			p := append(slices.Clip(path), n.Members[i].Name)
			f, _, ref := fieldAt(c, p)
			if ref != nil || f != nil {
				return f, ref
			}
			if f, ref := containsProtected(c, n.Members[i].Value, p); ref != nil || f != nil {
				return f, ref
			}
		}
	case jsontree.Array:
		for _, e := range n.Elems {
			if f, ref := containsProtected(c, e, path); ref != nil || f != nil {
				return f, ref
			}
		}
	}
	return nil, nil
}

// fieldList checks a list of field names (_find's fields): none may name a
// path inside a protected value, which the datastore would silently leave
// out of every result.
func fieldList(c *datastore.Collection, n *jsontree.Node) error {
	if n.Kind != jsontree.Array {
		return datastore.BadRequest("couchdb: fields must be an array of field names")
	}
	for _, e := range n.Elems {
		name, ok := e.Text()
		if !ok {
			return datastore.BadRequest("couchdb: fields must be an array of field names")
		}
		path, ref := parseField(name)
		if ref != nil {
			return ref
		}
		f, inside, ref := fieldAt(c, path)
		if ref != nil {
			return ref
		}
		if inside {
			return insideRefusal(f)
		}
	}
	return nil
}

// sortEntries checks a sort list (_find's sort, _index's fields): each
// entry is a field name or a one-member object {field: direction} with a
// string direction. With protected set, sorting on an encrypted field (or
// inside one) is refused: ciphertext order is not value order.
func sortEntries(c *datastore.Collection, n *jsontree.Node, what string, protected bool) error {
	if n.Kind != jsontree.Array {
		return datastore.BadRequest("couchdb: %s must be an array", what)
	}
	for _, e := range n.Elems {
		var name string
		switch {
		case e.Kind == jsontree.String:
			name, _ = e.Text()
		case e.Kind == jsontree.Object && len(e.Members) == 1 && sortDirection(e.Members[0].Value):
			name = e.Members[0].Name
		default:
			return datastore.BadRequest(`couchdb: each entry of %s must be a field name or {"field": "asc"|"desc"}`, what)
		}
		if !protected {
			continue
		}
		path, ref := parseField(name)
		if ref != nil {
			return ref
		}
		f, inside, ref := fieldAt(c, path)
		if ref != nil {
			return ref
		}
		if inside {
			return insideRefusal(f)
		}
		if f != nil {
			return datastore.Unsupported("couchdb: sorting on the encrypted field %q cannot work: ciphertext order is not value order", f.Name)
		}
	}
	return nil
}

func sortDirection(n *jsontree.Node) bool {
	d, ok := n.Text()
	return ok && (d == "asc" || d == "desc")
}

// parseBody parses a request body the profile transforms.
func (p *Profile) parseBody(body []byte, what string) (*jsontree.Node, error) {
	root, err := jsontree.Parse(body, p.maxDepth)
	if err != nil {
		return nil, fmt.Errorf("couchdb: %s body: %w", what, err)
	}
	if root.Kind != jsontree.Object {
		return nil, datastore.BadRequest("couchdb: the %s body must be a JSON object", what)
	}
	return root, nil
}

func unknownMember(what string) *datastore.Refusal {
	return datastore.Refuse("couchdb: the %s body has a member the profile does not know; unknown members are refused on a protected database", what)
}

// findMembers are _find's and _explain's members besides selector, fields
// and sort (mango_opts:validate_find), with their types: none carries a
// compared value, and a value of another type would reach the datastore
// unread.
var findMembers = map[string]paramSpec{
	"limit": tInt, "skip": tInt, "r": tInt, "bookmark": tText, "partition": tText,
	"conflicts": tBool, "update": tBool, "stable": tBool, "execution_stats": tBool, "allow_fallback": tBool,
	"stale": tStale,
}

// typedMember checks a member of a query body against its type.
func typedMember(what, name string, spec paramSpec, n *jsontree.Node) error {
	if spec.json(n) {
		return nil
	}
	return datastore.BadRequest("couchdb: %s in the %s body must be %s", name, what, spec.want())
}

// useIndex is _find's use_index: a design document name, or [ddoc, index].
func useIndex(n *jsontree.Node) error {
	if n.Kind == jsontree.String || stringArray(n) && len(n.Elems) <= 2 {
		return nil
	}
	return datastore.BadRequest("couchdb: use_index must be a design document name or [design document, index name]")
}

func (p *Profile) findTransform(c *collection, what string) func(context.Context, []byte, fieldcrypt.Keyring) ([]byte, error) {
	return func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
		root, err := p.parseBody(body, what)
		if err != nil {
			return nil, err
		}
		w := &selectorWalk{c: c.Collection, s: newSealer(ctx, keys)}
		for i := range root.Members {
			m := &root.Members[i]
			switch {
			case m.Name == "selector":
				err = w.selector(m.Value, "the selector")
			case m.Name == "fields":
				err = fieldList(c.Collection, m.Value)
			case m.Name == "sort":
				err = sortEntries(c.Collection, m.Value, "sort", true)
			case m.Name == "use_index":
				err = useIndex(m.Value)
			case findMembers[m.Name].kind != 0:
				err = typedMember(what, m.Name, findMembers[m.Name], m.Value)
			default:
				err = unknownMember(what)
			}
			if err != nil {
				return nil, err
			}
		}
		return root.Bytes(), nil
	}
}

// indexTransform handles POST /{db}/_index. Field names are never
// encrypted, so the index's fields and name pass as written; only
// partial_filter_selector holds compared values. pouchdb-find also
// accepts type, name and ddoc inside index and fields at the top.
func (p *Profile) indexTransform(c *collection) func(context.Context, []byte, fieldcrypt.Keyring) ([]byte, error) {
	return func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
		root, err := p.parseBody(body, "_index")
		if err != nil {
			return nil, err
		}
		// The type first: a text index's fields read otherwise.
		for _, t := range []*jsontree.Node{root.Get("type"), indexMember(root, "type")} {
			if t != nil {
				if err := indexType(t); err != nil {
					return nil, err
				}
			}
		}
		w := &selectorWalk{c: c.Collection, s: newSealer(ctx, keys)}
		for i := range root.Members {
			m := &root.Members[i]
			switch m.Name {
			case "index":
				err = indexDef(w, m.Value)
			case "type":
				err = indexType(m.Value)
			case "fields":
				err = sortEntries(c.Collection, m.Value, "the index's fields", false)
			case "name", "ddoc":
				err = typedMember("_index", m.Name, tText, m.Value)
			case "w":
				err = typedMember("_index", m.Name, tInt, m.Value)
			case "partitioned":
				err = typedMember("_index", m.Name, tBool, m.Value)
			default:
				err = unknownMember("_index")
			}
			if err != nil {
				return nil, err
			}
		}
		return root.Bytes(), nil
	}
}

func indexDef(w *selectorWalk, n *jsontree.Node) error {
	if n.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: the _index body's index must be an object")
	}
	for i := range n.Members {
		m := &n.Members[i]
		var err error
		switch m.Name {
		case "fields":
			err = sortEntries(w.c, m.Value, "the index's fields", false)
		case "partial_filter_selector":
			err = w.selector(m.Value, "partial_filter_selector")
		case "type":
			err = indexType(m.Value)
		case "name", "ddoc":
			err = typedMember("_index", m.Name, tText, m.Value)
		default:
			err = unknownMember("_index")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// indexMember returns a member of the _index body's index object, or nil.
func indexMember(root *jsontree.Node, name string) *jsontree.Node {
	if idx := root.Get("index"); idx != nil && idx.Kind == jsontree.Object {
		return idx.Get(name)
	}
	return nil
}

func indexType(n *jsontree.Node) error {
	t, ok := n.Text()
	if !ok {
		return datastore.BadRequest("couchdb: an index type must be a string")
	}
	if t != "json" {
		return datastore.Refuse(`couchdb: only "json" indexes are allowed on a protected database: other types (text, nouveau) take field analysers and selectors the profile does not transform`)
	}
	return nil
}

// changesTransform handles a POST /{db}/_changes body: doc_ids (ids) and
// selector (transformed). filter is the filter the query string names,
// and queryDocIDs whether it carries doc_ids: filter=_selector needs a
// selector in the body, filter=_doc_ids doc_ids in one place or the
// other (no server answers without; pouchdb-server 4.2 stops).
func (p *Profile) changesTransform(c *collection, filter string, queryDocIDs bool) func(context.Context, []byte, fieldcrypt.Keyring) ([]byte, error) {
	return func(ctx context.Context, body []byte, keys fieldcrypt.Keyring) ([]byte, error) {
		root, err := p.parseBody(body, "_changes")
		if err != nil {
			return nil, err
		}
		w := &selectorWalk{c: c.Collection, s: newSealer(ctx, keys)}
		for i := range root.Members {
			m := &root.Members[i]
			switch m.Name {
			case "selector":
				err = w.selector(m.Value, "the _changes selector")
			case "doc_ids":
				if !stringArray(m.Value) {
					err = datastore.BadRequest("couchdb: doc_ids in the _changes body must be an array of document ids (strings)")
				}
			default:
				err = unknownMember("_changes")
			}
			if err != nil {
				return nil, err
			}
		}
		switch {
		case filter == "_selector" && root.Get("selector") == nil:
			return nil, datastore.BadRequest("couchdb: filter=_selector needs a selector in the _changes body")
		case filter == "_doc_ids" && !queryDocIDs && root.Get("doc_ids") == nil:
			return nil, datastore.BadRequest("couchdb: filter=_doc_ids needs doc_ids, in the query string or in the _changes body")
		}
		return root.Bytes(), nil
	}
}
