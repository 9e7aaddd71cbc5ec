package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// The kinds of change that version 2 files (and a change of version)
// bring.
const (
	// FieldCovered: a rule was removed, but the values it protected are
	// still protected, with the same key and mode, by other rules.
	FieldCovered      ChangeKind = "field-covered"
	CollectionAdded   ChangeKind = "collection-added"
	CollectionRemoved ChangeKind = "collection-removed" // flagged: its protection ends
	// PolicyChanged: attachments or design documents; flagged when
	// refused ones are allowed.
	PolicyChanged ChangeKind = "policy-changed"
	// AllowChanged: a server-wide operation; flagged when allowed.
	AllowChanged ChangeKind = "allow-changed"
	// HostsChanged: the datastore's hosts (forward mode); flagged when a
	// host is no longer treated as the datastore.
	HostsChanged     ChangeKind = "hosts-changed"
	ViewChanged      ChangeKind = "view-changed"
	VersionChanged   ChangeKind = "version-changed"   // flagged from 2 to 1: deny by default ends
	DatastoreChanged ChangeKind = "datastore-changed" // flagged
)

// fieldKey identifies a version 2 field by what it names, whatever its
// spelling.
func fieldKey(f *datastore.Field) string {
	return fmt.Sprint(f.AnyDepth, "\x00", strings.Join(f.Path, "\x00"))
}

func describeDocFieldRule(f *datastore.Field) string {
	s := describeField(f.Key, f.Mode, f.EncryptNull)
	if f.Searchable {
		s += ", searchable"
	}
	if !f.Pad.IsZero() {
		s += ", padded to " + f.Pad.String()
	}
	return s
}

// coverers returns a smallest set of fields, in file order, whose
// protection together covers steps; nil when they do not.
func coverers(steps []fieldcrypt.Step, fields []*datastore.Field) []*datastore.Field {
	var all [][]fieldcrypt.Step
	for _, g := range fields {
		all = append(all, docFieldSteps(g))
	}
	if !coveredBy(steps, all) {
		return nil
	}
	chosen := slices.Clone(fields)
	for i := 0; i < len(chosen); {
		rest := slices.Delete(slices.Clone(chosen), i, i+1)
		var rs [][]fieldcrypt.Step
		for _, g := range rest {
			rs = append(rs, docFieldSteps(g))
		}
		if coveredBy(steps, rs) {
			chosen = rest
			continue
		}
		i++
	}
	return chosen
}

func fieldNames(fs []*datastore.Field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = fmt.Sprintf("%s (line %d)", f.Name, f.Line)
	}
	return strings.Join(names, ", ")
}

func sameProtection(fields []*datastore.Field, key string, mode fieldcrypt.Mode) []*datastore.Field {
	var out []*datastore.Field
	for _, g := range fields {
		if g.Key == key && g.Mode == mode {
			out = append(out, g)
		}
	}
	return out
}

// protectionOf decides how values that steps selects under (key, mode)
// are protected by fields: the same way (covered), under another key or
// mode (changed), or not at all.
type protection struct {
	same, other []*datastore.Field
}

func protectionOf(steps []fieldcrypt.Step, fields []*datastore.Field, key string, mode fieldcrypt.Mode) protection {
	if c := coverers(steps, sameProtection(fields, key, mode)); c != nil {
		return protection{same: c}
	}
	return protection{other: coverers(steps, fields)}
}

// globsIntersect reports whether some name matches both patterns.
func globsIntersect(a, b string) bool {
	memo := map[[2]int]bool{}
	var walk func(i, j int) bool
	walk = func(i, j int) bool {
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		memo[k] = false
		var r bool
		switch {
		case i == len(a) && j == len(b):
			r = true
		case i < len(a) && a[i] == '*':
			r = walk(i+1, j) || j < len(b) && walk(i, j+1)
		case j < len(b) && b[j] == '*':
			r = walk(i, j+1) || i < len(a) && walk(i+1, j)
		case i < len(a) && j < len(b):
			r = a[i] == b[j] && walk(i+1, j+1)
		}
		memo[k] = r
		return r
	}
	return walk(0, 0)
}

