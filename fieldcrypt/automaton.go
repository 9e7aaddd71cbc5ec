package fieldcrypt

// The selectors of an Encryptor are compiled into one nondeterministic
// automaton that runs alongside the scanner. A state is "the next path
// element must match step i of selector r"; the set of live states is kept
// per nesting level (in an arena that grows with depth, reused across
// calls). On each object member or array element the scanner asks for the
// next set; an empty set means no selector can reach anything below, and
// the scanner skips that value at full speed.
//
// The meaning is that of Selector.Matches (matchSteps), which the tests
// check the automaton against.

type autoStep struct {
	kind  StepKind
	desc  bool   // ..name: the state stays alive at every depth below
	arr   bool   // ThroughArrays: the state stays alive inside arrays
	last  bool   // matching this step selects the value
	rule  int32  // index of the rule the step belongs to
	index int    // StepIndex
	name  string // StepMember
}

type automaton struct {
	steps   []autoStep
	roots   []int32 // the states at the document root: each selector's first step
	maxName int     // the longest member name, in bytes
}

func compileAutomaton(sels []Selector) *automaton {
	a := &automaton{}
	for r, sel := range sels {
		a.roots = append(a.roots, int32(len(a.steps)))
		for i, st := range sel.steps {
			a.steps = append(a.steps, autoStep{
				kind:  st.Kind,
				desc:  st.Descendant,
				arr:   st.ThroughArrays,
				last:  i == len(sel.steps)-1,
				rule:  int32(r),
				index: st.Index,
				name:  st.Name,
			})
			if len(st.Name) > a.maxName {
				a.maxName = len(st.Name)
			}
		}
	}
	return a
}

// stepper computes transitions with reusable scratch. seen de-duplicates
// states within one transition by generation number.
type stepper struct {
	a    *automaton
	seen []uint32
	gen  uint32
}

func (sp *stepper) reset(a *automaton) {
	sp.a = a
	if cap(sp.seen) < len(a.steps) {
		sp.seen = make([]uint32, len(a.steps))
	}
	sp.seen = sp.seen[:len(a.steps)]
	clear(sp.seen)
	sp.gen = 0
}

// next appends to dst the states that follow from states on one path
// element: a member named name (isIndex false; name nil means a name too
// long to match any step) or the array element index. It returns the
// lowest rule whose selector ends here (-1 if none) and whether some state
// advanced past a member or wildcard step on a member name (the key must
// then be checked for duplicates).
func (sp *stepper) next(dst, states []int32, name []byte, nameOK bool, index int, isIndex bool) (out []int32, match int32, advanced bool) {
	sp.gen++
	if sp.gen == 0 {
		clear(sp.seen)
		sp.gen = 1
	}
	match = -1
	steps := sp.a.steps
	for _, s := range states {
		st := &steps[s]
		if (st.desc || st.arr && isIndex) && sp.seen[s] != sp.gen {
			sp.seen[s] = sp.gen
			dst = append(dst, s)
		}
		var ok bool
		switch st.kind {
		case StepMember:
			ok = !isIndex && nameOK && string(name) == st.name
		case StepIndex:
			ok = isIndex && index == st.index
		case StepWildcard:
			ok = true
		}
		if !ok {
			continue
		}
		if !isIndex {
			advanced = true
		}
		if st.last {
			if match < 0 || st.rule < match {
				match = st.rule
			}
			continue
		}
		if n := s + 1; sp.seen[n] != sp.gen {
			sp.seen[n] = sp.gen
			dst = append(dst, n)
		}
	}
	return dst, match, advanced
}
