package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sidecrypt/sidecrypt/datastore"
	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds a rule file. Real files are a few kilobytes; the cap
// keeps a runaway file (or a wrong path pointing at a log) from costing
// memory on every reload.
const MaxFileSize = 1 << 20

// SupportedVersion is the oldest rule file version this build reads (see
// LatestVersion).
const SupportedVersion = 1

// Document is a parsed rule file, before compilation: what its author
// wrote, with positions. A Plan keeps the Document it was compiled from.
type Document struct {
	Version int
	Routes  []*RouteSpec // version 1
	Decrypt DecryptSpec

	// Version 2.
	Datastore   Item
	Hosts       []Item
	Collections []*CollectionSpec
	Allow       []Item

	pos     Pos               // of the top-level mapping
	schema  *datastore.Schema // version 2, once validated
	profile datastore.Profile // version 2, once validated
}

// Pos is a 1-based line and column in the rule file.
type Pos struct{ Line, Col int }

// Item is one string from the file and where it was written.
type Item struct {
	Value string
	Pos   Pos

	style yaml.Style // how it was quoted, to place columns inside it
}

// RouteSpec is one entry of routes: as written.
type RouteSpec struct {
	Name         string
	Pos          Pos // of the "- " that opens the route
	NamePos      Pos
	Methods      []Item
	Paths        []Item
	Hosts        []Item
	ContentTypes []Item
	Encrypt      []*FieldSpec
	Query        []*QuerySpec

	paths []pathPattern
	hosts []hostPattern
	types []mediaRange
	// broken: the route has errors, so warnings about what it matches
	// would only repeat them.
	broken bool
}

// FieldSpec is one entry of a route's encrypt list.
type FieldSpec struct {
	Pos    Pos
	Fields []Item
	Key    Item
	Mode   Item // Value "" when not written: random
	Nulls  Item // Value "" when not written: leave
	Leaves Item // Value "" when not written: false

	selectors []selectorAt
}

// QuerySpec is one entry of a route's query list.
type QuerySpec struct {
	Pos    Pos
	Params []Item
	Key    Item
	Mode   Item
}

// DecryptSpec is the decrypt section.
type DecryptSpec struct {
	Pos  Pos
	Keys []Item
	Mask []MaskSpec // in file order
}

// MaskSpec is one entry of decrypt.mask: key name → mask.
type MaskSpec struct {
	Key  Item
	Mask Item
}

// parser turns YAML nodes into a Document, collecting diagnostics instead
// of stopping at the first problem.
type parser struct {
	file  string
	lines [][]byte
	diags []Diagnostic
	// keyHints explain unknown keys that mean something elsewhere (a
	// version 2 key in a version 1 file).
	keyHints map[string]string
}

