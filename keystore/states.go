package keystore

import (
	"fmt"
	"strings"
)

// transitions lists, for each state, the states a version may move to
// (NIST SP 800-57 Part 1 Rev. 5, section 5.3 and figure 4). There is no way
// back to active: a deactivated or compromised key stays retired, and a
// destroyed one is gone.
var transitions = map[State][]State{
	StatePreActive:   {StateActive, StateCompromised, StateDestroyed},
	StateActive:      {StateDeactivated, StateCompromised},
	StateDeactivated: {StateCompromised, StateDestroyed},
	StateCompromised: {StateDestroyed},
	StateDestroyed:   nil,
}

// States lists every state in lifecycle order.
func States() []State {
	return []State{StatePreActive, StateActive, StateDeactivated, StateCompromised, StateDestroyed}
}

// AllowedTransitions returns the states a version in state from may move
// to, for help texts and docs.
func AllowedTransitions(from State) []State {
	return append([]State(nil), transitions[from]...)
}

// Valid reports whether s is one of the five states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// CanDecrypt reports whether a version in state s may open tokens without
// an override.
func (s State) CanDecrypt() bool { return s == StateActive || s == StateDeactivated }

// checkTransition returns nil if a version may go from one state to
// another, and otherwise an ErrTransition that lists what is allowed.
func checkTransition(name string, version uint32, from, to State) error {
	for _, s := range transitions[from] {
		if s == to {
			return nil
		}
	}
	allowed := "none: a destroyed version is final"
	if t := transitions[from]; len(t) > 0 {
		names := make([]string, len(t))
		for i, s := range t {
			names[i] = string(s)
		}
		allowed = strings.Join(names, ", ")
	}
	return fmt.Errorf("keystore: key %q v%d: %w: cannot go from %s to %s (allowed from %s: %s)",
		name, version, ErrTransition, from, to, from, allowed)
}
