// Package jsontree parses a JSON document into an order-preserving tree
// that keeps the exact source text of every value, so that a query
// document (a Mango selector, a view's key) can be rewritten in a few
// places and written back with everything else byte for byte as it came:
// member order, escapes, number spelling (12345678901234567890 and 1.50
// stay as written), and the whitespace inside every subtree that was not
// changed.
//
// Parsing is strict, as the rest of sidecrypt is: the text must be one
// JSON value (RFC 8259) in UTF-8, optionally surrounded by whitespace;
// objects and arrays may nest at most maxDepth deep; an object may not
// name a member twice (two readers of such an object can disagree about
// its value, and a profile must read a query as the datastore does).
// Errors wrap the fieldcrypt sentinels (ErrSyntax, ErrTooDeep,
// ErrInvalidUTF8, ErrDuplicateKey), so that the proxy answers them with
// 400, and they never quote the input.
package jsontree

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Kind is the JSON type of a Node.
type Kind uint8

const (
	Object Kind = iota + 1
	Array
	String
	Number
	Bool
	Null
)

func (k Kind) String() string {
	switch k {
	case Object:
		return "object"
	case Array:
		return "array"
	case String:
		return "string"
	case Number:
		return "number"
	case Bool:
		return "bool"
	case Null:
		return "null"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Node is one JSON value.
type Node struct {
	Kind Kind
	// Members of an Object, in document order.
	Members []Member
	// Elems of an Array, in document order.
	Elems []*Node

	// raw is the value's text: the source span while the node is
	// unchanged, the replacement after Replace.
	raw      []byte
	replaced bool
	// dirty is computed by AppendTo: this node or one below it was
	// replaced, so a container must be written member by member.
	dirty bool
}

// Member is one member of an object.
type Member struct {
	// Name is the member name, unescaped.
	Name string
	// RawName is the name as written, quotes included.
	RawName []byte
	Value   *Node
}

// Raw returns the value's JSON text: as written in the source for an
// unchanged node, the replacement text for a replaced one. For a
// container with replaced descendants it is still the source text; use
// AppendTo for the rewritten document. The slice must not be modified.
func (n *Node) Raw() []byte { return n.raw }

// Replace makes the node the JSON value text (which the caller guarantees
// to be one valid JSON value of kind k). Children are dropped.
func (n *Node) Replace(k Kind, text []byte) {
	n.Kind = k
	n.raw = text
	n.replaced = true
	n.Members = nil
	n.Elems = nil
}

// Replaced reports whether Replace was called on n.
func (n *Node) Replaced() bool { return n.replaced }

// Changed reports whether n or a node below it was replaced.
func (n *Node) Changed() bool { return markDirty(n) }

// Get returns the value of the object member called name, or nil.
func (n *Node) Get(name string) *Node {
	for i := range n.Members {
		if n.Members[i].Name == name {
			return n.Members[i].Value
		}
	}
	return nil
}

// Text returns the unescaped content of a String node; ok is false for
// other kinds. Invalid surrogate escapes become U+FFFD, as in
// encoding/json.
func (n *Node) Text() (s string, ok bool) {
	if n.Kind != String {
		return "", false
	}
	return unquote(n.raw), true
}

// IsEmpty reports whether n is an object or array without members or
// elements.
func (n *Node) IsEmpty() bool {
	switch n.Kind {
	case Object:
		return len(n.Members) == 0
	case Array:
		return len(n.Elems) == 0
	}
	return false
}

// AppendTo appends the document rooted at n to dst: every subtree without
// a replaced node exactly as written, rewritten containers without
// insignificant whitespace.
func (n *Node) AppendTo(dst []byte) []byte {
	markDirty(n)
	return appendNode(dst, n, false)
}

// Bytes returns the document rooted at n; see AppendTo.
func (n *Node) Bytes() []byte { return n.AppendTo(make([]byte, 0, len(n.raw)+64)) }

func markDirty(n *Node) bool {
	d := n.replaced
	switch n.Kind {
	case Object:
		for i := range n.Members {
			if markDirty(n.Members[i].Value) {
				d = true
			}
		}
	case Array:
		for _, e := range n.Elems {
			if markDirty(e) {
				d = true
			}
		}
	}
	n.dirty = d
	return d
}

// appendNode writes n; rebuild forces containers to be written member by
// member even when unchanged (the fuzz test checks that path too).
func appendNode(dst []byte, n *Node, rebuild bool) []byte {
	if n.replaced || (!n.dirty && !rebuild) {
		return append(dst, n.raw...)
	}
	switch n.Kind {
	case Object:
		dst = append(dst, '{')
		for i, m := range n.Members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, m.RawName...)
			dst = append(dst, ':')
			dst = appendNode(dst, m.Value, rebuild)
		}
		return append(dst, '}')
	case Array:
		dst = append(dst, '[')
		for i, e := range n.Elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendNode(dst, e, rebuild)
		}
		return append(dst, ']')
	}
	return append(dst, n.raw...)
}

