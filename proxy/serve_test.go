package proxy

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestServeDrains: when the context ends, a request in flight completes,
// new connections are refused, and Serve returns nil.
func TestServeDrains(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	up := plainServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	}))
	p, err := New(Config{Upstream: up, Rules: newStaticRules(nil), Keys: testKeyring(t), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()

	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client(t).Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	cancel()
	// Serve stops accepting before it waits for the request: poll until
	// a new connection is refused (bounded by the test's own timeout).
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-got
	if r.err != nil || r.status != 200 || r.body != "done" {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestServeDrainTimeout: a stream that outlives ShutdownTimeout is cut and
// Serve still returns.
func TestServeDrainTimeout(t *testing.T) {
	started := make(chan struct{})
	up := plainServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	p, _ := New(Config{Upstream: up, Rules: newStaticRules(nil), Keys: testKeyring(t), ShutdownTimeout: 50 * time.Millisecond})
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()
	resp, err := client(t).Get("http://" + ln.Addr().String() + "/feed")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the stream ended cleanly; want it cut")
	}
}

// TestReverseHTTPSUpstream: an HTTPS upstream is verified, against a
// private CA file when one is given.
func TestReverseHTTPSUpstream(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	t.Cleanup(up.Close)
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644)
	tlsConf, err := UpstreamTLSConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		conf   func() *Config
		status int
		body   string
	}{
		{"trusted through SIDECRYPT_UPSTREAM_CA", func() *Config { return &Config{UpstreamTLS: tlsConf} }, 200, "secure"},
		{"system roots only", func() *Config { return &Config{} }, 502, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.conf()
			cfg.Upstream = mustURL(t, up.URL)
			tp := startProxy(t, *cfg)
			status, _, b := do(t, client(t), "GET", tp.URL.String()+"/x", nil, nil)
			if status != tc.status || (tc.body != "" && string(b) != tc.body) {
				t.Fatalf("got %d %s", status, b)
			}
		})
	}
	if _, err := UpstreamTLSConfig(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("missing CA file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("no certificates here"), 0o644)
	if _, err := UpstreamTLSConfig(bad); err == nil {
		t.Error("CA file without certificates accepted")
	}
}

// TestBrokenUpstreamStream: an upstream that dies mid-response leaves the
// client with an error, never with a body that looks complete, whether
// the response is decrypted or passed through.
func TestBrokenUpstreamStream(t *testing.T) {
	up := plainServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("ct"))
		io.WriteString(w, `{"rows":[{"a":1},`)
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(decryptOnlyPlan(t)), Keys: testKeyring(t)})
	for _, ct := range []string{"application/json", "application/octet-stream"} {
		t.Run(ct, func(t *testing.T) {
			resp, err := client(t).Get(tp.URL.String() + "/feed?ct=" + ct)
			if err != nil {
				return // cut before the headers: also an error
			}
			defer resp.Body.Close()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Error("a truncated response read as complete")
			}
		})
	}
}
