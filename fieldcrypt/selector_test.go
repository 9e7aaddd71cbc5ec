package fieldcrypt

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		text  string
		steps []Step
	}{
		{"$.ssn", []Step{{Kind: StepMember, Name: "ssn"}}},
		{"$.docs[*].ssn", []Step{{Kind: StepMember, Name: "docs"}, {Kind: StepWildcard}, {Kind: StepMember, Name: "ssn"}}},
		{"$..diagnosis", []Step{{Kind: StepMember, Name: "diagnosis", Descendant: true}}},
		{"$..['a b']", []Step{{Kind: StepMember, Name: "a b", Descendant: true}}},
		{"$.a.*", []Step{{Kind: StepMember, Name: "a"}, {Kind: StepWildcard}}},
		{"$.a[3]", []Step{{Kind: StepMember, Name: "a"}, {Kind: StepIndex, Index: 3}}},
		{"$['it''s']", nil}, // refused below
		{`$['it\'s']`, []Step{{Kind: StepMember, Name: "it's"}}},
		{`$['a\\b']`, []Step{{Kind: StepMember, Name: `a\b`}}},
		{"$.selector.email.$eq", []Step{{Kind: StepMember, Name: "selector"}, {Kind: StepMember, Name: "email"}, {Kind: StepMember, Name: "$eq"}}},
		{"$.naïve", []Step{{Kind: StepMember, Name: "naïve"}}},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			s, err := ParseSelector(tt.text)
			if tt.steps == nil {
				if err == nil {
					t.Fatalf("accepted: %+v", s.Steps())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != tt.text {
				t.Errorf("String() = %q", s.String())
			}
			got := s.Steps()
			if len(got) != len(tt.steps) {
				t.Fatalf("steps = %+v, want %+v", got, tt.steps)
			}
			for i := range got {
				if got[i] != tt.steps[i] {
					t.Errorf("step %d = %+v, want %+v", i, got[i], tt.steps[i])
				}
			}
		})
	}
}

func TestParseSelectorErrors(t *testing.T) {
	tests := []struct {
		text   string
		offset int
		msg    string
	}{
		{"", 0, "empty selector"},
		{"ssn", 0, `must start with "$"`},
		{"$", 0, "whole document"},
		{"$.", 1, `ends after "."`},
		{"$..*", 1, "every value"},
		{"$...a", 3, "three dots"},
		{"$.a[?(@.x)]", 4, "filters"},
		{"$.a[1:3]", 5, "slices"},
		{"$.a[-1]", 4, "negative"},
		{"$.a[01]", 4, "leading zero"},
		{`$.a["b"]`, 4, "double-quoted"},
		{"$['a", 1, "unclosed quoted"},
		{"$.a b", 3, "unexpected"},
		{"$a", 1, "unexpected"},
		{"$.[0]", 2, `after "."`},
		{"$..[0]", 1, "field name"},
		{"$.a[*", 5, `expected "]"`},
		{"$" + strings.Repeat(".a", MaxSelectorSteps+1), 1 + 2*MaxSelectorSteps, "steps"},
		{"$.\xff", 0, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			_, err := ParseSelector(tt.text)
			var se *SelectorError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *SelectorError", err)
			}
			if se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
				t.Errorf("offset %d msg %q, want %d and %q", se.Offset, se.Msg, tt.offset, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "fieldcrypt: selector ") {
				t.Errorf("error %q", err)
			}
		})
	}
}

