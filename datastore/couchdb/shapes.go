package couchdb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Body shapes. A body the profile does not seal (ids, revisions,
// settings) is still read, member by member, before it is forwarded: each
// endpoint's body may hold only the members its API documents, with
// values of their types, and anything else is refused (400 bad_request).
// Otherwise whatever an application (or a user through it) put into an
// unexpected member would reach the datastore, and for _security and
// _revs_diff its answers or its store, in plaintext. The checks run as
// Operation.Check: after the proxy has validated the body as one JSON
// document for BodyJSON, before the encryptor for BodyEncrypt.

// checkFunc is an Operation.Check.
type checkFunc = func(body []byte) error

// treeCheck parses a validated BodyJSON body and hands it to f.
func (p *Profile) treeCheck(f func(root *jsontree.Node) error) checkFunc {
	return func(body []byte) error {
		root, err := jsontree.Parse(body, p.maxDepth)
		if err != nil {
			return fmt.Errorf("couchdb: request body: %w", err)
		}
		return f(root)
	}
}

// ---- documents ----

var errDocShape = datastore.BadRequest("couchdb: a document must be a JSON object; a body of another type (a string, an array, a number) would reach the datastore without its fields sealed")

// documentShape is the Check of a single-document write: the body is one
// object. Only its first byte is read; the encryptor validates the rest.
func documentShape(body []byte) error {
	i := skipSpace(body, 0)
	switch {
	case i == len(body) || !valueStart(body[i]):
		return fmt.Errorf("couchdb: document body: %w", fieldcrypt.ErrSyntax)
	case body[i] != '{':
		return errDocShape
	}
	return nil
}

// valueStart reports a byte that can start a JSON value. A body that
// starts with another (UTF-16 without a byte-order mark, say) is
// malformed, not of the wrong type.
func valueStart(c byte) bool {
	switch c {
	case '{', '[', '"', '-', 't', 'f', 'n':
		return true
	}
	return c >= '0' && c <= '9'
}

// ---- _bulk_docs ----

var errBulkShape = datastore.BadRequest(`couchdb: a _bulk_docs body must be an object with "docs" (an array of documents, each a JSON object) and optionally "new_edits" and "all_or_nothing" (booleans); fields are sealed in docs only, so a body of another shape is refused`)

// bulkShape is the Check of POST /{db}/_bulk_docs. It reads the top level
// of the body and the first byte of each element of docs, and skips every
// value by counting brackets outside strings: one pass with no tree, for
// bodies of megabytes. It needs no more: the encryptor reads the body
// fully right after it and refuses whatever is not one valid JSON
// document, and on a valid document this reading is exact.
func bulkShape(b []byte) error {
	i := skipSpace(b, 0)
	if i == len(b) || !valueStart(b[i]) {
		return bulkSyntax
	}
	if b[i] != '{' {
		return errBulkShape
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil // {}: no documents (both servers answer 400)
	}
	var seen uint8
	for {
		if i >= len(b) || b[i] != '"' {
			return bulkSyntax
		}
		end := skipString(b, i)
		if end < 0 {
			return bulkSyntax
		}
		name := b[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var s string
			if json.Unmarshal(b[i:end], &s) != nil {
				return bulkSyntax
			}
			name = []byte(s)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return bulkSyntax
		}
		i = skipSpace(b, i+1)
		var bit uint8
		var err error
		switch string(name) {
		case "docs":
			bit = 1
			i, err = bulkDocs(b, i)
		case "new_edits":
			bit = 2
			i, err = literalBool(b, i)
		case "all_or_nothing":
			bit = 4
			i, err = literalBool(b, i)
		default:
			return errBulkShape
		}
		if err != nil {
			return err
		}
		if seen&bit != 0 {
			return fmt.Errorf("couchdb: _bulk_docs body names a member twice: %w", fieldcrypt.ErrDuplicateKey)
		}
		seen |= bit
		i = skipSpace(b, i)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return nil
		default:
			return bulkSyntax
		}
	}
}

var bulkSyntax = fmt.Errorf("couchdb: _bulk_docs body: %w", fieldcrypt.ErrSyntax)

// bulkDocs reads docs's array at b[i] and returns the offset after it.
func bulkDocs(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '[' {
		return 0, errBulkShape
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || !valueStart(b[i]) {
			return 0, bulkSyntax
		}
		if b[i] != '{' {
			return 0, errBulkShape
		}
		end := skipContainer(b, i)
		if end < 0 {
			return 0, bulkSyntax
		}
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == ']':
			return i + 1, nil
		default:
			return 0, bulkSyntax
		}
	}
}

