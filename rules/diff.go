package rules

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// ChangeKind classifies one difference between two plans.
type ChangeKind string

// The kinds of change, in the groups Diff.WriteText prints them in.
const (
	RouteAdded     ChangeKind = "route-added"
	RouteRemoved   ChangeKind = "route-removed"   // flagged: its protection ends
	RouteInserted  ChangeKind = "route-inserted"  // flagged: a new route may take requests from a later one
	RouteReordered ChangeKind = "route-reordered" // flagged: the first match wins
	FieldAdded     ChangeKind = "field-added"
	FieldRemoved   ChangeKind = "field-removed" // flagged
	FieldChanged   ChangeKind = "field-changed" // flagged: old tokens keep the old key and mode
	QueryAdded     ChangeKind = "query-added"
	QueryRemoved   ChangeKind = "query-removed" // flagged
	QueryChanged   ChangeKind = "query-changed" // flagged
	MatchChanged   ChangeKind = "match-changed" // flagged when the route applies to fewer requests
	DecryptChanged ChangeKind = "decrypt-changed"
)

// Change is one difference in protection between two plans, in words.
type Change struct {
	Kind ChangeKind `json:"kind"`
	// Route is the route concerned (version 1), or the collection
	// (version 2, also in Collection).
	Route      string `json:"route,omitempty"`
	Collection string `json:"collection,omitempty"`
	// Field is the selector or query parameter concerned, or the key
	// name for a decrypt change.
	Field string `json:"field,omitempty"`
	Old   string `json:"old,omitempty"`
	New   string `json:"new,omitempty"`
	// Flagged changes need a reviewer's explicit attention: protection
	// removed or weakened, existing data affected, or more revealed.
	Flagged bool   `json:"flagged"`
	Message string `json:"message"`
}

// Diff is the change in protection from one plan to another.
type Diff struct {
	Old     PlanID   `json:"old"`
	New     PlanID   `json:"new"`
	Changes []Change `json:"changes"`
}

// PlanID names one side of a Diff.
type PlanID struct {
	Source string `json:"source"`
	Hash   string `json:"hash"`
}

// Empty reports whether the plans protect exactly the same things (their
// files may still differ, in comments or layout).
func (d *Diff) Empty() bool { return len(d.Changes) == 0 }

// Flagged counts the changes that need a reviewer's explicit attention.
func (d *Diff) Flagged() int {
	n := 0
	for _, c := range d.Changes {
		if c.Flagged {
			n++
		}
	}
	return n
}

// Compare describes what changes in protection when new replaces old.
// Routes are paired by name: a renamed route shows as one removed and one
// added. Collections (version 2) are paired by the databases they name.
// Where a rule is removed, Compare decides whether other rules still
// protect what it protected (FieldCovered), protect it under another key
// or mode (FieldChanged), or not at all (FieldRemoved). Files of
// different versions are compared through what each protects: the
// collections a version 1 route's paths reach, the requests that write
// a version 2 collection's documents.
func Compare(old, new *Plan) *Diff {
	d := &Diff{Old: PlanID{old.Source, old.Hash}, New: PlanID{new.Source, new.Hash}}
	switch {
	case old.Schema != nil && new.Schema != nil:
		d.compareHosts(old, new)
		d.compareSchemas(old.Schema, new.Schema)
	case new.Schema != nil:
		d.compareHosts(old, new)
		d.compareV1toV2(old, new)
	case old.Schema != nil:
		d.compareHosts(old, new)
		d.compareV2toV1(old, new)
	default:
		d.compareRoutes(old, new)
	}
	d.compareDecrypt(old, new)
	return d
}