// globCovers reports whether every name that pattern b matches is matched
// by pattern a: whether a matches b's own text, b's '*'s taken as
// characters that only a's '*'s can absorb (no database name holds a '*').
// It is datastore.Glob's matching with memory, so that patterns full of
// '*'s cost O(len(a)·len(b)), not exponential time.
func globCovers(a, b string) bool {
	memo := map[[2]int]bool{}
	var walk func(i, j int) bool
	walk = func(i, j int) bool {
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var r bool
		switch {
		case i == len(a):
			r = j == len(b)
		case a[i] == '*':
			r = walk(i+1, j) || j < len(b) && walk(i, j+1)
		default:
			r = j < len(b) && b[j] != '*' && a[i] == b[j] && walk(i+1, j+1)
		}
		memo[k] = r
		return r
	}
	return walk(0, 0)
}

// resolveCollection finds the collection of s that applies to the
// databases name (a name or pattern) stands for: the first that can match
// one of them. whole is false when that collection matches only some of
// them.
func resolveCollection(s *datastore.Schema, name string) (c *datastore.Collection, whole bool) {
	for _, nc := range s.Collections {
		if globsIntersect(nc.Name, name) {
			return nc, globCovers(nc.Name, name)
		}
	}
	return nil, false
}

// compareHosts compares where forward mode sees the datastore.
func (d *Diff) compareHosts(old, new *Plan) {
	oh, oany := old.Hosts()
	nh, nany := new.Hosts()
	switch {
	case oany && !nany:
		d.add(Change{Kind: HostsChanged, Field: "hosts", Old: "any", New: strings.Join(nh, " "), Flagged: true,
			Message: fmt.Sprintf("HOSTS NARROWED: forward mode now protects only requests to %s (was every host); requests to other names or addresses of the datastore are no longer protected", strings.Join(nh, ", "))})
	case !oany && nany:
		d.add(Change{Kind: HostsChanged, Field: "hosts", Old: strings.Join(oh, " "), New: "any",
			Message: fmt.Sprintf("forward mode now treats every host as the datastore (was %s)", strings.Join(oh, ", "))})
	case !oany && !nany:
		for _, h := range oh {
			if !slices.Contains(nh, h) {
				d.add(Change{Kind: HostsChanged, Field: h, Old: h, Flagged: true,
					Message: fmt.Sprintf("HOST REMOVED %s: forward mode no longer protects requests to it", h)})
			}
		}
		for _, h := range nh {
			if !slices.Contains(oh, h) {
				d.add(Change{Kind: HostsChanged, Field: h, New: h, Message: fmt.Sprintf("host added %s: forward mode now protects requests to it", h)})
			}
		}
	}
}

// compareSchemas compares two version 2 plans.
func (d *Diff) compareSchemas(old, new *datastore.Schema) {
	if old.Datastore != new.Datastore {
		d.add(Change{Kind: DatastoreChanged, Old: old.Datastore, New: new.Datastore, Flagged: true,
			Message: fmt.Sprintf("DATASTORE CHANGES from %s to %s: requests are read by another profile; every collection below is compared by name only", old.Datastore, new.Datastore)})
	}
	ops, _ := datastore.Operations(new.Datastore)
	for _, op := range new.Allow {
		if !slices.Contains(old.Allow, op) {
			d.add(Change{Kind: AllowChanged, Field: op, Old: "refuse", New: "allow", Flagged: true,
				Message: fmt.Sprintf("SERVER OPERATION ALLOWED %s: it was refused; it can move data into a protected collection past the sidecar", op)})
		}
	}
	for _, op := range old.Allow {
		if !slices.Contains(new.Allow, op) {
			msg := fmt.Sprintf("server operation %s is now refused", op)
			if !slices.Contains(ops, op) {
				msg = fmt.Sprintf("server operation %s is no longer allowed (the %s profile does not know it)", op, new.Datastore)
			}
			d.add(Change{Kind: AllowChanged, Field: op, Old: "allow", New: "refuse", Message: msg})
		}
	}
	reached := map[*datastore.Collection]bool{}
	for _, oc := range old.Collections {
		nc, whole := resolveCollection(new, oc.Name)
		if nc == nil {
			d.add(Change{Kind: CollectionRemoved, Route: oc.Name, Collection: oc.Name, Flagged: true,
				Message: fmt.Sprintf("COLLECTION REMOVED %s: its documents are no longer protected: %s", oc.Name, collectionSummary(oc))})
			continue
		}
		reached[nc] = true
		if nc.Name != oc.Name {
			msg := fmt.Sprintf("collection %s: its databases now fall under %s (line %d), compared below", oc.Name, nc.Name, nc.Line)
			if !whole {
				msg = fmt.Sprintf("collection %s: the databases it shares with %s (line %d) fall under that collection first, compared below; its other databases are protected by no collection", oc.Name, nc.Name, nc.Line)
			}
			d.add(Change{Kind: CollectionRemoved, Route: oc.Name, Collection: oc.Name, New: nc.Name, Flagged: !whole, Message: msg})
		}
		d.compareCollection(oc, nc)
	}
	for _, nc := range new.Collections {
		if !reached[nc] {
			d.add(Change{Kind: CollectionAdded, Route: nc.Name, Collection: nc.Name,
				Message: fmt.Sprintf("collection added %s: %s", nc.Name, collectionSummary(nc))})
		}
	}
}