// literalBool reads true or false at b[i]; what follows is checked by the
// caller (a ',' or '}').
func literalBool(b []byte, i int) (int, error) {
	switch {
	case bytes.HasPrefix(b[i:], []byte("true")):
		return i + 4, nil
	case bytes.HasPrefix(b[i:], []byte("false")):
		return i + 5, nil
	}
	return 0, errBulkShape
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the string that starts at b[i]
// (a '"'), or -1 if it does not end. The closing quote is the first one
// not escaped by an odd run of backslashes.
func skipString(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// structural marks the bytes skipContainer stops at.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// skipContainer returns the offset after the object or array that starts
// at b[i], or -1 if it does not end. Brackets are counted, not matched:
// the encryptor refuses a mismatch afterwards.
func skipContainer(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		c := b[i]
		if !structural[c] {
			i++
			continue
		}
		switch c {
		case '"':
			j := skipString(b, i)
			if j < 0 {
				return -1
			}
			i = j
			continue
		case '{', '[':
			depth++
		default:
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return -1
}

// ---- ids and revisions ----

// revsMap checks {docid: [rev, ...], ...}: the body of _revs_diff,
// _missing_revs and _purge. Ids are free by their meaning.
func revsMap(what string) func(*jsontree.Node) error {
	return func(root *jsontree.Node) error {
		if root.Kind != jsontree.Object {
			return datastore.BadRequest("couchdb: the %s body must be an object mapping document ids to arrays of revisions", what)
		}
		for i := range root.Members {
			if !stringArray(root.Members[i].Value) {
				return datastore.BadRequest("couchdb: the %s body must be an object mapping document ids to arrays of revisions (strings); a value of another type would reach the datastore unread", what)
			}
		}
		return nil
	}
}

// bulkGetBody checks {"docs": [{"id", "rev", "atts_since"}, ...]}.
func bulkGetBody(root *jsontree.Node) error {
	const what = "the _bulk_get body"
	if root.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: %s must be a JSON object", what)
	}
	for i := range root.Members {
		m := &root.Members[i]
		if m.Name != "docs" {
			return unknownBodyMember(what, m.Name)
		}
		if m.Value.Kind != jsontree.Array {
			return datastore.BadRequest("couchdb: the docs of %s must be an array of {id, rev, atts_since}", what)
		}
		for _, d := range m.Value.Elems {
			if d.Kind != jsontree.Object {
				return datastore.BadRequest("couchdb: the docs of %s must be an array of {id, rev, atts_since}", what)
			}
			for j := range d.Members {
				dm := &d.Members[j]
				var ok bool
				switch dm.Name {
				case "id", "rev":
					ok = dm.Value.Kind == jsontree.String
				case "atts_since":
					ok = stringArray(dm.Value)
				default:
					return unknownBodyMember("an element of the docs of "+what, dm.Name)
				}
				if !ok {
					return datastore.BadRequest("couchdb: in the docs of %s, id and rev must be strings and atts_since an array of strings", what)
				}
			}
		}
	}
	return nil
}

// ---- database settings ----

// securityBody checks a _security object: {"admins": {"names": [...],
// "roles": [...]}, "members": {...}}, nothing else. pouchdb-server stores
// the object as it is sent, so any other member would be stored there in
// plaintext.
func securityBody(root *jsontree.Node) error {
	const msg = `couchdb: a _security object holds "admins" and "members" only, each an object with "names" and "roles" (arrays of strings); pouchdb-server stores whatever else is sent, unread and unsealed, so it is refused`
	if root.Kind != jsontree.Object {
		return datastore.BadRequest(msg)
	}
	for i := range root.Members {
		m := &root.Members[i]
		if m.Name != "admins" && m.Name != "members" {
			return securityMember(m.Name)
		}
		if m.Value.Kind != jsontree.Object {
			return datastore.BadRequest(msg)
		}
		for j := range m.Value.Members {
			g := &m.Value.Members[j]
			if g.Name != "names" && g.Name != "roles" {
				return securityMember(g.Name)
			}
			if !stringArray(g.Value) {
				return datastore.BadRequest(msg)
			}
		}
	}
	return nil
}

func securityMember(name string) *datastore.Refusal {
	if n := paramName(name); n != "" {
		return datastore.BadRequest(`couchdb: a _security object holds "admins" and "members" only, each with "names" and "roles"; it has a member %s, which pouchdb-server would store unread and unsealed`, n)
	}
	return datastore.BadRequest(`couchdb: a _security object holds "admins" and "members" only, each with "names" and "roles"; it has another member (its name is not shown: it is not a plain identifier), which pouchdb-server would store unread and unsealed`)
}

// limitBody checks the body of _revs_limit and _purged_infos_limit: one
// positive integer.
func limitBody(what string) func(*jsontree.Node) error {
	return func(root *jsontree.Node) error {
		if root.Kind != jsontree.Number || !integer(string(root.Raw())) || string(root.Raw()) == "0" {
			return datastore.BadRequest("couchdb: the %s body must be a positive integer of at most 13 digits", what)
		}
		return nil
	}
}

// ttl is a time-to-live of CouchDB's auto purge: a count and a unit
// ("3_hour", "1_mon").
var ttl = regexp.MustCompile(`^[0-9]{1,10}_[a-z]{1,8}$`)

// autoPurgeBody checks {"deleted_document_ttl": "3_hour"}.
func autoPurgeBody(root *jsontree.Node) error {
	const what = "the _auto_purge body"
	if root.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: %s must be a JSON object", what)
	}
	for i := range root.Members {
		m := &root.Members[i]
		if m.Name != "deleted_document_ttl" {
			return unknownBodyMember(what, m.Name)
		}
		if t, ok := m.Value.Text(); !ok || !ttl.MatchString(t) {
			return datastore.BadRequest(`couchdb: deleted_document_ttl in %s must be a count and a unit such as "3_hour"`, what)
		}
	}
	return nil
}

// codeUnexpectedBody is the proxy's refusal code for a body where none
// may travel; the maintenance commands use it for any body but {}.
const codeUnexpectedBody = "unexpected_body"

// emptyBody checks the body of a maintenance command (_compact,
// _view_cleanup, _ensure_full_commit...): CouchDB ignores it, and clients
// send none or {}.
func emptyBody(root *jsontree.Node) error {
	if root.Kind == jsontree.Object && len(root.Members) == 0 {
		return nil
	}
	return &datastore.Refusal{Status: 400, Code: codeUnexpectedBody, Message: "couchdb: this maintenance command takes no body (or {}): CouchDB ignores one, and what is in it would reach the datastore unread"}
}

// indexBulkDelete checks {"docids": [...], "w": 2}.
func indexBulkDelete(root *jsontree.Node) error {
	const what = "the _index/_bulk_delete body"
	if root.Kind != jsontree.Object {
		return datastore.BadRequest("couchdb: %s must be a JSON object", what)
	}
	for i := range root.Members {
		m := &root.Members[i]
		var ok bool
		switch m.Name {
		case "docids":
			ok = stringArray(m.Value)
		case "w":
			ok = tInt.json(m.Value)
		default:
			return unknownBodyMember(what, m.Name)
		}
		if !ok {
			return datastore.BadRequest("couchdb: in %s, docids must be an array of strings and w an integer", what)
		}
	}
	return nil
}

// viewLikeBody checks a POST body that takes a view's options as JSON
// (_all_docs, _design_docs, _local_docs, an undeclared or plain view),
// and its queries. multi: the /queries endpoint, whose body holds
// queries only.
func viewLikeBody(ps *params, what string, multi bool) func(*jsontree.Node) error {
	return func(root *jsontree.Node) error {
		queries := func(n *jsontree.Node) error {
			if n.Kind != jsontree.Array {
				return datastore.BadRequest("couchdb: the queries of %s must be an array of objects", what)
			}
			for _, q := range n.Elems {
				if err := ps.members(q, "a query of "+what, nil); err != nil {
					return err
				}
			}
			return nil
		}
		if multi {
			if root.Kind != jsontree.Object {
				return datastore.BadRequest("couchdb: %s must be a JSON object", what)
			}
			for i := range root.Members {
				if root.Members[i].Name != "queries" {
					return unknownBodyMember(what, root.Members[i].Name)
				}
				if err := queries(root.Members[i].Value); err != nil {
					return err
				}
			}
			return nil
		}
		return ps.members(root, what, map[string]func(*jsontree.Node) error{"queries": queries})
	}
}
