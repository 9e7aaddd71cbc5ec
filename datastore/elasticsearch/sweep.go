package elasticsearch

// The store sweep's access to Elasticsearch and OpenSearch
// (datastore.Sweeper; the engine is datastore/sweep).
//
// Walk: a point in time (POST /{index}/_pit; OpenSearch's
// /{index}/_search/point_in_time when that is missing) and search_after on
// _shard_doc, in pages of `limit` hits with seq_no_primary_term. A point
// in time is a snapshot of the index when the walk starts, so the walk
// returns every document that existed then, once, and none written
// meanwhile (those went through the sidecar under the current rules and
// keys). The cursor holds the point in time's id and the last hit's sort
// values. A point in time lives for keepAlive between pages; a walk
// resumed after it expired (a crash, a long pause) starts again from the
// beginning with a new one, which returns documents again but skips none.
//
// Write: one _bulk request of index actions, each with the if_seq_no and
// if_primary_term it was read at (and its routing): a document changed
// meanwhile gets 409 and nothing of it is written. Results come back in
// the order of the request.
//
// Elasticsearch keeps the old version of a rewritten document in its
// segments, marked deleted, until they merge: Compact asks for
// _forcemerge?only_expunge_deletes=true, which drops them.

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
	"github.com/sidecrypt/sidecrypt/datastore/internal/sweephttp"
)

// keepAlive is how long a point in time lives between two pages.
const keepAlive = "10m"

// Sweeper implements datastore.SweepProfile.
func (p *Profile) Sweeper(t datastore.SweepTarget) (datastore.Sweeper, error) {
	c, err := sweephttp.New("elasticsearch", t)
	if err != nil {
		return nil, err
	}
	return &sweeper{http: c}, nil
}

type sweeper struct {
	http *sweephttp.Client
}

func (s *sweeper) Info() datastore.SweeperInfo {
	return datastore.SweeperInfo{Concurrency: "if_seq_no/if_primary_term (_bulk)", Walk: "point in time + search_after"}
}

// do sends one request. Errors name the endpoint, never an index's
// documents.
func (s *sweeper) do(ctx context.Context, method, path, rawQuery, ctype string, body []byte) (int, []byte, error) {
	status, _, b, err := s.http.Do(ctx, method+" "+endpointOf(path), method, path, rawQuery, ctype, body)
	return status, b, err
}

// endpointOf names a request path for errors without index names or ids.
func endpointOf(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, p := range parts {
		if !strings.HasPrefix(p, "_") {
			parts[i] = map[bool]string{true: "{index}", false: "{id}"}[i == 0]
		}
	}
	return "/" + strings.Join(parts, "/")
}

// esError extracts Elasticsearch's error type (never its reason, which
// may quote a document).
func esError(status int, body []byte) string {
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Type != "" {
		return fmt.Sprintf("%d %s", status, e.Error.Type)
	}
	return strconv.Itoa(status)
}

func indexPath(index string) string { return "/" + url.PathEscape(index) }

