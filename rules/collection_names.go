package rules

import (
	"fmt"
	"strings"
)

// Collection names are the datastore's: a CouchDB database name, an
// Elasticsearch index, alias or data stream name, a REST path prefix.
// Each datastore gets its own check, so that lint explains the mistake in
// that datastore's terms; CouchDB's is collectionNameProblem.

// collectionNameProblemFor checks a collection name or pattern for the
// datastore the file names (an unknown datastore, reported elsewhere,
// gets CouchDB's check).
func collectionNameProblemFor(ds, s string) (msg string, off int, hint string) {
	switch ds {
	case "elasticsearch":
		return indexNameProblem(s)
	case "rest":
		return pathPrefixProblem(s)
	}
	return collectionNameProblem(s)
}

// maxIndexName is Elasticsearch's limit on an index name, in bytes.
const maxIndexName = 255

// indexNameProblem checks an Elasticsearch (or OpenSearch) index, alias
// or data stream name, with '*' for any run of characters: lower case;
// none of \ / ? " < > | , # : or a space; not starting with - _ +; not
// "." or "..".
func indexNameProblem(s string) (msg string, off int, hint string) {
	const allowed = `lower-case letters, digits and - _ + . (not \ / ? " < > | , # : or spaces), not starting with - _ +; "*" for any run of characters`
	switch {
	case s == "":
		return "empty collection name", 0, "name an index, alias or data stream, or a pattern such as orders-*"
	case s == "." || s == "..":
		return "not an index name", 0, "Elasticsearch refuses . and .. as index names"
	case len(s) > maxIndexName:
		return fmt.Sprintf("longer than %d bytes", maxIndexName), maxIndexName, "Elasticsearch index names are at most 255 bytes"
	case strings.IndexByte("-_+", s[0]) >= 0:
		return fmt.Sprintf("starts with %q", s[0]), 0, "Elasticsearch index names cannot start with - _ or +"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			return "upper-case letter in an Elasticsearch index name", i, fmt.Sprintf("Elasticsearch index names are lower case: %q", strings.ToLower(s))
		case c == ',':
			return `"," in a collection name`, i, "name each index as its own collection (an index expression's list is not a name)"
		case c <= ' ' || c == 0x7f || strings.IndexByte(`\/?"<>|#:`, c) >= 0:
			return fmt.Sprintf("%q in an Elasticsearch index name", c), i, allowed
		}
	}
	if strings.Contains(s, "**") {
		return "\"**\" in a collection pattern", strings.Index(s, "**"), "one \"*\" already stands for any run of characters"
	}
	return "", 0, ""
}

// pathPrefixProblem checks a REST collection: a path prefix starting with
// '/', '*' for any run of characters.
func pathPrefixProblem(s string) (msg string, off int, hint string) {
	switch {
	case s == "":
		return "empty collection name", 0, "name the path prefix under which the collection's records live, such as /customers"
	case s[0] != '/':
		return "a REST collection is a path prefix and starts with /", 0, fmt.Sprintf("write %q", "/"+s)
	case s == "/":
		return "the root is not a collection", 0, "name the prefix under which the collection's records live, such as /customers"
	case strings.HasSuffix(s, "/"):
		return "a path prefix ends without /", len(s) - 1, fmt.Sprintf("write %q: the prefix covers the records below it", strings.TrimRight(s, "/"))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7f || c == '?' || c == '#':
			return fmt.Sprintf("%q in a path prefix", c), i, "a prefix is a path: no query string, fragment, spaces or control characters"
		case c == '%':
			return "a percent-escape in a path prefix", i, "write the path unescaped; the sidecar compares it with request paths both as sent and unescaped"
		}
	}
	for _, seg := range strings.Split(s[1:], "/") {
		switch seg {
		case "":
			return "an empty segment (//) in a path prefix", strings.Index(s, "//"), "stores and proxies read // differently; write one /"
		case ".", "..":
			return "a . or .. segment in a path prefix", strings.Index(s, "/"+seg) + 1, "write the path without dot segments"
		}
	}
	if strings.Contains(s, "**") {
		return "\"**\" in a collection pattern", strings.Index(s, "**"), "one \"*\" already stands for any run of characters, '/' included"
	}
	return "", 0, ""
}
