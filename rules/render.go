package rules

import (
	"fmt"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Describe renders the plan as stable, readable text: each route with its
// matchers and what it protects under which key and mode, then the decrypt
// policy. The golden tests compare it, and `sidecrypt rules lint --plan`
// prints it for a reviewer.
func (p *Plan) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules %s (%s)\n", p.Hash, p.Source)
	for _, r := range p.Routes {
		fmt.Fprintf(&b, "route %s (line %d)\n", r.Name, r.Line)
		fmt.Fprintf(&b, "  methods: %s\n", listOr(r.Methods, "none (matches nothing)"))
		fmt.Fprintf(&b, "  paths:   %s\n", listOr(r.Paths, "none (matches nothing)"))
		fmt.Fprintf(&b, "  hosts:   %s\n", listOr(r.Hosts, "any"))
		if r.HasBodyRules() {
			fmt.Fprintf(&b, "  body (%s):\n", strings.Join(r.ContentTypes, ", "))
			for _, f := range r.Fields {
				fmt.Fprintf(&b, "    %s -> %s\n", f.Selector, describeRule(f))
			}
		}
		if r.HasQueryRules() {
			b.WriteString("  query:\n")
			for _, q := range r.Query {
				fmt.Fprintf(&b, "    %s -> %s\n", q.Param, describeField(q.Key, q.Mode, false))
			}
		}
		if !r.HasBodyRules() && !r.HasQueryRules() {
			b.WriteString("  protects nothing\n")
		}
	}
	b.WriteString("decrypt:\n")
	fmt.Fprintf(&b, "  open: %s\n", listOr(p.DecryptKeys, "none"))
	if len(p.MaskKeys) == 0 {
		b.WriteString("  mask: none\n")
	}
	for _, k := range p.MaskKeys {
		fmt.Fprintf(&b, "  mask: %s -> %s\n", k, p.masks[k])
	}
	b.WriteString("  any other key: left as a token\n")
	return b.String()
}

func describeField(key string, mode fieldcrypt.Mode, encryptNull bool) string {
	s := fmt.Sprintf("key %s, %s", key, mode)
	if encryptNull {
		s += ", nulls encrypted"
	}
	return s
}

// describeRule is describeField for a field rule, adding how containers
// are treated when that is not the default.
func describeRule(f fieldcrypt.FieldRule) string {
	s := describeField(f.Key, f.Mode, f.EncryptNull)
	if f.Leaves {
		s += ", each value inside on its own"
	}
	return s
}

func listOr(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, " ")
}

// MaskOf returns how the plan masks tokens of key, as written in the file
// ("full", "last4", "hash" or a quoted literal), and false if it does not
// mask that key.
func (p *Plan) MaskOf(key string) (string, bool) {
	m, ok := p.masks[key]
	if !ok {
		return "", false
	}
	return m.String(), true
}
