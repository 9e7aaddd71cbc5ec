package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/rules"
)

// httpSemantics is an upstream with one path per HTTP behaviour that the
// sidecar must leave as it is.
func httpSemantics() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		_, _ = io.WriteString(w, `{"_id":"a","n":12345678901234567890,"s":"x"}`)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := range 3 {
			fmt.Fprintf(w, `{"part":%d}`+"\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Kind", "none")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/cached", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"fresh":true}`)
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "42")
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, strings.Repeat(" ", 40)+"{}")
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "len=%d te=%v sha=%s", n, r.TransferEncoding, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/reject", func(w http.ResponseWriter, r *http.Request) {
		// Answers without reading the body, as a server does to an
		// Expect: 100-continue request it does not want.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":"forbidden"}`)
	})
	mux.HandleFunc("/binary", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(bytes.Repeat([]byte{0, 1, 2, 0xff}, 5000))
	})
	return mux
}

type semanticsCase struct {
	name    string
	method  string
	path    string
	header  http.Header
	body    func() io.Reader
	bodyLen int64 // -1: unknown (chunked upload)
}

func semanticsCases() []semanticsCase {
	upload := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB
	return []semanticsCase{
		{name: "json", method: "GET", path: "/json"},
		{name: "chunked response", method: "GET", path: "/chunked"},
		{name: "204", method: "DELETE", path: "/nocontent"},
		{name: "304", method: "GET", path: "/cached", header: http.Header{"If-None-Match": {`"e1"`}}},
		{name: "200 conditional miss", method: "GET", path: "/cached", header: http.Header{"If-None-Match": {`"old"`}}},
		{name: "HEAD", method: "HEAD", path: "/head"},
		{name: "GET with declared length", method: "GET", path: "/head"},
		{name: "binary", method: "GET", path: "/binary"},
		{name: "upload with length", method: "PUT", path: "/upload",
			body: func() io.Reader { return bytes.NewReader(upload) }, bodyLen: int64(len(upload))},
		{name: "chunked upload", method: "PUT", path: "/upload",
			body: func() io.Reader { return io.MultiReader(bytes.NewReader(upload)) }, bodyLen: -1},
		{name: "100-continue accepted", method: "PUT", path: "/upload",
			header: http.Header{"Expect": {"100-continue"}},
			body:   func() io.Reader { return bytes.NewReader(upload) }, bodyLen: int64(len(upload))},
		{name: "100-continue rejected", method: "PUT", path: "/reject",
			header: http.Header{"Expect": {"100-continue"}},
			body:   func() io.Reader { return bytes.NewReader(upload) }, bodyLen: int64(len(upload))},
	}
}

// observed is what a client sees of one exchange.
type observed struct {
	status  int
	header  map[string]string
	te      string
	body    string
	got100  bool
	headLen int64
}

func (o observed) String() string {
	return fmt.Sprintf("status=%d te=%q len=%d got100=%v headers=%v body=%.80q", o.status, o.te, o.headLen, o.got100, o.header, o.body)
}

// relevantHeaders are compared between a direct and a proxied exchange.
var relevantHeaders = []string{"Content-Type", "Content-Length", "Etag", "X-Kind", "Content-Encoding"}

func observe(t *testing.T, c *http.Client, base string, tc semanticsCase) observed {
	t.Helper()
	var body io.Reader
	if tc.body != nil {
		body = tc.body()
	}
	req, err := http.NewRequest(tc.method, base+tc.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if tc.body != nil {
		req.ContentLength = tc.bodyLen
	}
	for k, v := range tc.header {
		req.Header[k] = v
	}
	var got100 atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got100Continue: func() { got100.Store(true) },
	}))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", tc.method, tc.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", tc.method, tc.path, err)
	}
	o := observed{status: resp.StatusCode, header: map[string]string{}, body: string(b), got100: got100.Load(), headLen: resp.ContentLength}
	for _, h := range relevantHeaders {
		if v := resp.Header.Get(h); v != "" {
			o.header[h] = v
		}
	}
	o.te = strings.Join(resp.TransferEncoding, ",")
	return o
}

