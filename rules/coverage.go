package rules

import (
	"slices"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Coverage decisions for reviews: does a set of selectors protect every
// value another selector protects? `rules diff` answers it itself, so
// that a reviewer is told "still protected by $..ssn" or "NO LONGER
// protected", never asked to work it out.
//
// A selector is a regular language over paths (sequences of member names
// and array indices). A value is protected by a set of selectors when
// one of them selects the value itself or one of its ancestors (then the
// value travels inside a sealed one). So f is covered by gs when every
// path f selects has a prefix that some g selects. The check runs f's
// automaton against the subset construction of the union of gs, over an
// alphabet reduced to the names and indices the selectors mention plus
// "any other name" and "any other index"; both are finite, so it is
// exact and terminates.

// pathSym is one symbol of the reduced alphabet.
type pathSym struct {
	name  string
	index int
	isIdx bool
}

// otherName stands for every member name no selector mentions. No JSON
// member name the selectors compare with can equal it: they are valid
// UTF-8 and this is not.
const otherName = "\xff"

func symMatches(st fieldcrypt.Step, e pathSym) bool {
	switch st.Kind {
	case fieldcrypt.StepMember:
		return !e.isIdx && e.name == st.Name
	case fieldcrypt.StepIndex:
		return e.isIdx && e.index == st.Index
	case fieldcrypt.StepWildcard:
		return true
	}
	return false
}

// nfaStep returns the states of a selector's automaton reachable from
// state i on element e. State len(steps) accepts.
func nfaStep(steps []fieldcrypt.Step, i int, e pathSym, out []int) []int {
	if i >= len(steps) {
		return out // nothing below an accepted value is selected again
	}
	st := steps[i]
	if st.Descendant {
		out = append(out, i) // skip any element
	} else if st.ThroughArrays && e.isIdx {
		out = append(out, i) // an array where the member was expected
	}
	if symMatches(st, e) {
		out = append(out, i+1)
	}
	return out
}

// coveredBy reports whether every value f selects is selected by one of
// gs, or lies inside a value one of them selects.
func coveredBy(f []fieldcrypt.Step, gs [][]fieldcrypt.Step) bool {
	if len(gs) == 0 {
		return len(f) == 0
	}
	// The alphabet.
	var syms []pathSym
	names := map[string]bool{}
	idx := map[int]bool{}
	collect := func(steps []fieldcrypt.Step) {
		for _, st := range steps {
			switch st.Kind {
			case fieldcrypt.StepMember:
				if !names[st.Name] {
					names[st.Name] = true
					syms = append(syms, pathSym{name: st.Name})
				}
			case fieldcrypt.StepIndex:
				if !idx[st.Index] {
					idx[st.Index] = true
					syms = append(syms, pathSym{index: st.Index, isIdx: true})
				}
			}
		}
	}
	collect(f)
	for _, g := range gs {
		collect(g)
	}
	syms = append(syms, pathSym{name: otherName}, pathSym{index: -1, isIdx: true})

	// A state of the product: f's states and, for each g, its states.
	type gstate struct{ g, i int }
	type node struct {
		fs []int
		gs []gstate
	}
	key := func(n node) string {
		var b strings.Builder
		for _, s := range n.fs {
			b.WriteString(strconv.Itoa(s))
			b.WriteByte(',')
		}
		b.WriteByte('|')
		for _, s := range n.gs {
			b.WriteString(strconv.Itoa(s.g))
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(s.i))
			b.WriteByte(',')
		}
		return b.String()
	}
	start := node{fs: []int{0}}
	for g := range gs {
		start.gs = append(start.gs, gstate{g, 0})
	}
	seen := map[string]bool{key(start): true}
	queue := []node{start}
	var buf []int
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if slices.ContainsFunc(n.gs, func(s gstate) bool { return s.i == len(gs[s.g]) }) {
			continue // a g selected this path: all below is inside it
		}
		if slices.Contains(n.fs, len(f)) {
			return false // f selects a value no g reaches
		}
		for _, e := range syms {
			var next node
			for _, s := range n.fs {
				buf = nfaStep(f, s, e, buf[:0])
				for _, t := range buf {
					if !slices.Contains(next.fs, t) {
						next.fs = append(next.fs, t)
					}
				}
			}
			if len(next.fs) == 0 {
				continue // f selects nothing below here
			}
			for _, s := range n.gs {
				buf = nfaStep(gs[s.g], s.i, e, buf[:0])
				for _, t := range buf {
					gt := gstate{s.g, t}
					if !slices.Contains(next.gs, gt) {
						next.gs = append(next.gs, gt)
					}
				}
			}
			slices.Sort(next.fs)
			slices.SortFunc(next.gs, func(a, b gstate) int {
				if a.g != b.g {
					return a.g - b.g
				}
				return a.i - b.i
			})
			k := key(next)
			if !seen[k] {
				seen[k] = true
				queue = append(queue, next)
			}
		}
	}
	return true
}

// selectorSteps returns the steps of field rules' selectors.
func selectorSteps(rules []fieldcrypt.FieldRule) [][]fieldcrypt.Step {
	out := make([][]fieldcrypt.Step, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.Selector.Steps())
	}
	return out
}
