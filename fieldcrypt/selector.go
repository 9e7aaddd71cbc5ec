package fieldcrypt

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A Selector names values inside a JSON document. It is a documented subset
// of JSONPath (RFC 9535) that can be evaluated while streaming, in one pass,
// without looking ahead or back:
//
//	$                 the document root (only as the first character)
//	.name             the member "name" of an object
//	['any name']      the same, for names with spaces, dots or quotes
//	                  (inside the quotes, \' and \\ are the only escapes)
//	[*]  or  .*       every element of an array and every member of an object
//	[3]               element 3 (zero-based) of an array
//	..name            the member "name" of an object at any depth below
//	..['any name']    the same, quoted
//
// Examples: $.ssn, $.docs[*].ssn, $..diagnosis, $.meta['date of birth'].
//
// Not supported, and refused with a hint: filters ([?...]), slices ([1:3]),
// unions ([a,b]), negative indexes, and ..* (which would protect every value
// of a document; name the fields instead). The bare root $ is refused too: a
// rule protects fields, not whole bodies.
type Selector struct {
	text  string
	steps []Step
}

// StepKind says what a Step matches.
type StepKind uint8

const (
	// StepMember matches the object member named Step.Name.
	StepMember StepKind = iota + 1
	// StepIndex matches array element Step.Index.
	StepIndex
	// StepWildcard matches every array element and every object member.
	StepWildcard
)

// Step is one step of a Selector.
type Step struct {
	Kind  StepKind
	Name  string // StepMember
	Index int    // StepIndex
	// Descendant is true for ..name: the step may match at any depth below
	// the previous step, not only directly under it.
	Descendant bool
	// ThroughArrays (StepMember only) lets the member be found inside
	// arrays, nested to any depth, that stand where an object was
	// expected: with it, the steps a, b match a.b in {"a": {"b": 1}},
	// {"a": [{"b": 1}]} and {"a": [[{"b": 1}]]}. Version 2 rule files name
	// document fields by dotted path, and a document that holds a list
	// where the author pictured one object must not escape the rule
	// (docs/RULES.md, "Field paths"). It has no text form: build such
	// selectors with NewSelector.
	ThroughArrays bool
}

// PathElem is one element of a concrete path into a document: an object
// member name or an array index.
type PathElem struct {
	Name    string
	Index   int
	IsIndex bool
}

// SelectorError reports a malformed selector. Offset is the zero-based byte
// offset in the selector text where the problem was found, so that the rule
// file parser can turn it into a line and column.
type SelectorError struct {
	Selector string
	Offset   int
	Msg      string
	Hint     string
}

func (e *SelectorError) Error() string {
	s := fmt.Sprintf("fieldcrypt: selector %q at offset %d: %s", e.Selector, e.Offset, e.Msg)
	if e.Hint != "" {
		s += " (hint: " + e.Hint + ")"
	}
	return s
}

// MaxSelectorSteps bounds the length of a selector. Matching cost grows with
// the number of steps, and no real document schema needs more.
const MaxSelectorSteps = 64

// ParseSelector parses a selector in the syntax described on Selector.
func ParseSelector(text string) (Selector, error) {
	p := selParser{text: text}
	steps, err := p.parse()
	if err != nil {
		return Selector{}, err
	}
	return Selector{text: text, steps: steps}, nil
}

// NewSelector builds a selector from steps, for callers that compile field
// paths of their own (version 2 rule files) rather than parse selector
// text. The steps are checked as the parser would check them; String
// renders them in selector syntax, with a ThroughArrays member written
// like any other member (the text is then for people, not for
// ParseSelector).
func NewSelector(steps []Step) (Selector, error) {
	if len(steps) == 0 {
		return Selector{}, &SelectorError{Offset: 0, Msg: "selects the whole document", Hint: "name a field"}
	}
	if len(steps) > MaxSelectorSteps {
		return Selector{}, &SelectorError{Offset: 0, Msg: fmt.Sprintf("more than %d steps", MaxSelectorSteps)}
	}
	var b strings.Builder
	b.WriteByte('$')
	for i, st := range steps {
		switch st.Kind {
		case StepMember:
			if !utf8.ValidString(st.Name) {
				return Selector{}, &SelectorError{Selector: b.String(), Offset: i, Msg: "member name is not valid UTF-8"}
			}
			if st.Descendant {
				b.WriteByte('.')
			}
			writeMemberName(&b, st.Name)
		case StepIndex:
			if st.Index < 0 || st.Descendant || st.ThroughArrays {
				return Selector{}, &SelectorError{Selector: b.String(), Offset: i, Msg: "invalid index step"}
			}
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(st.Index))
			b.WriteByte(']')
		case StepWildcard:
			if st.Descendant || st.ThroughArrays {
				return Selector{}, &SelectorError{Selector: b.String(), Offset: i, Msg: "invalid wildcard step"}
			}
			b.WriteString("[*]")
		default:
			return Selector{}, &SelectorError{Selector: b.String(), Offset: i, Msg: "unknown step kind"}
		}
	}
	return Selector{text: b.String(), steps: append([]Step(nil), steps...)}, nil
}