func continueClient(t *testing.T) *http.Client {
	c := client(t)
	c.Transport.(*http.Transport).ExpectContinueTimeout = 10 * time.Second
	return c
}

// TestSameAsDirect sends each case to the upstream directly and through
// the sidecar and requires the client to see the same thing: status,
// framing, relevant headers, body, and whether 100 Continue came.
func TestSameAsDirect(t *testing.T) {
	for _, withPlan := range []bool{false, true} {
		t.Run(fmt.Sprintf("decryptor=%v", withPlan), func(t *testing.T) {
			_, up := startUpstream(t, httpSemantics())
			var plan *rules.Plan
			if withPlan {
				plan = decryptOnlyPlan(t)
			}
			tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(plan), Keys: testKeyring(t)})
			direct, proxied := continueClient(t), continueClient(t)
			for _, tc := range semanticsCases() {
				t.Run(tc.name, func(t *testing.T) {
					want := observe(t, direct, up.String(), tc)
					got := observe(t, proxied, tp.URL.String(), tc)
					if tc.name == "100-continue accepted" && !want.got100 {
						t.Fatal("test premise: the upstream sends 100 Continue")
					}
					if tc.name == "chunked response" && want.te != "chunked" {
						t.Fatal("test premise: the upstream response is chunked")
					}
					if want.String() != got.String() {
						t.Errorf("through the sidecar:\n got  %v\ndirect:\n want %v", got, want)
					}
				})
			}
		})
	}
}

// TestKeepAlive: a client's connection to the sidecar is reused across
// requests, and so is the sidecar's connection to the upstream.
func TestKeepAlive(t *testing.T) {
	var upstreamConns atomic.Int32
	rc := &recorder{h: httpSemantics()}
	srv := newCountingServer(t, rc, &upstreamConns)
	tp := startProxy(t, Config{Upstream: srv})
	c := client(t)
	var reused atomic.Int32
	for i := range 10 {
		req, _ := http.NewRequest("GET", tp.URL.String()+"/json", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					reused.Add(1)
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if got := reused.Load(); got != 9 {
		t.Errorf("client connection reused %d times, want 9", got)
	}
	if got := upstreamConns.Load(); got != 1 {
		t.Errorf("sidecar opened %d upstream connections for 10 sequential requests, want 1", got)
	}
}

// TestLargeUploadStreams pushes 1 GiB through an unmatched route and
// requires the heap to stay bounded: the body is streamed, never buffered.
func TestLargeUploadStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB upload skipped with -short")
	}
	const size = 1 << 30
	var received atomic.Int64
	// A plain upstream: the recording one would keep the body.
	up := plainServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		received.Store(n)
		w.WriteHeader(http.StatusCreated)
	}))
	tp := startProxy(t, Config{Upstream: up})

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	req, _ := http.NewRequest("PUT", tp.URL.String()+"/bulk/blob", io.LimitReader(zeroReader{}, size))
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client(t).Do(req)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || received.Load() != size {
		t.Fatalf("status %d, upstream received %d bytes, want 201 and %d", resp.StatusCode, received.Load(), size)
	}
	const limit = 64 << 20
	t.Logf("peak HeapInuse during a 1 GiB upload: %.1f MiB", float64(peak.Load())/(1<<20))
	if peak.Load() > limit {
		t.Errorf("peak HeapInuse %d bytes > %d: the body was buffered", peak.Load(), limit)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		// A port that was free a moment ago: nothing listens there.
		ln := mustListen(t)
		addr := ln.Addr().String()
		ln.Close()
		tp := startProxy(t, Config{Upstream: mustURL(t, "http://"+addr)})
		status, _, body := do(t, client(t), "GET", tp.URL.String()+"/db/doc?email=secret@example.com", nil, nil)
		if status != http.StatusBadGateway || errorCode(t, body) != CodeUpstreamUnavailable {
			t.Fatalf("got %d %s", status, body)
		}
		if strings.Contains(tp.Log.String(), "secret@example.com") {
			t.Errorf("log contains the query string:\n%s", tp.Log.String())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		up := plainServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-release
		}))
		defer close(release)
		tp := startProxy(t, Config{Upstream: up, UpstreamTimeout: 100 * time.Millisecond})
		status, _, body := do(t, client(t), "GET", tp.URL.String()+"/slow", nil, nil)
		if status != http.StatusGatewayTimeout || errorCode(t, body) != CodeUpstreamTimeout {
			t.Fatalf("got %d %s", status, body)
		}
	})
}