func collectionSummary(c *datastore.Collection) string {
	var parts []string
	for _, f := range c.Fields {
		parts = append(parts, fmt.Sprintf("%s (%s)", f.Name, describeDocFieldRule(f)))
	}
	s := listOr(parts, "no fields")
	if len(parts) > 0 {
		s = strings.Join(parts, ", ")
	}
	return fmt.Sprintf("%s; attachments %s, design documents %s", s, c.Attachments, c.DesignDocs)
}

// compareCollection compares the fields, policies and views of a
// collection with those of the one that replaces it.
func (d *Diff) compareCollection(oc, nc *datastore.Collection) {
	name := oc.Name
	newByKey := map[string]*datastore.Field{}
	for _, g := range nc.Fields {
		newByKey[fieldKey(g)] = g
	}
	oldByKey := map[string]*datastore.Field{}
	for _, f := range oc.Fields {
		oldByKey[fieldKey(f)] = f
		g := newByKey[fieldKey(f)]
		if g == nil {
			d.removedField(name, f, nc)
			continue
		}
		d.compareField(name, f, g)
	}
	for _, g := range nc.Fields {
		if oldByKey[fieldKey(g)] == nil {
			d.add(Change{Kind: FieldAdded, Route: name, Collection: name, Field: g.Name, New: describeDocFieldRule(g),
				Message: fmt.Sprintf("%s: %s newly protected (%s)", name, g.Name, describeDocFieldRule(g))})
		}
	}
	d.comparePolicy(name, "attachments", oc.Attachments, nc.Attachments,
		"ATTACHMENTS ALLOWED %s: attachments were refused; they now pass opaque and unprotected (the sidecar cannot see into them)")
	d.comparePolicy(name, "design documents", oc.DesignDocs, nc.DesignDocs,
		"DESIGN DOCUMENTS ALLOWED %s: they were refused; design documents carry code that runs inside the datastore and can copy protected values into plaintext")
	for _, v := range sortedViews(oc) {
		nv, ok := nc.Views[v]
		switch {
		case !ok:
			d.add(Change{Kind: ViewChanged, Route: name, Collection: name, Field: v, Old: describeViewKey(oc.Views[v]),
				Message: fmt.Sprintf("%s: view %s is no longer declared: lookups on it are refused", name, v)})
		case !slices.Equal(nv.Fields, oc.Views[v].Fields) || nv.Array != oc.Views[v].Array:
			d.add(Change{Kind: ViewChanged, Route: name, Collection: name, Field: v, Old: describeViewKey(oc.Views[v]), New: describeViewKey(nv),
				Message: fmt.Sprintf("%s: view %s key changes from %s to %s", name, v, describeViewKey(oc.Views[v]), describeViewKey(nv))})
		}
	}
	for _, v := range sortedViews(nc) {
		if _, ok := oc.Views[v]; !ok {
			d.add(Change{Kind: ViewChanged, Route: name, Collection: name, Field: v, New: describeViewKey(nc.Views[v]),
				Message: fmt.Sprintf("%s: view %s declared, key %s", name, v, describeViewKey(nc.Views[v]))})
		}
	}
}

