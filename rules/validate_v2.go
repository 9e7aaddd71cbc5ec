package rules

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// documentedDatastores are the datastores docs/RULES.md describes; a build
// may carry fewer (datastore.Names lists those it has).
var documentedDatastores = []string{"couchdb", "elasticsearch", "rest"}

var policyNames = []string{"refuse", "allow"}

// maxCollectionName is CouchDB's limit on a database name.
const maxCollectionName = 238

// validateV2 checks a version 2 document: names, keys, fields, views,
// policies, the allow list and decrypt; then compiles the schema and
// builds the datastore's profile, so that a profile's own objections are
// reported like any other error.
func (p *parser) validateV2(doc *Document) {
	ops, dsOK := p.validateDatastore(doc)
	p.validateHosts(doc)
	usedKeys := map[string]bool{}
	names := map[string]Pos{}
	for i, c := range doc.Collections {
		before := p.errorCount()
		p.validateCollectionName(doc.Datastore.Value, c, names, doc.Collections[:i])
		p.validateDocFields(c, usedKeys)
		p.validatePolicy(c.Attachments, "attachments", "attachments are refuse (the default) or allow (opaque and unprotected: the sidecar cannot see into them)")
		p.validatePolicy(c.DesignDocs, "design_docs", "design_docs are refuse (the default) or allow (design documents carry code that runs inside the datastore)")
		p.validateViews(c)
		if p.errorCount() > before {
			c.broken = true
		}
		if len(c.Fields) == 0 && !c.broken && c.Name.Pos.Line != 0 {
			p.warnf(c.Pos, "its requests are still checked (deny by default), but nothing in them is encrypted; add fields, or remove the collection", "collection %q protects no fields", c.Name.Value)
		}
	}
	if dsOK {
		p.validateAllow(doc, ops)
	}
	p.validateDecrypt(doc, usedKeys)
	if p.errorCount() > 0 {
		return
	}
	schema := compileSchema(doc)
	// The profile builds its response decryptors with the decrypt
	// section's policy, which the plan compiles later (buildDecrypt sets
	// it here).
	schema.Reveal = &policyRef{}
	p.viewWarnings(doc, schema)
	profile, err := datastore.New(schema)
	if err != nil {
		p.errorf(doc.Datastore.Pos, "", "datastore %s refuses this file: %s", schema.Datastore, strings.TrimPrefix(err.Error(), "datastore: "))
		return
	}
	doc.schema, doc.profile = schema, profile
}

func (p *parser) validateDatastore(doc *Document) (ops []string, ok bool) {
	ds := doc.Datastore
	known := datastore.Names()
	if ds.Pos.Line == 0 {
		if doc.pos.Line != 0 {
			p.errorf(doc.pos, "add \"datastore: couchdb\": version 2 files name the datastore whose API the sidecar reads", "missing \"datastore\"")
		}
		return nil, false
	}
	if ops, ok := datastore.Operations(ds.Value); ok {
		return ops, true
	}
	hint := "this build has: " + joinOr(known, "none")
	if s := didYouMean(ds.Value, append(slices.Clone(known), documentedDatastores...)); s != "" && s != ds.Value {
		hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
	}
	if contains(documentedDatastores, ds.Value) {
		p.errorf(ds.Pos, hint, "datastore %q is not available in this build", ds.Value)
	} else {
		p.errorf(ds.Pos, hint, "unknown datastore %q: not available in this build", ds.Value)
	}
	return nil, false
}

func (p *parser) validateHosts(doc *Document) {
	seen := map[string]Pos{}
	for _, h := range doc.Hosts {
		if msg, off, hint := checkDatastoreHost(h.Value); msg != "" {
			p.errorf(Pos{h.Pos.Line, p.scalarColumn(h.Pos, h.style, h.Value, off)}, hint, "host %q: %s", h.Value, msg)
			continue
		}
		key := strings.ToLower(h.Value)
		if prev, dup := seen[key]; dup {
			p.warnf(h.Pos, "", "host %q is listed twice (first on line %d)", h.Value, prev.Line)
			continue
		}
		seen[key] = h.Pos
	}
}

