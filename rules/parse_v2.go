package rules

import (
	"fmt"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"

	"gopkg.in/yaml.v3"
)

// LatestVersion is the newest rule file version this build reads. Version
// 1 (routes) keeps loading unchanged.
const LatestVersion = 2

// topKeysV1 and topKeysV2 are the keys allowed at the top of each version.
var (
	topKeysV1 = []string{"version", "routes", "decrypt"}
	topKeysV2 = []string{"version", "datastore", "hosts", "collections", "allow", "decrypt"}
)

// CollectionSpec is one entry of a version 2 file's collections: as
// written.
type CollectionSpec struct {
	Pos         Pos // of the "- " that opens the entry
	Name        Item
	Fields      []*DocFieldSpec // in file order
	Attachments Item            // Value "" when not written: refuse
	DesignDocs  Item            // Value "" when not written: refuse
	Views       []*ViewSpec     // in file order

	fieldsPos Pos // of the fields mapping; zero when not written
	// broken: the collection has errors, so warnings about it would only
	// repeat them.
	broken bool
}

// DocFieldSpec is one entry of a collection's fields: a field of the
// collection's documents, as written.
type DocFieldSpec struct {
	Name       Item // the mapping key: "ssn", "card.number"
	Pos        Pos  // of the value
	Key        Item
	Searchable Item // "true", "false", or "" when not written (false)
	Nulls      Item // "leave", "encrypt", or "" when not written (leave)
	Tags       []Item
	Owner      Item
	// Pad is the padding as written, normalised to fieldcrypt's text
	// form ("16", "16,64,256", "none"), "" when not written.
	Pad Item

	path     []string // Name split at unescaped dots; nil when invalid
	anyDepth bool     // Name is a single member name
}

// ViewSpec is one entry of a collection's views, as written.
type ViewSpec struct {
	Name  Item   // "ddoc/view"
	Pos   Pos    // of the value
	Key   []Item // one field name per key position
	Array bool   // the key was written as a list
}

// versionOf finds the version a file declares, before anything else is
// read, so that the right keys are allowed. 0 when it is missing or not a
// number (reported by version()).
func versionOf(top *yaml.Node) int {
	if top.Kind != yaml.MappingNode {
		return 0
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "version" && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int" {
			switch v.Value {
			case "1":
				return 1
			case "2":
				return 2
			}
		}
	}
	return 0
}

// versionHints explain top-level keys that belong to the other version.
func versionHints(version int) map[string]string {
	if version == 2 {
		return map[string]string{
			"routes": "routes are version 1; a version 2 file names collections and their fields (docs/RULES.md), or keep \"version: 1\" for routes",
		}
	}
	h := "%q belongs to version 2 files: write \"version: 2\" (docs/RULES.md)"
	out := map[string]string{}
	for _, k := range topKeysV2 {
		if !contains(topKeysV1, k) {
			out[k] = fmt.Sprintf(h, k)
		}
	}
	return out
}

func (p *parser) datastoreName(doc *Document, v *yaml.Node) {
	doc.Datastore, _ = p.str(v, "datastore")
}

func (p *parser) collections(doc *Document, v *yaml.Node) {
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "each collection starts with \"- name: ...\"", "collections: want a list, got %s", kindName(v))
		return
	}
	for _, cn := range v.Content {
		c := &CollectionSpec{Pos: posOf(cn)}
		errsBefore := p.errorCount()
		sawName := false
		p.mapping(cn, "collection", []string{"name", "fields", "attachments", "design_docs", "views"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "name":
				sawName = true
				c.Name, _ = p.str(v, "collection name")
			case "fields":
				c.fieldsPos = posOf(v)
				p.docFields(c, v)
			case "attachments":
				c.Attachments, _ = p.str(v, "attachments")
			case "design_docs":
				c.DesignDocs, _ = p.str(v, "design_docs")
			case "views":
				p.views(c, v)
			}
		})
		if !sawName && cn.Kind == yaml.MappingNode {
			p.errorf(c.Pos, "add \"name: <database name>\"", "collection without a name")
		}
		c.broken = p.errorCount() > errsBefore
		doc.Collections = append(doc.Collections, c)
	}
}

