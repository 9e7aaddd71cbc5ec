package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen is what the echo upstream recorded about the last request.
type seen struct {
	method, requestURI, host string
	header                   http.Header
	body                     []byte
	contentLength            int64
	transferEncoding         []string
}

// echoUpstream echoes method, path, query and selected headers (as X-Echo-*
// response headers) and the body; it keeps the last PUT/POST body per path
// and answers a GET of that path with it (Content-Type application/json).
type echoUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	last   seen
	stored map[string][]byte
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	u := &echoUpstream{stored: map[string][]byte{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		u.mu.Lock()
		u.last = seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body, r.ContentLength, r.TransferEncoding}
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			u.stored[r.URL.Path] = body
		}
		stored, haveStored := u.stored[r.URL.Path]
		u.mu.Unlock()

		h := w.Header()
		h.Set("X-Echo-Method", r.Method)
		h.Set("X-Echo-Path", r.URL.EscapedPath())
		h.Set("X-Echo-Query", r.URL.RawQuery)
		h.Set("X-Echo-Custom", r.Header.Get("X-Custom"))
		// Hop-by-hop headers for the proxy to strip on the way back.
		h.Set("Connection", "X-Up-Hop")
		h.Set("X-Up-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("X-End-To-End", "kept")
		if r.Method == http.MethodGet && haveStored {
			h.Set("Content-Type", "application/json")
			w.Write(stored)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
		status := http.StatusOK
		if s := r.URL.Query().Get("status"); s != "" {
			fmt.Sscan(s, &status)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *echoUpstream) lastSeen() seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// startProxy runs the proxy in-process on a free loopback port.
func startProxy(t *testing.T, engine, upstream string, transform bool) string {
	t.Helper()
	cfg, err := parseConfig(engine, upstream, transform)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(2 * shutdownTimeout):
			t.Error("proxy did not shut down")
		}
	})
	return "http://" + ln.Addr().String()
}

var engines = []string{"nethttp", "nethttp-direct", "fasthttp", "fasthttp-adaptor"}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func do(t *testing.T, c *http.Client, method, url, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("X-Custom", "abc")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, got
}

func TestPassThrough(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			up := newEchoUpstream(t)
			proxy := startProxy(t, engine, up.URL, false)
			c := newClient(t)
			upHost := strings.TrimPrefix(up.URL, "http://")

			cases := []struct {
				method, path, ctype string
				body                []byte
				status              int
			}{
				{"GET", "/db/doc%2Fid?rev=1-abc&x=%20y", "", nil, 200},
				{"PUT", "/db/doc1?status=201", "application/json", []byte(`{"a":1,"b":"<&>"}`), 201},
				{"POST", "/db", "application/octet-stream", []byte("\x00\x01 binary \xff"), 200},
				{"POST", "/db?status=409", "text/plain; charset=utf-8", []byte("conflict\n"), 409},
				{"DELETE", "/db/doc1?rev=2-x", "", nil, 200},
			}
			for _, tc := range cases {
				res, got := do(t, c, tc.method, proxy+tc.path, tc.ctype, tc.body)
				name := tc.method + " " + tc.path
				if res.StatusCode != tc.status {
					t.Errorf("%s: status %d, want %d", name, res.StatusCode, tc.status)
				}
				if !bytes.Equal(got, tc.body) && !(got != nil && len(got) == 0 && tc.body == nil) {
					t.Errorf("%s: body %q, want %q", name, got, tc.body)
				}
				if ct := res.Header.Get("Content-Type"); ct != tc.ctype {
					t.Errorf("%s: Content-Type %q, want %q", name, ct, tc.ctype)
				}
				s := up.lastSeen()
				if s.method != tc.method || s.requestURI != tc.path {
					t.Errorf("%s: upstream saw %s %s", name, s.method, s.requestURI)
				}
				if !bytes.Equal(s.body, tc.body) && len(s.body)+len(tc.body) > 0 {
					t.Errorf("%s: upstream body %q", name, s.body)
				}
				if s.host != upHost {
					t.Errorf("%s: upstream Host %q, want %q", name, s.host, upHost)
				}
				if s.header.Get("X-Custom") != "abc" || s.header.Get("Content-Type") != tc.ctype {
					t.Errorf("%s: upstream headers %v", name, s.header)
				}
				if res.Header.Get("X-Echo-Path") == "" || res.Header.Get("X-Echo-Custom") != "abc" || res.Header.Get("X-End-To-End") != "kept" {
					t.Errorf("%s: response headers %v", name, res.Header)
				}
				if n := len(res.Header.Values("Date")); n != 1 {
					t.Errorf("%s: %d Date headers", name, n)
				}
				for _, h := range []string{"Connection", "X-Up-Hop", "Keep-Alive", "Proxy-Authenticate"} {
					if v := res.Header.Get(h); v != "" {
						t.Errorf("%s: hop-by-hop response header %s: %q forwarded", name, h, v)
					}
				}
			}
		})
	}
}