// compareRoutes compares two version 1 plans route by route.
func (d *Diff) compareRoutes(old, new *Plan) {
	oldByName := map[string]*Route{}
	for _, r := range old.Routes {
		oldByName[r.Name] = r
	}
	newByName := map[string]*Route{}
	for _, r := range new.Routes {
		newByName[r.Name] = r
	}
	for _, r := range old.Routes {
		if newByName[r.Name] == nil {
			d.add(Change{Kind: RouteRemoved, Route: r.Name, Flagged: true,
				Message: fmt.Sprintf("ROUTE REMOVED %s (%s): its requests are no longer protected by it: %s", r.Name, matchSummary(r), protectionSummary(r))})
		}
	}
	for i, r := range new.Routes {
		if oldByName[r.Name] == nil {
			d.add(Change{Kind: RouteAdded, Route: r.Name,
				Message: fmt.Sprintf("route added %s (%s): %s", r.Name, matchSummary(r), protectionSummary(r))})
			// A new route placed before an existing one takes the
			// requests both match: the first match wins.
			for _, later := range new.Routes[i+1:] {
				if oldByName[later.Name] != nil && routesIntersect(r, later) {
					d.add(Change{Kind: RouteInserted, Route: r.Name, Field: later.Name, Flagged: true,
						Message: fmt.Sprintf("new route %s comes before %s and takes the requests both match; they get %s's protection (%s) instead of %s's", r.Name, later.Name, r.Name, protectionSummary(r), later.Name)})
				}
			}
		}
	}
	d.compareOrder(old, new, oldByName)
	for _, nr := range new.Routes {
		if or := oldByName[nr.Name]; or != nil {
			d.compareRoute(or, nr)
		}
	}
}

func (d *Diff) add(c Change) { d.Changes = append(d.Changes, c) }

// compareOrder flags routes kept in both plans whose relative order
// changed where they overlap: which one applies to a request changes.
func (d *Diff) compareOrder(old, new *Plan, oldByName map[string]*Route) {
	oldIndex := map[string]int{}
	for i, r := range old.Routes {
		oldIndex[r.Name] = i
	}
	for i, a := range new.Routes {
		if oldByName[a.Name] == nil {
			continue
		}
		for _, b := range new.Routes[i+1:] {
			if oldByName[b.Name] == nil {
				continue
			}
			if oldIndex[a.Name] > oldIndex[b.Name] && routesIntersect(a, b) {
				d.add(Change{Kind: RouteReordered, Route: a.Name, Field: b.Name, Flagged: true,
					Message: fmt.Sprintf("route %s now comes before %s: requests both match get %s's protection (%s) instead of %s's (%s)", a.Name, b.Name, a.Name, protectionSummary(a), b.Name, protectionSummary(b))})
			}
		}
	}
}