func TestFormatPath(t *testing.T) {
	tests := []struct {
		path []PathElem
		want string
	}{
		{nil, "$"},
		{[]PathElem{{Name: "docs"}, {Index: 3, IsIndex: true}, {Name: "ssn"}}, "$.docs[3].ssn"},
		{[]PathElem{{Name: "a b"}}, "$['a b']"},
		{[]PathElem{{Name: "it's"}}, `$['it\'s']`},
		{[]PathElem{{Name: ""}}, "$['']"},
		{[]PathElem{{Name: "*"}}, "$['*']"},
		{[]PathElem{{Name: "$eq"}}, "$.$eq"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := FormatPath(tt.path); got != tt.want {
				t.Errorf("FormatPath = %s, want %s", got, tt.want)
			}
			// A formatted member path parses back to a selector that
			// matches exactly that path.
			if len(tt.path) > 0 {
				s, err := ParseSelector(tt.want)
				if err != nil {
					t.Fatal(err)
				}
				if !s.Matches(tt.path) {
					t.Errorf("%s does not match its own path", tt.want)
				}
			}
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	p := func(elems ...any) []PathElem {
		var out []PathElem
		for _, e := range elems {
			switch e := e.(type) {
			case string:
				out = append(out, PathElem{Name: e})
			case int:
				out = append(out, PathElem{Index: e, IsIndex: true})
			}
		}
		return out
	}
	tests := []struct {
		sel   string
		path  []PathElem
		match bool
	}{
		{"$.ssn", p("ssn"), true},
		{"$.ssn", p("a", "ssn"), false},
		{"$.docs[*].ssn", p("docs", 0, "ssn"), true},
		{"$.docs[*].ssn", p("docs", "x", "ssn"), true}, // [*] also ranges over members
		{"$.docs[*].ssn", p("docs", 0, "ssn", "x"), false},
		{"$..diagnosis", p("diagnosis"), true},
		{"$..diagnosis", p("a", 3, "b", "diagnosis"), true},
		{"$..diagnosis", p("a", "diagnosis", "b"), false},
		{"$.a..b.c", p("a", "x", "b", "c"), true},
		{"$.a..b.c", p("a", "b", "c"), true},
		{"$.a..b.c", p("b", "c"), false},
		{"$.a[1]", p("a", 1), true},
		{"$.a[1]", p("a", 0), false},
		{"$.a[1]", p("a", "1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.sel+" "+FormatPath(tt.path), func(t *testing.T) {
			if got := MustParseSelector(tt.sel).Matches(tt.path); got != tt.match {
				t.Errorf("Matches = %v", got)
			}
		})
	}
}

// The automaton must mean what Selector.Matches means: for random selector
// sets and random paths, walking the path through the automaton selects the
// path exactly when some selector matches it, and reports the first such
// rule.
func TestAutomatonAgreesWithMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "ssn"}
	randSel := func() Selector {
		var b strings.Builder
		b.WriteString("$")
		for n := 1 + rng.IntN(4); n > 0; n-- {
			switch rng.IntN(5) {
			case 0:
				b.WriteString("[*]")
			case 1:
				b.WriteString("[" + string(rune('0'+rng.IntN(2))) + "]")
			case 2:
				b.WriteString("..")
				b.WriteString(names[rng.IntN(len(names))])
			default:
				b.WriteString(".")
				b.WriteString(names[rng.IntN(len(names))])
			}
		}
		return MustParseSelector(b.String())
	}
	randPath := func() []PathElem {
		var path []PathElem
		for n := 1 + rng.IntN(6); n > 0; n-- {
			if rng.IntN(3) == 0 {
				path = append(path, PathElem{Index: rng.IntN(2), IsIndex: true})
			} else {
				path = append(path, PathElem{Name: names[rng.IntN(len(names))]})
			}
		}
		return path
	}
	for range 3000 {
		sels := make([]Selector, 1+rng.IntN(3))
		for i := range sels {
			sels[i] = randSel()
		}
		path := randPath()
		want := int32(-1)
		// The automaton stops at the first matched value on the way
		// down (a matched value is encrypted whole), so compare with the
		// shortest matching prefix.
		for l := 1; l <= len(path) && want < 0; l++ {
			for i, s := range sels {
				if s.Matches(path[:l]) {
					want = int32(i)
					path = path[:l]
					break
				}
			}
		}
		a := compileAutomaton(sels)
		var sp stepper
		sp.reset(a)
		states := append([]int32(nil), a.roots...)
		got := int32(-1)
		for i, e := range path {
			next, match, _ := sp.next(nil, states, []byte(e.Name), true, e.Index, e.IsIndex)
			if match >= 0 {
				if i != len(path)-1 {
					t.Fatalf("matched early at %d", i)
				}
				got = match
				break
			}
			states = next
		}
		if got != want {
			var texts []string
			for _, s := range sels {
				texts = append(texts, s.String())
			}
			t.Fatalf("selectors %v, path %s: automaton %d, Matches %d", texts, FormatPath(path), got, want)
		}
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"$.a", "$..b", "$['x y']", "$.a[*].b", "$.a[0]", `$['\'']`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseSelector(text)
		if err != nil {
			var se *SelectorError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(text) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if s.String() != text || len(s.Steps()) == 0 || len(s.Steps()) > MaxSelectorSteps {
			t.Fatalf("parsed %q into %+v", text, s.Steps())
		}
		// Its steps, as a concrete path where possible, must match.
		var path []PathElem
		for _, st := range s.Steps() {
			switch st.Kind {
			case StepMember:
				path = append(path, PathElem{Name: st.Name})
			case StepIndex:
				path = append(path, PathElem{Index: st.Index, IsIndex: true})
			case StepWildcard:
				path = append(path, PathElem{Name: "w"})
			}
		}
		if !s.Matches(path) {
			t.Fatalf("%q does not match its own path %s", text, FormatPath(path))
		}
	})
}