func (d *Diff) comparePolicy(name, what string, old, new datastore.Policy, allowed string) {
	if old == new {
		return
	}
	c := Change{Kind: PolicyChanged, Route: name, Collection: name, Field: what, Old: old.String(), New: new.String()}
	if new == datastore.PolicyAllow {
		c.Flagged = true
		c.Message = fmt.Sprintf(allowed, name)
	} else {
		c.Message = fmt.Sprintf("%s: %s are now refused", name, what)
	}
	d.add(c)
}

// removedField decides what a removed field's values become: still
// protected by other fields, protected differently, or not at all.
func (d *Diff) removedField(coll string, f *datastore.Field, nc *datastore.Collection) {
	pr := protectionOf(docFieldSteps(f), nc.Fields, f.Key, f.Mode)
	c := Change{Route: coll, Collection: coll, Field: f.Name, Old: describeDocFieldRule(f)}
	switch {
	case pr.same != nil:
		c.Kind = FieldCovered
		c.New = fieldNames(pr.same)
		c.Message = fmt.Sprintf("%s: %s removed, still protected by %s (same key and mode)", coll, f.Name, fieldNames(pr.same))
		if f.EncryptNull && !allEncryptNull(pr.same) {
			c.Flagged = true
			c.Message += "; null values are now left as null (visible to the datastore)"
		}
	case pr.other != nil:
		c.Kind = FieldChanged
		c.Flagged = true
		c.New = fieldNames(pr.other)
		c.Message = fmt.Sprintf("%s: %s removed; its values are now protected by %s instead of %s. %s", coll, f.Name, describeCoverers(pr.other), describeDocFieldRule(f),
			changeConsequence(f.Key, f.Mode, pr.other[0].Key, pr.other[0].Mode, "field"))
	default:
		c.Kind = FieldRemoved
		c.Flagged = true
		c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): it reaches the datastore in plaintext", coll, f.Name, describeDocFieldRule(f))
	}
	d.add(c)
}

func allEncryptNull(fs []*datastore.Field) bool {
	for _, f := range fs {
		if !f.EncryptNull {
			return false
		}
	}
	return true
}

func describeCoverers(fs []*datastore.Field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf("%s (line %d: %s)", f.Name, f.Line, describeDocFieldRule(f))
	}
	return strings.Join(parts, ", ")
}

func (d *Diff) compareField(coll string, f, g *datastore.Field) {
	base := Change{Route: coll, Collection: coll, Field: g.Name, Old: describeDocFieldRule(f), New: describeDocFieldRule(g)}
	switch {
	case f.Key != g.Key || f.Mode != g.Mode:
		c := base
		c.Kind, c.Flagged = FieldChanged, true
		c.Message = fmt.Sprintf("%s: %s changes from %s to %s. %s", coll, g.Name, describeDocFieldRule(f), describeDocFieldRule(g), changeConsequence(f.Key, f.Mode, g.Key, g.Mode, "field"))
		if f.Searchable && !g.Searchable {
			c.Message += " Lookups on it are now refused."
		}
		d.add(c)
	case f.EncryptNull != g.EncryptNull:
		c := base
		c.Kind = FieldChanged
		c.Flagged = !g.EncryptNull
		c.Message = fmt.Sprintf("%s: %s: null values are now encrypted", coll, g.Name)
		if !g.EncryptNull {
			c.Message = fmt.Sprintf("%s: %s: null values are now left as null (visible to the datastore)", coll, g.Name)
		}
		d.add(c)
	}
	if !slices.Equal(f.Pad.Buckets, g.Pad.Buckets) {
		c := base
		c.Kind = FieldChanged
		c.Message = fmt.Sprintf("%s: %s: padding changes from %s to %s", coll, g.Name, f.Pad, g.Pad)
		if g.Searchable {
			// Padding is sealed with the value: deterministic tokens
			// change as with a new key.
			c.Flagged = true
			c.Message += ". Its deterministic tokens change with the padding: lookups find only values written after the change until a sweep rewrites the rest (docs/KEYS.md)"
		}
		d.add(c)
	}
	if !slices.Equal(f.Tags, g.Tags) || f.Owner != g.Owner {
		c := base
		c.Kind = FieldChanged
		c.Old, c.New = inventoryOf(f), inventoryOf(g)
		c.Message = fmt.Sprintf("%s: %s inventory: %s (was %s)", coll, g.Name, inventoryOf(g), inventoryOf(f))
		d.add(c)
	}
}

