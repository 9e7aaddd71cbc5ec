package couchdb

// The store sweep's access to CouchDB (datastore.Sweeper; the engine is
// datastore/sweep).
//
// Walk: the _changes feed, with include_docs=true and style=all_docs, in
// pages of `limit` changes from a checkpoint `since`. The feed lists each
// document once, at the sequence of its latest change, so a walk that
// follows it from 0 sees every document that existed when it started.
// The sequence the database was at when the walk started (update_seq) is
// kept in the cursor as the walk's end: documents changed after it (the
// sweep's own rewrites among them) are written through the sidecar under
// the current rules and keys, so the walk stops there instead of chasing
// the application. Sequences are numbers in pouchdb-server and opaque
// strings ("12-g1AAAA...") in CouchDB 3, whose numeric prefix is the
// sum of the shards' sequences; the end test compares those numbers, and
// a walk whose numbers cannot be compared runs until the feed has no more
// (which only costs reading the documents changed meanwhile again).
//
// style=all_docs lists every leaf revision of a document. A document in
// conflict has several, and a losing leaf holds data as much as the
// winner: for such a document the sweep reads every leaf (open_revs=all)
// and returns each, so that each is rewritten on its own branch.
//
// Policy, per the collection's rules: design documents are returned only
// when the file allows them (design_docs: allow; then the proxy encrypts
// their fields too), otherwise skipped ("design"): they carry code, and
// a sweep must not rewrite what the sidecar never let through. Local
// documents (_local/) never appear in the _changes feed and are not
// replicated; the sweep cannot list them (pouchdb-server has no
// _local_docs), and says so in docs/KEYS.md. Deleted documents
// (tombstones) are skipped ("deleted").
//
// CouchDB keeps the bodies of earlier revisions until the database is
// compacted, so after a sweep an old revision still holds the old token,
// or the legacy plaintext, for anyone who asks for ?rev=1-...: Compact
// (POST /{db}/_compact; --compact) drops them.
//
// Write: POST /{db}/_bulk_docs with each document's _rev, the
// optimistic concurrency CouchDB has: a document whose _rev is no longer
// current (or no longer a leaf) gets {"error": "conflict"} and nothing of
// it is written. Results come back in the order of the request.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/jsontree"
	"github.com/sidecrypt/sidecrypt/datastore/internal/sweephttp"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Sweeper implements datastore.SweepProfile.
func (p *Profile) Sweeper(t datastore.SweepTarget) (datastore.Sweeper, error) {
	c, err := sweephttp.New("couchdb", t)
	if err != nil {
		return nil, err
	}
	return &sweeper{p: p, http: c}, nil
}

type sweeper struct {
	p    *Profile
	http *sweephttp.Client
}

func (s *sweeper) Info() datastore.SweeperInfo {
	return datastore.SweeperInfo{Concurrency: "_rev (_bulk_docs)", Walk: "_changes feed (include_docs, style=all_docs)"}
}

// do sends one request and returns the status and body. Errors name the
// endpoint, never content.
func (s *sweeper) do(ctx context.Context, method, path, rawQuery string, body []byte) (int, []byte, error) {
	status, _, b, err := s.http.Do(ctx, method+" "+endpointOf(path), method, path, rawQuery, "application/json", body)
	return status, b, err
}

// endpointOf names a request path for errors without ids: "/{db}/_changes".
func endpointOf(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, p := range parts {
		if !strings.HasPrefix(p, "_") || (i > 0 && parts[i-1] == "_design") {
			parts[i] = "{" + map[bool]string{true: "db", false: "id"}[i == 0] + "}"
		}
	}
	return "/" + strings.Join(parts, "/")
}

// couchError extracts CouchDB's error code (never its reason, which may
// quote a validation function's message about a document).
func couchError(status int, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Sprintf("%d %s", status, e.Error)
	}
	return strconv.Itoa(status)
}

func dbPath(db string) string { return "/" + url.PathEscape(db) }

// docPath escapes a document id for a path: a design document's
// "_design/" stays a path segment, the rest is one segment.
func docPath(db, id string) string {
	if rest, ok := strings.CutPrefix(id, "_design/"); ok {
		return dbPath(db) + "/_design/" + url.PathEscape(rest)
	}
	return dbPath(db) + "/" + url.PathEscape(id)
}

func (s *sweeper) Collections(ctx context.Context, pattern string) ([]string, error) {
	status, b, err := s.do(ctx, http.MethodGet, "/_all_dbs", "", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: GET /_all_dbs: %s", couchError(status, b))
	}
	var all []string
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("couchdb: GET /_all_dbs: not a list of names: %v", err)
	}
	pp := pouchPattern(pattern)
	var out []string
	for _, db := range all {
		if strings.HasPrefix(db, "_") {
			continue
		}
		if datastore.Glob(pattern, db) || datastore.Glob(pp, db) {
			out = append(out, db)
		}
	}
	sort.Strings(out)
	return out, nil
}

// dbInfo is what GET /{db} says.
type dbInfo struct {
	DocCount  int64           `json:"doc_count"`
	UpdateSeq json.RawMessage `json:"update_seq"`
}

