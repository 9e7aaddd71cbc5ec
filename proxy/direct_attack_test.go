package proxy

// Adversarial tests of the direct transport (direct.go): a hostile or
// quirky upstream, hostile clients, concurrency, retries, leaks. Tests
// named TestDirectAttack expose a defect (see the comment on each).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// atkSeen is one request as the attack upstream parsed it.
type atkSeen struct {
	method, path string
	body         string
	conn, index  int // connection number (from 1), request number on it (from 1)
}

// atkUpstream is a raw HTTP/1.1 upstream: it parses each request with
// http.ReadRequest, records it, and lets handle write whatever bytes it
// likes. handle returns false to close the connection.
type atkUpstream struct {
	URL   *url.URL
	done  chan struct{} // closed when the test ends: blocked handlers return
	conns atomic.Int32
	open  atomic.Int32

	mu       sync.Mutex
	seen     []atkSeen
	parseErr []error // request parse errors other than a clean end
}

func startAtkUpstream(t *testing.T, handle func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool) *atkUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &atkUpstream{done: make(chan struct{})}
	u.URL, _ = url.Parse("http://" + ln.Addr().String())
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(u.done)
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(u.conns.Add(1))
			u.open.Add(1)
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer u.open.Add(-1)
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 1; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						if err != io.EOF && !isClosedErr(err) {
							u.mu.Lock()
							u.parseErr = append(u.parseErr, err)
							u.mu.Unlock()
						}
						return
					}
					b, err := io.ReadAll(req.Body)
					if err != nil {
						u.mu.Lock()
						u.parseErr = append(u.parseErr, err)
						u.mu.Unlock()
						return
					}
					s := atkSeen{method: req.Method, path: req.URL.Path, body: string(b), conn: n, index: i}
					u.mu.Lock()
					u.seen = append(u.seen, s)
					u.mu.Unlock()
					if !handle(u, c, req, s) {
						return
					}
				}
			}()
		}
	}()
	return u
}

func isClosedErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "use of closed network connection") || strings.Contains(s, "connection reset") || err == io.ErrUnexpectedEOF
}

func (u *atkUpstream) received(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.seen {
		if s.path == path {
			n++
		}
	}
	return n
}

// atkAnswer writes the normal, well-framed answer to s.
func atkAnswer(c net.Conn, s atkSeen) {
	body := "answer:" + s.method + " " + s.path + " " + s.body
	if s.method == http.MethodHead {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n", s.path, len(body))
		return
	}
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n%s", s.path, len(body), body)
}

// evil is a complete response that belongs to no request: any client that
// receives it got bytes from another exchange.
const evil = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: EVIL\r\nContent-Length: 4\r\n\r\nEVIL"

func attackClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 64, MaxResponseHeaderBytes: 64 << 20}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func atkDo(c *http.Client, method, u, body string, hdr ...string) (int, http.Header, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// TestDirectAttackAmbiguousFraming: the first exchange gets a response
// whose framing is ambiguous or wrong, followed (in the same write, or a
// moment later) by a complete extra response. The requests that follow,
// which may reuse the pooled connection, must each get their own answer
// or an error, never the extra response or leftovers of the first.
func TestDirectAttackAmbiguousFraming(t *testing.T) {
	cases := []struct {
		name   string
		method string
		resp   string // bytes answering the first request
		close  bool   // close the connection after resp (and evil)
		noEvil bool
	}{
		{"te+cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, false},
		{"cl+te", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, false},
		{"two-cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nok", false, false},
		{"same-cl-twice", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"cl-list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2, 40\r\n\r\nok", false, false},
		{"cl-plus", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", false, false},
		{"cl-space-colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 40\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"head-with-body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(evil)) + "\r\n\r\n" + evil, false, true},
		{"head-chunked-body", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(evil), evil), false, true},
		{"204-with-body", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: " + strconv.Itoa(len(evil)) + "\r\n\r\n" + evil, false, true},
		{"304-with-body", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: " + strconv.Itoa(len(evil)) + "\r\n\r\n" + evil, false, true},
		{"204-chunked", "DELETE", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n", false, false},
		{"chunked-extra", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false, false},
		{"chunked-trailers", "GET", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: v\r\n\r\n", false, false},
		{"chunked-no-final-crlf", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n", false, false},
		{"chunked-ext", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"b\"\r\nok\r\n0\r\n\r\n", false, false},
		{"chunked-huge-size", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nok\r\n", false, false},
		{"te-gzip-chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false, false},
		{"te-identity", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"cl-too-small", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokokok", false, false},
		{"cl-short-then-close", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true, true},
		{"no-length-until-close", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok", true, false},
		{"interim-then-final", "GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"http10-keepalive", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"bare-lf", "GET", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false, false},
		{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"garbage-status", "GET", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"not-http", "GET", "SSH-2.0-OpenSSH\r\n\r\n", false, false},
		{"switching-protocols", "GET", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", false, false},
		{"nul-in-header", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", false, false},
	}
	for _, tc := range cases {
		for _, delayed := range []bool{false, true} {
			name := tc.name
			if delayed {
				name += "/delayed"
			}
			t.Run(name, func(t *testing.T) {
				u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
					if s.path != "/db/a" {
						atkAnswer(c, s)
						return true
					}
					io.WriteString(c, tc.resp)
					if !tc.noEvil {
						if delayed {
							time.Sleep(5 * time.Millisecond)
						}
						io.WriteString(c, evil)
					}
					return !tc.close
				})
				tp := startProxy(t, Config{Upstream: u.URL})
				c := attackClient(t)
				st, h, b, err := atkDo(c, tc.method, tp.URL.String()+"/db/a", "")
				if err == nil && st == 200 && (h.Get("X-Echo") == "EVIL" || b == "EVIL") {
					t.Errorf("the first request got the extra response: %d %q", st, b)
				}
				time.Sleep(50 * time.Millisecond) // the delayed bytes arrive
				for i := range 4 {
					method := []string{"GET", "HEAD", "POST", "GET"}[i]
					path := fmt.Sprintf("/db/b%d", i)
					body := ""
					if method == "POST" {
						body = `{"n":` + strconv.Itoa(i) + `}`
					}
					st, h, b, err := atkDo(c, method, tp.URL.String()+path, body)
					if err != nil {
						t.Errorf("%s %s: %v", method, path, err)
						continue
					}
					if st == http.StatusBadGateway {
						continue // an error is acceptable, another's data is not
					}
					want := "answer:" + method + " " + path + " " + body
					if method == "HEAD" {
						want = ""
					}
					if st != 200 || h.Get("X-Echo") != path || b != want {
						t.Errorf("%s %s after %q: got %d X-Echo=%q %q", method, path, tc.name, st, h.Get("X-Echo"), b)
					}
				}
			})
		}
	}
}

// TestDirectAttackAbandonedResponse: a client that reads part of a large
// response and hangs up must not leave its half-read upstream connection
// in the pool; the next requests get their own answers.
func TestDirectAttackAbandonedResponse(t *testing.T) {
	big := strings.Repeat("A", 1<<20)
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		if s.path == "/db/big" {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(big)+len(evil))
			// The rest may be written after the client left; ignore errors.
			io.WriteString(c, big)
			io.WriteString(c, evil)
			return true
		}
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL})
	for round := range 5 {
		func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", tp.URL.String()+"/db/big", nil)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1000*(round+1))
			io.ReadFull(resp.Body, buf)
			cancel()
			resp.Body.Close()
		}()
		c := attackClient(t)
		for i := range 5 {
			path := fmt.Sprintf("/db/n%d-%d", round, i)
			st, h, b, err := atkDo(c, "GET", tp.URL.String()+path, "")
			if err != nil {
				t.Fatal(err)
			}
			if st != 200 || h.Get("X-Echo") != path || b != "answer:GET "+path+" " {
				t.Fatalf("after an abandoned response, GET %s got %d %q %.60q", path, st, h.Get("X-Echo"), b)
			}
		}
	}
}

// TestDirectAttackConcurrentMixed: many clients, mixed methods, random
// client cancellation, an upstream that closes connections at random and
// when idle. Every successful response must be the one for its own
// request, a POST reaches the upstream at most once, a request fails only
// when the upstream never received it and it may not be sent twice (see
// below), and at the end no upstream connection or goroutine is left
// behind.
func TestDirectAttackConcurrentMixed(t *testing.T) {
	var posts sync.Map // id -> *atomic.Int32
	var seen sync.Map  // id -> true: the upstream received this request
	var open atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("X-Id")
		seen.Store(id, true)
		if r.Method == "POST" {
			v, _ := posts.LoadOrStore(id, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}
		if rand.Intn(7) == 0 {
			w.Header().Set("Connection", "close")
		}
		if rand.Intn(5) == 0 {
			time.Sleep(time.Duration(rand.Intn(3)) * time.Millisecond)
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Echo", id)
		size := 10
		if rand.Intn(4) == 0 {
			size = 50 << 10
		}
		fmt.Fprintf(w, "%s %s %s %s|%s", r.Method, r.URL.Path, id, body, strings.Repeat("z", size))
	}))
	srv.Config.IdleTimeout = 30 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	tp := startProxy(t, Config{Upstream: u})
	baseline := runtime.NumGoroutine()

	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 64}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	var okN, errN atomic.Int32
	errs := make(chan error, 64)
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(g)))
			for i := range 30 {
				id := fmt.Sprintf("g%d-%d", g, i)
				method := []string{"GET", "POST", "HEAD", "DELETE", "PUT"}[rnd.Intn(5)]
				body := ""
				if method == "POST" || method == "PUT" {
					body = `{"id":"` + id + `"}`
				}
				ctx, cancel := context.WithCancel(context.Background())
				mode := rnd.Intn(6)
				if mode == 0 {
					time.AfterFunc(time.Duration(rnd.Intn(2000))*time.Microsecond, cancel)
				}
				var rd io.Reader
				if body != "" {
					rd = strings.NewReader(body)
				}
				req, _ := http.NewRequestWithContext(ctx, method, tp.URL.String()+"/db/"+id, rd)
				req.Header.Set("X-Id", id)
				resp, err := c.Do(req)
				if err != nil {
					cancel()
					if mode != 0 {
						errs <- fmt.Errorf("%s %s: %v", method, id, err)
					}
					errN.Add(1)
					continue
				}
				if mode == 1 {
					// Abandon the response after its headers.
					resp.Body.Close()
					cancel()
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err != nil || resp.StatusCode != 200 {
					// The one failure allowed: the upstream closed an
					// idle connection just as a request that may not be
					// sent twice went out on it. net/http's Transport
					// has the same window and answers the same; what
					// must hold is that the upstream never got the
					// request, so the client can send it again safely.
					_, got := seen.Load(id)
					lost := err == nil && resp.StatusCode == http.StatusBadGateway && !got && !retryable(req)
					if mode != 0 && !lost {
						errs <- fmt.Errorf("%s %s: %d %v", method, id, resp.StatusCode, err)
					}
					errN.Add(1)
					continue
				}
				if resp.Header.Get("X-Echo") != id {
					errs <- fmt.Errorf("%s %s: X-Echo %q", method, id, resp.Header.Get("X-Echo"))
					continue
				}
				want := fmt.Sprintf("%s /db/%s %s %s|", method, id, id, body)
				if method == "HEAD" {
					want = ""
				}
				if !strings.HasPrefix(string(b), want) {
					errs <- fmt.Errorf("%s %s: got %.80q", method, id, b)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 10 {
			t.Error(err)
		}
	}
	if okN.Load() < 200 {
		t.Errorf("only %d of 360 requests succeeded (%d errors)", okN.Load(), errN.Load())
	}
	posts.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n > 1 {
			t.Errorf("POST %s reached the upstream %d times", k, n)
		}
		return true
	})
	// Leaks: once idle connections are closed, every upstream connection
	// is closed, and the goroutines are back near the baseline.
	tr.CloseIdleConnections()
	deadline := time.Now().Add(4 * time.Second)
	for {
		tp.direct.closeIdle(false)
		tp.Transport().CloseIdleConnections()
		if open.Load() == 0 && runtime.NumGoroutine() <= baseline+10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %d upstream connections open, %d goroutines (baseline %d)", open.Load(), runtime.NumGoroutine(), baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectAttackPOSTNotReplayed: an upstream that reads a POST on a
// reused connection and closes without answering did receive it: the
// POST must not be sent again (the client gets an error), while a POST
// with an Idempotency-Key may be.
func TestDirectAttackPOSTNotReplayed(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		if s.index >= 2 && strings.HasPrefix(s.path, "/db/drop") {
			return false // read it, then hang up without an answer
		}
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL})
	c := attackClient(t)
	for i, method := range []string{"POST", "DELETE", "PUT", "PATCH"} {
		path := fmt.Sprintf("/db/drop-%d", i)
		if st, _, b, err := atkDo(c, "GET", tp.URL.String()+"/db/warm", ""); err != nil || st != 200 {
			t.Fatalf("warm-up: %d %q %v", st, b, err)
		}
		st, _, b, err := atkDo(c, method, tp.URL.String()+path, `{"x":1}`)
		if err != nil {
			t.Fatal(err)
		}
		if n := u.received(path); n != 1 {
			t.Errorf("%s reached the upstream %d times (answer %d %q)", method, n, st, b)
		}
		if st != http.StatusBadGateway {
			t.Errorf("%s dropped by the upstream: %d %q, want 502", method, st, b)
		}
	}
	// With an idempotency key the request may be sent again, and succeeds.
	if st, _, _, err := atkDo(c, "GET", tp.URL.String()+"/db/warm", ""); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	st, _, b, err := atkDo(c, "POST", tp.URL.String()+"/db/drop-key", `{"x":1}`, "Idempotency-Key", "k1")
	if err != nil || st != 200 || b != `answer:POST /db/drop-key {"x":1}` {
		t.Errorf("POST with an Idempotency-Key on a dropped connection: %d %q %v", st, b, err)
	}
	if n := u.received("/db/drop-key"); n != 2 {
		t.Errorf("POST with an Idempotency-Key reached the upstream %d times, want 2", n)
	}
}

// TestDirectAttackGetWithoutBodyNotRetried: a GET or HEAD (no body) sent
// on a reused connection that the upstream closes without answering is
// sent again on a new connection, as http.Transport does. Found by the
// attack pass: the retry used to require r.GetBody, which ReverseProxy
// leaves nil for bodiless requests, and answered 502.
func TestDirectAttackGetWithoutBodyNotRetried(t *testing.T) {
	for _, standard := range []bool{true, false} {
		name := "direct"
		if standard {
			name = "standard"
		}
		t.Run(name, func(t *testing.T) {
			u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
				if s.index >= 2 && s.path == "/db/drop" {
					return false
				}
				atkAnswer(c, s)
				return true
			})
			tp := startProxy(t, Config{Upstream: u.URL, StandardTransport: standard})
			c := attackClient(t)
			for _, method := range []string{"GET", "HEAD"} {
				if st, _, _, err := atkDo(c, "GET", tp.URL.String()+"/db/warm", ""); err != nil || st != 200 {
					t.Fatal(st, err)
				}
				st, h, _, err := atkDo(c, method, tp.URL.String()+"/db/drop", "")
				if err != nil || st != 200 || h.Get("X-Echo") != "/db/drop" {
					t.Errorf("%s: %s on a reused connection the upstream dropped: %d %v; want the request retried (200)", name, method, st, err)
				}
			}
		})
	}
}

// TestDirectAttackTimeoutRetried: UpstreamTimeout (the response-header
// timeout) expiring on a reused connection is not a dead connection: the
// request is not sent a second time (http.Transport never retries after
// it). Found by the attack pass: the timeout used to be marked "no
// response", and the upstream got an idempotent request twice.
func TestDirectAttackTimeoutRetried(t *testing.T) {
	for _, standard := range []bool{true, false} {
		name := "direct"
		if standard {
			name = "standard"
		}
		t.Run(name, func(t *testing.T) {
			u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
				if s.path == "/db/hang" {
					select {
					case <-u.done:
					case <-time.After(3 * time.Second):
					}
					return false
				}
				atkAnswer(c, s)
				return true
			})
			tp := startProxy(t, Config{Upstream: u.URL, UpstreamTimeout: 300 * time.Millisecond, StandardTransport: standard})
			c := attackClient(t)
			if st, _, _, err := atkDo(c, "GET", tp.URL.String()+"/db/warm", ""); err != nil || st != 200 {
				t.Fatal(st, err)
			}
			st, _, _, err := atkDo(c, "PUT", tp.URL.String()+"/db/hang", `{"x":1}`, "Idempotency-Key", "k")
			if err != nil || st != http.StatusGatewayTimeout {
				t.Errorf("%s: %d %v, want 504", name, st, err)
			}
			time.Sleep(50 * time.Millisecond)
			if n := u.received("/db/hang"); n != 1 {
				t.Errorf("%s: a request that timed out reached the upstream %d times", name, n)
			}
		})
	}
}

