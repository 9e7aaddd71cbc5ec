package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// CompileOptions adjust compilation. The zero value is ready to use.
type CompileOptions struct {
	// Stats receives the counters of the compiled plan; nil gives the
	// plan counters of its own.
	Stats *Stats
}

// Compile parses and validates a rule file and compiles it into a Plan.
// source names the file in diagnostics and in Plan.Source.
//
// All problems are reported, not just the first. err is non-nil, and the
// Plan nil, when any diagnostic is an error; err is then an *Error
// (errors.Is(err, ErrInvalid)). Warnings come back with a valid Plan.
func Compile(source string, data []byte) (*Plan, []Diagnostic, error) {
	return CompileWith(source, data, CompileOptions{})
}

// CompileWith is Compile with options.
func CompileWith(source string, data []byte, opt CompileOptions) (*Plan, []Diagnostic, error) {
	p := &parser{file: source}
	doc := p.parseDocument(data)
	if doc != nil {
		if doc.Version == 2 {
			p.validateV2(doc)
		} else {
			p.validate(doc)
		}
	}
	sortDiagnostics(p.diags)
	if errs, _ := CountDiagnostics(p.diags); errs > 0 || doc == nil {
		return nil, p.diags, &Error{Source: source, Diagnostics: p.diags}
	}
	plan, err := build(source, data, doc, opt)
	if err != nil {
		// The validator accepts only what fieldcrypt compiles; reaching
		// here is a bug, reported as a whole-file error rather than a
		// panic.
		d := Diagnostic{File: source, Severity: SeverityError, Message: err.Error()}
		p.diags = append(p.diags, d)
		return nil, p.diags, &Error{Source: source, Diagnostics: p.diags}
	}
	return plan, p.diags, nil
}

// LoadFile reads and compiles a rule file. A file that cannot be read is
// an error without diagnostics.
func LoadFile(path string) (*Plan, []Diagnostic, error) {
	data, err := readRuleFile(path)
	if err != nil {
		return nil, nil, err
	}
	return Compile(path, data)
}

