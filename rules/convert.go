package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Converting version 1 files (routes) into version 2 (collections), for
// `sidecrypt rules convert` and for comparing a version 1 file with a
// version 2 one in `rules diff`.
//
// A route reaches CouchDB databases through its path patterns ("/clinic",
// "/clinic/*", "/clinic/_bulk_docs": database clinic). Its selectors name
// document fields: "$.ssn" and "$.docs[*].ssn" are the field ssn (a single
// name, which version 2 protects at any depth: wider than "$.ssn", never
// narrower), "$.card.number" and "$.docs[*].card.number" the dotted path
// card.number. A field is carried only as a name whose protection covers
// every value the selector selected (decided with coveredBy); what cannot
// be carried is said, never dropped silently.

// ConvertOptions adjust Convert. The zero value converts for CouchDB.
type ConvertOptions struct {
	// Datastore is the version 2 file's datastore; default "couchdb",
	// the only one whose paths Convert can read.
	Datastore string
}

// ConvertNote is one thing Convert says about the version 1 file: either
// something it could not carry (Lost), or something it carried in a way
// that protects more, or differently, than the original.
type ConvertNote struct {
	Line    int    `json:"line"`
	Route   string `json:"route,omitempty"`
	Lost    bool   `json:"lost"`
	Message string `json:"message"`
}

func (n ConvertNote) String() string {
	where := fmt.Sprintf("line %d", n.Line)
	if n.Route != "" {
		where = fmt.Sprintf("route %s (line %d)", n.Route, n.Line)
	}
	return where + ": " + n.Message
}

// Conversion is the result of Convert.
type Conversion struct {
	// YAML is the version 2 file, with the notes as comments at its top.
	YAML []byte
	// Notes in file order.
	Notes []ConvertNote
	// Schema is what YAML protects.
	Schema *datastore.Schema
}

// Complete reports whether everything was carried (no Lost note).
func (c *Conversion) Complete() bool {
	for _, n := range c.Notes {
		if n.Lost {
			return false
		}
	}
	return true
}

// ErrNotVersion1 is returned by Convert for a file that is not version 1.
var ErrNotVersion1 = errors.New("rules: convert reads version 1 files; this one is already version 2")

// Convert writes the version 2 equivalent of a version 1 plan where one
// exists, and says what it cannot carry.
func Convert(p *Plan, opt ConvertOptions) (*Conversion, error) {
	if p.Schema != nil || p.Version == 2 {
		return nil, ErrNotVersion1
	}
	if opt.Datastore == "" {
		opt.Datastore = "couchdb"
	}
	inf := inferSchema(p, opt.Datastore)
	var b strings.Builder
	fmt.Fprintf(&b, "# Converted by `sidecrypt rules convert` from %s (version 1, %s).\n", p.Source, p.Hash)
	var lost, carried []ConvertNote
	for _, n := range inf.notes {
		if n.Lost {
			lost = append(lost, n)
		} else {
			carried = append(carried, n)
		}
	}
	if len(lost) > 0 {
		b.WriteString("#\n# NOT CARRIED: the version 1 file does this, this file does not:\n")
		writeNoteComments(&b, lost)
	}
	if len(carried) > 0 {
		b.WriteString("#\n# Carried differently (version 2 protects as much or more):\n")
		writeNoteComments(&b, carried)
	}
	b.WriteString("version: 2\n")
	fmt.Fprintf(&b, "datastore: %s\n", yamlScalar(opt.Datastore))
	if len(inf.schema.Hosts) > 0 {
		fmt.Fprintf(&b, "hosts: [%s]\n", yamlList(inf.schema.Hosts))
	}
	if len(inf.schema.Collections) == 0 {
		b.WriteString("collections: []\n")
	} else {
		b.WriteString("collections:\n")
	}
	for _, c := range inf.schema.Collections {
		fmt.Fprintf(&b, "  - name: %s\n", yamlScalar(c.Name))
		b.WriteString("    fields:\n")
		width := 0
		for _, f := range c.Fields {
			width = max(width, len(yamlScalar(f.Name)))
		}
		for _, f := range c.Fields {
			attrs := []string{"key: " + yamlScalar(f.Key)}
			if f.Searchable {
				attrs = append(attrs, "searchable: true")
			}
			if f.EncryptNull {
				attrs = append(attrs, "nulls: encrypt")
			}
			name := yamlScalar(f.Name) + ":"
			fmt.Fprintf(&b, "      %-*s {%s}\n", width+1, name, strings.Join(attrs, ", "))
		}
	}
	dec := p.doc.Decrypt
	if len(dec.Keys) > 0 || len(dec.Mask) > 0 {
		b.WriteString("decrypt:\n")
		if len(dec.Keys) > 0 {
			var keys []string
			for _, k := range dec.Keys {
				keys = append(keys, k.Value)
			}
			fmt.Fprintf(&b, "  keys: [%s]\n", yamlList(keys))
		}
		if len(dec.Mask) > 0 {
			var masks []string
			for _, m := range dec.Mask {
				masks = append(masks, yamlScalar(m.Key.Value)+": "+yamlScalar(m.Mask.Value))
			}
			fmt.Fprintf(&b, "  mask: {%s}\n", strings.Join(masks, ", "))
		}
	}
	return &Conversion{YAML: []byte(b.String()), Notes: inf.notes, Schema: inf.schema}, nil
}