// TestDirectAttackResponseHeaderUnbounded: response headers larger than
// 10 MiB (http.Transport's default MaxResponseHeaderBytes) are refused
// (502), so a hostile or broken upstream cannot make the sidecar buffer
// without end. Found by the attack pass: the direct transport had no limit
// and forwarded an 11 MiB header.
func TestDirectAttackResponseHeaderUnbounded(t *testing.T) {
	big := strings.Repeat("a", 11<<20)
	for _, standard := range []bool{true, false} {
		name := "direct"
		if standard {
			name = "standard"
		}
		t.Run(name, func(t *testing.T) {
			u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			tp := startProxy(t, Config{Upstream: u.URL, StandardTransport: standard})
			st, h, _, err := atkDo(attackClient(t), "GET", tp.URL.String()+"/db/doc", "")
			if err != nil || st != http.StatusBadGateway {
				t.Errorf("%s: an 11 MiB response header gave %d (X-Big %d bytes), %v; want 502", name, st, len(h.Get("X-Big")), err)
			}
		})
	}
}

// TestDirectAttackSmuggleToUpstream: clients with odd framing. Whatever
// the proxy accepts, the upstream must see exactly one well-framed request
// per client request, never a request hidden in a body.
func TestDirectAttackSmuggleToUpstream(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL})
	inner := "GET /db/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	raws := []string{
		// A GET with a body that is a request.
		"GET /db/a1 HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner,
		// CL and TE together.
		"POST /db/a2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(inner), inner),
		"POST /db/a3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n0\r\n\r\n" + inner,
		// Two Content-Lengths.
		"POST /db/a4 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner,
		// Content-Length named as hop-by-hop.
		"POST /db/a5 HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner,
		// Transfer-Encoding named as hop-by-hop, with a fixed body.
		"POST /db/a6 HTTP/1.1\r\nHost: x\r\nConnection: Transfer-Encoding, Keep-Alive\r\nKeep-Alive: x\r\nContent-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner,
		// A header value with a bare CR, and an obs-fold.
		"GET /db/a7 HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\n\r\n",
		"GET /db/a8 HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 5\r\n\r\n",
		// A Content-Length with a sign, and a TE the proxy cannot forward.
		"POST /db/a9 HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
		"POST /db/a10 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\nabcd",
		// HTTP/1.0 with a body and keep-alive.
		"POST /db/a11 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner,
		// A header that names an Expect the proxy does not know.
		"GET /db/a12 HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n",
		// Trailer-declared Content-Length.
		"POST /db/a13 HTTP/1.1\r\nHost: x\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nContent-Length: 40\r\n\r\n",
	}
	for i, raw := range raws {
		u.mu.Lock()
		before := len(u.seen)
		u.mu.Unlock()
		conn, err := net.Dial("tcp", tp.URL.Host)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, raw)
		// Read what comes back (one or more responses) until the proxy
		// is quiet or closes.
		br := bufio.NewReader(conn)
		answered := map[string]bool{}
		var statuses []int
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses = append(statuses, resp.StatusCode)
			if e := resp.Header.Get("X-Echo"); e != "" {
				answered[e] = true
			}
			conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
		u.mu.Lock()
		seen := append([]atkSeen(nil), u.seen[before:]...)
		u.mu.Unlock()
		// Every request the upstream saw is one the client sent and got
		// the answer to, on its own connection: a request the proxy
		// parsed as pipelined is the client's own, not a smuggled one.
		counts := map[string]int{}
		for _, s := range seen {
			counts[s.path]++
			if !answered[s.path] {
				t.Errorf("raw %d: the upstream saw %s %s (body %q) that the client got no answer for (client got %v)", i, s.method, s.path, s.body, statuses)
			}
		}
		for p, n := range counts {
			if n > 1 {
				t.Errorf("raw %d: %s reached the upstream %d times", i, p, n)
			}
		}
		t.Logf("raw %d: client got %v, upstream saw %v", i, statuses, counts)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, err := range u.parseErr {
		t.Errorf("the upstream got a malformed request: %v", err)
	}
}