// MustParseSelector is ParseSelector for constants in tests and examples;
// it panics on a malformed selector.
func MustParseSelector(text string) Selector {
	s, err := ParseSelector(text)
	if err != nil {
		panic(err)
	}
	return s
}

// String returns the selector's text as it was parsed.
func (s Selector) String() string { return s.text }

// Steps returns the parsed steps. The slice must not be modified.
func (s Selector) Steps() []Step { return s.steps }

// IsZero reports whether s is the zero Selector.
func (s Selector) IsZero() bool { return s.steps == nil }

// Matches reports whether the selector selects the value at path. It is the
// reference semantics, used by tests and by tools that explain rules; the
// transformer compiles selectors into an automaton with the same meaning.
func (s Selector) Matches(path []PathElem) bool {
	return matchSteps(s.steps, path)
}

func matchSteps(steps []Step, path []PathElem) bool {
	if len(steps) == 0 {
		return len(path) == 0
	}
	st := steps[0]
	if st.ThroughArrays && !st.Descendant && len(path) > 0 && path[0].IsIndex {
		// An array where the member was expected: look inside it.
		if matchSteps(steps, path[1:]) {
			return true
		}
	}
	if st.Descendant {
		for i := range path {
			if stepMatches(st, path[i]) && matchSteps(steps[1:], path[i+1:]) {
				return true
			}
		}
		return false
	}
	if len(path) == 0 || !stepMatches(st, path[0]) {
		return false
	}
	return matchSteps(steps[1:], path[1:])
}

func stepMatches(st Step, e PathElem) bool {
	switch st.Kind {
	case StepMember:
		return !e.IsIndex && e.Name == st.Name
	case StepIndex:
		return e.IsIndex && e.Index == st.Index
	case StepWildcard:
		return true
	}
	return false
}

// FormatPath renders a concrete path in selector syntax, for error messages
// and explanations: $.docs[3].ssn. Names that are not plain identifiers are
// quoted: $['a b'].
func FormatPath(path []PathElem) string {
	var b strings.Builder
	b.WriteByte('$')
	for _, e := range path {
		if e.IsIndex {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.Index))
			b.WriteByte(']')
			continue
		}
		writeMemberName(&b, e.Name)
	}
	return b.String()
}