// rawRequest writes a raw HTTP/1.1 request and reads the response.
func rawRequest(t *testing.T, proxy, raw string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestHopByHopAndChunked(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			up := newEchoUpstream(t)
			proxy := startProxy(t, engine, up.URL, false)
			chunks := []string{`{"part":`, `"one",`, `"two":"\u00e9"}`}
			want := strings.Join(chunks, "")
			var b strings.Builder
			b.WriteString("POST /db/chunked?q=1 HTTP/1.1\r\nHost: example.test\r\n" +
				"Content-Type: application/json\r\n" +
				"Connection: keep-alive, X-Client-Hop\r\n" +
				"X-Client-Hop: secret\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"TE: trailers, deflate\r\n" +
				"Upgrade: foo/1\r\n" +
				"X-Custom: abc\r\n" +
				"Transfer-Encoding: chunked\r\n\r\n")
			for _, c := range chunks {
				fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
			}
			b.WriteString("0\r\n\r\n")
			res, body := rawRequest(t, proxy, b.String())
			if res.StatusCode != 200 || string(body) != want {
				t.Fatalf("status %d body %q, want 200 %q", res.StatusCode, body, want)
			}
			s := up.lastSeen()
			if string(s.body) != want {
				t.Errorf("upstream body %q, want %q", s.body, want)
			}
			// httputil.ReverseProxy deliberately re-adds exactly "Te: trailers"
			// (it relays trailers; golang.org/issue/21096); nothing else of TE.
			if v := s.header.Values("Te"); len(v) > 0 && (!(strings.HasPrefix(engine, "nethttp") || engine == "fasthttp-adaptor") || len(v) != 1 || v[0] != "trailers") {
				t.Errorf("hop-by-hop request header Te: %q forwarded", v)
			}
			for _, h := range []string{"Connection", "X-Client-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Upgrade", "Trailer"} {
				if v, ok := s.header[h]; ok {
					t.Errorf("hop-by-hop request header %s: %q forwarded", h, v)
				}
			}
			if s.header.Get("X-Custom") != "abc" {
				t.Errorf("end-to-end header X-Custom lost: %v", s.header)
			}
			for _, h := range []string{"Connection", "X-Up-Hop", "Keep-Alive", "Proxy-Authenticate"} {
				if v := res.Header.Get(h); v != "" {
					t.Errorf("hop-by-hop response header %s: %q forwarded", h, v)
				}
			}
		})
	}
}

func TestLargeBody(t *testing.T) {
	big := make([]byte, 1<<20)
	rand.Read(big)
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			up := newEchoUpstream(t)
			proxy := startProxy(t, engine, up.URL, false)
			c := newClient(t)
			res, got := do(t, c, "PUT", proxy+"/db/big/attachment", "application/octet-stream", big)
			if res.StatusCode != 200 || !bytes.Equal(got, big) {
				t.Fatalf("status %d, %d bytes back, equal=%v", res.StatusCode, len(got), bytes.Equal(got, big))
			}
			if s := up.lastSeen(); !bytes.Equal(s.body, big) {
				t.Fatalf("upstream got %d bytes, equal=false", len(s.body))
			}
		})
	}
}

func TestBadGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			proxy := startProxy(t, engine, dead, false)
			res, _ := do(t, newClient(t), "GET", proxy+"/x", "", nil)
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", res.StatusCode)
			}
		})
	}
}

var secrets = map[string]string{
	"ssn":       "123-45-6789",
	"diagnosis": "acute bronchitis",
	"email":     "alice@example.com",
	"number":    "4111111111111111",
}

func secretDoc(id string) []byte {
	return []byte(fmt.Sprintf(`{"_id":%q,"name":"Alice","ssn":%q,"card":{"number":%q,"exp":"12/30"},`+
		`"visit":{"diagnosis":%q,"contact":{"email":%q}},"n":12345678901234567890}`,
		id, secrets["ssn"], secrets["number"], secrets["diagnosis"], secrets["email"]))
}

func TestTransform(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			up := newEchoUpstream(t)
			proxy := startProxy(t, engine, up.URL, true)
			c := newClient(t)
			for _, method := range []string{"PUT", "POST"} {
				path := "/db/" + strings.ToLower(method)
				doc := secretDoc(method)
				res, _ := do(t, c, method, proxy+path, "application/json", doc)
				if res.StatusCode != 200 {
					t.Fatalf("%s: status %d", method, res.StatusCode)
				}
				s := up.lastSeen()
				for k, v := range secrets {
					if bytes.Contains(s.body, []byte(v)) {
						t.Errorf("%s: upstream saw plaintext %s in %s", method, k, s.body)
					}
				}
				if s.contentLength != int64(len(s.body)) {
					t.Errorf("%s: upstream Content-Length %d for %d bytes", method, s.contentLength, len(s.body))
				}
				if !bytes.Contains(s.body, []byte(`"name":"Alice"`)) || !bytes.Contains(s.body, []byte(`12345678901234567890`)) {
					t.Errorf("%s: other fields damaged: %s", method, s.body)
				}

				res, got := do(t, c, "GET", proxy+path, "", nil)
				if res.StatusCode != 200 || res.ContentLength != int64(len(got)) {
					t.Fatalf("GET %s: status %d, Content-Length %d for %d bytes", path, res.StatusCode, res.ContentLength, len(got))
				}
				var d struct {
					SSN   string `json:"ssn"`
					Card  struct{ Number string }
					Visit struct {
						Diagnosis string
						Contact   struct{ Email string }
					}
				}
				if err := json.Unmarshal(got, &d); err != nil {
					t.Fatalf("GET %s: %v: %s", path, err, got)
				}
				if d.SSN != secrets["ssn"] || d.Card.Number != secrets["number"] ||
					d.Visit.Diagnosis != secrets["diagnosis"] || d.Visit.Contact.Email != secrets["email"] {
					t.Errorf("GET %s: not decrypted: %s", path, got)
				}
			}
			// Invalid JSON is refused, not forwarded.
			res, _ := do(t, c, "POST", proxy+"/db/bad", "application/json", []byte(`{"ssn":`))
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("invalid JSON: status %d, want 400", res.StatusCode)
			}
			// Non-JSON bodies pass through untouched.
			res, got := do(t, c, "POST", proxy+"/db/raw", "text/plain", []byte(`{"ssn":"x"}`))
			if res.StatusCode != 200 || string(got) != `{"ssn":"x"}` {
				t.Errorf("text/plain: status %d body %q", res.StatusCode, got)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		engine, upstream string
		ok               bool
	}{
		{"nethttp", "http://127.0.0.1:5984", true},
		{"fasthttp", "http://localhost", true},
		{"fasthttp", "https://127.0.0.1:1", false},
		{"hyper", "http://127.0.0.1:1", false},
		{"nethttp", "", false},
	} {
		cfg, err := parseConfig(tc.engine, tc.upstream, false)
		if (err == nil) != tc.ok {
			t.Errorf("parseConfig(%q, %q): %v", tc.engine, tc.upstream, err)
		}
		if err == nil && cfg.upstream.Port() == "" {
			t.Errorf("parseConfig(%q, %q): no port in %v", tc.engine, tc.upstream, cfg.upstream)
		}
	}
}