// readRuleFile reads at most MaxFileSize+1 bytes, so that a huge file is
// refused without being read in full.
func readRuleFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("rules: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("rules: %s: larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// HashBytes returns the Plan.Hash of a rule file's content.
func HashBytes(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// build turns a validated Document into a Plan.
func build(source string, data []byte, doc *Document, opt CompileOptions) (*Plan, error) {
	stats := opt.Stats
	if stats == nil {
		stats = &Stats{}
	}
	plan := &Plan{Hash: HashBytes(data), Source: source, Version: doc.Version, doc: doc, stats: stats, masks: map[string]maskRule{}}
	if doc.Version == 2 {
		if doc.schema == nil || doc.profile == nil {
			return nil, errors.New("rules: version 2 file without a compiled schema")
		}
		plan.Schema, plan.Profile = doc.schema, doc.profile
	}
	for _, rs := range doc.Routes {
		r := &Route{
			Name:      rs.Name,
			Line:      rs.Pos.Line,
			paths:     rs.paths,
			hosts:     rs.hosts,
			types:     rs.types,
			anyMethod: false,
		}
		for _, m := range rs.Methods {
			if m.Value == "*" {
				r.anyMethod = true
			}
			if !slices.Contains(r.Methods, m.Value) {
				r.Methods = append(r.Methods, m.Value)
			}
		}
		for _, pp := range rs.paths {
			r.Paths = append(r.Paths, pp.text)
		}
		for _, h := range rs.hosts {
			r.Hosts = append(r.Hosts, h.text)
		}
		if len(rs.types) == 0 {
			for _, t := range DefaultContentTypes {
				mr, _ := parseMediaRange(t)
				r.types = append(r.types, mr)
			}
		}
		for _, t := range r.types {
			r.ContentTypes = append(r.ContentTypes, t.text)
		}
		keys := map[string]bool{}
		seen := map[string]bool{}
		for _, f := range rs.Encrypt {
			mode := modeOf(f.Mode.Value)
			for _, s := range f.selectors {
				c := canonical(s.sel)
				if seen[c] {
					continue // a repeat of an identical rule (warned about)
				}
				seen[c] = true
				r.Fields = append(r.Fields, fieldcrypt.FieldRule{Selector: s.sel, Key: f.Key.Value, Mode: mode, EncryptNull: f.Nulls.Value == "encrypt", Leaves: f.Leaves.Value == "true"})
			}
			keys[f.Key.Value] = true
		}
		if len(r.Fields) > 0 {
			enc, err := fieldcrypt.NewEncryptor(r.Fields, fieldcrypt.Limits{})
			if err != nil {
				return nil, fmt.Errorf("rules: route %q: %w", r.Name, err)
			}
			r.Body = enc
		}
		for _, q := range rs.Query {
			for _, prm := range q.Params {
				if _, dup := r.QueryRule(prm.Value); dup {
					continue
				}
				r.Query = append(r.Query, QueryRule{Param: prm.Value, Key: q.Key.Value, Mode: modeOf(q.Mode.Value)})
			}
			keys[q.Key.Value] = true
		}
		for k := range keys {
			r.Keys = append(r.Keys, k)
		}
		slices.Sort(r.Keys)
		plan.Routes = append(plan.Routes, r)
	}
	plan.buildDecrypt(doc.Decrypt)
	plan.matcher = newMatcher(plan.Routes)
	return plan, nil
}

// buildDecrypt compiles the decrypt section, the same in both versions.
func (plan *Plan) buildDecrypt(dec DecryptSpec) {
	stats := plan.stats
	pol := &policy{open: map[string]bool{}, masks: map[string]fieldcrypt.Masker{}}
	for _, k := range dec.Keys {
		if !pol.open[k.Value] {
			pol.open[k.Value] = true
			plan.DecryptKeys = append(plan.DecryptKeys, k.Value)
		}
	}
	for _, m := range dec.Mask {
		rule := newMaskRule(m.Mask.Value)
		plan.masks[m.Key.Value] = rule
		pol.masks[m.Key.Value] = rule.masker(stats)
		plan.MaskKeys = append(plan.MaskKeys, m.Key.Value)
	}
	slices.Sort(plan.DecryptKeys)
	slices.Sort(plan.MaskKeys)
	plan.Decryptor = fieldcrypt.NewDecryptor(pol, fieldcrypt.Limits{})
	plan.policy = pol
	if plan.doc != nil && plan.doc.schema != nil {
		if ref, ok := plan.doc.schema.Reveal.(*policyRef); ok {
			ref.p = pol
		}
	}
}

// modeOf maps a validated mode name ("" is the default) to its Mode.
func modeOf(s string) fieldcrypt.Mode {
	if s == "deterministic" {
		return fieldcrypt.ModeDeterministic
	}
	return fieldcrypt.ModeRandom
}

var (
	modeNames  = []string{"random", "deterministic"}
	nullsNames = []string{"leave", "encrypt"}
	maskNames  = []string{MaskFull, MaskLast4, MaskHash}
)

const keyNameHint = "key names are 1 to 64 characters: lower-case letters, digits, '-' and '_', starting with a letter"

// validate checks everything the YAML shape cannot: names, patterns,
// selectors, modes, conflicts, and the warnings.
func (p *parser) validate(doc *Document) {
	names := map[string]Pos{}
	usedKeys := map[string]bool{}
	for _, r := range doc.Routes {
		before := p.errorCount()
		p.validateRouteName(r, names)
		p.validateMatch(r)
		p.validateEncrypt(r, usedKeys)
		p.validateQuery(r, usedKeys)
		if p.errorCount() > before {
			r.broken = true
		}
		if !r.broken {
			p.routeWarnings(r)
		}
	}
	p.shadowWarnings(doc)
	p.lookupWarnings(doc)
	p.validateDecrypt(doc, usedKeys)
}

func validRouteName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')) {
			return false
		}
	}
	return true
}

