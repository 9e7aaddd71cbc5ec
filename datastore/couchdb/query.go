package couchdb

import (
	"net/url"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// param is one parameter of a raw query string.
type param struct {
	// raw[start:end] is the whole "name=value" text.
	start, end int
	rawName    string
	rawValue   string
	hasValue   bool
	// name is rawName unescaped ('+' is a space), as mochiweb and the qs
	// library behind express read it.
	name string
}

// base is the name without a qs bracket suffix: express (qs) reads
// "key[0]=x" as key = ["x"] and "key[a]=x" as key = {"a": "x"}, and
// pouchdb-server passes the result to the query unparsed.
func (p *param) base() string {
	if i := strings.IndexByte(p.name, '['); i > 0 {
		return p.name[:i]
	}
	return p.name
}

// value unescapes the value.
func (p *param) value() (string, error) { return url.QueryUnescape(p.rawValue) }

// parseQuery splits a raw query at both '&' and ';': CouchDB (mochiweb)
// splits on both, so "?a=1;key=x" has a key parameter for CouchDB that a
// reader of '&' alone would miss. A name that does not unescape is
// refused: it could hide a name from the sidecar but not from the
// datastore.
func parseQuery(raw string) ([]param, *datastore.Refusal) {
	if raw == "" {
		return nil, nil
	}
	var out []param
	for start := 0; start <= len(raw); {
		end := strings.IndexAny(raw[start:], "&;")
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		seg := raw[start:end]
		if seg != "" {
			rawName, rawValue, hasValue := strings.Cut(seg, "=")
			name, err := url.QueryUnescape(rawName)
			if err != nil {
				return nil, datastore.BadRequest("couchdb: a query parameter name has an invalid percent-escape")
			}
			out = append(out, param{start: start, end: end, rawName: rawName, rawValue: rawValue, hasValue: hasValue, name: name})
		}
		start = end + 1
	}
	return out, nil
}