func inventoryOf(f *datastore.Field) string {
	return fmt.Sprintf("tags [%s], owner %q", strings.Join(f.Tags, ", "), f.Owner)
}

// compareV1toV2 compares a version 1 plan with the version 2 plan that
// replaces it: each route's protection is looked up in the collections.
func (d *Diff) compareV1toV2(old, new *Plan) {
	s := new.Schema
	d.add(Change{Kind: VersionChanged, Old: "1", New: "2",
		Message: fmt.Sprintf("version 1 to 2: the %s profile now reads every request; inside a protected collection whatever it does not know to be safe is refused (deny by default), and the routes no longer apply", s.Datastore)})
	carriers := map[*datastore.Field]bool{}
	reached := map[*datastore.Collection]bool{}
	for _, r := range old.Routes {
		dbs, foreign := routeDatabases(r)
		if len(foreign) > 0 && (len(r.Fields) > 0 || len(r.Query) > 0) {
			d.add(Change{Kind: RouteRemoved, Route: r.Name, Flagged: true,
				Message: fmt.Sprintf("ROUTE REMOVED %s (paths %s): they are not %s database paths, so version 2 does not protect these requests: %s", r.Name, strings.Join(foreign, ", "), s.Datastore, protectionSummary(r))})
		}
		for _, db := range dbs {
			nc, _ := resolveCollection(s, db)
			if nc != nil {
				reached[nc] = true
			}
			for _, fr := range r.Fields {
				d.v1FieldIn(r, fr, db, nc, carriers)
			}
			for _, q := range r.Query {
				d.v1QueryIn(r, q, db, nc)
			}
		}
	}
	for _, nc := range s.Collections {
		if !reached[nc] {
			d.add(Change{Kind: CollectionAdded, Route: nc.Name, Collection: nc.Name,
				Message: fmt.Sprintf("collection added %s: %s", nc.Name, collectionSummary(nc))})
			continue
		}
		for _, g := range nc.Fields {
			if !carriers[g] {
				d.add(Change{Kind: FieldAdded, Route: nc.Name, Collection: nc.Name, Field: g.Name, New: describeDocFieldRule(g),
					Message: fmt.Sprintf("%s: %s newly protected (%s)", nc.Name, g.Name, describeDocFieldRule(g))})
			}
		}
	}
	for _, op := range s.Allow {
		d.add(Change{Kind: AllowChanged, Field: op, New: "allow",
			Message: fmt.Sprintf("server operation %s stays allowed (version 1 refused nothing)", op)})
	}
}