// Error is a parse error. It names the problem and the byte offset, never
// the content.
type Error struct {
	Offset int
	Msg    string
	Err    error // a fieldcrypt sentinel
}

func (e *Error) Error() string {
	return fmt.Sprintf("jsontree: %s at offset %d", e.Msg, e.Offset)
}

func (e *Error) Unwrap() error { return e.Err }

// Parse parses data as one JSON value. maxDepth bounds the nesting of
// objects and arrays; zero or less means fieldcrypt.DefaultMaxDepth. The
// tree refers into data, which must not change while the tree is in use.
func Parse(data []byte, maxDepth int) (*Node, error) {
	if maxDepth <= 0 {
		maxDepth = fieldcrypt.DefaultMaxDepth
	}
	p := parser{data: data, maxDepth: maxDepth}
	p.skipWS()
	if p.pos == len(p.data) {
		return nil, p.fail(fieldcrypt.ErrSyntax, "no JSON value")
	}
	n, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.pos != len(p.data) {
		return nil, p.fail(fieldcrypt.ErrSyntax, "data after the top-level value")
	}
	return n, nil
}

type parser struct {
	data     []byte
	pos      int
	maxDepth int
}

func (p *parser) fail(kind error, msg string) error {
	return &Error{Offset: p.pos, Msg: msg, Err: kind}
}

func (p *parser) skipWS() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value parses the value at pos; depth is the number of containers
// around it.
func (p *parser) value(depth int) (*Node, error) {
	if p.pos >= len(p.data) {
		return nil, p.fail(fieldcrypt.ErrSyntax, "unexpected end of input")
	}
	start := p.pos
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		if err := p.str(); err != nil {
			return nil, err
		}
		return &Node{Kind: String, raw: p.data[start:p.pos]}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		if err := p.number(); err != nil {
			return nil, err
		}
		return &Node{Kind: Number, raw: p.data[start:p.pos]}, nil
	case c == 't':
		return p.literal("true", Bool)
	case c == 'f':
		return p.literal("false", Bool)
	case c == 'n':
		return p.literal("null", Null)
	case c >= utf8.RuneSelf:
		if r, size := utf8.DecodeRune(p.data[p.pos:]); r == utf8.RuneError && size <= 1 {
			return nil, p.fail(fieldcrypt.ErrInvalidUTF8, "invalid UTF-8 sequence")
		}
	}
	return nil, p.fail(fieldcrypt.ErrSyntax, "expected a JSON value")
}

func (p *parser) literal(lit string, k Kind) (*Node, error) {
	start := p.pos
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return nil, p.fail(fieldcrypt.ErrSyntax, "invalid literal (want true, false or null)")
	}
	p.pos += len(lit)
	return &Node{Kind: k, raw: p.data[start:p.pos]}, nil
}

func (p *parser) object(depth int) (*Node, error) {
	if depth > p.maxDepth {
		return nil, p.fail(fieldcrypt.ErrTooDeep, "nesting exceeds the limit")
	}
	start := p.pos
	p.pos++ // {
	n := &Node{Kind: Object}
	var seen map[string]struct{}
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		n.raw = p.data[start:p.pos]
		return n, nil
	}
	for {
		p.skipWS()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			if p.pos >= len(p.data) {
				return nil, p.fail(fieldcrypt.ErrSyntax, "unexpected end of input")
			}
			return nil, p.fail(fieldcrypt.ErrSyntax, `expected '"' to start an object key`)
		}
		nameStart := p.pos
		if err := p.str(); err != nil {
			return nil, err
		}
		rawName := p.data[nameStart:p.pos]
		name := unquote(rawName)
		// A linear scan beats a map for the few members query documents
		// have; past a handful, the map keeps the check linear.
		if len(n.Members) < 16 {
			for i := range n.Members {
				if n.Members[i].Name == name {
					return nil, &Error{Offset: nameStart, Msg: "an object names a member twice", Err: fieldcrypt.ErrDuplicateKey}
				}
			}
		} else {
			if seen == nil {
				seen = make(map[string]struct{}, 2*len(n.Members))
				for i := range n.Members {
					seen[n.Members[i].Name] = struct{}{}
				}
			}
			if _, dup := seen[name]; dup {
				return nil, &Error{Offset: nameStart, Msg: "an object names a member twice", Err: fieldcrypt.ErrDuplicateKey}
			}
			seen[name] = struct{}{}
		}
		p.skipWS()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail(fieldcrypt.ErrSyntax, "expected ':' after an object key")
		}
		p.pos++
		p.skipWS()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		n.Members = append(n.Members, Member{Name: name, RawName: rawName, Value: v})
		p.skipWS()
		if p.pos >= len(p.data) {
			return nil, p.fail(fieldcrypt.ErrSyntax, "unexpected end of input")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			n.raw = p.data[start:p.pos]
			return n, nil
		default:
			return nil, p.fail(fieldcrypt.ErrSyntax, "expected ',' or '}' after an object member")
		}
	}
}