// TestDirectAttackHeaderDripWrongCode: an upstream that drips its headers
// past UpstreamTimeout gets 504 upstream_timeout, as with http.Transport.
// Found by the attack pass: a deadline expiring in the middle of a header
// line surfaces as "malformed MIME header", and the answer was 502
// upstream_unavailable.
func TestDirectAttackHeaderDripWrongCode(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		hdr := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Drip: 1\r\n", 1000)
		for i := range len(hdr) {
			if _, err := c.Write([]byte{hdr[i]}); err != nil {
				return false
			}
			select {
			case <-u.done:
				return false
			case <-time.After(10 * time.Millisecond):
			}
		}
		return false
	})
	tp := startProxy(t, Config{Upstream: u.URL, UpstreamTimeout: 300 * time.Millisecond})
	start := time.Now()
	st, _, _, err := atkDo(attackClient(t), "GET", tp.URL.String()+"/db/doc", "")
	if err != nil || st != http.StatusGatewayTimeout {
		t.Errorf("dripped headers: %d %v, want 504", st, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("dripped headers held the request for %v", d)
	}
}

// TestDirectAttackSlowBodyThenReuse: UpstreamTimeout bounds the headers
// only; a body slower than that still arrives whole, and the connection,
// reused afterwards, carries no stale deadline.
func TestDirectAttackSlowBodyThenReuse(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		if s.path == "/db/slow" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nslow")
			time.Sleep(400 * time.Millisecond)
			io.WriteString(c, "body")
			return true
		}
		if s.path == "/db/late" {
			time.Sleep(150 * time.Millisecond) // under the timeout
		}
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL, UpstreamTimeout: 250 * time.Millisecond})
	c := attackClient(t)
	if st, _, b, err := atkDo(c, "GET", tp.URL.String()+"/db/slow", ""); err != nil || st != 200 || b != "slowbody" {
		t.Fatalf("slow body: %d %q %v", st, b, err)
	}
	time.Sleep(300 * time.Millisecond) // longer than the header timeout
	for _, p := range []string{"/db/late", "/db/x"} {
		if st, _, b, err := atkDo(c, "GET", tp.URL.String()+p, ""); err != nil || st != 200 || b != "answer:GET "+p+" " {
			t.Fatalf("%s on the reused connection: %d %q %v", p, st, b, err)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections, want the one reused", n)
	}
}