// v1FieldIn decides what becomes of one version 1 field rule of route r
// in database db, now under collection nc (nil: none).
func (d *Diff) v1FieldIn(r *Route, fr fieldcrypt.FieldRule, db string, nc *datastore.Collection, carriers map[*datastore.Field]bool) {
	vf := readV1Selector(fr.Selector)
	c := Change{Route: r.Name, Collection: db, Field: fr.Selector.String(), Old: describeRule(fr)}
	where := fmt.Sprintf("%s (%s)", r.Name, db)
	switch {
	case nc == nil:
		c.Kind, c.Flagged = FieldRemoved, true
		c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): %s is not a protected collection, so it reaches the datastore in plaintext", where, fr.Selector, describeRule(fr), db)
	case vf.search && vf.lost == "":
		f, inside := nc.FieldAt(vf.Path)
		switch {
		case f == nil:
			c.Kind, c.Flagged = FieldRemoved, true
			c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): %s is not a protected field of %s, so values compared with it reach the datastore in plaintext", where, fr.Selector, describeRule(fr), vf.Name, nc.Name)
		case inside:
			carriers[f] = true
			c.Kind = FieldCovered
			c.Message = fmt.Sprintf("%s: %s: %s lies inside %s (line %d), sealed whole: searches on it are refused", where, fr.Selector, vf.Name, f.Name, f.Line)
		case f.Key == fr.Key && f.Mode == fr.Mode:
			carriers[f] = true
			c.Kind, c.New = FieldCovered, f.Name
			c.Message = fmt.Sprintf("%s: %s is implied: the profile seals values compared with %s (line %d) in every query, same key and mode", where, fr.Selector, f.Name, f.Line)
		default:
			carriers[f] = true
			c.Kind, c.Flagged, c.New = FieldChanged, true, describeDocFieldRule(f)
			c.Message = fmt.Sprintf("%s: %s (was %s): values compared with %s are now sealed as the field is stored (%s). %s", where, fr.Selector, describeRule(fr), f.Name, describeDocFieldRule(f),
				changeConsequence(fr.Key, fr.Mode, f.Key, f.Mode, "field"))
		}
	case vf.lost != "":
		c.Kind, c.Flagged = FieldRemoved, true
		c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): %s", where, fr.Selector, describeRule(fr), vf.lost)
	default:
		pr := protectionOf(vf.doc, nc.Fields, fr.Key, fr.Mode)
		switch {
		case pr.same != nil:
			c.Kind, c.New = FieldCovered, fieldNames(pr.same)
			c.Message = fmt.Sprintf("%s: %s is protected by %s, same key and mode", where, fr.Selector, fieldNames(pr.same))
			if fr.EncryptNull && !allEncryptNull(pr.same) {
				c.Flagged = true
				c.Message += "; null values are now left as null (visible to the datastore)"
			}
			for _, g := range pr.same {
				carriers[g] = true
			}
		case pr.other != nil:
			c.Kind, c.Flagged, c.New = FieldChanged, true, fieldNames(pr.other)
			c.Message = fmt.Sprintf("%s: %s (was %s) is now protected by %s. %s", where, fr.Selector, describeRule(fr), describeCoverers(pr.other),
				changeConsequence(fr.Key, fr.Mode, pr.other[0].Key, pr.other[0].Mode, "field"))
			for _, g := range pr.other {
				carriers[g] = true
			}
		default:
			c.Kind, c.Flagged = FieldRemoved, true
			c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): no field of %s protects it, so it reaches the datastore in plaintext", where, fr.Selector, describeRule(fr), nc.Name)
		}
	}
	d.add(c)
}

// v1QueryIn decides what becomes of a version 1 query parameter rule: a
// declared view keyed on a field named like the parameter and protected
// the same way carries it.
func (d *Diff) v1QueryIn(r *Route, q QueryRule, db string, nc *datastore.Collection) {
	c := Change{Route: r.Name, Collection: db, Field: q.Param, Old: describeField(q.Key, q.Mode, false)}
	where := fmt.Sprintf("%s (%s)", r.Name, db)
	if nc != nil {
		for _, v := range sortedViews(nc) {
			for _, name := range nc.Views[v].Fields {
				path, _, _, _ := splitFieldPath(name, false)
				f, inside := nc.FieldAt(path)
				if f != nil && !inside && f.Key == q.Key && f.Mode == q.Mode && path[len(path)-1] == q.Param {
					c.Kind, c.New = FieldCovered, "view "+v
					c.Message = fmt.Sprintf("%s: query parameter %s is carried by view %s, whose key holds %s (same key and mode)", where, q.Param, v, f.Name)
					d.add(c)
					return
				}
			}
		}
	}
	c.Kind, c.Flagged = QueryRemoved, true
	c.Message = fmt.Sprintf("REMOVED PROTECTION %s: query parameter %s (was %s): no declared view carries it; version 2 seals only the keys of declared views, so a lookup by it is refused or reaches the datastore as written", where, q.Param, describeField(q.Key, q.Mode, false))
	d.add(c)
}

// v1Endpoints are the requests that carry a CouchDB document, with where
// the document sits in the body: a version 1 file protects a field of a
// database exactly when the route each of them meets protects it.
var v1Endpoints = []struct {
	method, path string
	prefix       []fieldcrypt.Step
}{
	{"PUT", "/%s/doc", nil},
	{"POST", "/%s", nil},
	{"POST", "/%s/_bulk_docs", []fieldcrypt.Step{{Kind: fieldcrypt.StepMember, Name: "docs"}, {Kind: fieldcrypt.StepWildcard}}},
}