func (p *parser) validateRouteName(r *RouteSpec, names map[string]Pos) {
	if r.NamePos.Line == 0 {
		return // missing, or not text: already reported
	}
	if !validRouteName(r.Name) {
		p.errorf(r.NamePos, "route names are 1 to 64 letters, digits, '-', '_' and '.', starting with a letter or digit (they appear in logs and metrics)", "invalid route name %q", r.Name)
		return
	}
	if prev, dup := names[r.Name]; dup {
		p.errorf(r.NamePos, fmt.Sprintf("the first route of that name is on line %d; route names must be unique, because logs, audit events and diffs identify routes by name", prev.Line), "duplicate route name %q", r.Name)
		return
	}
	names[r.Name] = r.NamePos
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_')) {
			return false
		}
	}
	return true
}

func (p *parser) validateMatch(r *RouteSpec) {
	seen := map[string]bool{}
	for _, m := range r.Methods {
		switch {
		case m.Value == "*":
		case validMethod(m.Value):
		case validMethod(strings.ToUpper(m.Value)):
			p.errorf(m.Pos, fmt.Sprintf("write %q", strings.ToUpper(m.Value)), "method %q is not upper case", m.Value)
			continue
		default:
			p.errorf(m.Pos, `for example POST, PUT or "*" for any method`, "invalid method %q", m.Value)
			continue
		}
		if seen[m.Value] {
			p.warnf(m.Pos, "", "method %s is listed twice", m.Value)
		}
		seen[m.Value] = true
	}
	for _, it := range r.Paths {
		pp, err := parsePathPattern(it.Value)
		if err != nil {
			p.patternError(it, "path pattern", err)
			continue
		}
		r.paths = append(r.paths, pp)
	}
	for _, it := range r.Hosts {
		h, err := parseHostPattern(it.Value)
		if err != nil {
			p.patternError(it, "host pattern", err)
			continue
		}
		r.hosts = append(r.hosts, h)
	}
	for _, it := range r.ContentTypes {
		m, err := parseMediaRange(it.Value)
		if err != nil {
			p.patternError(it, "content type", err)
			continue
		}
		r.types = append(r.types, m)
	}
}

func (p *parser) patternError(it Item, what string, err error) {
	var pe *patternError
	if !errors.As(err, &pe) {
		p.errorf(it.Pos, "", "%s %q: %v", what, it.Value, err)
		return
	}
	col := p.scalarColumn(it.Pos, it.style, it.Value, pe.offset)
	p.errorf(Pos{it.Pos.Line, col}, pe.hint, "%s %q: %s", what, it.Value, pe.msg)
}

func (p *parser) checkKey(it Item, what string) bool {
	if it.Pos.Line == 0 {
		return false
	}
	if !fieldcrypt.ValidKeyName(it.Value) {
		p.errorf(it.Pos, keyNameHint, "%s: invalid key name %q", what, it.Value)
		return false
	}
	return true
}

func (p *parser) checkMode(it Item) bool {
	if it.Pos.Line == 0 || contains(modeNames, it.Value) {
		return true
	}
	hint := "modes are random (the default) and deterministic"
	if s := didYouMean(it.Value, modeNames); s != "" {
		hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
	}
	p.errorf(it.Pos, hint, "unknown mode %q", it.Value)
	return false
}

// fieldClaim is what one selector on a route says, to find conflicts.
type fieldClaim struct {
	sel       selectorAt
	key, mode string
	nulls     string
	leaves    string
}

func (c fieldClaim) describe() string {
	return fmt.Sprintf("key %s, %s", c.key, modeOf(c.mode))
}