// docFields reads a collection's fields: a mapping of field name to its
// protection.
func (p *parser) docFields(c *CollectionSpec, v *yaml.Node) {
	if v.Kind == yaml.AliasNode {
		return
	}
	if v.Kind != yaml.MappingNode {
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			return // "fields:" with nothing: warned about as no fields
		}
		p.errorf(posOf(v), "for example fields: {ssn: {key: pii}}", "fields: want a mapping of field name to its protection, got %s", kindName(v))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, fv := v.Content[i], v.Content[i+1]
		if k.Tag == "!!merge" {
			continue // reported by refuseAnchors
		}
		name, ok := p.str(k, "field name")
		if !ok {
			continue
		}
		if line, dup := seen[name.Value]; dup {
			p.errorf(name.Pos, fmt.Sprintf("it was first set on line %d; keep one", line), "field %q is set twice", name.Value)
			continue
		}
		seen[name.Value] = name.Pos.Line
		f := &DocFieldSpec{Name: name, Pos: posOf(fv)}
		if fv.Kind == yaml.ScalarNode && fv.ShortTag() == "!!str" {
			p.errorf(posOf(fv), fmt.Sprintf("write %s: {key: %s}", quoteIfNeeded(name.Value), quoteIfNeeded(fv.Value)), "field %q: want a mapping such as {key: pii}, got text", name.Value)
			c.Fields = append(c.Fields, f)
			continue
		}
		sawKey := false
		what := fmt.Sprintf("field %q", name.Value)
		p.mapping(fv, what, []string{"key", "searchable", "nulls", "tags", "owner", "pad"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "key":
				sawKey = true
				f.Key, _ = p.str(v, what+": key")
			case "searchable":
				f.Searchable, _ = p.boolean(v, what+": searchable")
			case "nulls":
				f.Nulls, _ = p.str(v, what+": nulls")
			case "tags":
				f.Tags = p.strList(v, what+": tags")
			case "owner":
				f.Owner, _ = p.str(v, what+": owner")
			case "pad":
				f.Pad = p.padding(v, what+": pad")
			}
		})
		if fv.Kind == yaml.MappingNode && !sawKey {
			p.errorf(f.Pos, "add key: <name of the data key>", "field %q without \"key\"", name.Value)
		}
		c.Fields = append(c.Fields, f)
	}
}

// views reads a collection's views: "ddoc/view" → {key: field} or
// {key: [field, field]}.
func (p *parser) views(c *CollectionSpec, v *yaml.Node) {
	if v.Kind == yaml.AliasNode {
		return
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(posOf(v), "for example views: {patients/by_email: {key: email}}", "views: want a mapping of \"ddoc/view\" to its key, got %s", kindName(v))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, vv := v.Content[i], v.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		name, ok := p.str(k, "view name")
		if !ok {
			continue
		}
		if line, dup := seen[name.Value]; dup {
			p.errorf(name.Pos, fmt.Sprintf("it was first set on line %d; keep one", line), "view %q is set twice", name.Value)
			continue
		}
		seen[name.Value] = name.Pos.Line
		vs := &ViewSpec{Name: name, Pos: posOf(vv)}
		sawKey := false
		what := fmt.Sprintf("view %q", name.Value)
		p.mapping(vv, what, []string{"key"}, func(key string, k, v *yaml.Node) {
			sawKey = true
			switch {
			case v.Kind == yaml.SequenceNode:
				vs.Array = true
				vs.Key = p.strList(v, what+": key")
				if len(v.Content) == 0 {
					p.errorf(posOf(v), "name the field each position of the key holds", "%s: empty key list", what)
				}
			default:
				if it, ok := p.str(v, what+": key"); ok {
					vs.Key = []Item{it}
				}
			}
		})
		if vv.Kind == yaml.MappingNode && !sawKey {
			p.errorf(vs.Pos, "add key: <field>, or key: [field, field] for a compound key", "%s without \"key\"", what)
		}
		c.Views = append(c.Views, vs)
	}
}