// compareV2toV1 compares a version 2 plan with the version 1 plan that
// replaces it: each field of each collection is looked up in the routes
// that the requests writing its documents meet.
func (d *Diff) compareV2toV1(old, new *Plan) {
	s := old.Schema
	refused := []string{}
	ops, _ := datastore.Operations(s.Datastore)
	for _, op := range ops {
		if !s.Allows(op) {
			refused = append(refused, op)
		}
	}
	d.add(Change{Kind: VersionChanged, Old: "2", New: "1", Flagged: true,
		Message: fmt.Sprintf("VERSION 2 TO 1: deny by default ends: attachments, design documents, server-wide operations (%s) and every request the %s profile did not know to be safe now pass through unless a route protects them", listOr(refused, "none"), s.Datastore)})
	for _, oc := range s.Collections {
		db := strings.ReplaceAll(oc.Name, "*", "x") // a database the pattern names
		for _, f := range oc.Fields {
			var missing, changed, routes []string
			for _, ep := range v1Endpoints {
				path := fmt.Sprintf(ep.path, db)
				r := new.Match(Request{Method: ep.method, Path: path})
				steps := append(slices.Clone(ep.prefix), docFieldSteps(f)...)
				if r == nil {
					missing = append(missing, fmt.Sprintf("%s %s (no route)", ep.method, path))
					continue
				}
				var same, all [][]fieldcrypt.Step
				for _, fr := range r.Fields {
					all = append(all, fr.Selector.Steps())
					if fr.Key == f.Key && fr.Mode == f.Mode {
						same = append(same, fr.Selector.Steps())
					}
				}
				switch {
				case coveredBy(steps, same):
					if !slices.Contains(routes, r.Name) {
						routes = append(routes, r.Name)
					}
				case coveredBy(steps, all):
					changed = append(changed, fmt.Sprintf("%s %s (route %s)", ep.method, path, r.Name))
				default:
					var partly []string
					for _, fr := range r.Fields {
						if fr.Key == f.Key && fr.Mode == f.Mode && fieldName(fr.Selector) == f.Path[len(f.Path)-1] {
							partly = append(partly, fr.Selector.String())
						}
					}
					if len(partly) > 0 {
						missing = append(missing, fmt.Sprintf("%s %s (route %s selects only %s)", ep.method, path, r.Name, strings.Join(partly, ", ")))
					} else {
						missing = append(missing, fmt.Sprintf("%s %s (route %s)", ep.method, path, r.Name))
					}
				}
			}
			c := Change{Route: oc.Name, Collection: oc.Name, Field: f.Name, Old: describeDocFieldRule(f)}
			switch {
			case len(missing) > 0:
				c.Kind, c.Flagged = FieldRemoved, true
				where := "that path"
				if f.AnyDepth {
					where = "any depth"
				}
				c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s, at %s) is not protected wherever it occurs on %s: the rest reaches the datastore in plaintext", oc.Name, f.Name, describeDocFieldRule(f), where, strings.Join(missing, ", "))
			case len(changed) > 0:
				c.Kind, c.Flagged = FieldChanged, true
				c.Message = fmt.Sprintf("%s: %s (was %s) is protected under another key or mode on %s", oc.Name, f.Name, describeDocFieldRule(f), strings.Join(changed, ", "))
			default:
				c.Kind, c.New = FieldCovered, "route "+strings.Join(routes, ", ")
				c.Message = fmt.Sprintf("%s: %s is protected by route %s on every document write (single and bulk), same key and mode; elsewhere (queries, views, attachments) only where a route says so", oc.Name, f.Name, strings.Join(routes, ", "))
			}
			d.add(c)
		}
	}
	for _, r := range new.Routes {
		d.add(Change{Kind: RouteAdded, Route: r.Name,
			Message: fmt.Sprintf("route added %s (%s): %s", r.Name, matchSummary(r), protectionSummary(r))})
	}
}