func (p *parser) errorf(pos Pos, hint, format string, args ...any) {
	p.diags = append(p.diags, Diagnostic{File: p.file, Line: pos.Line, Col: pos.Col,
		Severity: SeverityError, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (p *parser) warnf(pos Pos, hint, format string, args ...any) {
	p.diags = append(p.diags, Diagnostic{File: p.file, Line: pos.Line, Col: pos.Col,
		Severity: SeverityWarning, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (p *parser) errorCount() int {
	n, _ := CountDiagnostics(p.diags)
	return n
}

func posOf(n *yaml.Node) Pos { return Pos{n.Line, n.Column} }

// parseDocument reads the YAML and walks it. It returns nil when the YAML
// itself cannot be read; the diagnostics say why.
func (p *parser) parseDocument(data []byte) *Document {
	p.lines = bytes.Split(data, []byte("\n"))
	if len(data) > MaxFileSize {
		p.errorf(Pos{}, "", "file is %d bytes, more than the %d allowed", len(data), MaxFileSize)
		return nil
	}
	if !utf8.Valid(data) {
		p.errorf(Pos{}, "save the file as UTF-8", "file is not valid UTF-8")
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(Pos{1, 1}, "start with \"version: 2\"; see docs/RULES.md", "the rule file is empty")
			return nil
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(Pos{extra.Line, extra.Column}, "keep one rule set per file, and remove the \"---\" line", "more than one YAML document in the file")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
		return nil
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		p.errorf(Pos{1, 1}, "", "the rule file is empty")
		return nil
	}
	top := root.Content[0]
	doc := &Document{pos: posOf(top)}
	if top.Kind == yaml.ScalarNode && top.ShortTag() == "!!null" {
		p.errorf(Pos{1, 1}, "start with \"version: 2\"; see docs/RULES.md", "the rule file is empty")
		return nil
	}
	p.refuseAnchors(top)
	sawVersion := false
	allowed := topKeysV1
	if versionOf(top) == 2 {
		allowed = topKeysV2
	}
	p.keyHints = versionHints(versionOf(top))
	p.mapping(top, "the rule file", allowed, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			sawVersion = true
			p.version(doc, v)
		case "routes":
			p.routes(doc, v)
		case "decrypt":
			p.decrypt(doc, v)
		case "datastore":
			p.datastoreName(doc, v)
		case "hosts":
			doc.Hosts = p.strList(v, "hosts")
		case "collections":
			p.collections(doc, v)
		case "allow":
			doc.Allow = p.strList(v, "allow")
		}
	})
	p.keyHints = nil
	if !sawVersion && top.Kind == yaml.MappingNode {
		p.errorf(posOf(top), "add \"version: 2\" (collections) or \"version: 1\" (routes) as the first line", "missing \"version\"")
	}
	return doc
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a YAML syntax error into diagnostics. yaml.v3 reports a
// line but no column; the column is 1.
func (p *parser) yamlError(err error) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, m := range te.Errors {
			p.yamlMessage(m)
		}
		return
	}
	p.yamlMessage(err.Error())
}

func (p *parser) yamlMessage(msg string) {
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	hint := ""
	switch {
	case line > 0 && line <= len(p.lines) && bytes.ContainsRune(p.lines[line-1], '\t'):
		hint = "YAML indents with spaces; this line has a tab"
	case strings.Contains(msg, "unknown anchor"), strings.Contains(msg, "did not find expected alphabetic or numeric character"):
		hint = `a value starting with "*" must be quoted: mask: {pii: "***"}`
	case strings.Contains(msg, "found character that cannot start any token"):
		hint = "quote values that start with punctuation, for example \"$.ssn\""
	}
	p.errorf(Pos{line, 1}, hint, "YAML syntax: %s", msg)
}

// refuseAnchors reports every anchor, alias and merge key. They are
// refused because a reviewer must be able to read each route on its own:
// with an alias, editing one line silently changes several routes, and
// the diff a compliance reviewer signs would not show it. (They also let
// a small file expand into a very large one.)
func (p *parser) refuseAnchors(n *yaml.Node) {
	if n.Anchor != "" {
		p.errorf(posOf(n), "write each rule out in full, so that every route can be reviewed on its own", "YAML anchors (&%s) are not allowed in rule files", n.Anchor)
	}
	if n.Kind == yaml.AliasNode {
		p.errorf(posOf(n), "write each rule out in full, so that every route can be reviewed on its own", "YAML aliases (*%s) are not allowed in rule files", n.Value)
		return
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 && c.Kind == yaml.ScalarNode && c.Tag == "!!merge" {
			p.errorf(posOf(c), "write each rule out in full", "YAML merge keys (<<) are not allowed in rule files")
		}
		p.refuseAnchors(c)
	}
}

// kindName names a node's type for "want X, got Y" messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "true/false"
		default:
			return "text"
		}
	}
	return "something else"
}

// mapping checks that n is a mapping with only allowed keys, no key twice,
// and calls fn for each entry in order.
func (p *parser) mapping(n *yaml.Node, what string, allowed []string, fn func(key string, k, v *yaml.Node)) bool {
	if n.Kind == yaml.AliasNode {
		return false // reported by refuseAnchors
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(posOf(n), "", "%s: want a mapping (key: value lines), got %s", what, kindName(n))
		return false
	}
	seen := make(map[string]Pos)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(posOf(k), "", "%s: keys must be plain words", what)
			continue
		}
		if k.Tag == "!!merge" {
			continue // reported by refuseAnchors
		}
		key := k.Value
		if prev, dup := seen[key]; dup {
			p.errorf(posOf(k), fmt.Sprintf("it was first set on line %d; keep one", prev.Line), "%s: %q is set twice", what, key)
			continue
		}
		seen[key] = posOf(k)
		if !contains(allowed, key) {
			hint := "allowed here: " + strings.Join(allowed, ", ")
			if s := didYouMean(key, allowed); s != "" {
				hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
			} else if h, ok := p.keyHints[key]; ok {
				hint = h
			}
			p.errorf(posOf(k), hint, "%s: unknown key %q", what, key)
			continue
		}
		fn(key, k, v)
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// str reads a text scalar.
func (p *parser) str(n *yaml.Node, what string) (Item, bool) {
	if n.Kind == yaml.AliasNode {
		return Item{}, false // reported by refuseAnchors
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
			hint = fmt.Sprintf("quote it: %q", n.Value)
		}
		p.errorf(posOf(n), hint, "%s: want text, got %s", what, kindName(n))
		return Item{}, false
	}
	return Item{Value: n.Value, Pos: posOf(n), style: n.Style}, true
}

