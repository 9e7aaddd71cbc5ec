package couchdb

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Server-wide operations that the profile refuses unless a rule file's
// allow: list names them. Each can reach data outside the request's own
// database, or the datastore as a whole.
const (
	// OpReplicate: POST /_replicate and writes to the _replicator
	// database. A replication copies documents as they are stored, so
	// one from an unprotected database (or another server) writes
	// plaintext into a protected one.
	OpReplicate = "replicate"
	// OpConfig: writes under /_config and /_node/{node}/_config. The
	// configuration holds virtual hosts and rewrite settings that change
	// which database a request path reaches, and the query servers that
	// run design document code.
	OpConfig = "config"
	// OpRewrite: a design document's _rewrite handler, on any database.
	// pouchdb-server resolves "../" in a rewrite target, so a rewrite in
	// an unprotected database can forward the request (body included) to
	// a protected one. It also matches "/{db}/_design/{d}/_rewrite/"
	// anywhere in the URL, query string included. On a protected
	// database _rewrite is refused even when allowed.
	OpRewrite = "rewrite"
	// OpRestart: POST /_restart and /_node/{node}/_restart. Moves no
	// data; refused by default as any unknown server command is, and
	// allowed by name for operators who restart through the sidecar.
	OpRestart = "restart"
	// OpReshard: writes under /_reshard (CouchDB shard splitting).
	// Moves stored (encrypted) data between shards only; refused by
	// default, allowed by name.
	OpReshard = "reshard"
)

func init() {
	datastore.Register(Name, New, OpReplicate, OpConfig, OpRewrite, OpRestart, OpReshard)
}

// Name is the profile's name in rule files (datastore: couchdb).
const Name = "couchdb"

// Profile is the CouchDB 3 profile. It is immutable and safe for
// concurrent use.
type Profile struct {
	schema *datastore.Schema
	cols   map[*datastore.Collection]*collection
	// maxDepth bounds the nesting of the query documents the profile
	// parses itself (selectors, view keys).
	maxDepth int
	// resp holds the bound response decryptors (response.go), built on
	// first use: the rule file's decrypt policy is complete only once
	// the plan is.
	resp responseCache
}

// collection is a protected collection with what the profile compiles
// for it once: the document encryptors and the view plans.
type collection struct {
	*datastore.Collection
	// doc encrypts one document (PUT /{db}/{id}, POST /{db}, _local and
	// design documents); bulk encrypts $.docs[*] of _bulk_docs. Both
	// start with the Check rules that refuse inline attachments and
	// design document ids where the file refuses them. The operations
	// that use them check the body's shape first (shapes.go).
	doc, bulk *fieldcrypt.Encryptor
	// keys are all the keys the collection seals with; searchKeys those
	// of its searchable fields, which query transforms seal with.
	keys, searchKeys []string
	views            map[string]*viewPlan
	// pouchPattern is the collection's pattern as pouchdb-server's
	// database names read it.
	pouchPattern string
}

// New builds the CouchDB profile for s: one compiled plan per protected
// collection. It fails if a collection's fields do not compile into
// document rules.
func New(s *datastore.Schema) (datastore.Profile, error) {
	p := &Profile{schema: s, cols: make(map[*datastore.Collection]*collection), maxDepth: fieldcrypt.DefaultMaxDepth}
	if s == nil {
		return p, nil
	}
	for _, c := range s.Collections {
		cc, err := compile(c)
		if err != nil {
			return nil, err
		}
		p.cols[c] = cc
	}
	return p, nil
}

func compile(c *datastore.Collection) (*collection, error) {
	cc := &collection{Collection: c, keys: c.Keys(), pouchPattern: pouchPattern(c.Name)}
	for _, f := range c.Fields {
		if searchable(f) && !slices.Contains(cc.searchKeys, f.Key) {
			cc.searchKeys = append(cc.searchKeys, f.Key)
		}
	}
	slices.Sort(cc.searchKeys)

	var err error
	if cc.doc, err = documentEncryptor(c); err != nil {
		return nil, err
	}
	if cc.bulk, err = bulkEncryptor(c); err != nil {
		return nil, err
	}
	cc.views = make(map[string]*viewPlan, len(c.Views))
	for name, vk := range c.Views {
		cc.views[name] = newViewPlan(c, name, vk)
	}
	return cc, nil
}

// bulkEncryptor compiles the rules for a _bulk_docs body: each element of
// $.docs is a document, with the Check rules. The body's shape is checked
// before (bulkShape): an object whose documents are in docs only, so no
// other place needs rules.
func bulkEncryptor(c *datastore.Collection) (*fieldcrypt.Encryptor, error) {
	return documentEncryptor(c, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: "docs"}, fieldcrypt.Step{Kind: fieldcrypt.StepWildcard})
}