// checkDatastoreHost checks one entry of hosts: a host name or address,
// with an optional port.
func checkDatastoreHost(s string) (msg string, off int, hint string) {
	if s == "" {
		return "empty host", 0, "write the datastore's host name, for example couch.internal:5984"
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@") {
		return "not a host name", 0, "write the host name and port only: couch.internal:5984, not a URL"
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		h, pt, err := net.SplitHostPort(s)
		if err != nil {
			if !strings.HasSuffix(s, "]") {
				return "malformed IPv6 address", 0, "write [::1]:5984"
			}
			h = s[1 : len(s)-1]
		}
		if net.ParseIP(h) == nil {
			return "malformed IPv6 address", 1, "write [::1]:5984"
		}
		host, port = "", pt
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if strings.Count(s, ":") > 1 {
			return "an IPv6 address must be in brackets", 0, "write [::1]:5984"
		}
		host, port = s[:i], s[i+1:]
		if host == "" {
			return "no host before the port", 0, "write couch.internal:5984"
		}
	}
	if port != "" || strings.HasSuffix(s, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "invalid port", len(s) - len(port), "a port is a number from 1 to 65535"
		}
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c == '*':
			return "wildcards are not allowed here", i, "name each host under which the datastore is reached"
		default:
			return fmt.Sprintf("%q in a host name", c), i, "host names use letters, digits, '-' and '.'"
		}
	}
	if strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
		return "empty label in the host name", 0, "check for a doubled, leading or trailing dot"
	}
	return "", 0, ""
}

// collectionNameProblem checks a CouchDB database name or pattern: lower-
// case letters, digits and _$()+-/, starting with a letter; '*' stands
// for any run of characters.
func collectionNameProblem(s string) (msg string, off int, hint string) {
	const allowed = "lower-case letters, digits and _ $ ( ) + - /, starting with a letter; \"*\" for any run of characters"
	switch {
	case s == "":
		return "empty collection name", 0, "name a CouchDB database, or a pattern such as tenant-*"
	case s[0] == '_':
		return "names a system database", 0, "names starting with \"_\" are CouchDB's own databases (_users, _replicator, ...), not application data; name the application's database"
	case len(s) > maxCollectionName:
		return fmt.Sprintf("longer than %d characters", maxCollectionName), maxCollectionName, "CouchDB database names are at most 238 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '*':
		case c >= '0' && c <= '9', strings.IndexByte("_$()+-/", c) >= 0:
			if i == 0 {
				return fmt.Sprintf("starts with %q", c), 0, "CouchDB database names start with a letter"
			}
		case c >= 'A' && c <= 'Z':
			return "upper-case letter in a CouchDB database name", i, fmt.Sprintf("CouchDB database names are lower case: %q", strings.ToLower(s))
		default:
			return fmt.Sprintf("%q in a CouchDB database name", c), i, allowed
		}
	}
	if strings.Contains(s, "**") {
		return "\"**\" in a collection pattern", strings.Index(s, "**"), "one \"*\" already stands for any run of characters, '/' included"
	}
	return "", 0, ""
}

func (p *parser) validateCollectionName(ds string, c *CollectionSpec, names map[string]Pos, earlier []*CollectionSpec) {
	it := c.Name
	if it.Pos.Line == 0 {
		return
	}
	if msg, off, hint := collectionNameProblemFor(ds, it.Value); msg != "" { // collection_names.go
		p.errorf(Pos{it.Pos.Line, p.scalarColumn(it.Pos, it.style, it.Value, off)}, hint, "collection %q: %s", it.Value, msg)
		return
	}
	if prev, dup := names[it.Value]; dup {
		p.errorf(it.Pos, fmt.Sprintf("the first is on line %d; keep one, with every field", prev.Line), "duplicate collection %q", it.Value)
		return
	}
	names[it.Value] = it.Pos
	for _, e := range earlier {
		if e.broken || e.Name.Pos.Line == 0 || e.Name.Value == it.Value {
			continue
		}
		// Every name the later pattern matches is matched by the earlier
		// one exactly when the earlier matches the later pattern's own
		// text, its '*'s taken as characters (no database name holds a
		// '*', so they stand for any text the earlier '*'s absorb).
		if globCovers(e.Name.Value, it.Value) {
			p.warnf(it.Pos, fmt.Sprintf("the first matching collection applies: move %q above %q, or narrow %q", it.Value, e.Name.Value, e.Name.Value),
				"collection %q is shadowed by %q (line %d): every database it names is matched there first, so its fields never apply", it.Value, e.Name.Value, e.Name.Pos.Line)
			break
		}
	}
}

func (p *parser) validatePolicy(it Item, what, hint string) {
	if it.Pos.Line == 0 || contains(policyNames, it.Value) {
		return
	}
	if s := didYouMean(it.Value, policyNames); s != "" {
		hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
	}
	p.errorf(it.Pos, hint, "%s: unknown policy %q", what, it.Value)
}

// fieldLabel names a field in messages.
func fieldLabel(f *DocFieldSpec) string { return fmt.Sprintf("field %q", f.Name.Value) }