func (p *parser) validateEncrypt(r *RouteSpec, usedKeys map[string]bool) {
	var claims []fieldClaim
	byCanon := map[string]fieldClaim{}
	for _, f := range r.Encrypt {
		keyOK := p.checkKey(f.Key, "encrypt")
		modeOK := p.checkMode(f.Mode)
		if f.Nulls.Pos.Line != 0 && !contains(nullsNames, f.Nulls.Value) {
			hint := "nulls is leave (the default: null stays null) or encrypt"
			if s := didYouMean(f.Nulls.Value, nullsNames); s != "" {
				hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
			}
			p.errorf(f.Nulls.Pos, hint, "unknown nulls setting %q", f.Nulls.Value)
		}
		if keyOK {
			usedKeys[f.Key.Value] = true
		}
		for _, it := range f.Fields {
			sel, err := fieldcrypt.ParseSelector(it.Value)
			if err != nil {
				var se *fieldcrypt.SelectorError
				if errors.As(err, &se) {
					col := p.scalarColumn(it.Pos, it.style, it.Value, se.Offset)
					p.errorf(Pos{it.Pos.Line, col}, se.Hint, "selector %q: %s", it.Value, se.Msg)
				} else {
					p.errorf(it.Pos, "", "selector %q: %v", it.Value, err)
				}
				continue
			}
			s := selectorAt{sel: sel, pos: it.Pos}
			f.selectors = append(f.selectors, s)
			if !keyOK || !modeOK {
				continue
			}
			c := fieldClaim{sel: s, key: f.Key.Value, mode: f.Mode.Value, nulls: f.Nulls.Value, leaves: f.Leaves.Value}
			if c.leaves == "" {
				c.leaves = "false"
			}
			if c.mode == "" {
				c.mode = "random"
			}
			if c.nulls == "" {
				c.nulls = "leave"
			}
			canon := canonical(sel)
			if prev, dup := byCanon[canon]; dup {
				switch {
				case prev.key != c.key || prev.mode != c.mode:
					p.errorf(it.Pos, fmt.Sprintf("line %d protects it with %s; one field gets one key and one mode", prev.sel.pos.Line, prev.describe()), "field %s is protected twice with different keys or modes on route %q", it.Value, r.Name)
				case prev.nulls != c.nulls:
					p.errorf(it.Pos, fmt.Sprintf("line %d says nulls: %s", prev.sel.pos.Line, prev.nulls), "field %s is protected twice with different nulls settings on route %q", it.Value, r.Name)
				case prev.leaves != c.leaves:
					p.errorf(it.Pos, fmt.Sprintf("line %d says leaves: %s", prev.sel.pos.Line, prev.leaves), "field %s is protected twice with different leaves settings on route %q", it.Value, r.Name)
				default:
					p.warnf(it.Pos, "remove one of them", "field %s is listed twice on route %q (first on line %d)", it.Value, r.Name, prev.sel.pos.Line)
				}
				continue
			}
			byCanon[canon] = c
			claims = append(claims, c)
		}
	}
	// Overlaps between different selectors with different protection.
	for i, a := range claims {
		for _, b := range claims[i+1:] {
			if a.key == b.key && a.mode == b.mode {
				continue
			}
			// Nesting is reported only when one selector plainly extends
			// the other ($.patient and $.patient.ssn): "$..diagnosis could
			// sit inside $.email" is true of JSON in general and of no
			// real document, and would drown the real warnings.
			switch {
			case selectorOverlap(a.sel.sel, b.sel.sel) == overlapSame:
				p.warnf(b.sel.pos, fmt.Sprintf("a value both select is sealed by the first rule (%s, line %d); give both the same key and mode, or make the selectors disjoint", a.describe(), a.sel.pos.Line),
					"selector %s (%s) overlaps %s (%s)", b.sel.sel, b.describe(), a.sel.sel, a.describe())
			case stepsExtend(b.sel.sel, a.sel.sel):
				p.warnf(b.sel.pos, fmt.Sprintf("%s seals the enclosing value whole (%s, line %d), so this rule never applies", a.sel.sel, a.describe(), a.sel.pos.Line),
					"selector %s (%s) lies inside %s (%s)", b.sel.sel, b.describe(), a.sel.sel, a.describe())
			case stepsExtend(a.sel.sel, b.sel.sel):
				p.warnf(a.sel.pos, fmt.Sprintf("%s seals the enclosing value whole (%s, line %d), so this rule never applies", b.sel.sel, b.describe(), b.sel.pos.Line),
					"selector %s (%s) lies inside %s (%s)", a.sel.sel, a.describe(), b.sel.sel, b.describe())
			}
		}
	}
}