func (s *sweeper) info(ctx context.Context, db string) (*dbInfo, error) {
	status, b, err := s.do(ctx, http.MethodGet, dbPath(db), "", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: GET /{db}: %s", couchError(status, b))
	}
	var in dbInfo
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("couchdb: GET /{db}: %v", err)
	}
	return &in, nil
}

func (s *sweeper) Count(ctx context.Context, db string) (int64, error) {
	in, err := s.info(ctx, db)
	if err != nil {
		return -1, err
	}
	return in.DocCount, nil
}

// cursor is the walk's checkpoint: the last sequence done, and the
// database's sequence when the walk started. Both are kept as the JSON
// the server gave (a number or a string).
type cursor struct {
	Since json.RawMessage `json:"since"`
	End   json.RawMessage `json:"end"`
}

// seqNumber is a sequence's numeric part: the number itself, or the
// prefix before '-' of a CouchDB 3 sequence. ok is false when there is
// none.
func seqNumber(raw json.RawMessage) (int64, bool) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		v, err := n.Int64()
		return v, err == nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, false
	}
	prefix, _, _ := strings.Cut(s, "-")
	v, err := strconv.ParseInt(prefix, 10, 64)
	return v, err == nil
}

// sinceParam writes a sequence as the since= parameter: a number as is,
// a string unquoted.
func sinceParam(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

type change struct {
	Seq     json.RawMessage `json:"seq"`
	ID      string          `json:"id"`
	Deleted bool            `json:"deleted"`
	Changes []struct {
		Rev string `json:"rev"`
	} `json:"changes"`
	Doc json.RawMessage `json:"doc"`
}

func (s *sweeper) Scan(ctx context.Context, db, cur string, limit int) (*datastore.ScanPage, error) {
	if limit <= 0 {
		limit = 100
	}
	var c cursor
	if cur == "" {
		in, err := s.info(ctx, db)
		if err != nil {
			return nil, err
		}
		c = cursor{Since: json.RawMessage("0"), End: in.UpdateSeq}
	} else if err := json.Unmarshal([]byte(cur), &c); err != nil || len(c.Since) == 0 {
		return nil, fmt.Errorf("couchdb: sweep cursor is not one this profile wrote")
	}
	end, endOK := seqNumber(c.End)
	q := url.Values{}
	q.Set("since", sinceParam(c.Since))
	q.Set("limit", strconv.Itoa(limit))
	q.Set("include_docs", "true")
	q.Set("style", "all_docs")
	status, b, err := s.do(ctx, http.MethodGet, dbPath(db)+"/_changes", q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: GET /{db}/_changes: %s", couchError(status, b))
	}
	var feed struct {
		Results []change        `json:"results"`
		LastSeq json.RawMessage `json:"last_seq"`
	}
	if err := json.Unmarshal(b, &feed); err != nil {
		return nil, fmt.Errorf("couchdb: GET /{db}/_changes: %v", err)
	}
	col := s.p.collectionFor(db)
	page := &datastore.ScanPage{}
	skip := func(reason string) {
		if page.Skipped == nil {
			page.Skipped = map[string]int{}
		}
		page.Skipped[reason]++
	}
	done := len(feed.Results) < limit
	for _, ch := range feed.Results {
		if n, ok := seqNumber(ch.Seq); ok && endOK && n > end {
			// Changed after the walk started: written through the
			// sidecar under the rules and keys of that moment.
			done = true
			break
		}
		c.Since = ch.Seq
		switch {
		case ch.Deleted:
			skip("deleted")
			continue
		case strings.HasPrefix(ch.ID, "_design/") && (col == nil || col.DesignDocs != datastore.PolicyAllow):
			skip("design")
			continue
		case strings.HasPrefix(ch.ID, "_local/"):
			skip("local")
			continue
		}
		if len(ch.Changes) > 1 {
			leaves, err := s.leaves(ctx, db, ch.ID)
			if err != nil {
				return nil, err
			}
			page.Docs = append(page.Docs, leaves...)
			continue
		}
		if len(ch.Doc) == 0 || string(ch.Doc) == "null" {
			skip("deleted")
			continue
		}
		var meta struct {
			Rev     string `json:"_rev"`
			Deleted bool   `json:"_deleted"`
		}
		if err := json.Unmarshal(ch.Doc, &meta); err != nil || meta.Rev == "" {
			skip("unreadable")
			continue
		}
		if meta.Deleted {
			skip("deleted")
			continue
		}
		page.Docs = append(page.Docs, datastore.StoredDoc{ID: ch.ID, Version: meta.Rev, Body: bytes.Clone(ch.Doc)})
	}
	if done && len(feed.Results) < limit && len(feed.LastSeq) > 0 {
		if n, ok := seqNumber(feed.LastSeq); !(ok && endOK && n > end) {
			c.Since = feed.LastSeq
		}
	}
	page.Done = done
	nc, _ := json.Marshal(c)
	page.Cursor = string(nc)
	return page, nil
}

// leaves reads every current revision of a document in conflict.
func (s *sweeper) leaves(ctx context.Context, db, id string) ([]datastore.StoredDoc, error) {
	status, b, err := s.do(ctx, http.MethodGet, docPath(db, id), "open_revs=all", nil)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, nil
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: GET /{db}/{id}?open_revs=all: %s", couchError(status, b))
	}
	var revs []struct {
		OK json.RawMessage `json:"ok"`
	}
	if err := json.Unmarshal(b, &revs); err != nil {
		return nil, fmt.Errorf("couchdb: GET /{db}/{id}?open_revs=all: %v", err)
	}
	var out []datastore.StoredDoc
	for _, r := range revs {
		if len(r.OK) == 0 {
			continue
		}
		var meta struct {
			Rev     string `json:"_rev"`
			Deleted bool   `json:"_deleted"`
		}
		if json.Unmarshal(r.OK, &meta) != nil || meta.Rev == "" || meta.Deleted {
			continue
		}
		out = append(out, datastore.StoredDoc{ID: id, Version: meta.Rev, Body: bytes.Clone(r.OK)})
	}
	return out, nil
}

