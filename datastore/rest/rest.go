package rest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Name is the profile's name in rule files (datastore: rest).
const Name = "rest"

func init() {
	// A JSON REST store has no server-wide operations that move data
	// between collections.
	datastore.Register(Name, New)
}

// Profile is the REST profile. It is immutable and safe for concurrent
// use.
type Profile struct {
	schema *datastore.Schema
	cols   []*collection
	// resp holds the bound response decryptors (response.go), built on
	// first use: the decrypt policy is filled in after the profile.
	resp responseCache
}

type collection struct {
	*datastore.Collection
	// pattern is the collection's path prefix, lower case, with a
	// leading '/' and no trailing one.
	pattern string
	// enc encrypts a document written to the collection.
	enc *fieldcrypt.Encryptor
	// keys are all the keys the collection seals with; searchKeys those
	// of its searchable fields.
	keys, searchKeys []string
}

// New builds the REST profile for s.
func New(s *datastore.Schema) (datastore.Profile, error) {
	p := &Profile{schema: s}
	if s == nil {
		return p, nil
	}
	for _, c := range s.Collections {
		cc, err := compile(c)
		if err != nil {
			return nil, err
		}
		p.cols = append(p.cols, cc)
	}
	return p, nil
}

func compile(c *datastore.Collection) (*collection, error) {
	pat := strings.ToLower(c.Name)
	if !strings.HasPrefix(pat, "/") {
		pat = "/" + pat
	}
	pat = strings.TrimSuffix(pat, "/")
	if pat == "" {
		return nil, fmt.Errorf("rest: collection %q: a path prefix cannot be the root", c.Name)
	}
	cc := &collection{Collection: c, pattern: pat, keys: c.Keys()}
	for _, f := range c.Fields {
		if searchable(f) && !slices.Contains(cc.searchKeys, f.Key) {
			cc.searchKeys = append(cc.searchKeys, f.Key)
		}
	}
	slices.Sort(cc.searchKeys)
	rules, err := c.DocumentRules()
	if err != nil {
		return nil, fmt.Errorf("rest: collection %q: %w", c.Name, err)
	}
	// json-server (lodash get) reads a filter "card.number" from a member
	// literally named "card.number" when a record has one, so a dotted
	// path also protects that member.
	for _, f := range c.Fields {
		if f.AnyDepth || len(f.Path) < 2 {
			continue
		}
		sel, err := fieldcrypt.NewSelector([]fieldcrypt.Step{{Kind: fieldcrypt.StepMember, Name: strings.Join(f.Path, "."), ThroughArrays: true}})
		if err != nil {
			return nil, fmt.Errorf("rest: collection %q: field %q: %w", c.Name, f.Name, err)
		}
		rules = append(rules, fieldcrypt.FieldRule{Selector: sel, Key: f.Key, Mode: f.Mode, EncryptNull: f.EncryptNull, Pad: f.Pad})
	}
	if cc.enc, err = fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{}); err != nil {
		return nil, fmt.Errorf("rest: collection %q: %w", c.Name, err)
	}
	return cc, nil
}

// Name implements datastore.Profile.
func (p *Profile) Name() string { return Name }

func searchable(f *datastore.Field) bool {
	return f.Searchable && f.Mode == fieldcrypt.ModeDeterministic
}

var (
	_ datastore.Profile   = (*Profile)(nil)
	_ datastore.Describer = (*Profile)(nil)
)
