package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/rules"
)

// benchDoc is a 1 KiB patient with four protected fields (ssn, email,
// diagnosis, visits[0].diagnosis) among ordinary ones.
var benchDoc = func() string {
	d := `{"_id":"p1","name":"Ada Lovelace","ssn":"078-05-1120","email":"ada@example.com","age":36,` +
		`"diagnosis":{"code":"J45","text":"asthma"},"visits":[{"date":"2026-01-02","diagnosis":"bronchitis"}],` +
		`"address":{"street":"12 St James's Square","city":"London","zip":"SW1Y 4JH"},"notes":"`
	pad := 1024 - len(d) - 2
	return d + strings.Repeat("n", pad) + `"}`
}()

// benchClient is a client with a pool large enough for RunParallel.
func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func benchRequest(b *testing.B, c *http.Client, method, url string, body []byte) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkPipeline measures requests per second through the sidecar, on
// loopback with an in-process upstream, against the same upstream
// reached directly. Compare ns/op between "direct" and the others.
func BenchmarkPipeline(b *testing.B) {
	keys := testKeyring(b)
	sealed := []byte(seal(b, keys, benchDoc, piiRule("$.ssn"), piiRule("$..diagnosis"), contactRule("$.email")))
	plain := []byte(benchDoc)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "PUT":
			_, _ = io.WriteString(w, `{"ok":true,"id":"p1","rev":"1-x"}`)
		case strings.HasPrefix(r.URL.Path, "/clinic/"):
			_, _ = w.Write(sealed)
		default:
			_, _ = w.Write(plain)
		}
	}))
	b.Cleanup(upstream.Close)
	tp := startProxy(b, Config{Upstream: mustURL(b, upstream.URL), Rules: rules.Static(clinicPlan(b)), Keys: keys, Logger: slog.New(slog.DiscardHandler)})
	// The floor: a bare httputil.ReverseProxy with the same transport
	// settings, so that the pipeline's own cost shows as the difference.
	bare := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(mustURL(b, upstream.URL)) },
		Transport: newTransport(nil),
	}
	bareSrv := httptest.NewServer(bare)
	b.Cleanup(bareSrv.Close)
	c := benchClient(b)
	for _, bc := range []struct {
		name, base, method, path string
		body                     []byte
	}{
		{"direct/get-1KiB", upstream.URL, "GET", "/other/p1", nil},
		{"bare-reverseproxy/get-1KiB", bareSrv.URL, "GET", "/other/p1", nil},
		{"bare-reverseproxy/put-1KiB", bareSrv.URL, "PUT", "/other/p1", plain},
		{"unmatched/get-1KiB", tp.URL.String(), "GET", "/other/p1", nil},
		{"unmatched/put-1KiB", tp.URL.String(), "PUT", "/other/p1", plain},
		{"encrypt/put-1KiB-4-fields", tp.URL.String(), "PUT", "/clinic/p1", plain},
		{"decrypt/get-1KiB-4-fields", tp.URL.String(), "GET", "/clinic/p1", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchRequest(b, c, bc.method, bc.base+bc.path, bc.body) // warm the pools
			b.ReportAllocs()
			b.SetBytes(int64(len(benchDoc)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchRequest(b, c, bc.method, bc.base+bc.path, bc.body)
				}
			})
		})
	}
}