// splitFieldName splits a field name at unescaped dots: "card.number" is
// two members, "a\.b" one member "a.b" ("\\" is a backslash). It returns
// the byte offset of the first problem, with a message and a hint.
// Protected fields may not name reserved ("_") or operator ("$") members;
// a view key position may (a view keyed on _id holds nothing protected).
func splitFieldName(s string) (path []string, off int, msg, hint string) {
	return splitFieldPath(s, true)
}

func splitFieldPath(s string, protected bool) (path []string, off int, msg, hint string) {
	if s == "" {
		return nil, 0, "empty field name", "name a member of the documents"
	}
	var seg strings.Builder
	start := 0
	end := func(at int) bool {
		name := seg.String()
		switch {
		case name == "":
			if at == len(s) && at > 0 {
				msg, hint, off = "empty segment at the end of the field name", "remove the trailing \".\"", at-1
			} else {
				msg, hint, off = "empty segment in the field name", "a dotted path names members from the document's root: card.number", at
			}
			return false
		case protected && name[0] == '_':
			msg, hint, off = fmt.Sprintf("member name %q starts with \"_\"", name), "CouchDB reserves member names starting with \"_\" (_id, _rev, _attachments, _deleted, ...); they hold no application data", start
			return false
		case protected && name[0] == '$':
			msg, hint, off = fmt.Sprintf("member name %q starts with \"$\"", name), "names starting with \"$\" are query operators ($eq, $in, ...), not document fields", start
			return false
		}
		path = append(path, name)
		seg.Reset()
		return true
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) && (s[i+1] == '.' || s[i+1] == '\\') {
				seg.WriteByte(s[i+1])
				i++
				continue
			}
			return nil, i, "unknown escape in the field name", `only "\." (a dot inside a member name) and "\\" (a backslash) are escapes`
		case '.':
			if !end(i) {
				return nil, off, msg, hint
			}
			start = i + 1
		default:
			seg.WriteByte(c)
		}
	}
	if !end(len(s)) {
		return nil, off, msg, hint
	}
	return path, 0, "", ""
}

// joinFieldPath writes a field path back as a field name, escaping dots
// and backslashes inside members.
func joinFieldPath(path []string) string {
	parts := make([]string, len(path))
	for i, m := range path {
		parts[i] = strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(m)
	}
	return strings.Join(parts, ".")
}

// SplitFieldName splits a version 2 field name (as a view key position
// names it) into member names: at unescaped dots, "\." being a dot inside
// a member and "\\" a backslash.
func SplitFieldName(name string) ([]string, error) {
	path, _, msg, _ := splitFieldPath(name, false)
	if msg != "" {
		return nil, fmt.Errorf("rules: field %q: %s", name, msg)
	}
	return path, nil
}

// padding reads pad: a number of bytes (pad: 16), a list of bucket sizes
// (pad: [16, 64, 256]) or none, into fieldcrypt's text form, checked.
func (p *parser) padding(v *yaml.Node, what string) Item {
	it := Item{Pos: posOf(v)}
	const hint = "pad: 16 pads each value to a multiple of 16 bytes; pad: [16, 64, 256] to the next of those sizes (then multiples of 256); see docs/RULES.md, \"Padding\""
	switch v.Kind {
	case yaml.ScalarNode:
		it.Value = v.Value
	case yaml.SequenceNode:
		var parts []string
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				p.errorf(posOf(e), hint, "%s: want numbers, got %s", what, kindName(e))
				return Item{}
			}
			parts = append(parts, e.Value)
		}
		it.Value = strings.Join(parts, ",")
	default:
		p.errorf(posOf(v), hint, "%s: want a number of bytes or a list of them, got %s", what, kindName(v))
		return Item{}
	}
	pad, err := fieldcrypt.ParsePadding(it.Value)
	if err != nil {
		p.errorf(it.Pos, hint, "%s: %s", what, strings.TrimPrefix(err.Error(), "fieldcrypt: "))
		return Item{}
	}
	it.Value = pad.String()
	return it
}
