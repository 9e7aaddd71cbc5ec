package couchdb

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
)

// Masked values written back (docs/RULES.md, "Decrypt and masks"). A
// document write that carries, in a field this sidecar shows masked, a
// value that could be the mask is checked against the revision it names:
// the document's _rev (for _bulk_docs with new_edits=false, the parent in
// _revisions), else the rev query parameter, else If-Match. The stored
// revision is read with the app's credentials (GET of the document, or one
// _bulk_get for a bulk write), and where the value equals what the mask
// shows for the stored token, the token is kept. A write without a
// revision creates a document: there is no stored value, so the value is
// new data. Where the stored revision cannot be read, the write is refused
// with 409 masked_value_write and nothing is forwarded.

// preserveDoc is the Preserve hook of a single-document write. docURL is
// the document's escaped URL path (PUT /{db}/{docid}); for POST /{db} it
// is empty and the id comes from the body's _id.
func preserveDoc(c *datastore.Collection, r *datastore.Request, docURL string) func(context.Context, []byte, *datastore.WriteEnv) ([]byte, error) {
	dbPath := r.Path
	rawQuery := r.RawQuery
	ifMatch := strings.Trim(strings.TrimSpace(r.Header.Get("If-Match")), `"`)
	return func(ctx context.Context, body []byte, env *datastore.WriteEnv) ([]byte, error) {
		doc, err := datastore.ParseDocument(body)
		if err != nil {
			return nil, err
		}
		cands := c.MaskCandidates(doc, env)
		if len(cands) == 0 {
			return body, nil
		}
		rev := memberText(doc, "_rev")
		if rev == "" {
			rev = queryValue(rawQuery, "rev")
		}
		if rev == "" {
			rev = ifMatch
		}
		if rev == "" {
			return body, nil // a new document: the values are new data
		}
		path := docURL
		if path == "" {
			id := memberText(doc, "_id")
			if id == "" {
				return nil, datastore.MaskedWrite("couchdb: the document carries a masked value in field %s and a _rev but no _id, so its stored value cannot be read; send the real value, or the document's id", cands[0].Field.Name)
			}
			path = strings.TrimSuffix(dbPath, "/") + "/" + escapeID(id)
		}
		status, resp, err := env.Fetch(ctx, http.MethodGet, path, "rev="+url.QueryEscape(rev), nil)
		if err != nil {
			return nil, datastore.MaskedWrite("couchdb: the document carries a masked value in field %s, and the revision it names could not be read to keep the stored value (the datastore did not answer); nothing was forwarded", cands[0].Field.Name)
		}
		if status != http.StatusOK {
			return nil, storedUnavailable(status, cands[0].Field.Name)
		}
		stored, err := datastore.ParseDocument(resp)
		if err != nil {
			return nil, datastore.MaskedWrite("couchdb: the stored revision the write names could not be read as JSON; nothing was forwarded")
		}
		datastore.PreserveMasked(ctx, cands, stored, env)
		return doc.Bytes(), nil
	}
}

// preserveBulk is the Preserve hook of POST /{db}/_bulk_docs.
func preserveBulk(c *datastore.Collection, r *datastore.Request) func(context.Context, []byte, *datastore.WriteEnv) ([]byte, error) {
	bulkGet := strings.TrimSuffix(strings.TrimSuffix(r.Path, "/"), "_bulk_docs") + "_bulk_get"
	return func(ctx context.Context, body []byte, env *datastore.WriteEnv) ([]byte, error) {
		root, err := datastore.ParseDocument(body)
		if err != nil {
			return nil, err
		}
		docs := root.Get("docs")
		if root.Kind != jsontree.Object || docs == nil || docs.Kind != jsontree.Array {
			return body, nil // the encryptor handles, and the store refuses, odd shapes
		}
		newEdits := true
		if ne := root.Get("new_edits"); ne != nil && ne.Kind == jsontree.Bool && string(ne.Raw()) == "false" {
			newEdits = false
		}
		type pending struct {
			index   int
			id, rev string
			cands   []datastore.MaskCandidate
		}
		var todo []pending
		for i, d := range docs.Elems {
			if d.Kind != jsontree.Object {
				continue
			}
			cands := c.MaskCandidates(d, env)
			if len(cands) == 0 {
				continue
			}
			rev := memberText(d, "_rev")
			if !newEdits {
				rev = parentRev(d)
			}
			if rev == "" {
				continue // a new document
			}
			id := memberText(d, "_id")
			if id == "" {
				return nil, datastore.MaskedWrite("couchdb: document %d of the bulk write carries a masked value in field %s and a revision but no _id, so its stored value cannot be read", i, cands[0].Field.Name)
			}
			todo = append(todo, pending{i, id, rev, cands})
		}
		if len(todo) == 0 {
			return body, nil
		}
		type ref struct {
			ID  string `json:"id"`
			Rev string `json:"rev"`
		}
		req := struct {
			Docs []ref `json:"docs"`
		}{}
		for _, t := range todo {
			req.Docs = append(req.Docs, ref{t.id, t.rev})
		}
		reqBody, _ := json.Marshal(req)
		status, resp, err := env.Fetch(ctx, http.MethodPost, bulkGet, "", reqBody)
		if err != nil {
			return nil, datastore.MaskedWrite("couchdb: the bulk write carries masked values, and the revisions it names could not be read to keep the stored values (the datastore did not answer); nothing was forwarded")
		}
		if status != http.StatusOK {
			return nil, storedUnavailable(status, todo[0].cands[0].Field.Name)
		}
		got, err := bulkGetDocs(resp)
		if err != nil {
			return nil, datastore.MaskedWrite("couchdb: the stored revisions the bulk write names could not be read as JSON; nothing was forwarded")
		}
		for _, t := range todo {
			stored := got[t.id+"\x00"+t.rev]
			if stored == nil {
				return nil, datastore.MaskedWrite("couchdb: document %d of the bulk write carries a masked value in field %s, and the revision it names is no longer in the datastore (compacted, deleted or never written), so the stored value cannot be kept; send the real value; nothing was forwarded", t.index, t.cands[0].Field.Name)
			}
			datastore.PreserveMasked(ctx, t.cands, stored, env)
		}
		return root.Bytes(), nil
	}
}