func (p *parser) validateQuery(r *RouteSpec, usedKeys map[string]bool) {
	type claim struct {
		key, mode string
		pos       Pos
	}
	byParam := map[string]claim{}
	for _, q := range r.Query {
		keyOK := p.checkKey(q.Key, "query")
		modeOK := p.checkMode(q.Mode)
		if keyOK {
			usedKeys[q.Key.Value] = true
		}
		mode := q.Mode.Value
		if mode == "" {
			mode = "random"
		}
		if modeOK && mode == "random" && len(q.Params) > 0 {
			pos := q.Mode.Pos
			if pos.Line == 0 {
				pos = q.Pos
			}
			p.warnf(pos, "a random token never equals the stored one, so a lookup by this parameter finds nothing; use mode: deterministic for parameters that are searched on", "query parameters under random mode cannot match stored data")
		}
		for _, it := range q.Params {
			if it.Value == "" {
				p.errorf(it.Pos, "", "empty query parameter name")
				continue
			}
			if !keyOK || !modeOK {
				continue
			}
			c := claim{q.Key.Value, mode, it.Pos}
			if prev, dup := byParam[it.Value]; dup {
				if prev.key != c.key || prev.mode != c.mode {
					p.errorf(it.Pos, fmt.Sprintf("line %d protects it with key %s, %s", prev.pos.Line, prev.key, prev.mode), "query parameter %q is protected twice with different keys or modes on route %q", it.Value, r.Name)
				} else {
					p.warnf(it.Pos, "remove one of them", "query parameter %q is listed twice on route %q", it.Value, r.Name)
				}
				continue
			}
			byParam[it.Value] = c
		}
	}
}

// routeWarnings: routes that can match nothing, protect nothing, or carry
// body rules where no body comes.
func (p *parser) routeWarnings(r *RouteSpec) {
	name := r.Name
	switch {
	case len(r.Methods) == 0 && len(r.Paths) == 0:
		p.warnf(r.Pos, `add match: {methods: [POST], paths: ["/db/_bulk_docs"]}`, "route %q has no methods and no paths, so it matches nothing", name)
	case len(r.Methods) == 0:
		p.warnf(r.Pos, `add methods: [POST, PUT], or methods: ["*"] for any`, "route %q has no methods, so it matches nothing", name)
	case len(r.Paths) == 0:
		p.warnf(r.Pos, `add paths: ["/db/**"]`, "route %q has no paths, so it matches nothing", name)
	}
	if len(r.Encrypt) == 0 && len(r.Query) == 0 {
		p.warnf(r.Pos, "requests it matches pass through unprotected, and later routes never see them; add encrypt or query rules, or remove the route", "route %q protects nothing", name)
	}
	if len(r.Encrypt) > 0 && len(r.Methods) > 0 {
		bodyless := true
		for _, m := range r.Methods {
			if m.Value != "GET" && m.Value != "HEAD" {
				bodyless = false
			}
		}
		if bodyless {
			p.warnf(r.Pos, "GET and HEAD requests carry no body; protect the query with query rules, or add the methods that send bodies", "route %q has encrypt rules but matches only GET/HEAD", name)
		}
	}
}

// shadowWarnings: a route that every request reaching it would already
// have matched on an earlier route never applies.
func (p *parser) shadowWarnings(doc *Document) {
	for j, later := range doc.Routes {
		if later.broken || len(later.Methods) == 0 || len(later.paths) == 0 {
			continue
		}
		for _, earlier := range doc.Routes[:j] {
			if earlier.broken {
				continue // its real extent is unknown
			}
			if routeCovers(earlier, later) {
				p.warnf(later.Pos, fmt.Sprintf("the first matching route wins: move %q above %q, or narrow %q", later.Name, earlier.Name, earlier.Name),
					"route %q is shadowed by route %q (line %d): every request it matches goes to that route", later.Name, earlier.Name, earlier.Pos.Line)
				break
			}
		}
	}
}

