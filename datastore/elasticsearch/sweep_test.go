package elasticsearch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/internal/testenv/esfake"
)

func esDo(t *testing.T, method, u, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSweeper walks an index with a point in time and search_after,
// resumes from a stored cursor, writes with if_seq_no/if_primary_term
// (a concurrent change conflicts), and reads a document again.
func TestSweeper(t *testing.T) {
	fake := esfake.New()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	for i := range 7 {
		esDo(t, "PUT", fmt.Sprintf("%s/orders/_doc/d%d", srv.URL, i), fmt.Sprintf(`{"n":%d,"email":"e%d@example.com"}`, i, i))
	}
	esDo(t, "PUT", srv.URL+"/orders-old/_doc/x", `{}`)
	esDo(t, "PUT", srv.URL+"/logs/_doc/x", `{}`)
	p := newProfile(t)
	u, _ := url.Parse(srv.URL)
	sw, err := p.Sweeper(datastore.SweepTarget{Base: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got := sw.Info(); got.Concurrency == "" || got.Walk == "" {
		t.Errorf("info %+v", got)
	}
	cols, err := sw.Collections(ctx, "orders*")
	if err != nil || strings.Join(cols, ",") != "orders,orders-old" {
		t.Fatalf("collections %v %v", cols, err)
	}
	if n, err := sw.Count(ctx, "orders"); err != nil || n != 7 {
		t.Fatalf("count %d %v", n, err)
	}
	// A write after the walk started is not chased.
	page, err := sw.Scan(ctx, "orders", "", 3)
	if err != nil {
		t.Fatal(err)
	}
	esDo(t, "PUT", srv.URL+"/orders/_doc/late", `{"n":99}`)
	seen := map[string]datastore.StoredDoc{}
	for _, d := range page.Docs {
		seen[d.ID] = d
	}
	cur := page.Cursor
	for !page.Done {
		if len(cur) > datastore.MaxCursorLen {
			t.Fatal("cursor too long")
		}
		// Resume through a fresh sweeper, as after a restart.
		sw2, _ := p.Sweeper(datastore.SweepTarget{Base: u})
		page, err = sw2.Scan(ctx, "orders", cur, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Docs {
			seen[d.ID] = d
		}
		cur = page.Cursor
	}
	if len(seen) != 7 || seen["late"].ID != "" {
		t.Fatalf("walked %d documents: %v", len(seen), seen)
	}
	// Write two: one unchanged since the walk, one changed meanwhile.
	esDo(t, "PUT", srv.URL+"/orders/_doc/d2", `{"n":2,"changed":true}`)
	res, err := sw.Write(ctx, "orders", []datastore.StoredDoc{
		{ID: "d1", Version: seen["d1"].Version, Body: []byte("{\n \"n\": 1, \"email\": \"sc2.x\"\n}")},
		{ID: "d2", Version: seen["d2"].Version, Body: []byte(`{"n":2}`)},
		{ID: "d3", Version: "garbage", Body: []byte(`{}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Conflict || res[0].Err != nil || res[0].Version == seen["d1"].Version || !res[1].Conflict || res[2].Err == nil {
		t.Fatalf("results %+v", res)
	}
	got, err := sw.Get(ctx, "orders", "d1")
	if err != nil || string(got.Body) != `{"n":1,"email":"sc2.x"}` || got.Version != res[0].Version {
		t.Fatalf("get %+v %v", got, err)
	}
	if _, err := sw.Get(ctx, "orders", "nope"); !errors.Is(err, datastore.ErrNoDocument) {
		t.Fatalf("get of a missing document: %v", err)
	}
	if err := sw.(datastore.Compactor).Compact(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	// A cursor whose point in time expired starts the walk again.
	page, err = sw.Scan(ctx, "orders", `{"pit":"gone","after":[3]}`, 100)
	if err != nil || len(page.Docs) != 8 || !page.Done {
		t.Fatalf("expired point in time: %d docs, %v", len(page.Docs), err)
	}
}
