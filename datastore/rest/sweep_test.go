package rest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func startJSONServer(t *testing.T, db string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts json-server")
	}
	bin := filepath.Join(testenv.RepoRoot(), ".deps", "pouchdb", "node_modules", ".bin", "json-server")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "json-server", "scripts/deps.sh")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "db.json")
	if err := os.WriteFile(file, []byte(db), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--quiet", file)
	cmd.Dir = dir
	p := testenv.Start(t, "json-server", cmd)
	testenv.WaitHTTP(t, p, "http://"+addr+"/db", 60*time.Second)
	return "http://" + addr
}

// TestSweeperJSONServer walks json-server's listing by id, resumes from
// stored cursors without skipping a record deleted meanwhile, writes
// only over the version read, and reads a record again.
func TestSweeperJSONServer(t *testing.T) {
	var recs []string
	for i := 1; i <= 7; i++ {
		recs = append(recs, fmt.Sprintf(`{"id":%d,"email":"e%d@example.com"}`, i, i))
	}
	base := startJSONServer(t, `{"customers":[`+strings.Join(recs, ",")+`]}`)
	u, _ := url.Parse(base)
	sw, err := newProfile(t).Sweeper(datastore.SweepTarget{Base: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if cols, err := sw.Collections(ctx, "/customers"); err != nil || len(cols) != 1 || cols[0] != "/customers" {
		t.Fatalf("collections %v %v", cols, err)
	}
	if _, err := sw.Collections(ctx, "/api/*/patients"); err == nil {
		t.Error("a pattern was listed")
	}
	if n, err := sw.Count(ctx, "/customers"); err != nil || n != 7 {
		t.Errorf("count %d %v", n, err)
	}
	seen := map[string]datastore.StoredDoc{}
	cur := ""
	for i := 0; ; i++ {
		page, err := sw.Scan(ctx, "/customers", cur, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Docs {
			seen[d.ID] = d
		}
		if i == 0 {
			// Delete the page's last record: the walk goes on after it.
			req, _ := http.NewRequest("DELETE", base+"/customers/3", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		cur = page.Cursor
		if page.Done {
			break
		}
		if i > 10 {
			t.Fatal("the walk does not end")
		}
	}
	if len(seen) != 7 {
		t.Fatalf("walked %d records", len(seen))
	}
	// A change meanwhile conflicts; an unchanged record is written.
	req, _ := http.NewRequest("PATCH", base+"/customers/5", strings.NewReader(`{"x":1}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	res, err := sw.Write(ctx, "/customers", []datastore.StoredDoc{
		{ID: "4", Version: seen["4"].Version, Body: []byte(`{"id":4,"email":"sc2.x"}`)},
		{ID: "5", Version: seen["5"].Version, Body: []byte(`{"id":5,"email":"sc2.y"}`)},
		{ID: "3", Version: seen["3"].Version, Body: []byte(`{"id":3}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Conflict || res[0].Err != nil || !res[1].Conflict || !res[2].Conflict {
		t.Fatalf("results %+v", res)
	}
	got, err := sw.Get(ctx, "/customers", "4")
	if err != nil || !strings.Contains(string(got.Body), "sc2.x") || got.Version != res[0].Version {
		t.Fatalf("get %+v %v", got, err)
	}
	if _, err := sw.Get(ctx, "/customers", "3"); !errors.Is(err, datastore.ErrNoDocument) {
		t.Errorf("deleted record: %v", err)
	}
}