func routeCovers(a, b *RouteSpec) bool {
	// Methods.
	aAny := false
	for _, m := range a.Methods {
		if m.Value == "*" {
			aAny = true
		}
	}
	if !aAny {
		if len(a.Methods) == 0 {
			return false
		}
		for _, bm := range b.Methods {
			found := false
			for _, am := range a.Methods {
				if am.Value == bm.Value || am.Value == "GET" && bm.Value == "HEAD" {
					found = true
				}
			}
			if !found {
				return false
			}
		}
	}
	// Hosts: a must match every host b matches.
	if len(a.hosts) > 0 {
		if len(b.hosts) == 0 {
			return false
		}
		for i := range b.hosts {
			found := false
			for k := range a.hosts {
				if a.hosts[k].covers(&b.hosts[i]) {
					found = true
				}
			}
			if !found {
				return false
			}
		}
	}
	// Paths: each of b's patterns inside one of a's.
	for i := range b.paths {
		found := false
		for k := range a.paths {
			if a.paths[k].covers(&b.paths[i]) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (p *parser) validateDecrypt(doc *Document, usedKeys map[string]bool) {
	dec := doc.Decrypt
	open := map[string]Pos{}
	for _, k := range dec.Keys {
		if !p.checkKey(k, "decrypt.keys") {
			continue
		}
		if _, dup := open[k.Value]; dup {
			p.warnf(k.Pos, "", "key %q is listed twice in decrypt.keys", k.Value)
			continue
		}
		open[k.Value] = k.Pos
		if !usedKeys[k.Value] {
			p.warnf(k.Pos, "if another service writes these tokens this is intended; otherwise remove it: a sidecar should open only the keys it needs", "decrypt key %q is not used by any rule in this file", k.Value)
		}
	}
	for _, m := range dec.Mask {
		if !p.checkKey(m.Key, "decrypt.mask") {
			continue
		}
		if pos, both := open[m.Key.Value]; both {
			p.errorf(m.Key.Pos, fmt.Sprintf("decrypt.keys opens it (line %d); remove it there to show it masked, or remove the mask to show it in clear", pos.Line), "key %q is both opened and masked", m.Key.Value)
		}
		if !contains(maskNames, m.Mask.Value) {
			if s := didYouMean(m.Mask.Value, maskNames); s != "" {
				p.warnf(m.Mask.Pos, fmt.Sprintf("did you mean %q? Anything other than full, last4 and hash is shown as it is written", s), "mask %q for key %q is taken as literal text", m.Mask.Value, m.Key.Value)
			}
		}
		if !usedKeys[m.Key.Value] {
			p.warnf(m.Key.Pos, "if another service writes these tokens this is intended; otherwise remove it", "masked key %q is not used by any rule in this file", m.Key.Value)
		}
	}
}

// fieldName is the name a deterministic value is looked up by: the last
// member name of its selector, passing over query operators ($eq, $in)
// and array steps, so that $.docs[*].email, $.selector.email.$eq and the
// query parameter email all count as "email".
func fieldName(sel fieldcrypt.Selector) string {
	steps := sel.Steps()
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		if st.Kind == fieldcrypt.StepMember && !strings.HasPrefix(st.Name, "$") {
			return st.Name
		}
	}
	return ""
}

// lookupWarnings: a field that is deterministic in one place (searched,
// or written to be searched) and under another key or mode elsewhere
// cannot be found: the tokens differ.
func (p *parser) lookupWarnings(doc *Document) {
	type use struct {
		key, mode, route string
		pos              Pos
	}
	var names []string
	uses := map[string][]use{}
	add := func(name string, u use) {
		if name == "" {
			return
		}
		if u.mode == "" {
			u.mode = "random"
		}
		if uses[name] == nil {
			names = append(names, name)
		}
		uses[name] = append(uses[name], u)
	}
	for _, r := range doc.Routes {
		if r.broken {
			continue
		}
		for _, f := range r.Encrypt {
			for _, s := range f.selectors {
				add(fieldName(s.sel), use{f.Key.Value, f.Mode.Value, r.Name, s.pos})
			}
		}
		for _, q := range r.Query {
			for _, prm := range q.Params {
				add(prm.Value, use{q.Key.Value, q.Mode.Value, r.Name, prm.Pos})
			}
		}
	}
	for _, name := range names {
		var det *use
		for i, u := range uses[name] {
			if u.mode == "deterministic" {
				det = &uses[name][i]
				break
			}
		}
		if det == nil {
			continue
		}
		for _, u := range uses[name] {
			if u.route != det.route && (u.key != det.key || u.mode != det.mode) {
				p.warnf(u.pos, "give every rule that writes or searches this field the same key and mode",
					"%q is deterministic under key %s on route %q (line %d), but %s under key %s on route %q: lookups through one will not find values written through the other",
					name, det.key, det.route, det.pos.Line, u.mode, u.key, u.route)
				break
			}
		}
	}
}