func writeNoteComments(b *strings.Builder, notes []ConvertNote) {
	for _, n := range notes {
		lines := wrapText(n.String(), 74)
		for i, l := range lines {
			if i == 0 {
				fmt.Fprintf(b, "#   - %s\n", l)
			} else {
				fmt.Fprintf(b, "#     %s\n", l)
			}
		}
	}
}

// wrapText breaks s at spaces into lines of at most width characters
// (longer words stay whole).
func wrapText(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

var plainYAML = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_./()+-]*$`)

// yamlScalar writes s as a YAML scalar that reads back as s: plain when
// that is unambiguous, else quoted.
func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~":
		return `"` + s + `"`
	}
	if plainYAML.MatchString(s) {
		return s
	}
	if strings.Contains(s, `\`) && !strings.ContainsAny(s, "'\n\t\r") && utf8Printable(s) {
		return "'" + s + "'"
	}
	q, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
	return string(q)
}

func utf8Printable(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

func yamlList(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = yamlScalar(s)
	}
	return strings.Join(out, ", ")
}

// inferred is a version 1 plan read as a version 2 schema.
type inferred struct {
	schema *datastore.Schema
	notes  []ConvertNote
	// origin says, for each collection and field name, which route and
	// selector it came from, for diffs.
	origin map[*datastore.Field][]string
}

// routeDatabases reads the CouchDB databases a route's path patterns
// reach: "/clinic", "/clinic/*", "/clinic/**", "/clinic/_bulk_docs",
// "/clinic/_design/*/_view/*" reach clinic; "/*/..." reaches every
// database ("*"). Patterns that do not read as CouchDB paths are returned
// as foreign.
func routeDatabases(r *Route) (dbs, foreign []string) {
	for i := range r.paths {
		db, ok := couchDatabase(&r.paths[i])
		if !ok {
			foreign = append(foreign, r.paths[i].text)
			continue
		}
		if !slices.Contains(dbs, db) {
			dbs = append(dbs, db)
		}
	}
	return dbs, foreign
}

// couchDatabase reads the database of one CouchDB path pattern: the first
// segment, then nothing, a document ("*"), an endpoint ("_bulk_docs"), a
// design or local document, or an attachment ("*/*" or "*/**").
func couchDatabase(pp *pathPattern) (string, bool) {
	segs := pp.segs
	if len(segs) == 0 {
		return "", false
	}
	db := ""
	switch s := segs[0]; s.kind {
	case segOne:
		db = "*"
	case segLiteral:
		if msg, _, _ := collectionNameProblem(s.lit); msg != "" || strings.Contains(s.lit, "*") {
			return "", false
		}
		db = s.lit
	default:
		return "", false // "/**": no database named
	}
	rest := segs[1:]
	if len(rest) == 0 {
		return db, true
	}
	first := rest[0]
	switch {
	case first.kind == segAny:
		return db, true
	case first.kind == segLiteral && (first.lit == "_design" || first.lit == "_local"):
		return db, true
	case first.kind == segLiteral && strings.HasPrefix(first.lit, "_"):
		return db, len(rest) == 1
	case first.kind == segOne:
		return db, true // a document, or its attachments
	}
	// A literal document id ("/api/customers") is how REST paths read;
	// a CouchDB rule names documents with "*".
	return "", false
}

// v1Field is what one version 1 selector means in version 2 terms.
type v1Field struct {
	search bool // a Mango selector ($.selector...): Name is the searched field
	// doc is the selector's steps relative to the document ("$.docs[*]"
	// taken off), for documents.
	doc []fieldcrypt.Step
	// Name is the version 2 field name that carries it ("" when lost),
	// Path its members.
	Name string
	Path []string
	// widened says how Name protects more than the selector did ("" when
	// exactly as much); lost why it cannot be carried.
	widened, lost string
}

// readV1Selector reads a version 1 selector as a version 2 field.
func readV1Selector(sel fieldcrypt.Selector) v1Field {
	steps := sel.Steps()
	if len(steps) > 0 && steps[0].Kind == fieldcrypt.StepMember && !steps[0].Descendant && steps[0].Name == "selector" && len(steps) > 1 {
		var names []string
		for _, st := range steps[1:] {
			if st.Kind == fieldcrypt.StepMember && !strings.HasPrefix(st.Name, "$") {
				names = append(names, st.Name)
			}
		}
		if len(names) == 0 {
			return v1Field{search: true, lost: fmt.Sprintf("%s names no field of the documents", sel)}
		}
		name := strings.Join(names, ".") // Mango's dotted field names
		path, _, msg, _ := splitFieldName(name)
		if msg != "" {
			return v1Field{search: true, lost: fmt.Sprintf("%s: %s", sel, msg)}
		}
		return v1Field{search: true, Name: name, Path: path}
	}
	doc := steps
	if len(doc) >= 2 && doc[0].Kind == fieldcrypt.StepMember && !doc[0].Descendant && doc[0].Name == "docs" &&
		(doc[1].Kind == fieldcrypt.StepWildcard || doc[1].Kind == fieldcrypt.StepIndex) && !doc[1].Descendant {
		doc = doc[2:]
	}
	f := v1Field{doc: doc}
	if len(doc) == 0 {
		f.lost = fmt.Sprintf("%s protects whole documents; version 2 names fields", sel)
		return f
	}
	var members []string
	descendant := false
	for _, st := range doc {
		if st.Descendant {
			descendant = true
		}
		if st.Kind == fieldcrypt.StepMember {
			members = append(members, st.Name)
		}
	}
	if len(members) == 0 {
		f.lost = fmt.Sprintf("%s names no member", sel)
		return f
	}
	for _, m := range members {
		if strings.HasPrefix(m, "_") || strings.HasPrefix(m, "$") {
			f.lost = fmt.Sprintf("%s names the member %q, which version 2 cannot protect (CouchDB reserves names starting with \"_\"; \"$\" starts query operators)", sel, m)
			return f
		}
	}
	// The dotted path from the root, arrays transparent; failing that,
	// the last member at any depth.
	var candidates [][]string
	if !descendant && doc[0].Kind == fieldcrypt.StepMember {
		candidates = append(candidates, members)
	}
	last := members[len(members)-1]
	candidates = append(candidates, []string{last})
	for _, c := range candidates {
		cs := fieldSteps(c)
		if !coveredBy(doc, [][]fieldcrypt.Step{cs}) {
			continue
		}
		f.Path, f.Name = c, joinFieldPath(c)
		if !coveredBy(cs, [][]fieldcrypt.Step{doc}) {
			var how []string
			switch {
			case len(c) == 1 && len(members) == 1 && !descendant:
				how = append(how, "single names, which protect the member at any depth")
			case len(c) == 1:
				how = append(how, "the last member's name, which protects every member of that name at any depth")
			}
			if doc[len(doc)-1].Kind != fieldcrypt.StepMember {
				how = append(how, "sealed whole instead of element by element")
			} else if len(c) > 1 {
				how = append(how, "dotted paths, which protect the path in every element of a list")
			}
			if len(how) == 0 {
				how = append(how, "which selects more")
			}
			f.widened = strings.Join(how, ", ")
		}
		return f
	}
	f.lost = fmt.Sprintf("%s has no version 2 field name that covers it", sel)
	return f
}

// fieldSteps are the selector steps a version 2 field compiles to (as
// datastore.Collection.DocumentRules builds them).
func fieldSteps(path []string) []fieldcrypt.Step {
	if len(path) == 1 {
		return []fieldcrypt.Step{{Kind: fieldcrypt.StepMember, Name: path[0], Descendant: true}}
	}
	steps := make([]fieldcrypt.Step, len(path))
	for i, m := range path {
		steps[i] = fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: m, ThroughArrays: true}
	}
	return steps
}

// docFieldSteps is fieldSteps for a schema field.
func docFieldSteps(f *datastore.Field) []fieldcrypt.Step {
	if f.AnyDepth {
		return fieldSteps(f.Path[:1])
	}
	return fieldSteps(f.Path)
}

// inferSchema reads a version 1 plan as a version 2 schema for the given
// datastore, with notes on what it cannot carry.
func inferSchema(p *Plan, ds string) *inferred {
	inf := &inferred{schema: &datastore.Schema{Datastore: ds}, origin: map[*datastore.Field][]string{}}
	note := func(r *Route, lost bool, format string, args ...any) {
		inf.notes = append(inf.notes, ConvertNote{Line: r.Line, Route: r.Name, Lost: lost, Message: fmt.Sprintf(format, args...)})
	}
	byName := map[string]*datastore.Collection{}
	type search struct {
		route *Route
		name  string
		path  []string
		rule  fieldcrypt.FieldRule
		dbs   []string
	}
	var searches []search
	widened := &widenings{}
	for i, r := range p.Routes {
		var spec *RouteSpec
		if p.doc != nil && i < len(p.doc.Routes) {
			spec = p.doc.Routes[i]
		}
		if len(r.Fields) == 0 && len(r.Query) == 0 {
			note(r, true, "protects nothing, and so exempted the requests it matches (%s) from later routes; version 2 has no exemptions: every request to a protected collection gets its fields protected", matchSummary(r))
			continue
		}
		dbs, foreign := routeDatabases(r)
		if len(foreign) > 0 {
			note(r, true, "paths %s are not CouchDB database paths (a database, then a document \"*\", an endpoint such as _bulk_docs, or _design/_local documents); what this route protects there is not carried: keep a version 1 file for a custom API", strings.Join(foreign, ", "))
		}
		if len(dbs) == 0 {
			continue
		}
		if len(r.Hosts) > 0 {
			note(r, true, "applies only to hosts %s; version 2 names the datastore's hosts once, for every collection (hosts: below)", strings.Join(r.Hosts, ", "))
			for _, h := range r.Hosts {
				if !slices.Contains(inf.schema.Hosts, h) {
					inf.schema.Hosts = append(inf.schema.Hosts, h)
				}
			}
		}
		if spec != nil && len(spec.ContentTypes) > 0 {
			note(r, true, "content_types %s: version 2 reads bodies as the datastore does and has no setting for them", strings.Join(r.ContentTypes, ", "))
		}
		for _, q := range r.Query {
			note(r, true, "query parameter %s (key %s, %s): version 2 seals the keys of the views it is told about; declare views instead (views: {ddoc/view: {key: field}} in the collection)", q.Param, q.Key, q.Mode)
		}
		for _, db := range dbs {
			c := byName[db]
			if c == nil {
				c = &datastore.Collection{Name: db, Line: r.Line}
				byName[db] = c
				inf.schema.Collections = append(inf.schema.Collections, c)
			}
		}
		for _, fr := range r.Fields {
			vf := readV1Selector(fr.Selector)
			if vf.lost != "" {
				note(r, true, "%s", vf.lost)
				continue
			}
			if vf.search {
				searches = append(searches, search{r, vf.Name, vf.Path, fr, dbs})
				continue
			}
			if vf.widened != "" {
				widened.add(r, vf.widened, vf.Name, fr.Selector.String())
			}
			if fr.Leaves {
				note(r, false, "%s had leaves: true; version 2 seals the value whole", fr.Selector)
			}
			for _, db := range dbs {
				inf.addField(byName[db], vf, fr, r, note)
			}
		}
	}
	for _, w := range widened.list {
		note(w.route, false, "carried as %s (from %s): %s", strings.Join(w.names, ", "), strings.Join(w.sels, ", "), w.how)
	}
	for _, s := range searches {
		for _, db := range s.dbs {
			f, inside := byName[db].FieldAt(s.path)
			switch {
			case f == nil:
				note(s.route, true, "the search rule %s seals values compared with %s, which no rule protects in the documents of %s; version 2 seals searches on protected fields only", s.rule.Selector, s.name, db)
			case inside:
				note(s.route, false, "the search rule %s is implied by the profile: %s lies inside %s, which is sealed whole, so searches on it are refused", s.rule.Selector, s.name, f.Name)
			case f.Key != s.rule.Key || f.Mode != s.rule.Mode:
				note(s.route, false, "the search rule %s (key %s, %s) is implied by the profile, which seals search values as the field %s is stored (key %s, %s)", s.rule.Selector, s.rule.Key, s.rule.Mode, f.Name, f.Key, f.Mode)
			default:
				note(s.route, false, "the search rule %s is implied by the profile, which seals values compared with %s in every query", s.rule.Selector, f.Name)
			}
		}
	}
	slices.SortStableFunc(inf.notes, func(a, b ConvertNote) int { return a.Line - b.Line })
	// A field that others with the same protection cover adds nothing.
	for _, c := range inf.schema.Collections {
		var kept []*datastore.Field
		for i, f := range c.Fields {
			var others [][]fieldcrypt.Step
			for j, g := range c.Fields {
				if j != i && g.Key == f.Key && g.Mode == f.Mode && g.EncryptNull == f.EncryptNull && (j < i || !coveredBy(docFieldSteps(g), [][]fieldcrypt.Step{docFieldSteps(f)})) {
					others = append(others, docFieldSteps(g))
				}
			}
			if len(others) > 0 && coveredBy(docFieldSteps(f), others) {
				continue
			}
			kept = append(kept, f)
		}
		c.Fields = kept
	}
	return inf
}

// addField adds a version 1 field rule to a collection, merging it with a
// field of the same name.
func (inf *inferred) addField(c *datastore.Collection, vf v1Field, fr fieldcrypt.FieldRule, r *Route, note func(*Route, bool, string, ...any)) {
	for _, f := range c.Fields {
		if f.Name != vf.Name {
			continue
		}
		if f.Key != fr.Key || f.Mode != fr.Mode {
			note(r, true, "%s is protected with key %s, %s here, and with key %s, %s on route %s in the same database %s; version 2 gives a field one key and mode: kept the first",
				fr.Selector, fr.Key, fr.Mode, f.Key, f.Mode, inf.origin[f][0], c.Name)
			return
		}
		if fr.EncryptNull && !f.EncryptNull {
			f.EncryptNull = true
			note(r, false, "%s encrypts nulls here but not on route %s; version 2 encrypts them everywhere", fr.Selector, inf.origin[f][0])
		}
		inf.origin[f] = append(inf.origin[f], r.Name)
		return
	}
	f := &datastore.Field{Name: vf.Name, Path: vf.Path, AnyDepth: len(vf.Path) == 1, Key: fr.Key, Mode: fr.Mode,
		Searchable: fr.Mode == fieldcrypt.ModeDeterministic, EncryptNull: fr.EncryptNull, Line: r.Line}
	inf.origin[f] = []string{r.Name}
	c.Fields = append(c.Fields, f)
}

// widenings groups, per route, the selectors carried in the same wider way,
// so that a note says it once.
type widenings struct {
	list []*widening
}

type widening struct {
	route       *Route
	how         string
	names, sels []string
}

func (w *widenings) add(r *Route, how, name, sel string) {
	for _, x := range w.list {
		if x.route == r && x.how == how {
			if !slices.Contains(x.names, name) {
				x.names = append(x.names, name)
			}
			x.sels = append(x.sels, sel)
			return
		}
	}
	w.list = append(w.list, &widening{route: r, how: how, names: []string{name}, sels: []string{sel}})
}