func (d *Diff) compareRoute(or, nr *Route) {
	name := nr.Name
	// Where the route applies.
	d.compareList(name, "methods", or.Methods, nr.Methods, true)
	d.compareList(name, "paths", or.Paths, nr.Paths, true)
	// Hosts: an empty list means any host, so adding the first host
	// narrows the route and removing the last widens it.
	switch {
	case len(or.Hosts) == 0 && len(nr.Hosts) > 0:
		d.add(Change{Kind: MatchChanged, Route: name, Field: "hosts", Old: "any", New: strings.Join(nr.Hosts, " "), Flagged: true,
			Message: fmt.Sprintf("%s: now applies only to hosts %s (was any host); requests to other hosts are no longer protected by it", name, strings.Join(nr.Hosts, ", "))})
	case len(or.Hosts) > 0 && len(nr.Hosts) == 0:
		d.add(Change{Kind: MatchChanged, Route: name, Field: "hosts", Old: strings.Join(or.Hosts, " "), New: "any",
			Message: fmt.Sprintf("%s: now applies to any host (was %s)", name, strings.Join(or.Hosts, ", "))})
	default:
		d.compareList(name, "hosts", or.Hosts, nr.Hosts, true)
	}
	d.compareList(name, "content types", or.ContentTypes, nr.ContentTypes, false)

	// Body fields, by canonical selector.
	type fieldInfo struct {
		text string
		rule fieldcrypt.FieldRule
	}
	oldF := map[string]fieldInfo{}
	for _, f := range or.Fields {
		oldF[canonical(f.Selector)] = fieldInfo{f.Selector.String(), f}
	}
	newF := map[string]fieldInfo{}
	for _, f := range nr.Fields {
		newF[canonical(f.Selector)] = fieldInfo{f.Selector.String(), f}
	}
	for _, f := range or.Fields {
		c := canonical(f.Selector)
		if _, ok := newF[c]; ok {
			continue
		}
		d.removedSelector(name, f, nr.Fields)
	}
	for _, f := range nr.Fields {
		c := canonical(f.Selector)
		was, ok := oldF[c]
		if !ok {
			d.add(Change{Kind: FieldAdded, Route: name, Field: f.Selector.String(), New: describeRule(f),
				Message: fmt.Sprintf("%s: %s newly protected (%s)", name, f.Selector, describeRule(f))})
			continue
		}
		if was.rule.Key != f.Key || was.rule.Mode != f.Mode {
			d.add(Change{Kind: FieldChanged, Route: name, Field: f.Selector.String(),
				Old: describeRule(was.rule), New: describeRule(f), Flagged: true,
				Message: fmt.Sprintf("%s: %s changes from %s to %s. %s", name, f.Selector,
					describeField(was.rule.Key, was.rule.Mode, false), describeField(f.Key, f.Mode, false), changeConsequence(was.rule.Key, was.rule.Mode, f.Key, f.Mode, "field"))})
		} else if was.rule.Leaves != f.Leaves {
			msg := fmt.Sprintf("%s: %s: objects and arrays there are now encrypted value by value, keeping their structure", name, f.Selector)
			if !f.Leaves {
				msg = fmt.Sprintf("%s: %s: objects and arrays there are now encrypted whole (query operators on it stop matching)", name, f.Selector)
			}
			d.add(Change{Kind: FieldChanged, Route: name, Field: f.Selector.String(), Old: describeRule(was.rule), New: describeRule(f), Message: msg})
		} else if was.rule.EncryptNull != f.EncryptNull {
			msg := fmt.Sprintf("%s: %s: null values are now encrypted", name, f.Selector)
			if !f.EncryptNull {
				msg = fmt.Sprintf("%s: %s: null values are now left as null (visible to the datastore)", name, f.Selector)
			}
			d.add(Change{Kind: FieldChanged, Route: name, Field: f.Selector.String(), Old: describeRule(was.rule),
				New: describeRule(f), Flagged: !f.EncryptNull, Message: msg})
		}
	}

	// Query parameters.
	for _, q := range or.Query {
		nq, ok := nr.QueryRule(q.Param)
		if !ok {
			d.add(Change{Kind: QueryRemoved, Route: name, Field: q.Param, Old: describeField(q.Key, q.Mode, false), Flagged: true,
				Message: fmt.Sprintf("REMOVED PROTECTION %s: query parameter %s (was %s): it reaches the datastore in plaintext", name, q.Param, describeField(q.Key, q.Mode, false))})
			continue
		}
		if nq.Key != q.Key || nq.Mode != q.Mode {
			d.add(Change{Kind: QueryChanged, Route: name, Field: q.Param, Old: describeField(q.Key, q.Mode, false), New: describeField(nq.Key, nq.Mode, false), Flagged: true,
				Message: fmt.Sprintf("%s: query parameter %s changes from %s to %s. %s", name, q.Param, describeField(q.Key, q.Mode, false), describeField(nq.Key, nq.Mode, false), changeConsequence(q.Key, q.Mode, nq.Key, nq.Mode, "parameter"))})
		}
	}
	for _, q := range nr.Query {
		if _, ok := or.QueryRule(q.Param); !ok {
			d.add(Change{Kind: QueryAdded, Route: name, Field: q.Param, New: describeField(q.Key, q.Mode, false),
				Message: fmt.Sprintf("%s: query parameter %s newly protected (%s)", name, q.Param, describeField(q.Key, q.Mode, false))})
		}
	}
}