func (s *sweeper) Collections(ctx context.Context, pattern string) ([]string, error) {
	status, b, err := s.do(ctx, http.MethodGet, "/_cat/indices/"+url.PathEscape(pattern), "format=json&h=index&expand_wildcards=open", "", nil)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, nil
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("elasticsearch: GET /_cat/indices: %s", esError(status, b))
	}
	var rows []struct {
		Index string `json:"index"`
	}
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("elasticsearch: GET /_cat/indices: not a list of indices: %v", err)
	}
	var out []string
	for _, r := range rows {
		// Hidden and system indices (.security, .kibana...) only when
		// the pattern names them.
		if strings.HasPrefix(r.Index, ".") && !strings.HasPrefix(pattern, ".") {
			continue
		}
		if datastore.Glob(pattern, r.Index) {
			out = append(out, r.Index)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s *sweeper) Count(ctx context.Context, index string) (int64, error) {
	status, b, err := s.do(ctx, http.MethodGet, indexPath(index)+"/_count", "", "", nil)
	if err != nil {
		return -1, err
	}
	if status != http.StatusOK {
		return -1, fmt.Errorf("elasticsearch: GET /{index}/_count: %s", esError(status, b))
	}
	var c struct {
		Count int64 `json:"count"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return -1, nil
	}
	return c.Count, nil
}

// cursor is a walk's position.
type cursor struct {
	PIT   string            `json:"pit"`
	After []json.RawMessage `json:"after,omitempty"`
}

func (s *sweeper) openPIT(ctx context.Context, index string) (string, error) {
	status, b, err := s.do(ctx, http.MethodPost, indexPath(index)+"/_pit", "keep_alive="+keepAlive, "", nil)
	if err != nil {
		return "", err
	}
	if status == http.StatusNotFound || status == http.StatusBadRequest || status == http.StatusMethodNotAllowed {
		// OpenSearch 2.
		status, b, err = s.do(ctx, http.MethodPost, indexPath(index)+"/_search/point_in_time", "keep_alive="+keepAlive, "", nil)
		if err != nil {
			return "", err
		}
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("elasticsearch: open a point in time: %s", esError(status, b))
	}
	var r struct {
		ID    string `json:"id"`
		PITID string `json:"pit_id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID+r.PITID == "" {
		return "", errors.New("elasticsearch: open a point in time: no id in the answer")
	}
	return r.ID + r.PITID, nil
}

func (s *sweeper) closePIT(ctx context.Context, id string) {
	body, _ := json.Marshal(map[string]string{"id": id})
	status, _, err := s.do(ctx, http.MethodDelete, "/_pit", "", "application/json", body)
	if err == nil && (status == http.StatusNotFound || status == http.StatusBadRequest) {
		body, _ = json.Marshal(map[string][]string{"pit_id": {id}})
		_, _, _ = s.do(ctx, http.MethodDelete, "/_search/point_in_time", "", "application/json", body)
	}
}

type hit struct {
	Index   string            `json:"_index"`
	ID      string            `json:"_id"`
	Routing string            `json:"_routing"`
	SeqNo   *int64            `json:"_seq_no"`
	Term    *int64            `json:"_primary_term"`
	Source  json.RawMessage   `json:"_source"`
	Sort    []json.RawMessage `json:"sort"`
}

func (s *sweeper) Scan(ctx context.Context, index, cur string, limit int) (*datastore.ScanPage, error) {
	if limit <= 0 {
		limit = 100
	}
	var c cursor
	if cur != "" {
		if err := json.Unmarshal([]byte(cur), &c); err != nil || c.PIT == "" {
			return nil, errors.New("elasticsearch: the sweep cursor is not one this profile wrote")
		}
	}
	for attempt := 0; ; attempt++ {
		if c.PIT == "" {
			id, err := s.openPIT(ctx, index)
			if err != nil {
				return nil, err
			}
			c = cursor{PIT: id}
		}
		req := map[string]any{
			"size":                limit,
			"pit":                 map[string]string{"id": c.PIT, "keep_alive": keepAlive},
			"sort":                []any{map[string]string{"_shard_doc": "asc"}},
			"seq_no_primary_term": true,
			"track_total_hits":    false,
		}
		if len(c.After) > 0 {
			req["search_after"] = c.After
		}
		body, _ := json.Marshal(req)
		status, b, err := s.do(ctx, http.MethodPost, "/_search", "", "application/json", body)
		if err != nil {
			return nil, err
		}
		if status == http.StatusNotFound && attempt == 0 && cur != "" {
			// The point in time expired: walk again from the start.
			c = cursor{}
			continue
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("elasticsearch: a page of the walk: %s", esError(status, b))
		}
		var r struct {
			PITID string `json:"pit_id"`
			Hits  struct {
				Hits []hit `json:"hits"`
			} `json:"hits"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("elasticsearch: a page of the walk: not a search answer: %v", err)
		}
		if r.PITID != "" {
			c.PIT = r.PITID
		}
		page := &datastore.ScanPage{}
		for _, h := range r.Hits.Hits {
			if h.SeqNo == nil || h.Term == nil {
				return nil, errors.New("elasticsearch: a page of the walk: hits without _seq_no and _primary_term")
			}
			if len(h.Source) == 0 {
				return nil, errors.New("elasticsearch: a page of the walk: a document without _source (the index stores none), which the sweep cannot rewrite")
			}
			page.Docs = append(page.Docs, datastore.StoredDoc{ID: h.ID, Version: version(*h.SeqNo, *h.Term, h.Routing), Body: h.Source})
			c.After = h.Sort
		}
		if len(r.Hits.Hits) < limit {
			page.Done = true
			s.closePIT(ctx, c.PIT)
		}
		next, _ := json.Marshal(c)
		if len(next) > datastore.MaxCursorLen {
			return nil, errors.New("elasticsearch: the point in time's id is too long for a sweep cursor")
		}
		page.Cursor = string(next)
		return page, nil
	}
}

// version is a document's Version: "seq_no:primary_term", and its routing
// when it has one (a write must name it).
func version(seq, term int64, routing string) string {
	v := strconv.FormatInt(seq, 10) + ":" + strconv.FormatInt(term, 10)
	if routing != "" {
		v += ":" + routing
	}
	return v
}

func parseVersion(v string) (seq, term, routing string, ok bool) {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) < 2 {
		return "", "", "", false
	}
	if _, err := strconv.ParseInt(parts[0], 10, 64); err != nil {
		return "", "", "", false
	}
	if _, err := strconv.ParseInt(parts[1], 10, 64); err != nil {
		return "", "", "", false
	}
	if len(parts) == 3 {
		routing = parts[2]
	}
	return parts[0], parts[1], routing, true
}

func (s *sweeper) Write(ctx context.Context, index string, docs []datastore.StoredDoc) ([]datastore.WriteResult, error) {
	out := make([]datastore.WriteResult, len(docs))
	var body bytes.Buffer
	var sent []int
	for i, d := range docs {
		out[i].ID = d.ID
		seq, term, routing, ok := parseVersion(d.Version)
		if !ok {
			out[i].Err = errors.New("elasticsearch: a document's version is not one the walk returned")
			continue
		}
		if !json.Valid(d.Body) {
			out[i].Err = errors.New("elasticsearch: a rewritten document is not JSON")
			continue
		}
		action := map[string]any{"_index": index, "_id": d.ID, "if_seq_no": json.Number(seq), "if_primary_term": json.Number(term)}
		if routing != "" {
			action["routing"] = routing
		}
		line, _ := json.Marshal(map[string]any{"index": action})
		body.Write(line)
		body.WriteByte('\n')
		// One line: json.Compact drops insignificant whitespace (a line
		// break inside a string is always escaped in valid JSON).
		var compact bytes.Buffer
		_ = json.Compact(&compact, d.Body)
		body.Write(compact.Bytes())
		body.WriteByte('\n')
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return out, nil
	}
	status, b, err := s.do(ctx, http.MethodPost, "/_bulk", "", "application/x-ndjson", body.Bytes())
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("elasticsearch: POST /_bulk: %s", esError(status, b))
	}
	var res struct {
		Items []map[string]struct {
			ID     string `json:"_id"`
			Status int    `json:"status"`
			SeqNo  *int64 `json:"_seq_no"`
			Term   *int64 `json:"_primary_term"`
			Error  struct {
				Type string `json:"type"`
			} `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res.Items) != len(sent) {
		return nil, fmt.Errorf("elasticsearch: POST /_bulk: an answer that does not match the request (%d results for %d documents)", len(res.Items), len(sent))
	}
	for j, i := range sent {
		r, ok := res.Items[j]["index"]
		switch {
		case !ok || r.ID != docs[i].ID:
			return nil, errors.New("elasticsearch: POST /_bulk: results out of order")
		case r.Status == http.StatusConflict:
			out[i].Conflict = true
		case r.Status >= 300 || r.SeqNo == nil || r.Term == nil:
			out[i].Err = fmt.Errorf("elasticsearch: the datastore refused the document: %d %s", r.Status, r.Error.Type)
		default:
			_, _, routing, _ := parseVersion(docs[i].Version)
			out[i].Version = version(*r.SeqNo, *r.Term, routing)
		}
	}
	return out, nil
}

func (s *sweeper) Get(ctx context.Context, index, id string) (*datastore.StoredDoc, error) {
	status, b, err := s.do(ctx, http.MethodGet, indexPath(index)+"/_doc/"+url.PathEscape(id), "", "", nil)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, datastore.ErrNoDocument
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("elasticsearch: GET /{index}/_doc/{id}: %s", esError(status, b))
	}
	var h hit
	if err := json.Unmarshal(b, &h); err != nil || h.SeqNo == nil || h.Term == nil || len(h.Source) == 0 {
		return nil, errors.New("elasticsearch: GET /{index}/_doc/{id}: not a stored document with its _source")
	}
	return &datastore.StoredDoc{ID: id, Version: version(*h.SeqNo, *h.Term, h.Routing), Body: h.Source}, nil
}

// Compact implements datastore.Compactor: the versions a rewrite replaced
// stay in the index's segments, marked deleted, until they merge.
func (s *sweeper) Compact(ctx context.Context, index string) error {
	status, b, err := s.do(ctx, http.MethodPost, indexPath(index)+"/_forcemerge", "only_expunge_deletes=true", "", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("elasticsearch: POST /{index}/_forcemerge: %s", esError(status, b))
	}
	return nil
}

var (
	_ datastore.SweepProfile = (*Profile)(nil)
	_ datastore.Compactor    = (*sweeper)(nil)
)