func writeMemberName(b *strings.Builder, name string) {
	if plainName(name) {
		b.WriteByte('.')
		b.WriteString(name)
		return
	}
	b.WriteString("['")
	for _, r := range name {
		if r == '\'' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString("']")
}

// plainName reports whether name can be written after a dot.
func plainName(name string) bool {
	if name == "" || name == "*" {
		return false
	}
	for _, r := range name {
		if !nameRune(r) {
			return false
		}
	}
	return true
}

// nameRune reports whether r may appear in an unquoted member name: anything
// but the selector's own punctuation, quotes, whitespace and control
// characters. '$' is allowed so that CouchDB/Mongo operators ($eq) and '@',
// '-', ':' so that real-world field names need no quoting.
func nameRune(r rune) bool {
	switch r {
	case '.', '[', ']', '\'', '"', '*', '\\', ',', '(', ')', '?':
		return false
	}
	return r > ' ' && r != 0x7f && r != utf8.RuneError
}

type selParser struct {
	text string
	pos  int
}

func (p *selParser) fail(off int, msg, hint string) error {
	return &SelectorError{Selector: p.text, Offset: off, Msg: msg, Hint: hint}
}

func (p *selParser) parse() ([]Step, error) {
	if !utf8.ValidString(p.text) {
		return nil, p.fail(0, "not valid UTF-8", "")
	}
	if p.text == "" {
		return nil, p.fail(0, "empty selector", `start with "$", for example "$.ssn"`)
	}
	if p.text[0] != '$' {
		return nil, p.fail(0, "must start with \"$\"", `write "$.`+strings.TrimLeft(p.text, ".")+`"`)
	}
	p.pos = 1
	var steps []Step
	for p.pos < len(p.text) {
		if len(steps) == MaxSelectorSteps {
			return nil, p.fail(p.pos, fmt.Sprintf("more than %d steps", MaxSelectorSteps), "")
		}
		st, err := p.step()
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
	}
	if len(steps) == 0 {
		return nil, p.fail(0, "selects the whole document", `name the fields to protect, for example "$.ssn"`)
	}
	return steps, nil
}

func (p *selParser) step() (Step, error) {
	start := p.pos
	switch p.text[p.pos] {
	case '.':
		p.pos++
		desc := false
		if p.pos < len(p.text) && p.text[p.pos] == '.' {
			desc = true
			p.pos++
		}
		if p.pos >= len(p.text) {
			return Step{}, p.fail(start, "selector ends after \".\"", `add a field name, for example "$.ssn"`)
		}
		switch c := p.text[p.pos]; {
		case c == '*':
			if desc {
				return Step{}, p.fail(start, "\"..*\" would protect every value in the document", "name the fields to protect")
			}
			p.pos++
			return Step{Kind: StepWildcard}, nil
		case c == '[':
			if !desc {
				return Step{}, p.fail(p.pos, "unexpected \"[\" after \".\"", `write "$.a[0]" or "$['a']", not "$.[...]"`)
			}
			st, err := p.bracket()
			if err != nil {
				return Step{}, err
			}
			if st.Kind != StepMember {
				return Step{}, p.fail(start, "\"..\" must be followed by a field name", `for example "$..diagnosis"`)
			}
			st.Descendant = true
			return st, nil
		case c == '.':
			return Step{}, p.fail(p.pos, "three dots in a row", `use ".name" for a child or "..name" for any depth`)
		}
		nameStart := p.pos
		for p.pos < len(p.text) {
			r, size := utf8.DecodeRuneInString(p.text[p.pos:])
			if !nameRune(r) {
				break
			}
			p.pos += size
		}
		if p.pos == nameStart {
			r, _ := utf8.DecodeRuneInString(p.text[p.pos:])
			return Step{}, p.fail(p.pos, fmt.Sprintf("unexpected %q in a field name", r), `quote unusual names: "$['my field']"`)
		}
		return Step{Kind: StepMember, Name: p.text[nameStart:p.pos], Descendant: desc}, nil
	case '[':
		return p.bracket()
	default:
		r, _ := utf8.DecodeRuneInString(p.text[p.pos:])
		return Step{}, p.fail(p.pos, fmt.Sprintf("unexpected %q", r), `steps start with "." or "["`)
	}
}

// bracket parses [*], [N] or ['name'] starting at '['.
func (p *selParser) bracket() (Step, error) {
	start := p.pos
	p.pos++ // '['
	if p.pos >= len(p.text) {
		return Step{}, p.fail(start, "unclosed \"[\"", "")
	}
	var st Step
	switch c := p.text[p.pos]; {
	case c == '*':
		p.pos++
		st = Step{Kind: StepWildcard}
	case c >= '0' && c <= '9':
		numStart := p.pos
		for p.pos < len(p.text) && p.text[p.pos] >= '0' && p.text[p.pos] <= '9' {
			p.pos++
		}
		digits := p.text[numStart:p.pos]
		if len(digits) > 1 && digits[0] == '0' {
			return Step{}, p.fail(numStart, "index has a leading zero", "")
		}
		n, err := strconv.Atoi(digits)
		if err != nil || n > 1<<30 {
			return Step{}, p.fail(numStart, "index too large", "")
		}
		st = Step{Kind: StepIndex, Index: n}
	case c == '\'':
		p.pos++
		var name strings.Builder
		closed := false
		for p.pos < len(p.text) {
			ch := p.text[p.pos]
			if ch == '\\' {
				if p.pos+1 >= len(p.text) || (p.text[p.pos+1] != '\'' && p.text[p.pos+1] != '\\') {
					return Step{}, p.fail(p.pos, "bad escape in quoted name", `only \' and \\ are escapes`)
				}
				name.WriteByte(p.text[p.pos+1])
				p.pos += 2
				continue
			}
			if ch == '\'' {
				p.pos++
				closed = true
				break
			}
			name.WriteByte(ch)
			p.pos++
		}
		if !closed {
			return Step{}, p.fail(start, "unclosed quoted name", `close it: "$['a b']"`)
		}
		st = Step{Kind: StepMember, Name: name.String()}
	case c == '-':
		return Step{}, p.fail(p.pos, "negative indexes are not supported", "a streaming rewriter cannot know the array length in advance")
	case c == '?':
		return Step{}, p.fail(p.pos, "filters are not supported", "select the field directly; every matching value is protected")
	case c == '"':
		return Step{}, p.fail(p.pos, "double-quoted names are not supported", `use single quotes: "$['a b']" (easier inside YAML)`)
	default:
		return Step{}, p.fail(p.pos, fmt.Sprintf("unexpected %q after \"[\"", c), `use [*], [N] or ['name']`)
	}
	if p.pos >= len(p.text) || p.text[p.pos] != ']' {
		if p.pos < len(p.text) && (p.text[p.pos] == ':' || p.text[p.pos] == ',') {
			return Step{}, p.fail(p.pos, "slices and unions are not supported", "write one selector per field")
		}
		return Step{}, p.fail(p.pos, "expected \"]\"", "")
	}
	p.pos++
	return st, nil
}