// boolean reads true or false. YAML 1.2's two spellings only: "yes",
// "on" and friends are text here (and refused), so a reviewer never has
// to remember YAML 1.1's list.
func (p *parser) boolean(n *yaml.Node, what string) (Item, bool) {
	if n.Kind == yaml.AliasNode {
		return Item{}, false // reported by refuseAnchors
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || (n.Value != "true" && n.Value != "false") {
		p.errorf(posOf(n), what+" is true or false", "%s: want true or false, got %s %q", what, kindName(n), n.Value)
		return Item{}, false
	}
	return Item{Value: n.Value, Pos: posOf(n), style: n.Style}, true
}

// strList reads a list of text scalars.
func (p *parser) strList(n *yaml.Node, what string) []Item {
	if n.Kind == yaml.AliasNode {
		return nil // reported by refuseAnchors
	}
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			hint = fmt.Sprintf("write a list, even of one: [%s]", quoteIfNeeded(n.Value))
		}
		p.errorf(posOf(n), hint, "%s: want a list, got %s", what, kindName(n))
		return nil
	}
	items := make([]Item, 0, len(n.Content))
	for _, c := range n.Content {
		if it, ok := p.str(c, what); ok {
			items = append(items, it)
		}
	}
	return items
}

func quoteIfNeeded(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(s)
		}
	}
	return s
}

func (p *parser) version(doc *Document, v *yaml.Node) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		p.errorf(posOf(v), "write \"version: 2\" (collections) or \"version: 1\" (routes)", "version: want a number, got %s", kindName(v))
		return
	}
	n, err := strconv.Atoi(v.Value)
	if err != nil || n < SupportedVersion || n > LatestVersion {
		p.errorf(posOf(v), fmt.Sprintf("this build reads versions %d (routes) and %d (collections)", SupportedVersion, LatestVersion), "unsupported rule file version %s", v.Value)
		return
	}
	doc.Version = n
}

func (p *parser) routes(doc *Document, v *yaml.Node) {
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "each route starts with \"- name: ...\"", "routes: want a list, got %s", kindName(v))
		return
	}
	for _, rn := range v.Content {
		r := &RouteSpec{Pos: posOf(rn)}
		errsBefore := p.errorCount()
		sawName := false
		p.mapping(rn, "route", []string{"name", "match", "encrypt", "query"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "name":
				sawName = true
				if it, ok := p.str(v, "route name"); ok {
					r.Name, r.NamePos = it.Value, it.Pos
				}
			case "match":
				p.match(r, v)
			case "encrypt":
				p.encrypt(r, v)
			case "query":
				p.query(r, v)
			}
		})
		if !sawName && rn.Kind == yaml.MappingNode {
			p.errorf(r.Pos, "add \"name: <something-readable>\"; names appear in logs, audit events and diffs", "route without a name")
		}
		r.broken = p.errorCount() > errsBefore
		doc.Routes = append(doc.Routes, r)
	}
}

func (p *parser) match(r *RouteSpec, v *yaml.Node) {
	p.mapping(v, "match", []string{"methods", "paths", "hosts", "content_types"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "methods":
			r.Methods = p.strList(v, "methods")
		case "paths":
			r.Paths = p.strList(v, "paths")
		case "hosts":
			r.Hosts = p.strList(v, "hosts")
		case "content_types":
			r.ContentTypes = p.strList(v, "content_types")
		}
	})
}

func (p *parser) encrypt(r *RouteSpec, v *yaml.Node) {
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "each entry starts with \"- fields: [...]\"", "encrypt: want a list, got %s", kindName(v))
		return
	}
	for _, en := range v.Content {
		f := &FieldSpec{Pos: posOf(en)}
		sawFields, sawKey := false, false
		var fieldsNode *yaml.Node
		p.mapping(en, "encrypt entry", []string{"fields", "key", "mode", "nulls", "leaves"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "fields":
				sawFields = true
				fieldsNode = v
				f.Fields = p.strList(v, "fields")
			case "key":
				sawKey = true
				f.Key, _ = p.str(v, "key")
			case "mode":
				f.Mode, _ = p.str(v, "mode")
			case "nulls":
				f.Nulls, _ = p.str(v, "nulls")
			case "leaves":
				f.Leaves, _ = p.boolean(v, "leaves")
			}
		})
		if en.Kind == yaml.MappingNode {
			if !sawFields {
				p.errorf(f.Pos, `add fields: ["$.ssn"]`, "encrypt entry without \"fields\"")
			} else if len(f.Fields) == 0 && fieldsNode.Kind == yaml.SequenceNode {
				p.errorf(posOf(fieldsNode), "name at least one field, or remove the entry", "encrypt entry with an empty fields list")
			}
			if !sawKey {
				p.errorf(f.Pos, "add key: <name of the data key>", "encrypt entry without \"key\"")
			}
		}
		r.Encrypt = append(r.Encrypt, f)
	}
}