// documentEncryptor compiles the Check rules and the field rules for
// documents found at prefix. The Check rules come first: where a Check
// rule and a field rule select the same value, the lower index wins, and
// a refusal must not be lost to an encryption.
func documentEncryptor(c *datastore.Collection, prefix ...fieldcrypt.Step) (*fieldcrypt.Encryptor, error) {
	rules, err := documentRules(c, prefix...)
	if err != nil {
		return nil, err
	}
	enc, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		return nil, fmt.Errorf("couchdb: collection %q: %w", c.Name, err)
	}
	return enc, nil
}

func documentRules(c *datastore.Collection, prefix ...fieldcrypt.Step) ([]fieldcrypt.FieldRule, error) {
	var rules []fieldcrypt.FieldRule
	add := func(check func(fieldcrypt.Type, []byte) error, steps ...fieldcrypt.Step) error {
		sel, err := fieldcrypt.NewSelector(append(slices.Clone(prefix), steps...))
		if err != nil {
			return err
		}
		rules = append(rules, fieldcrypt.FieldRule{Selector: sel, Check: check})
		return nil
	}
	member := func(name string) fieldcrypt.Step { return fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: name} }
	every := fieldcrypt.Step{Kind: fieldcrypt.StepWildcard}
	if c.Attachments != datastore.PolicyAllow {
		// An inline attachment is base64 the sidecar cannot see into;
		// "follows" announces one in a multipart body. Stubs (only
		// metadata, "stub": true) are fine.
		if err := add(refuseInlineAttachment, member("_attachments"), every, member("data")); err != nil {
			return nil, fmt.Errorf("couchdb: collection %q: %w", c.Name, err)
		}
		if err := add(refuseFollows, member("_attachments"), every, member("follows")); err != nil {
			return nil, fmt.Errorf("couchdb: collection %q: %w", c.Name, err)
		}
	}
	if c.DesignDocs != datastore.PolicyAllow {
		// pouchdb-server takes a PUT's id from the body when it has one,
		// and POST /{db} and _bulk_docs always do: a body _id is how a
		// design document gets written through a document URL.
		if err := add(refuseDesignID, member("_id")); err != nil {
			return nil, fmt.Errorf("couchdb: collection %q: %w", c.Name, err)
		}
	}
	docRules, err := c.DocumentRules(prefix...)
	if err != nil {
		return nil, fmt.Errorf("couchdb: collection %q: %w", c.Name, err)
	}
	return append(rules, docRules...), nil
}

var (
	errInlineAttachment = datastore.Refuse("couchdb: a document carries an inline attachment (_attachments.*.data), which the sidecar cannot encrypt; the collection's attachments policy is refuse (attachment stubs are fine)")
	errFollows          = datastore.Refuse(`couchdb: a document announces a multipart attachment ("follows": true), which the sidecar cannot encrypt; the collection's attachments policy is refuse`)
	errDesignID         = datastore.Refuse("couchdb: a document's _id starts with _design/: design documents carry code that runs inside the datastore, and the collection's design_docs policy is refuse")
)

func refuseInlineAttachment(typ fieldcrypt.Type, _ []byte) error {
	if typ == fieldcrypt.TypeNull {
		return nil
	}
	return errInlineAttachment
}

func refuseFollows(typ fieldcrypt.Type, text []byte) error {
	if typ == fieldcrypt.TypeBool && string(text) == "true" {
		return errFollows
	}
	return nil
}

func refuseDesignID(typ fieldcrypt.Type, text []byte) error {
	if typ != fieldcrypt.TypeString {
		return nil
	}
	var id string
	if err := json.Unmarshal(text, &id); err != nil {
		return err
	}
	if strings.HasPrefix(id, "_design/") {
		return errDesignID
	}
	return nil
}

// Name implements datastore.Profile.
func (p *Profile) Name() string { return Name }

// match returns the protected collection a database segment names, in
// file order. A segment is protected when any reading of it names a
// protected database: its unescaped name; the name CouchDB reads with
// '+' as a space (chttpd's decode_plus_to_space, on by default); and the
// name pouchdb-server stores it under (pouchName), which is compared with
// the patterns read the same way.
func (p *Profile) match(seg segment) *collection {
	if p.schema == nil {
		return nil
	}
	names := []string{seg.name}
	if strings.IndexByte(seg.raw, '+') >= 0 {
		names = append(names, seg.plusName())
	}
	pouch := pouchName(seg.name)
	for _, c := range p.schema.Collections {
		cc := p.cols[c]
		for _, n := range names {
			if datastore.Glob(c.Name, n) {
				return cc
			}
		}
		if datastore.Glob(c.Name, pouch) || datastore.Glob(cc.pouchPattern, pouch) {
			return cc
		}
	}
	return nil
}

func searchable(f *datastore.Field) bool {
	return f.Searchable && f.Mode == fieldcrypt.ModeDeterministic
}

var (
	_ datastore.Profile   = (*Profile)(nil)
	_ datastore.Describer = (*Profile)(nil)
)