func (p *parser) validateDocFields(c *CollectionSpec, usedKeys map[string]bool) {
	byPath := map[string]*DocFieldSpec{}
	var good []*DocFieldSpec
	for _, f := range c.Fields {
		it := f.Name
		path, off, msg, hint := splitFieldName(it.Value)
		if msg != "" {
			p.errorf(Pos{it.Pos.Line, p.scalarColumn(it.Pos, it.style, it.Value, off)}, hint, "field %q: %s", it.Value, msg)
		} else if len(path) > fieldcrypt.MaxSelectorSteps {
			p.errorf(it.Pos, "", "field %q: more than %d members deep", it.Value, fieldcrypt.MaxSelectorSteps)
		} else {
			f.path, f.anyDepth = path, len(path) == 1
		}
		if f.Key.Pos.Line != 0 && p.checkKey(f.Key, fieldLabel(f)) {
			usedKeys[f.Key.Value] = true
		}
		if f.Nulls.Pos.Line != 0 && !contains(nullsNames, f.Nulls.Value) {
			hint := "nulls is leave (the default: null stays null) or encrypt"
			if s := didYouMean(f.Nulls.Value, nullsNames); s != "" {
				hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
			}
			p.errorf(f.Nulls.Pos, hint, "%s: unknown nulls setting %q", fieldLabel(f), f.Nulls.Value)
		}
		seenTags := map[string]bool{}
		for _, t := range f.Tags {
			if strings.TrimSpace(t.Value) == "" {
				p.errorf(t.Pos, "", "%s: empty tag", fieldLabel(f))
				continue
			}
			if seenTags[t.Value] {
				p.warnf(t.Pos, "", "%s: tag %q is listed twice", fieldLabel(f), t.Value)
			}
			seenTags[t.Value] = true
		}
		if f.Owner.Pos.Line != 0 && strings.TrimSpace(f.Owner.Value) == "" {
			p.warnf(f.Owner.Pos, "name who answers for this field, or remove owner", "%s: empty owner", fieldLabel(f))
		}
		if f.path == nil {
			continue
		}
		k := strconv.FormatBool(f.anyDepth) + "\x00" + strings.Join(f.path, "\x00")
		if prev, dup := byPath[k]; dup {
			p.errorf(it.Pos, fmt.Sprintf("line %d names the same member; keep one", prev.Name.Pos.Line), "field %q is %q again", it.Value, prev.Name.Value)
			continue
		}
		byPath[k] = f
		good = append(good, f)
	}
	// A value inside one that is sealed whole is never reached.
	for _, f := range good {
		if f.anyDepth {
			continue
		}
		for _, g := range good {
			if g == f {
				continue
			}
			switch {
			case !g.anyDepth && len(g.path) < len(f.path) && slices.Equal(g.path, f.path[:len(g.path)]):
				p.warnf(f.Name.Pos, fmt.Sprintf("%q (line %d) is sealed whole, this field with it; remove this rule, or protect only the members of %q you mean", g.Name.Value, g.Name.Pos.Line, g.Name.Value),
					"field %q lies inside %q: this rule never applies", f.Name.Value, g.Name.Value)
			case g.anyDepth && slices.Contains(f.path[:len(f.path)-1], g.path[0]):
				p.warnf(f.Name.Pos, fmt.Sprintf("the single name %q (line %d) protects a member of that name at any depth and seals it whole; remove this rule, or write %q as the dotted path you mean", g.Name.Value, g.Name.Pos.Line, g.Name.Value),
					"field %q lies inside %q: this rule never applies", f.Name.Value, g.Name.Value)
			default:
				continue
			}
			break
		}
	}
}

func (p *parser) validateViews(c *CollectionSpec) {
	for _, v := range c.Views {
		it := v.Name
		ddoc, view, ok := strings.Cut(it.Value, "/")
		switch {
		case strings.HasPrefix(it.Value, "_design/"):
			p.errorf(it.Pos, fmt.Sprintf("write the design document's name without \"_design/\": %q", strings.TrimPrefix(it.Value, "_design/")), "view %q: name it as ddoc/view", it.Value)
		case !ok || ddoc == "" || view == "" || strings.Contains(view, "/"):
			hint := "the design document's name, a slash, the view's name: patients/by_email"
			if strings.Contains(it.Value, "/_view/") {
				hint = fmt.Sprintf("leave out \"_view\": %q", strings.Replace(it.Value, "/_view/", "/", 1))
			}
			p.errorf(it.Pos, hint, "view %q: name it as ddoc/view", it.Value)
		}
		for _, k := range v.Key {
			if _, off, msg, hint := splitFieldPath(k.Value, false); msg != "" {
				p.errorf(Pos{k.Pos.Line, p.scalarColumn(k.Pos, k.style, k.Value, off)}, hint, "view %q: key field %q: %s", it.Value, k.Value, msg)
			}
		}
	}
}