func (p *parser) query(r *RouteSpec, v *yaml.Node) {
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "each entry starts with \"- params: [...]\"", "query: want a list, got %s", kindName(v))
		return
	}
	for _, qn := range v.Content {
		q := &QuerySpec{Pos: posOf(qn)}
		sawParams, sawKey := false, false
		var paramsNode *yaml.Node
		p.mapping(qn, "query entry", []string{"params", "key", "mode"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "params":
				sawParams = true
				paramsNode = v
				q.Params = p.strList(v, "params")
			case "key":
				sawKey = true
				q.Key, _ = p.str(v, "key")
			case "mode":
				q.Mode, _ = p.str(v, "mode")
			}
		})
		if qn.Kind == yaml.MappingNode {
			if !sawParams {
				p.errorf(q.Pos, "add params: [email]", "query entry without \"params\"")
			} else if len(q.Params) == 0 && paramsNode.Kind == yaml.SequenceNode {
				p.errorf(posOf(paramsNode), "name at least one parameter, or remove the entry", "query entry with an empty params list")
			}
			if !sawKey {
				p.errorf(q.Pos, "add key: <name of the data key>", "query entry without \"key\"")
			}
		}
		r.Query = append(r.Query, q)
	}
}

func (p *parser) decrypt(doc *Document, v *yaml.Node) {
	doc.Decrypt.Pos = posOf(v)
	p.mapping(v, "decrypt", []string{"keys", "mask"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "keys":
			doc.Decrypt.Keys = p.strList(v, "decrypt.keys")
		case "mask":
			p.mask(doc, v)
		}
	})
}

// mask reads decrypt.mask: a mapping from key names (any) to masks.
func (p *parser) mask(doc *Document, v *yaml.Node) {
	if v.Kind != yaml.MappingNode {
		p.errorf(posOf(v), `for example mask: {pii: last4}`, "decrypt.mask: want a mapping of key name to mask, got %s", kindName(v))
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, m := v.Content[i], v.Content[i+1]
		if k.Tag == "!!merge" {
			continue // reported by refuseAnchors
		}
		key, ok := p.str(k, "decrypt.mask key")
		if !ok {
			continue
		}
		if line, dup := seen[key.Value]; dup {
			p.errorf(key.Pos, fmt.Sprintf("it was first set on line %d; keep one", line), "decrypt.mask: key %q is masked twice", key.Value)
			continue
		}
		seen[key.Value] = key.Pos.Line
		mask, ok := p.str(m, fmt.Sprintf("decrypt.mask.%s", key.Value))
		if !ok {
			continue
		}
		doc.Decrypt.Mask = append(doc.Decrypt.Mask, MaskSpec{Key: key, Mask: mask})
	}
}

// scalarColumn returns the column, in the file, of byte offset off inside
// the text of a one-line scalar, following YAML's quoting so that a
// selector error points at the offending character even inside quotes
// with escapes. For scalars it cannot follow (block and multi-line ones) it
// returns the column where the scalar starts.
func (p *parser) scalarColumn(pos Pos, style yaml.Style, value string, off int) int {
	if off > len(value) {
		off = len(value)
	}
	if pos.Line < 1 || pos.Line > len(p.lines) {
		return pos.Col
	}
	raw := []rune(string(p.lines[pos.Line-1]))
	start := pos.Col - 1
	if start < 0 || start >= len(raw) {
		return pos.Col
	}
	switch {
	case style&yaml.SingleQuotedStyle != 0:
		i, decoded := start+1, 0
		for i < len(raw) && decoded < off {
			if raw[i] == '\'' {
				if i+1 < len(raw) && raw[i+1] == '\'' {
					i += 2
					decoded++
					continue
				}
				return pos.Col // the scalar ended early: continued on another line
			}
			decoded += utf8.RuneLen(raw[i])
			i++
		}
		return i + 1
	case style&yaml.DoubleQuotedStyle != 0:
		i, decoded := start+1, 0
		for i < len(raw) && decoded < off {
			if raw[i] == '"' {
				return pos.Col
			}
			if raw[i] == '\\' && i+1 < len(raw) {
				n, size := 2, 1
				switch raw[i+1] {
				case 'x':
					n, size = 4, 1
				case 'u':
					n, size = 6, 2
				case 'U':
					n, size = 10, 3
				}
				i += n
				decoded += size
				continue
			}
			decoded += utf8.RuneLen(raw[i])
			i++
		}
		return i + 1
	case style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return pos.Col
	default:
		// Plain: the text is in the line as it is, unless it was folded
		// over several lines.
		if start+utf8.RuneCountInString(value) > len(raw) || string(raw[start:start+utf8.RuneCountInString(value)]) != value {
			return pos.Col
		}
		return pos.Col + utf8.RuneCountInString(value[:off])
	}
}
