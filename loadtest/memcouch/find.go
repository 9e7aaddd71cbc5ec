package memcouch

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// condition is one equality test of a selector: the value at path (field
// names from the document root) equals value (canonical JSON).
type condition struct {
	path  string
	value string
}

// parseSelectorTop turns a Mango selector into equality conditions. It accepts
// {"field": value}, {"a.b": value}, {"a": {"b": value}}, {"field": {"$eq":
// value}} and {"$and": [selector, ...]}; every other operator is refused,
// so that a query is never answered with results it did not ask for.
func parseSelectorTop(sel json.RawMessage) ([]condition, error) {
	var conds []condition
	if err := parseSelector(sel, "", &conds, 0); err != nil {
		return nil, err
	}
	slices.SortStableFunc(conds, func(a, b condition) int { return strings.Compare(a.path, b.path) })
	return conds, nil
}

// maxSelectorDepth bounds recursion on hostile input.
const maxSelectorDepth = 32

func parseSelector(raw json.RawMessage, prefix string, conds *[]condition, depth int) error {
	if depth > maxSelectorDepth {
		return errf(http.StatusBadRequest, "invalid_selector", "selector nested too deeply")
	}
	members, err := parseObject(raw)
	if err != nil {
		return errf(http.StatusBadRequest, "invalid_selector", "selector must be a JSON object")
	}
	for _, m := range members {
		switch {
		case m.key == "$and" && prefix == "":
			var parts []json.RawMessage
			if err := json.Unmarshal(m.raw, &parts); err != nil {
				return errf(http.StatusBadRequest, "invalid_selector", "$and takes an array of selectors")
			}
			for _, p := range parts {
				if err := parseSelector(p, "", conds, depth+1); err != nil {
					return err
				}
			}
		case m.key == "$eq" && prefix != "":
			v, err := canonical(m.raw)
			if err != nil {
				return err
			}
			*conds = append(*conds, condition{path: prefix, value: v})
		case strings.HasPrefix(m.key, "$"):
			return errf(http.StatusBadRequest, "invalid_operator", "memcouch supports only $eq and $and, not %s", m.key)
		case m.key == "":
			return errf(http.StatusBadRequest, "invalid_selector", "empty field name")
		default:
			path := m.key
			if prefix != "" {
				path = prefix + "." + m.key
			}
			if isObject(m.raw) && hasMembers(m.raw) {
				// {"a": {"b": 1}} and {"a": {"$eq": ...}}: descend.
				if err := parseSelector(m.raw, path, conds, depth+1); err != nil {
					return err
				}
				continue
			}
			v, err := canonical(m.raw)
			if err != nil {
				return err
			}
			*conds = append(*conds, condition{path: path, value: v})
		}
	}
	return nil
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

func hasMembers(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && len(m) > 0
}

// canonical re-encodes a JSON value so that equal values compare equal as
// strings (object keys sorted, numbers in one form, no spaces).
func canonical(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", errf(http.StatusBadRequest, "invalid_selector", "invalid JSON value")
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// memberValue returns the canonical value at a dotted path in a document
// given as its top-level members, without re-parsing the whole body.
func memberValue(members []member, path string) (string, bool) {
	name, rest, nested := strings.Cut(path, ".")
	for _, m := range members {
		if m.key != name {
			continue
		}
		if nested {
			return valueAt(m.raw, rest)
		}
		v, err := canonical(m.raw)
		return v, err == nil
	}
	return "", false
}

// valueAt returns the canonical value at a dotted path in a stored
// document, or false when the path is absent.
func valueAt(body []byte, path string) (string, bool) {
	raw := json.RawMessage(body)
	for name := range strings.SplitSeq(path, ".") {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return "", false
		}
		next, ok := obj[name]
		if !ok {
			return "", false
		}
		raw = next
	}
	v, err := canonical(raw)
	return v, err == nil
}

func addID(byValue map[string]map[string]struct{}, value, id string) {
	ids := byValue[value]
	if ids == nil {
		ids = make(map[string]struct{})
		byValue[value] = ids
	}
	ids[id] = struct{}{}
}

func removeID(byValue map[string]map[string]struct{}, value, id string) {
	if ids := byValue[value]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(byValue, value)
		}
	}
}

// lookup returns the live documents of one shard that satisfy every
// condition, using (and building if need be) the index of the first
// condition's path.
func (sh *shard) lookup(conds []condition) []*doc {
	first := conds[0]
	sh.mu.RLock()
	byValue, indexed := sh.index[first.path]
	if !indexed {
		sh.mu.RUnlock()
		sh.mu.Lock()
		if byValue, indexed = sh.index[first.path]; !indexed {
			byValue = make(map[string]map[string]struct{})
			for id, d := range sh.docs {
				if d.deleted {
					continue
				}
				if v, ok := valueAt(d.body, first.path); ok {
					addID(byValue, v, id)
					d.setIndexed(first.path, v)
				}
			}
			sh.index[first.path] = byValue
		}
		sh.mu.Unlock()
		sh.mu.RLock()
	}
	var out []*doc
	for id := range byValue[first.value] {
		d := sh.docs[id]
		if d == nil || d.deleted {
			continue
		}
		match := true
		for _, c := range conds[1:] {
			if v, ok := valueAt(d.body, c.path); !ok || v != c.value {
				match = false
				break
			}
		}
		if match {
			out = append(out, d)
		}
	}
	sh.mu.RUnlock()
	return out
}

func (db *database) find(r *http.Request) (int, []byte, error) {
	if err := requireJSON(r); err != nil {
		return 0, nil, err
	}
	var req struct {
		Selector json.RawMessage `json:"selector"`
		Limit    *int            `json:"limit"`
		Skip     int             `json:"skip"`
		Fields   []string        `json:"fields"`
		Sort     json.RawMessage `json:"sort"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return 0, nil, err
		}
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "invalid UTF-8 JSON")
	}
	if req.Selector == nil {
		return 0, nil, errf(http.StatusBadRequest, "missing_required_key", "Missing required key: selector")
	}
	if len(req.Sort) > 0 && string(req.Sort) != "null" {
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "memcouch does not implement sort; results come in _id order")
	}
	limit := 25 // CouchDB's default
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 0 || req.Skip < 0 {
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "limit and skip must not be negative")
	}
	conds, err := parseSelectorTop(req.Selector)
	if err != nil {
		return 0, nil, err
	}
	var docs []*doc
	if len(conds) == 0 {
		// {} selects everything, as in CouchDB.
		docs = db.snapshot(false, byID)
	} else {
		for i := range db.shards {
			docs = append(docs, db.shards[i].lookup(conds)...)
		}
		slices.SortFunc(docs, byID)
	}
	docs = window(docs, req.Skip, limit)
	var b bytes.Buffer
	b.WriteString(`{"docs":[`)
	for i, d := range docs {
		if i > 0 {
			b.WriteByte(',')
		}
		if len(req.Fields) == 0 {
			b.Write(d.body)
			continue
		}
		b.Write(project(d.body, req.Fields))
	}
	b.WriteString(`],"bookmark":"nil"}`)
	return http.StatusOK, b.Bytes(), nil
}

// project keeps only the named top-level members, in the order named.
func project(body []byte, fields []string) []byte {
	members, err := parseObject(body)
	if err != nil {
		return []byte("{}")
	}
	b := []byte{'{'}
	n := 0
	for _, f := range fields {
		for _, m := range members {
			if m.key == f {
				if n > 0 {
					b = append(b, ',')
				}
				b = appendString(b, m.key)
				b = append(b, ':')
				b = append(b, m.raw...)
				n++
				break
			}
		}
	}
	return append(b, '}')
}