func (s *sweeper) Write(ctx context.Context, db string, docs []datastore.StoredDoc) ([]datastore.WriteResult, error) {
	out := make([]datastore.WriteResult, len(docs))
	var body bytes.Buffer
	body.WriteString(`{"docs":[`)
	var sent []int
	for i, d := range docs {
		out[i].ID = d.ID
		b, err := withRev(d.Body, d.ID, d.Version)
		if err != nil {
			out[i].Err = err
			continue
		}
		if len(sent) > 0 {
			body.WriteByte(',')
		}
		body.Write(b)
		sent = append(sent, i)
	}
	body.WriteString(`]}`)
	if len(sent) == 0 {
		return out, nil
	}
	status, b, err := s.do(ctx, http.MethodPost, dbPath(db)+"/_bulk_docs", "", body.Bytes())
	if err != nil {
		return nil, err
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: POST /{db}/_bulk_docs: %s", couchError(status, b))
	}
	var res []struct {
		ID    string `json:"id"`
		Rev   string `json:"rev"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res) != len(sent) {
		return nil, fmt.Errorf("couchdb: POST /{db}/_bulk_docs: an answer that does not match the request (%d results for %d documents)", len(res), len(sent))
	}
	for j, i := range sent {
		r := res[j]
		switch {
		case r.ID != docs[i].ID:
			return nil, errors.New("couchdb: POST /{db}/_bulk_docs: results out of order")
		case r.Error == "conflict":
			out[i].Conflict = true
		case r.Error != "":
			out[i].Err = fmt.Errorf("couchdb: the datastore refused the document: %s", r.Error)
		default:
			out[i].Version = r.Rev
		}
	}
	return out, nil
}

// withRev checks that a body is the document id at revision rev: its _id
// and _rev members are what the write is conditional on.
func withRev(body []byte, id, rev string) ([]byte, error) {
	doc, err := jsontree.Parse(body, fieldcrypt.DefaultMaxDepth)
	if err != nil {
		return nil, fmt.Errorf("couchdb: a rewritten document is not JSON: %w", err)
	}
	if doc.Kind != jsontree.Object {
		return nil, errors.New("couchdb: a rewritten document is not an object")
	}
	gotID, _ := textOf(doc.Get("_id"))
	gotRev, _ := textOf(doc.Get("_rev"))
	if gotID != id || gotRev != rev {
		return nil, errors.New("couchdb: a rewritten document does not carry the _id and _rev it was read with")
	}
	return body, nil
}

func textOf(n *jsontree.Node) (string, bool) {
	if n == nil {
		return "", false
	}
	return n.Text()
}

func (s *sweeper) Get(ctx context.Context, db, id string) (*datastore.StoredDoc, error) {
	status, b, err := s.do(ctx, http.MethodGet, docPath(db, id), "", nil)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, datastore.ErrNoDocument
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("couchdb: GET /{db}/{id}: %s", couchError(status, b))
	}
	var meta struct {
		Rev string `json:"_rev"`
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Rev == "" {
		return nil, errors.New("couchdb: GET /{db}/{id}: not a document")
	}
	return &datastore.StoredDoc{ID: id, Version: meta.Rev, Body: b}, nil
}

// Compact implements datastore.Compactor: POST /{db}/_compact, which
// drops the bodies of every revision that is not a leaf. It needs the
// server's admin rights on Apache CouchDB.
func (s *sweeper) Compact(ctx context.Context, db string) error {
	status, b, err := s.do(ctx, http.MethodPost, dbPath(db)+"/_compact", "", []byte("{}"))
	if err != nil {
		return err
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		return fmt.Errorf("couchdb: POST /{db}/_compact: %s", couchError(status, b))
	}
	return nil
}

// collectionFor returns the protected collection a database name
// belongs to, as requests to it are matched.
func (p *Profile) collectionFor(db string) *datastore.Collection {
	if cc := p.match(segment{raw: url.PathEscape(db), name: db}); cc != nil {
		return cc.Collection
	}
	return nil
}

var (
	_ datastore.SweepProfile = (*Profile)(nil)
	_ datastore.Sweeper      = (*sweeper)(nil)
	_ datastore.Compactor    = (*sweeper)(nil)
)