// removedSelector decides what a selector removed from a route becomes:
// the route's other rules may still select every value it selected (or a
// value around it), with the same key and mode or not.
func (d *Diff) removedSelector(route string, f fieldcrypt.FieldRule, rules []fieldcrypt.FieldRule) {
	steps := f.Selector.Steps()
	var same []fieldcrypt.FieldRule
	for _, g := range rules {
		if g.Key == f.Key && g.Mode == f.Mode {
			same = append(same, g)
		}
	}
	c := Change{Route: route, Field: f.Selector.String(), Old: describeRule(f)}
	switch {
	case coveredBy(steps, selectorSteps(same)):
		by := minimalRules(steps, same)
		c.Kind, c.New = FieldCovered, selectorList(by)
		c.Message = fmt.Sprintf("%s: %s removed, still protected by %s (same key and mode)", route, f.Selector, selectorList(by))
		if f.EncryptNull && !slices.ContainsFunc(by, func(g fieldcrypt.FieldRule) bool { return g.EncryptNull }) {
			c.Flagged = true
			c.Message += "; null values are now left as null (visible to the datastore)"
		}
	case coveredBy(steps, selectorSteps(rules)):
		by := minimalRules(steps, rules)
		c.Kind, c.Flagged, c.New = FieldChanged, true, selectorList(by)
		var parts []string
		for _, g := range by {
			parts = append(parts, fmt.Sprintf("%s (%s)", g.Selector, describeRule(g)))
		}
		c.Message = fmt.Sprintf("%s: %s removed; its values are now protected by %s instead of %s. %s", route, f.Selector, strings.Join(parts, ", "), describeRule(f),
			changeConsequence(f.Key, f.Mode, by[0].Key, by[0].Mode, "field"))
	default:
		c.Kind, c.Flagged = FieldRemoved, true
		c.Message = fmt.Sprintf("REMOVED PROTECTION %s: %s (was %s): it reaches the datastore in plaintext", route, f.Selector, describeRule(f))
	}
	d.add(c)
}

// minimalRules returns a smallest subset of rules, in order, that still
// covers steps (rules must cover it).
func minimalRules(steps []fieldcrypt.Step, rules []fieldcrypt.FieldRule) []fieldcrypt.FieldRule {
	chosen := slices.Clone(rules)
	for i := 0; i < len(chosen); {
		rest := slices.Delete(slices.Clone(chosen), i, i+1)
		if coveredBy(steps, selectorSteps(rest)) {
			chosen = rest
			continue
		}
		i++
	}
	return chosen
}

func selectorList(rules []fieldcrypt.FieldRule) string {
	parts := make([]string, len(rules))
	for i, r := range rules {
		parts[i] = r.Selector.String()
	}
	return strings.Join(parts, ", ")
}

// changeConsequence explains what a key or mode change does to data that
// is already stored.
func changeConsequence(oldKey string, oldMode fieldcrypt.Mode, newKey string, newMode fieldcrypt.Mode, what string) string {
	s := fmt.Sprintf("Existing data keeps its old tokens (under key %s); readers need key %s for them until the data is re-written.", oldKey, oldKey)
	if oldKey == newKey {
		s = "Existing data keeps its old tokens until it is re-written."
	}
	if oldMode == fieldcrypt.ModeDeterministic || newMode == fieldcrypt.ModeDeterministic {
		s += fmt.Sprintf(" Equality queries on this %s stop matching data written before the change.", what)
	}
	return s
}

// compareList reports items added to and removed from one of a route's
// match lists. narrowFlag: removing an item makes the route apply to
// fewer requests, which ends their protection.
func (d *Diff) compareList(route, what string, old, new []string, narrowFlag bool) {
	var removed, added []string
	for _, s := range old {
		if !slices.Contains(new, s) {
			removed = append(removed, s)
		}
	}
	for _, s := range new {
		if !slices.Contains(old, s) {
			added = append(added, s)
		}
	}
	if len(removed) > 0 {
		msg := fmt.Sprintf("%s: %s no longer include %s", route, what, strings.Join(removed, ", "))
		if narrowFlag {
			msg += "; those requests are no longer protected by this route"
		} else {
			msg += "; bodies of those types are now refused on this route"
		}
		d.add(Change{Kind: MatchChanged, Route: route, Field: what, Old: strings.Join(removed, " "), Flagged: narrowFlag, Message: msg})
	}
	if len(added) > 0 {
		d.add(Change{Kind: MatchChanged, Route: route, Field: what, New: strings.Join(added, " "),
			Message: fmt.Sprintf("%s: %s now include %s", route, what, strings.Join(added, ", "))})
	}
}

