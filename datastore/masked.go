package datastore

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Masked values written back (issue 19). An app that is shown a field
// masked ("***1111") and saves the record again sends the mask where the
// value was. Encrypted as it stands, the mask would replace the real value
// for good. The rule: a value in a masked field that equals what the mask
// shows for the value stored at the same place, in the revision the write
// names, is kept as the stored token; any other value is new data and is
// encrypted as usual. Profiles find the documents and their stored
// revisions; this file does the comparison, the same for every datastore.

// MaskCandidate is a value in a document being written that may be a mask
// written back: a protected field of a masked key whose value could be
// what the mask shows.
type MaskCandidate struct {
	Node  *jsontree.Node
	Path  []PathStep // from the document's root, array positions included
	Field *Field
}

// PathStep is one step of a concrete path: a member name or an index.
type PathStep struct {
	Name    string
	Index   int
	IsIndex bool
}

// MaskCandidates lists the candidates in one document. It returns none
// when env masks no key of the collection, so that a write without masked
// values costs a walk of the document and no datastore read.
func (c *Collection) MaskCandidates(doc *jsontree.Node, env *WriteEnv) []MaskCandidate {
	if env == nil || env.Masked == nil || env.Candidate == nil || doc == nil {
		return nil
	}
	any := false
	for _, f := range c.Fields {
		if env.Masked(f.Key) {
			any = true
			break
		}
	}
	if !any {
		return nil
	}
	var out []MaskCandidate
	var walk func(n *jsontree.Node, names []string, path []PathStep)
	walk = func(n *jsontree.Node, names []string, path []PathStep) {
		switch n.Kind {
		case jsontree.Object:
			for _, m := range n.Members {
				sub := append(names[:len(names):len(names)], m.Name)
				p := append(path[:len(path):len(path)], PathStep{Name: m.Name})
				f, inside := c.FieldAt(sub)
				if f != nil && !inside {
					// Sealed whole here: nothing below it is compared
					// on its own.
					if env.Masked(f.Key) && env.Candidate(f.Key, m.Value.Raw()) {
						out = append(out, MaskCandidate{Node: m.Value, Path: p, Field: f})
					}
					continue
				}
				walk(m.Value, sub, p)
			}
		case jsontree.Array:
			for i, e := range n.Elems {
				walk(e, names, append(path[:len(path):len(path)], PathStep{Index: i, IsIndex: true}))
			}
		}
	}
	walk(doc, nil, nil)
	return out
}

// PreserveMasked replaces each candidate whose value equals what the mask
// shows for the token stored at the same path of stored by that token. It
// returns how many it kept. A candidate with no token at its place in the
// stored document, or whose shown value differs, is left as new data.
func PreserveMasked(ctx context.Context, cands []MaskCandidate, stored *jsontree.Node, env *WriteEnv) int {
	kept := 0
	for _, cand := range cands {
		at := lookup(stored, cand.Path)
		if at == nil || at.Kind != jsontree.String {
			continue
		}
		tok, ok := at.Text()
		if !ok || !isTokenText(tok) {
			continue
		}
		// The token must be one this field holds: the field's key (a
		// token of another key pasted there earlier is not kept).
		info, err := fieldcrypt.ParseTokenInfo([]byte(tok))
		if err != nil || info.Key != cand.Field.Key || info.Mode != cand.Field.Mode {
			continue
		}
		shown, ok := env.Shown(ctx, []byte(tok))
		if !ok || !sameJSON(shown, cand.Node.Raw()) {
			continue
		}
		cand.Node.Replace(jsontree.String, bytes.Clone(at.Raw()))
		kept++
	}
	return kept
}

func lookup(n *jsontree.Node, path []PathStep) *jsontree.Node {
	for _, s := range path {
		if n == nil {
			return nil
		}
		if s.IsIndex {
			if n.Kind != jsontree.Array || s.Index >= len(n.Elems) {
				return nil
			}
			n = n.Elems[s.Index]
			continue
		}
		if n.Kind != jsontree.Object {
			return nil
		}
		n = n.Get(s.Name)
	}
	return n
}

func isTokenText(s string) bool {
	return strings.HasPrefix(s, "sc1.") || strings.HasPrefix(s, "sc2.")
}

// sameJSON compares two JSON texts as values (a string however it is
// escaped, numbers by their text).
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// ParseDocument parses a request body for a Preserve hook, with the same
// limits as every profile.
func ParseDocument(body []byte) (*jsontree.Node, error) {
	return jsontree.Parse(body, fieldcrypt.DefaultMaxDepth)
}
