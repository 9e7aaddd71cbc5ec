package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Describe renders the plan as stable, readable text: each route with its
// matchers and what it protects under which key and mode, then the decrypt
// policy. The golden tests compare it, and `sidecrypt rules lint --plan`
// prints it for a reviewer.
func (p *Plan) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules %s (%s)\n", p.Hash, p.Source)
	if p.Schema != nil {
		p.describeSchema(&b)
	}
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
	p.describeDecrypt(&b)
	return b.String()
}

func (p *Plan) describeDecrypt(b *strings.Builder) {
	b.WriteString("decrypt:\n")
	fmt.Fprintf(b, "  open: %s\n", listOr(p.DecryptKeys, "none"))
	if len(p.MaskKeys) == 0 {
		b.WriteString("  mask: none\n")
	}
	for _, k := range p.MaskKeys {
		fmt.Fprintf(b, "  mask: %s -> %s\n", k, p.masks[k])
	}
	b.WriteString("  any other key: left as a token\n")
}

// describeSchema renders a version 2 plan: the datastore, each collection
// with its fields, policies and views, and the server-wide operations.
func (p *Plan) describeSchema(b *strings.Builder) {
	s := p.Schema
	fmt.Fprintf(b, "version 2, datastore %s\n", s.Datastore)
	fmt.Fprintf(b, "hosts: %s\n", listOr(s.Hosts, "any (forward mode treats every host as the datastore)"))
	for _, c := range s.Collections {
		fmt.Fprintf(b, "collection %s (line %d)\n", c.Name, c.Line)
		if len(c.Fields) == 0 {
			b.WriteString("  fields: none\n")
		} else {
			b.WriteString("  fields:\n")
		}
		for _, f := range c.Fields {
			fmt.Fprintf(b, "    %s -> %s\n", describeDocField(f), describeField(f.Key, f.Mode, f.EncryptNull))
			if len(f.Tags) > 0 || f.Owner != "" {
				var extra []string
				if len(f.Tags) > 0 {
					extra = append(extra, "tags "+strings.Join(f.Tags, ", "))
				}
				if f.Owner != "" {
					extra = append(extra, fmt.Sprintf("owner %q", f.Owner))
				}
				fmt.Fprintf(b, "      %s\n", strings.Join(extra, "; "))
			}
		}
		fmt.Fprintf(b, "  attachments: %s\n", c.Attachments)
		fmt.Fprintf(b, "  design documents: %s\n", c.DesignDocs)
		for _, name := range sortedViews(c) {
			fmt.Fprintf(b, "  view %s: key %s\n", name, describeViewKey(c.Views[name]))
		}
	}
	ops, _ := datastore.Operations(s.Datastore)
	var refused []string
	for _, op := range ops {
		if !s.Allows(op) {
			refused = append(refused, op)
		}
	}
	fmt.Fprintf(b, "server operations allowed: %s\n", listOr(s.Allow, "none"))
	fmt.Fprintf(b, "server operations refused: %s\n", listOr(refused, "none"))
}

// describeDocField names a version 2 field with where it applies.
func describeDocField(f *datastore.Field) string {
	if f.AnyDepth {
		return f.Name + " (any depth)"
	}
	return f.Name
}

func describeViewKey(k datastore.ViewKey) string {
	if k.Array {
		return "[" + strings.Join(k.Fields, ", ") + "]"
	}
	return strings.Join(k.Fields, "")
}

func sortedViews(c *datastore.Collection) []string {
	names := make([]string, 0, len(c.Views))
	for n := range c.Views {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
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
