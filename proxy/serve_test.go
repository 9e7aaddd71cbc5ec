package proxy

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
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

// TestServeStreamHeadAndDrain: a streamed response whose upstream has
// sent only its head (a change feed with nothing new yet) reaches the
// client at once, before any body byte, on both engines, passed through
// and on a decrypting route; and a drain that times out cuts such a
// stream: Serve returns, the client sees the body end unfinished, and the
// upstream connection is closed. The fasthttp engine used to hold the
// head back until the first body bytes, and its drain waited for the
// upstream for ever.
func TestServeStreamHeadAndDrain(t *testing.T) {
	for _, engine := range feEngines {
		for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
			t.Run(engine+path, func(t *testing.T) {
				upLn := mustListen(t)
				upClosed := make(chan struct{})
				go func() {
					c, err := upLn.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
					// Nothing more: wait for the sidecar to let go.
					io.Copy(io.Discard, c)
					close(upClosed)
				}()
				p, err := New(Config{
					Engine:          engine,
					Upstream:        &url.URL{Scheme: "http", Host: upLn.Addr().String()},
					Rules:           newStaticRules(fePlan(t)),
					Keys:            fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1)),
					ShutdownTimeout: 50 * time.Millisecond,
				})
				if err != nil {
					t.Fatal(err)
				}
				ln := mustListen(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				served := make(chan error, 1)
				go func() { served <- p.Serve(ctx, ln) }()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no response head while the upstream sends no body: %v", err)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				cancel()
				select {
				case err := <-served:
					if err != nil {
						t.Errorf("Serve: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Serve did not return after the drain timed out")
				}
				if _, err := io.ReadAll(resp.Body); err == nil {
					t.Error("the stream ended cleanly; want it cut")
				}
				select {
				case <-upClosed:
				case <-time.After(10 * time.Second):
					t.Error("the upstream connection was not closed")
				}
			})
		}
	}
}

// TestServeRefusedUploadAnswered: a client still sending an upload that
// the sidecar refused (over MaxBody) gets the 413 and its JSON code, not
// a connection reset, on both engines: the connection is closed after
// the answer with a FIN and a lingering read, as net/http's server does.
// Closing at once with the rest of the upload unread sends a reset, and
// the client's kernel then drops the answer it has not read yet.
func TestServeRefusedUploadAnswered(t *testing.T) {
	body := `{"ssn":"` + feMarker + `","pad":"` + strings.Repeat("x", 8<<20) + `"}`
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up := startFeUpstream(t, nil)
			tp := startProxy(t, Config{
				Engine:   engine,
				Upstream: up.URL,
				Rules:    newStaticRules(fePlan(t)),
				Keys:     fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1)),
				MaxBody:  64 << 10,
			})
			// Go's own client, as an application would use it: when its
			// write of the body fails it reports the write's error, not
			// the answer it was sent.
			cl := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
			defer cl.CloseIdleConnections()
			for i := range 10 {
				req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/clinic/p%d", tp.URL, i), strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatalf("upload %d: no answer: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), CodeBodyTooLarge) {
					t.Fatalf("upload %d: %d %q, want 413 %s", i, resp.StatusCode, b, CodeBodyTooLarge)
				}
			}
			up.checkNoPlaintext(t, engine)
		})
	}
}