// TestDirectAttackCancelWhileWaiting: clients that give up while the
// upstream is still thinking close their upstream connections, and none
// is reused for another request (the late answer would be another
// client's data).
func TestDirectAttackCancelWhileWaiting(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		if strings.HasPrefix(s.path, "/db/slow") {
			time.Sleep(100 * time.Millisecond)
			// The late answer, written to whatever is there.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Echo: %s\r\nContent-Length: 4\r\n\r\nLATE", s.path)
			return true
		}
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL})
	baseline := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/db/slow%d", tp.URL, i), nil)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the late answers are written
	c := attackClient(t)
	for i := range 20 {
		p := fmt.Sprintf("/db/fast%d", i)
		st, h, b, err := atkDo(c, "GET", tp.URL.String()+p, "")
		if err != nil || st != 200 || h.Get("X-Echo") != p || b != "answer:GET "+p+" " {
			t.Fatalf("%s after cancelled requests: %d %q %q %v", p, st, h.Get("X-Echo"), b, err)
		}
	}
	c.Transport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(4 * time.Second)
	for {
		tp.direct.closeIdle(false)
		if u.open.Load() == 0 && runtime.NumGoroutine() <= baseline+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %d upstream connections, %d goroutines (baseline %d)", u.open.Load(), runtime.NumGoroutine(), baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectAttackBodyCloseDrains: closing a response body that was not
// read to its end closes the upstream connection at once instead of
// draining the rest (a feed may never end). Found by the attack pass:
// Close used to drain until the request's context ended.
func TestDirectAttackBodyCloseDrains(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
		line := strings.Repeat("x", 1000)
		for {
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(line), line); err != nil {
				return false
			}
			select {
			case <-u.done:
				return false
			default:
			}
		}
	})
	dt := newDirectTransport((&net.Dialer{}).DialContext, 0)
	defer dt.closeIdle(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u.URL.String()+"/db/_changes", nil)
	resp, err := dt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 100))
	done := make(chan struct{})
	go func() { resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		cancel() // unblock it
		<-done
		t.Fatal("Close on a half-read body of an endless response blocked (it drains the body) until the context ended")
	}
}

// TestDirectAttackPoolAfterProxyClose: after Close, connections handed
// back are closed, not pooled, and new requests still work (dialled).
func TestDirectAttackPoolAfterProxyClose(t *testing.T) {
	u := startAtkUpstream(t, func(u *atkUpstream, c net.Conn, req *http.Request, s atkSeen) bool {
		atkAnswer(c, s)
		return true
	})
	tp := startProxy(t, Config{Upstream: u.URL})
	c := attackClient(t)
	for i := range 3 {
		if st, _, _, err := atkDo(c, "GET", tp.URL.String()+"/db/x", ""); err != nil || st != 200 {
			t.Fatal(i, st, err)
		}
	}
	tp.Proxy.Close()
	for i := range 3 {
		if st, _, _, err := atkDo(c, "GET", tp.URL.String()+"/db/y", ""); err != nil || st != 200 {
			t.Fatal(i, st, err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for u.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections open after Close", u.open.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
