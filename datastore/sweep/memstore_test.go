package sweep

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// memStore is an in-memory datastore with CouchDB's walk semantics: every
// write gives the document a new revision and a new sequence number, and
// a walk follows the changes feed up to the sequence the store was at
// when it started. It implements datastore.Sweeper.
type memStore struct {
	mu   sync.Mutex
	seq  int
	docs map[string]*memDoc
	// beforeWrite, when set, runs before each document of a Write is
	// applied (with the lock released): tests make the application
	// write concurrently there.
	beforeWrite func(id string)
	writes      map[string]int // sweep writes per document
	noOCC       bool
	compacted   int
}

type memDoc struct {
	rev  int
	seq  int
	body map[string]any
}

func newMemStore() *memStore {
	return &memStore{docs: map[string]*memDoc{}, writes: map[string]int{}}
}

// put writes a document as the application would (no concurrency check).
func (m *memStore) put(id string, body map[string]any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	d := m.docs[id]
	if d == nil {
		d = &memDoc{}
		m.docs[id] = d
	}
	d.rev++
	d.seq = m.seq
	d.body = body
}

func (m *memStore) get(id string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.docs[id].body
}

func (m *memStore) Info() datastore.SweeperInfo {
	if m.noOCC {
		return datastore.SweeperInfo{Walk: "memory"}
	}
	return datastore.SweeperInfo{Concurrency: "rev", Walk: "memory"}
}

func (m *memStore) Collections(ctx context.Context, pattern string) ([]string, error) {
	return []string{"clinic"}, nil
}

func (m *memStore) Count(ctx context.Context, collection string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.docs)), nil
}

type memCursor struct {
	Since int `json:"since"`
	End   int `json:"end"`
}

func (m *memStore) Scan(ctx context.Context, collection, cursor string, limit int) (*datastore.ScanPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := memCursor{End: m.seq}
	if cursor != "" {
		if err := json.Unmarshal([]byte(cursor), &c); err != nil {
			return nil, err
		}
	}
	type item struct {
		id string
		d  *memDoc
	}
	var items []item
	for id, d := range m.docs {
		if d.seq > c.Since {
			items = append(items, item{id, d})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].d.seq < items[j].d.seq })
	page := &datastore.ScanPage{}
	for _, it := range items {
		if len(page.Docs) == limit {
			break
		}
		if it.d.seq > c.End {
			break
		}
		if strings.HasPrefix(it.id, "_design/") {
			page.Skipped = map[string]int{"design": 1}
			c.Since = it.d.seq
			continue
		}
		body := map[string]any{"_id": it.id, "_rev": strconv.Itoa(it.d.rev)}
		for k, v := range it.d.body {
			body[k] = v
		}
		b, _ := json.Marshal(body)
		page.Docs = append(page.Docs, datastore.StoredDoc{ID: it.id, Version: strconv.Itoa(it.d.rev), Body: b})
		c.Since = it.d.seq
	}
	page.Done = len(page.Docs) < limit || c.Since >= c.End
	b, _ := json.Marshal(c)
	page.Cursor = string(b)
	return page, nil
}

func (m *memStore) Write(ctx context.Context, collection string, docs []datastore.StoredDoc) ([]datastore.WriteResult, error) {
	out := make([]datastore.WriteResult, len(docs))
	for i, d := range docs {
		if m.beforeWrite != nil {
			m.beforeWrite(d.ID)
		}
		m.mu.Lock()
		cur := m.docs[d.ID]
		out[i].ID = d.ID
		if cur == nil || strconv.Itoa(cur.rev) != d.Version {
			out[i].Conflict = true
			m.mu.Unlock()
			continue
		}
		var body map[string]any
		if err := json.Unmarshal(d.Body, &body); err != nil {
			m.mu.Unlock()
			return nil, fmt.Errorf("memstore: %v", err)
		}
		delete(body, "_id")
		delete(body, "_rev")
		m.seq++
		cur.rev++
		cur.seq = m.seq
		cur.body = body
		m.writes[d.ID]++
		out[i].Version = strconv.Itoa(cur.rev)
		m.mu.Unlock()
	}
	return out, nil
}

func (m *memStore) Get(ctx context.Context, collection, id string) (*datastore.StoredDoc, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.docs[id]
	if d == nil {
		return nil, datastore.ErrNoDocument
	}
	body := map[string]any{"_id": id, "_rev": strconv.Itoa(d.rev)}
	for k, v := range d.body {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	return &datastore.StoredDoc{ID: id, Version: strconv.Itoa(d.rev), Body: b}, nil
}

func (m *memStore) Compact(ctx context.Context, collection string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.compacted++
	return nil
}

var (
	_ datastore.Sweeper   = (*memStore)(nil)
	_ datastore.Compactor = (*memStore)(nil)
)