func (p *parser) array(depth int) (*Node, error) {
	if depth > p.maxDepth {
		return nil, p.fail(fieldcrypt.ErrTooDeep, "nesting exceeds the limit")
	}
	start := p.pos
	p.pos++ // [
	n := &Node{Kind: Array}
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		n.raw = p.data[start:p.pos]
		return n, nil
	}
	for {
		p.skipWS()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		n.Elems = append(n.Elems, v)
		p.skipWS()
		if p.pos >= len(p.data) {
			return nil, p.fail(fieldcrypt.ErrSyntax, "unexpected end of input")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			n.raw = p.data[start:p.pos]
			return n, nil
		default:
			return nil, p.fail(fieldcrypt.ErrSyntax, "expected ',' or ']' after an array element")
		}
	}
}

// str scans a string starting at its opening quote.
func (p *parser) str() error {
	p.pos++ // "
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return nil
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				return p.fail(fieldcrypt.ErrSyntax, "unterminated string")
			}
			switch p.data[p.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.pos += 2
			case 'u':
				if p.pos+6 > len(p.data) {
					return p.fail(fieldcrypt.ErrSyntax, "unterminated string")
				}
				for _, h := range p.data[p.pos+2 : p.pos+6] {
					if hexVal(h) < 0 {
						return p.fail(fieldcrypt.ErrSyntax, "invalid escape in a string")
					}
				}
				p.pos += 6
			default:
				return p.fail(fieldcrypt.ErrSyntax, "invalid escape in a string")
			}
		case c < 0x20:
			return p.fail(fieldcrypt.ErrSyntax, "unescaped control character in a string")
		case c < utf8.RuneSelf:
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return p.fail(fieldcrypt.ErrInvalidUTF8, "invalid UTF-8 sequence")
			}
			p.pos += size
		}
	}
	return p.fail(fieldcrypt.ErrSyntax, "unterminated string")
}

// number scans a number per RFC 8259 section 6.
func (p *parser) number() error {
	d := p.data
	if p.pos < len(d) && d[p.pos] == '-' {
		p.pos++
	}
	switch {
	case p.pos < len(d) && d[p.pos] == '0':
		p.pos++
	case p.pos < len(d) && d[p.pos] >= '1' && d[p.pos] <= '9':
		for p.pos < len(d) && d[p.pos] >= '0' && d[p.pos] <= '9' {
			p.pos++
		}
	default:
		return p.fail(fieldcrypt.ErrSyntax, "invalid number")
	}
	if p.pos < len(d) && d[p.pos] == '.' {
		p.pos++
		if !p.digits() {
			return p.fail(fieldcrypt.ErrSyntax, "invalid number")
		}
	}
	if p.pos < len(d) && (d[p.pos] == 'e' || d[p.pos] == 'E') {
		p.pos++
		if p.pos < len(d) && (d[p.pos] == '+' || d[p.pos] == '-') {
			p.pos++
		}
		if !p.digits() {
			return p.fail(fieldcrypt.ErrSyntax, "invalid number")
		}
	}
	return nil
}

func (p *parser) digits() bool {
	start := p.pos
	for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
		p.pos++
	}
	return p.pos > start
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// unquote decodes a string token (quotes included) that str accepted.
func unquote(raw []byte) string {
	inner := raw[1 : len(raw)-1]
	esc := false
	for _, c := range inner {
		if c == '\\' {
			esc = true
			break
		}
	}
	if !esc {
		return string(inner)
	}
	out := make([]byte, 0, len(inner))
	for i := 0; i < len(inner); {
		c := inner[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch e := inner[i+1]; e {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(inner[i+2 : i+6]))
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(inner) && inner[i] == '\\' && inner[i+1] == 'u' {
					if r2 := utf16.DecodeRune(r, rune(hex4(inner[i+2:i+6]))); r2 != utf8.RuneError {
						out = utf8.AppendRune(out, r2)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, e)
		}
		i += 2
	}
	return string(out)
}

func hex4(b []byte) int {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}