// reveal ranks what a response shows of a key's values.
func reveal(p *Plan, key string) (int, string) {
	if slices.Contains(p.DecryptKeys, key) {
		return 4, "opened"
	}
	if m, ok := p.masks[key]; ok {
		switch m.kind {
		case maskLast4:
			return 3, "masked (last4)"
		case maskHash:
			return 2, "masked (hash)"
		default:
			return 1, "masked (" + m.String() + ")"
		}
	}
	return 0, "left as a token"
}

func (d *Diff) compareDecrypt(old, new *Plan) {
	var keys []string
	for _, p := range []*Plan{old, new} {
		for _, k := range append(slices.Clone(p.DecryptKeys), p.MaskKeys...) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		ol, os := reveal(old, k)
		nl, ns := reveal(new, k)
		if os == ns {
			continue
		}
		c := Change{Kind: DecryptChanged, Field: k, Old: os, New: ns}
		switch {
		case nl == 4:
			c.Flagged = true
			c.Message = fmt.Sprintf("KEY BECOMES OPENABLE %s: was %s, now opened: responses show its values in clear", k, os)
		case nl > ol:
			c.Flagged = true
			c.Message = fmt.Sprintf("REVEALS MORE %s: was %s, now %s", k, os, ns)
		default:
			c.Message = fmt.Sprintf("%s: was %s, now %s", k, os, ns)
		}
		d.add(c)
	}
}

// group is one heading of the text output.
type group struct {
	title string
	kinds []ChangeKind
}

var diffGroups = []group{
	{"Version and datastore", []ChangeKind{VersionChanged, DatastoreChanged}},
	{"Collections added or removed", []ChangeKind{CollectionRemoved, CollectionAdded}},
	{"Routes added or removed", []ChangeKind{RouteRemoved, RouteAdded, RouteInserted, RouteReordered}},
	{"Fields newly protected", []ChangeKind{FieldAdded, QueryAdded}},
	{"Fields NO LONGER protected", []ChangeKind{FieldRemoved, QueryRemoved}},
	{"Rules removed or replaced whose fields stay protected", []ChangeKind{FieldCovered}},
	{"Key or mode changes", []ChangeKind{FieldChanged, QueryChanged}},
	{"Where routes apply", []ChangeKind{MatchChanged}},
	{"Datastore hosts (forward mode)", []ChangeKind{HostsChanged}},
	{"Refused: attachments, design documents, server-wide operations", []ChangeKind{PolicyChanged, AllowChanged}},
	{"Views", []ChangeKind{ViewChanged}},
	{"Decrypt and mask policy", []ChangeKind{DecryptChanged}},
}

// WriteText writes the diff for a reviewer: grouped, flagged lines marked
// "!", then a one-line summary.
func (d *Diff) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "old: %s (%s)\nnew: %s (%s)\n", d.Old.Source, d.Old.Hash, d.New.Source, d.New.Hash)
	if d.Empty() {
		if d.Old.Hash == d.New.Hash {
			b.WriteString("\nThe files are identical.\n")
		} else {
			b.WriteString("\nNo change in protection (the files differ only in comments, layout or order of equivalent entries).\n")
		}
		_, err := io.WriteString(w, b.String())
		return err
	}
	for _, g := range diffGroups {
		var lines []string
		for _, c := range d.Changes {
			if !slices.Contains(g.kinds, c.Kind) {
				continue
			}
			mark := "+"
			switch {
			case c.Flagged:
				mark = "!"
			case c.Kind == FieldCovered:
				mark = "="
			case c.Kind == DecryptChanged || c.Kind == MatchChanged && c.Old != "",
				c.Collection != "" && c.Old != "" && c.New != "",
				(c.Kind == PolicyChanged || c.Kind == AllowChanged || c.Kind == HostsChanged || c.Kind == ViewChanged) && c.Old != "":
				mark = "~"
			}
			lines = append(lines, "  "+mark+" "+c.Message)
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n%s\n", g.title, strings.Join(lines, "\n"))
	}
	fmt.Fprintf(&b, "\nSummary: %s\n", d.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary says in one line what changed, for audit events and logs:
// "1 field NO LONGER protected, 2 fields newly protected (1 flagged)".
func (d *Diff) Summary() string {
	if d.Empty() {
		return "no change in protection"
	}
	count := map[ChangeKind]int{}
	for _, c := range d.Changes {
		count[c.Kind]++
	}
	n := func(kinds ...ChangeKind) int {
		t := 0
		for _, k := range kinds {
			t += count[k]
		}
		return t
	}
	var parts []string
	addPart := func(k int, one, many string) {
		if k > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k, plural(k, one, many)))
		}
	}
	addPart(n(VersionChanged), "version change", "version changes")
	addPart(n(DatastoreChanged), "datastore change", "datastore changes")
	addPart(n(CollectionAdded), "collection added", "collections added")
	addPart(n(CollectionRemoved), "collection REMOVED or moved", "collections REMOVED or moved")
	addPart(n(RouteAdded), "route added", "routes added")
	addPart(n(RouteRemoved), "route REMOVED", "routes REMOVED")
	addPart(n(RouteInserted, RouteReordered), "route order change", "route order changes")
	addPart(n(FieldAdded, QueryAdded), "field newly protected", "fields newly protected")
	addPart(n(FieldRemoved, QueryRemoved), "field NO LONGER protected", "fields NO LONGER protected")
	addPart(n(FieldCovered), "rule removed with its fields still protected", "rules removed with their fields still protected")
	addPart(n(FieldChanged, QueryChanged), "key/mode change", "key/mode changes")
	addPart(n(MatchChanged), "match change", "match changes")
	addPart(n(HostsChanged), "hosts change", "hosts changes")
	addPart(n(PolicyChanged, AllowChanged), "policy change", "policy changes")
	addPart(n(ViewChanged), "view change", "view changes")
	addPart(n(DecryptChanged), "decrypt policy change", "decrypt policy changes")
	return fmt.Sprintf("%s (%d flagged)", strings.Join(parts, ", "), d.Flagged())
}