func storedUnavailable(status int, field string) error {
	if status == http.StatusNotFound {
		return datastore.MaskedWrite("couchdb: the document carries a masked value in field %s, and the revision it names is no longer in the datastore (compacted, deleted or never written), so the stored value cannot be kept; send the real value; nothing was forwarded", field)
	}
	return datastore.MaskedWrite("couchdb: the document carries a masked value in field %s, and the datastore answered %d when the stored revision was read; nothing was forwarded", field, status)
}

// bulkGetDocs indexes a _bulk_get response by id and rev.
func bulkGetDocs(resp []byte) (map[string]*jsontree.Node, error) {
	root, err := datastore.ParseDocument(resp)
	if err != nil {
		return nil, err
	}
	out := map[string]*jsontree.Node{}
	results := root.Get("results")
	if results == nil || results.Kind != jsontree.Array {
		return nil, fmt.Errorf("couchdb: _bulk_get answer without results")
	}
	for _, r := range results.Elems {
		docs := r.Get("docs")
		if docs == nil || docs.Kind != jsontree.Array {
			continue
		}
		for _, d := range docs.Elems {
			ok := d.Get("ok")
			if ok == nil || ok.Kind != jsontree.Object {
				continue
			}
			out[memberText(ok, "_id")+"\x00"+memberText(ok, "_rev")] = ok
		}
	}
	return out, nil
}

// parentRev is the revision a replicated document (new_edits=false)
// descends from: the second entry of its _revisions.
func parentRev(d *jsontree.Node) string {
	revs := d.Get("_revisions")
	if revs == nil || revs.Kind != jsontree.Object {
		return ""
	}
	start, ids := revs.Get("start"), revs.Get("ids")
	if start == nil || start.Kind != jsontree.Number || ids == nil || ids.Kind != jsontree.Array || len(ids.Elems) < 2 {
		return ""
	}
	n, err := strconv.Atoi(string(start.Raw()))
	if err != nil || n < 2 {
		return ""
	}
	parent, ok := ids.Elems[1].Text()
	if !ok {
		return ""
	}
	return strconv.Itoa(n-1) + "-" + parent
}

func memberText(n *jsontree.Node, name string) string {
	if n == nil || n.Kind != jsontree.Object {
		return ""
	}
	v := n.Get(name)
	if v == nil {
		return ""
	}
	s, _ := v.Text()
	return s
}

// escapeID writes a document id as a URL path segment; the _design/ and
// _local/ prefixes keep their slash, as CouchDB expects.
func escapeID(id string) string {
	for _, p := range []string{"_design/", "_local/"} {
		if rest, ok := strings.CutPrefix(id, p); ok {
			return p + url.PathEscape(rest)
		}
	}
	return url.PathEscape(id)
}

// queryValue returns the first value of a query parameter, splitting at
// '&' and ';' as CouchDB does.
func queryValue(raw, name string) string {
	for raw != "" {
		var seg string
		if i := strings.IndexAny(raw, "&;"); i >= 0 {
			seg, raw = raw[:i], raw[i+1:]
		} else {
			seg, raw = raw, ""
		}
		k, v, _ := strings.Cut(seg, "=")
		if k == name {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
		}
	}
	return ""
}
