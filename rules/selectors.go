package rules

import (
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// selectorAt is a parsed selector and where it was written.
type selectorAt struct {
	sel fieldcrypt.Selector
	pos Pos
}

// canonical renders a selector's steps in one spelling, so that "$.a" and
// "$['a']" are recognised as the same field.
func canonical(s fieldcrypt.Selector) string {
	var b strings.Builder
	b.WriteByte('$')
	for _, st := range s.Steps() {
		if st.Descendant {
			b.WriteByte('.')
			if st.Kind == fieldcrypt.StepMember && !strings.HasPrefix(fieldcrypt.FormatPath([]fieldcrypt.PathElem{{Name: st.Name}}), "$.") {
				b.WriteByte('.') // ..['a b']
			}
		}
		switch st.Kind {
		case fieldcrypt.StepWildcard:
			b.WriteString("[*]")
		case fieldcrypt.StepIndex:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(st.Index))
			b.WriteByte(']')
		case fieldcrypt.StepMember:
			b.WriteString(fieldcrypt.FormatPath([]fieldcrypt.PathElem{{Name: st.Name}})[1:])
		}
	}
	return b.String()
}

// overlap says how two selectors can select the same data.
type overlap uint8

const (
	overlapNone   overlap = iota
	overlapSame           // some value is selected by both
	overlapInside         // some value selected by b lies inside one selected by a
)

// selectorOverlap decides whether a and b can select the same value, or
// whether b can select a value nested inside one a selects. Selectors are
// regular languages over path elements; this explores the product of their
// automata (at most 65×65 states), so it is exact.
func selectorOverlap(a, b fieldcrypt.Selector) overlap {
	as, bs := a.Steps(), b.Steps()
	type state struct{ i, j int }
	seen := make(map[state]bool)
	stack := []state{{0, 0}}
	inside := false
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[s] {
			continue
		}
		seen[s] = true
		if s.i == len(as) {
			if s.j == len(bs) {
				return overlapSame
			}
			inside = true // b continues below a value a selected
			continue
		}
		if s.j == len(bs) {
			continue // b selected an ancestor of a's value: reported from the other side
		}
		sa, sb := as[s.i], bs[s.j]
		// Moves of a on one path element: stay (descendant skip) or step.
		type move struct {
			next int
			step *fieldcrypt.Step // nil: any element (descendant skip)
		}
		var ma, mb [2]move
		na, nb := 0, 0
		if sa.Descendant {
			ma[na] = move{s.i, nil}
			na++
		}
		ma[na] = move{s.i + 1, &as[s.i]}
		na++
		if sb.Descendant {
			mb[nb] = move{s.j, nil}
			nb++
		}
		mb[nb] = move{s.j + 1, &bs[s.j]}
		nb++
		for _, x := range ma[:na] {
			for _, y := range mb[:nb] {
				if compatible(x.step, y.step) {
					stack = append(stack, state{x.next, y.next})
				}
			}
		}
	}
	if inside {
		return overlapInside
	}
	return overlapNone
}

// compatible reports whether one path element can satisfy both steps
// (nil stands for "any element").
func compatible(a, b *fieldcrypt.Step) bool {
	if a == nil || b == nil || a.Kind == fieldcrypt.StepWildcard || b.Kind == fieldcrypt.StepWildcard {
		return true
	}
	if a.Kind != b.Kind {
		return false
	}
	if a.Kind == fieldcrypt.StepMember {
		return a.Name == b.Name
	}
	return a.Index == b.Index
}

// stepsExtend reports whether inner's steps begin with all of outer's and
// go further: inner names something inside what outer names.
func stepsExtend(inner, outer fieldcrypt.Selector) bool {
	is, os := inner.Steps(), outer.Steps()
	if len(is) <= len(os) {
		return false
	}
	for i := range os {
		if is[i] != os[i] {
			return false
		}
	}
	return true
}
