package rest

// The store sweep's access to a JSON REST store (datastore.Sweeper; the
// engine is datastore/sweep), as json-server 0.17 serves one.
//
// Walk: the collection's listing sorted by id, in pages of `limit`
// records, each page starting at the last id of the one before
// (?_sort=id&_order=asc&_limit=N&id_gte=LAST, the repeated record dropped):
// a record deleted meanwhile shifts nothing, so none is skipped. The
// cursor is the last id. Records need an id member; ids that mix numbers
// and strings do not sort the way id_gte compares them, and are refused.
//
// Write: json-server has no conditional writes (it sends ETags and
// ignores If-Match), so Info says there is no concurrency control and the
// engine writes only when the operator accepts that. Write narrows the
// window as far as it can: it reads each record again, compares it with
// the version read by the walk (a digest of the record as JSON), and PUTs
// the new body only if they are equal (else Conflict); a change by the
// application between that read and the PUT is still overwritten.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/datastore/internal/sweephttp"
)

// Sweeper implements datastore.SweepProfile.
func (p *Profile) Sweeper(t datastore.SweepTarget) (datastore.Sweeper, error) {
	c, err := sweephttp.New("rest", t)
	if err != nil {
		return nil, err
	}
	return &sweeper{http: c}, nil
}

type sweeper struct {
	http *sweephttp.Client
}

func (s *sweeper) Info() datastore.SweeperInfo {
	// No Concurrency: the store has none (see Write).
	return datastore.SweeperInfo{Walk: "listing by id (_sort=id, id_gte)"}
}

func (s *sweeper) do(ctx context.Context, method, path, rawQuery string, body []byte) (int, http.Header, []byte, error) {
	// Record paths are ids: errors name the method only.
	return s.http.Do(ctx, method+" {prefix}", method, path, rawQuery, "application/json", body)
}

// Collections: a REST store cannot list its collections, so a prefix is
// its own only collection, and a pattern cannot be swept.
func (s *sweeper) Collections(ctx context.Context, pattern string) ([]string, error) {
	if strings.Contains(pattern, "*") {
		return nil, errors.New("rest: a REST store cannot list the prefixes a pattern matches; name each prefix as a collection to sweep it")
	}
	if !strings.HasPrefix(pattern, "/") {
		pattern = "/" + pattern
	}
	return []string{strings.TrimSuffix(pattern, "/")}, nil
}

func (s *sweeper) Count(ctx context.Context, prefix string) (int64, error) {
	status, h, _, err := s.do(ctx, http.MethodGet, prefix, "_page=1&_limit=1", nil)
	if err != nil || status != http.StatusOK {
		return -1, err
	}
	n, err := strconv.ParseInt(h.Get("X-Total-Count"), 10, 64)
	if err != nil {
		return -1, nil
	}
	return n, nil
}

// idOf returns a record's id as text, and whether it is a number.
func idOf(rec json.RawMessage) (id string, num bool, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec, &m); err != nil {
		return "", false, errors.New("rest: a listed record is not a JSON object")
	}
	raw, ok := m["id"]
	if !ok {
		return "", false, errors.New("rest: a listed record has no id")
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str, false, nil
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&n) == nil {
		return n.String(), true, nil
	}
	return "", false, errors.New("rest: a record's id is neither a string nor a number")
}

// digest is a record's Version: SHA-256 of its JSON with members sorted
// and whitespace dropped, so that a pretty-printed read compares equal.
func digest(rec []byte) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(rec))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", errors.New("rest: a record is not JSON")
	}
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

type restCursor struct {
	Last string `json:"last"`
	Num  bool   `json:"num"`
}

func (s *sweeper) Scan(ctx context.Context, prefix, cur string, limit int) (*datastore.ScanPage, error) {
	if limit <= 0 {
		limit = 100
	}
	var c restCursor
	// One more than the page, to know whether the walk is done, and one
	// more again when resuming: the page before's last record comes back.
	want := limit + 1
	q := ""
	if cur != "" {
		if err := json.Unmarshal([]byte(cur), &c); err != nil || c.Last == "" {
			return nil, errors.New("rest: the sweep cursor is not one this profile wrote")
		}
		want++
		q = "&id_gte=" + url.QueryEscape(c.Last)
	}
	status, _, b, err := s.do(ctx, http.MethodGet, prefix, "_sort=id&_order=asc&_limit="+strconv.Itoa(want)+q, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("rest: GET {prefix}: %d", status)
	}
	var recs []json.RawMessage
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, errors.New("rest: GET {prefix}: not a list of records")
	}
	type rec struct {
		id  string
		num bool
		raw json.RawMessage
	}
	var rest []rec
	kinds := map[bool]bool{}
	for _, raw := range recs {
		id, num, err := idOf(raw)
		if err != nil {
			return nil, err
		}
		kinds[num] = true
		if cur != "" && id == c.Last && num == c.Num {
			continue // the last record of the page before
		}
		rest = append(rest, rec{id, num, raw})
	}
	if len(kinds) > 1 {
		return nil, errors.New("rest: the collection mixes number and string ids, which the store does not sort the way it compares them; the sweep cannot walk it without skipping")
	}
	page := &datastore.ScanPage{Done: len(rest) <= limit}
	if len(rest) > limit {
		rest = rest[:limit]
	}
	for _, r := range rest {
		v, err := digest(r.raw)
		if err != nil {
			return nil, err
		}
		page.Docs = append(page.Docs, datastore.StoredDoc{ID: r.id, Version: v, Body: r.raw})
		c = restCursor{Last: r.id, Num: r.num}
	}
	if c.Last != "" {
		next, _ := json.Marshal(c)
		page.Cursor = string(next)
	}
	return page, nil
}

func recordPath(prefix, id string) string { return prefix + "/" + url.PathEscape(id) }

func (s *sweeper) Write(ctx context.Context, prefix string, docs []datastore.StoredDoc) ([]datastore.WriteResult, error) {
	out := make([]datastore.WriteResult, len(docs))
	for i, d := range docs {
		out[i].ID = d.ID
		if !json.Valid(d.Body) {
			out[i].Err = errors.New("rest: a rewritten record is not JSON")
			continue
		}
		cur, err := s.Get(ctx, prefix, d.ID)
		if errors.Is(err, datastore.ErrNoDocument) {
			out[i].Conflict = true
			continue
		}
		if err != nil {
			return nil, err
		}
		if cur.Version != d.Version {
			out[i].Conflict = true
			continue
		}
		status, _, b, err := s.do(ctx, http.MethodPut, recordPath(prefix, d.ID), "", d.Body)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK && status != http.StatusCreated {
			out[i].Err = fmt.Errorf("rest: the datastore refused the record: %d", status)
			continue
		}
		if out[i].Version, err = digest(b); err != nil {
			out[i].Version, _ = digest(d.Body)
		}
	}
	return out, nil
}

func (s *sweeper) Get(ctx context.Context, prefix, id string) (*datastore.StoredDoc, error) {
	status, _, b, err := s.do(ctx, http.MethodGet, recordPath(prefix, id), "", nil)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, datastore.ErrNoDocument
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("rest: GET {prefix}/{id}: %d", status)
	}
	v, err := digest(b)
	if err != nil {
		return nil, err
	}
	return &datastore.StoredDoc{ID: id, Version: v, Body: b}, nil
}

var _ datastore.SweepProfile = (*Profile)(nil)