func TestRefusedWithoutForwarding(t *testing.T) {
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up})
	c := client(t)
	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"dot segment", "PUT", "/x/../clinic/doc", 400, CodeBadPath},
		{"encoded dot segment", "PUT", "/x/%2e%2e/clinic/doc", 400, CodeBadPath},
		{"single dot", "GET", "/clinic/./doc", 400, CodeBadPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tp.URL.String(), strings.NewReader(`{"ssn":"123"}`))
			req.URL.Opaque = tc.path // keep the dots as sent
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || errorCode(t, b) != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
			}
		})
	}
	t.Run("CONNECT in reverse mode", func(t *testing.T) {
		req, _ := http.NewRequest("CONNECT", tp.URL.String(), nil)
		req.Host = "example.com:443"
		req.URL.Opaque = "example.com:443"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || errorCode(t, b) != CodeMethodNotAllowed {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
	})
	if n := rc.count(); n != 0 {
		t.Fatalf("upstream received %d requests, want 0", n)
	}
	if n := len(tp.Audit.all()); n != 4 {
		t.Errorf("%d audit events for 4 refusals", n)
	}
	for _, e := range tp.Audit.all() {
		if e.Action != "request.refused" || e.Outcome != "denied" || e.Reason == "" {
			t.Errorf("audit event %+v", e)
		}
	}
}

func TestForwardHeaders(t *testing.T) {
	rc, up := startUpstream(t, nil)
	up.Path = "/base"
	tp := startProxy(t, Config{Upstream: up})
	hdr := http.Header{
		"Connection":      {"X-Hop"},
		"X-Hop":           {"secret-hop"},
		"Accept-Encoding": {"br, gzip;q=0.8"},
		"Authorization":   {"Basic YWRtaW46cGFzcw=="},
	}
	status, _, _ := do(t, client(t), "GET", tp.URL.String()+"/db/_all_docs?a=1;b=2&c", hdr, nil)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	got := rc.last(t)
	if got.Path != "/base/db/_all_docs" {
		t.Errorf("path %q", got.Path)
	}
	if got.RawQuery != "a=1;b=2&c" {
		t.Errorf("query %q, want it exactly as sent", got.RawQuery)
	}
	if got.Header.Get("X-Hop") != "" {
		t.Error("hop-by-hop header named in Connection was forwarded")
	}
	if got.Header.Get("Authorization") == "" {
		t.Error("Authorization was not forwarded")
	}
	if got.Header.Get("X-Forwarded-For") != "127.0.0.1" || got.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded headers: %v", got.Header)
	}
	if got.Header.Get("Accept-Encoding") != "br, gzip;q=0.8" {
		t.Errorf("Accept-Encoding %q: with no decryptor it must pass as is", got.Header.Get("Accept-Encoding"))
	}
}

func TestPanicBecomes500(t *testing.T) {
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: up, Rules: panickingRules{}})
	status, _, body := do(t, client(t), "GET", tp.URL.String()+"/db", nil, nil)
	if status != http.StatusInternalServerError || errorCode(t, body) != CodeInternal {
		t.Fatalf("got %d %s", status, body)
	}
	if rc.count() != 0 {
		t.Fatalf("upstream received %d requests after a panic", rc.count())
	}
	if !strings.Contains(tp.Log.String(), "panic in pipeline") {
		t.Error("panic not logged")
	}
}

// panickingRules panics on Current, standing in for any bug on the
// request path before forwarding.
type panickingRules struct{}

func (panickingRules) Current() *rules.Plan { panic("boom " + strconv.Itoa(42)) }