func matchSummary(r *Route) string {
	s := listOr(r.Methods, "no methods") + " " + listOr(r.Paths, "no paths")
	if len(r.Hosts) > 0 {
		s += " on " + strings.Join(r.Hosts, " ")
	}
	return s
}

func protectionSummary(r *Route) string {
	var parts []string
	for _, f := range r.Fields {
		parts = append(parts, fmt.Sprintf("%s (%s)", f.Selector, describeField(f.Key, f.Mode, false)))
	}
	for _, q := range r.Query {
		parts = append(parts, fmt.Sprintf("query %s (%s)", q.Param, describeField(q.Key, q.Mode, false)))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// routesIntersect reports whether some request could match both routes.
// It errs towards true (hosts are compared loosely), which only ever adds
// a flag for the reviewer.
func routesIntersect(a, b *Route) bool {
	methodsMeet := a.anyMethod || b.anyMethod
	for _, m := range a.Methods {
		for _, n := range b.Methods {
			if m == n || m == "GET" && n == "HEAD" || m == "HEAD" && n == "GET" {
				methodsMeet = true
			}
		}
	}
	if !methodsMeet {
		return false
	}
	for i := range a.paths {
		for k := range b.paths {
			if segsIntersect(a.paths[i].segs, b.paths[k].segs) {
				return true
			}
		}
	}
	return false
}

// segsIntersect reports whether some clean path matches both patterns.
func segsIntersect(a, b []segment) bool {
	type state struct{ i, j int }
	seen := map[state]bool{}
	var walk func(i, j int) bool
	walk = func(i, j int) bool {
		s := state{i, j}
		if seen[s] {
			return false
		}
		seen[s] = true
		if i < len(a) && a[i].kind == segAny && walk(i+1, j) {
			return true
		}
		if j < len(b) && b[j].kind == segAny && walk(i, j+1) {
			return true
		}
		if i == len(a) && j == len(b) {
			return true
		}
		if i == len(a) || j == len(b) {
			return false
		}
		x, y := a[i], b[j]
		// Consume one path segment in both; "**" may stay to take more.
		if x.kind == segLiteral && y.kind == segLiteral && x.lit != y.lit {
			return false
		}
		ni, nj := i+1, j+1
		if x.kind == segAny {
			ni = i
		}
		if y.kind == segAny {
			nj = j
		}
		if x.kind == segAny && y.kind == segAny {
			return false // both staying is no progress; the skips above cover it
		}
		return walk(ni, nj)
	}
	return walk(0, 0)
}