// viewWarnings: a view key position that holds a protected field which
// cannot be compared (random, or inside a value sealed whole) makes every
// lookup on it refused.
func (p *parser) viewWarnings(doc *Document, s *datastore.Schema) {
	for i, cs := range doc.Collections {
		c := s.Collections[i]
		for _, v := range cs.Views {
			for pos, k := range v.Key {
				path, _, _, _ := splitFieldPath(k.Value, false)
				f, inside := c.FieldAt(path)
				if f == nil {
					continue
				}
				where := "the key holds"
				if v.Array {
					where = fmt.Sprintf("key position %d holds", pos)
				}
				switch {
				case inside:
					p.warnf(k.Pos, fmt.Sprintf("%q (line %d) is sealed whole, so %q cannot be compared on its own; key the view on a field that is searchable, or remove it", f.Name, f.Line, k.Value),
						"view %q: %s %q, inside the protected field %q: lookups on it will be refused", v.Name.Value, where, k.Value, f.Name)
				case !f.Searchable:
					p.warnf(k.Pos, fmt.Sprintf("make %q searchable: true (line %d) if it is looked up by value, knowing what that reveals (docs/RULES.md, \"Searchable or random\"), or remove the view", f.Name, f.Line),
						"view %q: %s %q, a protected field that is not searchable: lookups on it will be refused", v.Name.Value, where, k.Value)
				}
			}
		}
	}
}

func (p *parser) validateAllow(doc *Document, ops []string) {
	seen := map[string]Pos{}
	for _, a := range doc.Allow {
		if !contains(ops, a.Value) {
			hint := fmt.Sprintf("%s knows: %s", doc.Datastore.Value, joinOr(ops, "none"))
			if s := didYouMean(a.Value, ops); s != "" {
				hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
			}
			p.errorf(a.Pos, hint, "allow: unknown operation %q", a.Value)
			continue
		}
		if prev, dup := seen[a.Value]; dup {
			p.warnf(a.Pos, "", "allow: %q is listed twice (first on line %d)", a.Value, prev.Line)
			continue
		}
		seen[a.Value] = a.Pos
	}
}

// compileSchema turns a validated version 2 document into a Schema.
func compileSchema(doc *Document) *datastore.Schema {
	s := &datastore.Schema{Datastore: doc.Datastore.Value}
	for _, cs := range doc.Collections {
		c := &datastore.Collection{Name: cs.Name.Value, Line: cs.Pos.Line}
		if cs.Attachments.Value == "allow" {
			c.Attachments = datastore.PolicyAllow
		}
		if cs.DesignDocs.Value == "allow" {
			c.DesignDocs = datastore.PolicyAllow
		}
		for _, fs := range cs.Fields {
			f := &datastore.Field{
				Name:        fs.Name.Value,
				Path:        fs.path,
				AnyDepth:    fs.anyDepth,
				Key:         fs.Key.Value,
				Mode:        fieldcrypt.ModeRandom,
				Searchable:  fs.Searchable.Value == "true",
				EncryptNull: fs.Nulls.Value == "encrypt",
				Owner:       fs.Owner.Value,
				Line:        fs.Name.Pos.Line,
			}
			if f.Searchable {
				f.Mode = fieldcrypt.ModeDeterministic
			}
			f.Pad, _ = fieldcrypt.ParsePadding(fs.Pad.Value) // checked when parsed
			for _, t := range fs.Tags {
				if !slices.Contains(f.Tags, t.Value) {
					f.Tags = append(f.Tags, t.Value)
				}
			}
			c.Fields = append(c.Fields, f)
		}
		if len(cs.Views) > 0 {
			c.Views = map[string]datastore.ViewKey{}
			for _, v := range cs.Views {
				vk := datastore.ViewKey{Array: v.Array}
				for _, k := range v.Key {
					vk.Fields = append(vk.Fields, k.Value)
				}
				c.Views[v.Name.Value] = vk
			}
		}
		s.Collections = append(s.Collections, c)
	}
	for _, a := range doc.Allow {
		if !slices.Contains(s.Allow, a.Value) {
			s.Allow = append(s.Allow, a.Value)
		}
	}
	slices.Sort(s.Allow)
	for _, h := range doc.Hosts {
		h := strings.ToLower(h.Value)
		if !slices.Contains(s.Hosts, h) {
			s.Hosts = append(s.Hosts, h)
		}
	}
	return s
}

// joinOr lists items separated by commas, or says none.
func joinOr(items []string, none string) string {
	if len(items) == 0 {
		return none
	}
	return strings.Join(items, ", ")
}
