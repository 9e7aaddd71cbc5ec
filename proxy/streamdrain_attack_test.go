package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Attacks on the fasthttp engine's streamed responses: the head flushed
// before the first body bytes (ImmediateHeaderFlush) and the drain that
// cuts streams (fastEngine.closeAll, fastStream.abort). Every case runs on
// both engines; the map checks run on the fasthttp engine only.

// ---- a raw upstream that records every byte, per connection ----

type saConn struct {
	id  int
	c   net.Conn
	br  *bufio.Reader
	mu  sync.Mutex
	raw bytes.Buffer
	// gone is closed when the proxy closed its end (a read saw EOF or an
	// error) or the handler closed the connection.
	gone     chan struct{}
	goneOnce sync.Once
}

func (sc *saConn) Read(b []byte) (int, error) {
	n, err := sc.c.Read(b)
	sc.mu.Lock()
	sc.raw.Write(b[:n])
	sc.mu.Unlock()
	return n, err
}

func (sc *saConn) markGone() { sc.goneOnce.Do(func() { close(sc.gone) }) }

func (sc *saConn) write(s string) {
	sc.c.Write([]byte(s))
}

// waitPeerClose reads (and records) until the proxy closes the
// connection.
func (sc *saConn) waitPeerClose() {
	io.Copy(io.Discard, sc.br)
	sc.markGone()
}

type saReq struct {
	conn   *saConn
	req    *http.Request
	n      int // index among all requests
	reqNum int // index on its connection
}

type saUpstream struct {
	URL *url.URL
	ln  net.Listener

	mu    sync.Mutex
	conns []*saConn
	reqs  []saReq
	// handle answers one request; false closes the connection.
	handle func(r saReq) bool
}

func startSAUpstream(t *testing.T, handle func(r saReq) bool) *saUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &saUpstream{URL: &url.URL{Scheme: "http", Host: ln.Addr().String()}, ln: ln, handle: handle}
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.c.Close()
		}
		u.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sc := &saConn{c: c, gone: make(chan struct{})}
			sc.br = bufio.NewReader(sc)
			u.mu.Lock()
			sc.id = len(u.conns)
			u.conns = append(u.conns, sc)
			u.mu.Unlock()
			go u.serveConn(sc)
		}
	}()
	return u
}

func (u *saUpstream) serveConn(sc *saConn) {
	defer sc.markGone()
	defer sc.c.Close()
	for i := 0; ; i++ {
		req, err := http.ReadRequest(sc.br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		u.mu.Lock()
		r := saReq{conn: sc, req: req, n: len(u.reqs), reqNum: i}
		u.reqs = append(u.reqs, r)
		u.mu.Unlock()
		if !u.handle(r) {
			return
		}
	}
}

func (u *saUpstream) requests() []saReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]saReq(nil), u.reqs...)
}

func (u *saUpstream) allConns() []*saConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*saConn(nil), u.conns...)
}

// ---- the proxy, on either engine, with its fastEngine reachable ----

type saProxy struct {
	p      *Proxy
	fe     *fastEngine // nil on nethttp
	addr   string
	cancel context.CancelFunc
	served chan error
	key    *fieldcrypt.DataKey
}

func startSAProxy(t *testing.T, engine string, up *saUpstream, shutdown time.Duration) *saProxy {
	t.Helper()
	key := newKey(t, "pii", 1)
	p, err := New(Config{
		Engine:          engine,
		Upstream:        up.URL,
		Rules:           newStaticRules(fePlan(t)),
		Keys:            fieldcrypt.NewStaticKeyring(key),
		ShutdownTimeout: shutdown,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(context.Background())
	sp := &saProxy{p: p, addr: ln.Addr().String(), cancel: cancel, served: make(chan error, 1), key: key}
	if engine == EngineFastHTTP {
		// Serve's fasthttp branch, with the engine kept for inspection.
		p.self.Store(newSelfAddr(ln.Addr()))
		sp.fe = newFastEngine(p)
		go func() { sp.served <- sp.fe.serve(ctx, ln) }()
	} else {
		go func() { sp.served <- p.Serve(ctx, ln) }()
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-sp.served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return at cleanup")
		}
	})
	return sp
}

// drain cancels Serve's context and waits for Serve to return.
func (sp *saProxy) drain(t *testing.T) {
	t.Helper()
	sp.cancel()
	select {
	case err := <-sp.served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		sp.served <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain timed out")
	}
}

func (sp *saProxy) streams() int {
	if sp.fe == nil {
		return 0
	}
	sp.fe.mu.Lock()
	defer sp.fe.mu.Unlock()
	return len(sp.fe.conns)
}

// checkNoStreams: the fasthttp engine's map of connections (each with its
// latest exchange's cancel, for closeAll) empties once the clients left.
func (sp *saProxy) checkNoStreams(t *testing.T, what string) {
	t.Helper()
	if sp.fe == nil {
		return
	}
	if !waitFor(func() bool { return sp.streams() == 0 }) {
		t.Errorf("%s: %d entries left in fastEngine.conns", what, sp.streams())
	}
}

type saClient struct {
	t   *testing.T
	c   net.Conn
	mu  sync.Mutex
	raw bytes.Buffer
	br  *bufio.Reader
}

func (cl *saClient) Read(b []byte) (int, error) {
	n, err := cl.c.Read(b)
	cl.mu.Lock()
	cl.raw.Write(b[:n])
	cl.mu.Unlock()
	return n, err
}

func (cl *saClient) rawString() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.raw.String()
}

func dialSA(t *testing.T, sp *saProxy) *saClient {
	t.Helper()
	c, err := net.Dial("tcp", sp.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(8 * time.Second))
	cl := &saClient{t: t, c: c}
	cl.br = bufio.NewReader(cl)
	return cl
}

func (cl *saClient) send(s string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// head reads a response head, giving up after d.
func (cl *saClient) head(method string, d time.Duration) (*http.Response, error) {
	cl.c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(cl.br, &http.Request{Method: method})
	cl.c.SetReadDeadline(time.Now().Add(8 * time.Second))
	return resp, err
}

func within(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

const saSentinel = "GET /other/sentinel HTTP/1.1\r\nHost: x\r\n\r\n"

// answerSentinel answers the sentinel request, and reports whether r
// was one.
func answerSentinel(r saReq) bool {
	if r.req.URL.Path != "/other/sentinel" {
		return false
	}
	r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nsentinel")
	return true
}

// readSentinel reads the sentinel's answer on the same client connection.
func (cl *saClient) readSentinel(t *testing.T, what string) {
	t.Helper()
	resp, err := cl.head(http.MethodGet, 5*time.Second)
	if err != nil {
		t.Errorf("%s: no answer to the next request on the connection: %v (client read %q)", what, err, cl.rawString())
		return
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "sentinel" {
		t.Errorf("%s: next response %d %q %v; want the sentinel (client read %q)", what, resp.StatusCode, b, err, cl.rawString())
	}
}

// ---- cases ----

// TestStreamAttackHeadFlush: a streamed response whose upstream has sent
// only its head (or a head and an incomplete first chunk) reaches the
// client at once; its body then follows intact, with one status line,
// and the connection serves the next request.
func TestStreamAttackHeadFlush(t *testing.T) {
	type tc struct {
		name, path string
		head       string // what the upstream sends first
		rest       string // after the client has seen the head
		want       string // the client's body
		close      bool   // close-delimited: the upstream closes after rest
	}
	cases := []tc{
		{"chunked-pass", "/other/_changes?feed=continuous",
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
			chunk(`{"seq":1}`+"\n") + "0\r\n\r\n", `{"seq":1}` + "\n", false},
		{"chunked-decrypt", "/clinic/_changes?feed=continuous",
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
			chunk(`{"seq":1}`+"\n") + "0\r\n\r\n", `{"seq":1}` + "\n", false},
		{"close-delimited", "/other/_changes?feed=continuous",
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
			`{"seq":1}` + "\n", `{"seq":1}` + "\n", true},
		// The head and an incomplete first chunk arrive together: the
		// upstream's buffer is not empty, so the fasthttp engine does not
		// flush the head, and the client waits for a body that is not
		// complete (net/http's ReverseProxy flushes the head at once).
		{"chunked-partial-first-chunk", "/other/_changes?feed=continuous",
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"seq\"",
			":1}\n\r\n0\r\n\r\n", `{"seq":1}` + "\n", false},
	}
	for _, engine := range feEngines {
		for _, c := range cases {
			t.Run(engine+"/"+c.name, func(t *testing.T) {
				sawHead := make(chan struct{})
				up := startSAUpstream(t, func(r saReq) bool {
					if answerSentinel(r) {
						return true
					}
					r.conn.write(c.head)
					within(sawHead, 3*time.Second)
					r.conn.write(c.rest)
					return !c.close
				})
				sp := startSAProxy(t, engine, up, time.Second)
				cl := dialSA(t, sp)
				cl.send("GET " + c.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := cl.head(http.MethodGet, 2*time.Second)
				close(sawHead)
				if err != nil {
					t.Fatalf("no response head while the upstream waits: %v", err)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != c.want {
					t.Fatalf("body %q, %v; want %q", b, err, c.want)
				}
				if n := strings.Count(cl.rawString(), "HTTP/1.1 "); n != 1 {
					t.Errorf("%d status lines in %q", n, cl.rawString())
				}
				if !resp.Close {
					cl.send(saSentinel)
					cl.readSentinel(t, "after the stream")
				}
				// Entries live until their client connection closes.
				cl.c.Close()
				sp.checkNoStreams(t, "after the stream ended and its client left")
			})
		}
	}
}

// TestStreamAttackNoBodyStatuses: HEAD, 204 and 304 answers that carry
// stream framing fields from the upstream are not streams: no body, no
// chunk terminator, nothing left on either connection, and the next
// request on both connections is framed right.
func TestStreamAttackNoBodyStatuses(t *testing.T) {
	type tc struct {
		name, method, head string
	}
	cases := []tc{
		{"HEAD-chunked", http.MethodHead, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"HEAD-big-length", http.MethodHead, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400000\r\n\r\n"},
		{"204-chunked", http.MethodGet, "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"304-chunked", http.MethodGet, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"304-big-length", http.MethodGet, "HTTP/1.1 304 Not Modified\r\nContent-Length: 400000\r\n\r\n"},
	}
	for _, engine := range feEngines {
		for _, c := range cases {
			for _, path := range []string{"/other/doc", "/clinic/doc"} {
				t.Run(engine+"/"+c.name+path, func(t *testing.T) {
					up := startSAUpstream(t, func(r saReq) bool {
						if answerSentinel(r) {
							return true
						}
						r.conn.write(c.head)
						return true
					})
					sp := startSAProxy(t, engine, up, time.Second)
					cl := dialSA(t, sp)
					cl.send(c.method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					resp, err := cl.head(c.method, 5*time.Second)
					if err != nil {
						t.Fatalf("no response: %v", err)
					}
					resp.Body.Close()
					raw := cl.rawString()
					if strings.Contains(raw, "\r\n\r\n0\r\n") || strings.Count(raw, "HTTP/1.1 ") != 1 {
						t.Errorf("malformed answer %q", raw)
					}
					cl.send(saSentinel)
					cl.readSentinel(t, "next request")
					reqs := up.requests()
					if len(reqs) != 2 || reqs[1].req.URL.Path != "/other/sentinel" {
						t.Errorf("upstream saw %d requests", len(reqs))
					} else if engine == EngineFastHTTP && reqs[1].conn != reqs[0].conn {
						t.Errorf("the upstream connection was not reused after a bodiless answer")
					}
					if n := sp.streams(); n > 1 {
						t.Errorf("bodiless answer: %d entries in fastEngine.conns for one open connection", n)
					}
				})
			}
		}
	}
}

// TestStreamAttackPoolAfterEnd: a stream read to its end gives its
// upstream connection back to the pool, and nothing (the watch on the
// exchange's context, closing it later) cuts that connection while
// another exchange uses it: the next requests arrive on it, whole, and
// get their own answers.
func TestStreamAttackPoolAfterEnd(t *testing.T) {
	for _, engine := range feEngines {
		for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
			t.Run(engine+path, func(t *testing.T) {
				up := startSAUpstream(t, func(r saReq) bool {
					if r.req.URL.Path == "/other/next" {
						body := fmt.Sprintf(`{"n":%d}`, r.n)
						r.conn.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
						return true
					}
					r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
					time.Sleep(50 * time.Millisecond)
					r.conn.write(chunk(`{"seq":1}` + "\n"))
					time.Sleep(20 * time.Millisecond)
					r.conn.write("0\r\n\r\n")
					return true
				})
				sp := startSAProxy(t, engine, up, time.Second)
				for round := 0; round < 3; round++ {
					cl := dialSA(t, sp)
					cl.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					resp, err := cl.head(http.MethodGet, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					b, err := io.ReadAll(resp.Body)
					if err != nil || string(b) != `{"seq":1}`+"\n" {
						t.Fatalf("stream body %q %v", b, err)
					}
					if n := sp.streams(); n > 1 {
						t.Errorf("%d entries in fastEngine.conns for one open connection", n)
					}
					// Give a stray abort time to strike.
					time.Sleep(100 * time.Millisecond)
					for i := 0; i < 2; i++ {
						cl.send("GET /other/next HTTP/1.1\r\nHost: x\r\n\r\n")
						resp, err := cl.head(http.MethodGet, 5*time.Second)
						if err != nil {
							t.Fatal(err)
						}
						b, _ := io.ReadAll(resp.Body)
						reqs := up.requests()
						last := reqs[len(reqs)-1]
						if want := fmt.Sprintf(`{"n":%d}`, last.n); string(b) != want {
							t.Errorf("answer %q, want %q (the last request's own)", b, want)
						}
					}
					cl.c.Close()
					sp.checkNoStreams(t, "after the client of an ended stream left")
				}
				reqs := up.requests()
				if len(reqs) != 9 {
					t.Errorf("upstream saw %d requests, want 9", len(reqs))
				}
				if engine == EngineFastHTTP {
					if n := len(up.allConns()); n != 1 {
						t.Errorf("%d upstream connections, want 1 reused (a stream ended normally must be pooled and not cut)", n)
					}
				}
				for _, c := range up.allConns() {
					c.mu.Lock()
					raw := c.raw.String()
					c.mu.Unlock()
					// Every request head on the connection is whole.
					if n := strings.Count(raw, "HTTP/1.1\r\n"); n != strings.Count(raw, "\r\n\r\n") {
						t.Errorf("conn %d: torn requests %q", c.id, raw)
					}
				}
			})
		}
	}
}

// TestStreamAttackClientGone: a client that leaves a stream waiting on a
// silent upstream: once the upstream sends again the write fails, the
// upstream connection is closed (not pooled: the body was not read to
// its end) and the stream leaves the map.
func TestStreamAttackClientGone(t *testing.T) {
	for _, engine := range feEngines {
		for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
			t.Run(engine+path, func(t *testing.T) {
				clientGone := make(chan struct{})
				up := startSAUpstream(t, func(r saReq) bool {
					if answerSentinel(r) {
						return true
					}
					r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
					<-clientGone
					for i := 0; i < 20; i++ {
						time.Sleep(50 * time.Millisecond)
						if _, err := r.conn.c.Write([]byte(chunk(fmt.Sprintf(`{"seq":%d}`+"\n", i)))); err != nil {
							break
						}
						select {
						case <-r.conn.gone:
							return false
						default:
						}
					}
					r.conn.waitPeerClose()
					return false
				})
				sp := startSAProxy(t, engine, up, time.Second)
				cl := dialSA(t, sp)
				cl.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
				if _, err := cl.head(http.MethodGet, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				if sp.fe != nil && !waitFor(func() bool { return sp.streams() == 1 }) {
					t.Errorf("the stream is not registered: %d", sp.streams())
				}
				cl.c.Close()
				close(clientGone)
				conns := up.allConns()
				if !within(conns[0].gone, 5*time.Second) {
					t.Fatal("the upstream connection of a stream whose client left was not closed")
				}
				sp.checkNoStreams(t, "after the client left")
				// The proxy still serves, on a fresh upstream connection.
				cl2 := dialSA(t, sp)
				cl2.send(saSentinel)
				cl2.readSentinel(t, "after a client left a stream")
			})
		}
	}
}

// TestStreamAttackUpstreamBreaks: a stream whose upstream breaks its
// framing mid-way (decrypted or passed through) is cut for the client,
// never completed; the upstream connection is closed and the map is
// emptied.
func TestStreamAttackUpstreamBreaks(t *testing.T) {
	for _, engine := range feEngines {
		for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
			for _, breakage := range []string{"zz\r\nnot a chunk\r\n", "40\r\n{\"seq\":2"} {
				t.Run(engine+path+"/"+fmt.Sprintf("%q", breakage[:2]), func(t *testing.T) {
					up := startSAUpstream(t, func(r saReq) bool {
						if answerSentinel(r) {
							return true
						}
						r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
						time.Sleep(30 * time.Millisecond)
						r.conn.write(chunk(`{"seq":1}` + "\n"))
						time.Sleep(30 * time.Millisecond)
						r.conn.write(breakage)
						if breakage[0] == '4' {
							return false // the upstream goes away mid-chunk
						}
						r.conn.waitPeerClose()
						return false
					})
					sp := startSAProxy(t, engine, up, time.Second)
					cl := dialSA(t, sp)
					cl.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					resp, err := cl.head(http.MethodGet, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					b, err := io.ReadAll(resp.Body)
					if err == nil {
						t.Errorf("a broken stream ended cleanly: %q", b)
					}
					if !within(up.allConns()[0].gone, 5*time.Second) {
						t.Error("the upstream connection was not closed")
					}
					sp.checkNoStreams(t, "after a broken stream")
					cl2 := dialSA(t, sp)
					cl2.send(saSentinel)
					cl2.readSentinel(t, "after a broken stream")
				})
			}
		}
	}
}

// TestStreamAttackDecryptFeed: a decrypting continuous feed: the head
// arrives before any line, and each line, decrypted, before the upstream
// sends the next.
func TestStreamAttackDecryptFeed(t *testing.T) {
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			next := make(chan struct{}, 8)
			var tokMu sync.Mutex
			var tokens []string
			up := startSAUpstream(t, func(r saReq) bool {
				r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
				tokMu.Lock()
				toks := tokens
				tokMu.Unlock()
				for i, tok := range toks {
					if !within(next, 3*time.Second) {
						return false
					}
					r.conn.write(chunk(fmt.Sprintf(`{"seq":%d,"id":"d%d","doc":{"_id":"d%d","ssn":"%s"}}`+"\n", i, i, i, tok)))
				}
				if within(next, 3*time.Second) {
					r.conn.write("0\r\n\r\n")
				}
				return true
			})
			sp := startSAProxy(t, engine, up, time.Second)
			for i := 0; i < 3; i++ {
				tok, err := fieldcrypt.SealString(sp.key, fieldcrypt.ModeRandom, fmt.Sprintf("%s-%d", feMarker, i))
				if err != nil {
					t.Fatal(err)
				}
				tokMu.Lock()
				tokens = append(tokens, string(tok))
				tokMu.Unlock()
			}
			cl := dialSA(t, sp)
			cl.send("GET /clinic/_changes?feed=continuous&include_docs=true HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := cl.head(http.MethodGet, 2*time.Second)
			if err != nil {
				t.Fatalf("no head before the first line: %v", err)
			}
			lines := bufio.NewReader(resp.Body)
			for i := range tokens {
				next <- struct{}{}
				got := make(chan string, 1)
				go func() {
					l, _ := lines.ReadString('\n')
					got <- l
				}()
				select {
				case l := <-got:
					if want := fmt.Sprintf("%s-%d", feMarker, i); !strings.Contains(l, want) || strings.Contains(l, fieldcrypt.TokenPrefix) {
						t.Fatalf("line %d: %q, want it decrypted to %s", i, l, want)
					}
				case <-time.After(3 * time.Second):
					t.Fatalf("line %d held back", i)
				}
			}
			next <- struct{}{}
			rest, err := io.ReadAll(lines)
			if err != nil || len(rest) != 0 {
				t.Errorf("end of feed: %q %v", rest, err)
			}
			cl.c.Close()
			sp.checkNoStreams(t, "after the feed ended and its client left")
		})
	}
}

// TestStreamAttackDrainInFlight: a drain that times out ends every
// exchange, including ones whose handler is still waiting for the
// upstream's head when closeAll runs (net/http cancels their contexts
// when their connections close): the upstream connection is closed and
// nothing is left in the map.
func TestStreamAttackDrainInFlight(t *testing.T) {
	type tc struct {
		name string
		late string // what the upstream sends once the drain has timed out
	}
	cases := []tc{
		{"silent", ""},
		{"late-head-partial-chunk", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"seq\""},
		{"late-head-only", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"},
	}
	for _, engine := range feEngines {
		for _, c := range cases {
			for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
				t.Run(engine+"/"+c.name+path, func(t *testing.T) {
					got := make(chan struct{})
					drained := make(chan struct{})
					up := startSAUpstream(t, func(r saReq) bool {
						close(got)
						<-drained
						if c.late != "" {
							r.conn.write(c.late)
						}
						r.conn.waitPeerClose()
						return false
					})
					sp := startSAProxy(t, engine, up, 50*time.Millisecond)
					cl := dialSA(t, sp)
					cl.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					if !within(got, 5*time.Second) {
						t.Fatal("the request did not reach the upstream")
					}
					sp.drain(t)
					close(drained)
					if !within(up.allConns()[0].gone, 3*time.Second) {
						t.Errorf("the upstream connection of an exchange in flight outlived the drain (connections tracked: %d)", sp.streams())
					}
					sp.checkNoStreams(t, "after the drain")
				})
			}
		}
	}
}

// TestStreamAttackDrainRace: many streams, some ending normally and some
// waiting, while the drain times out; with -race this checks abort
// against Close, Read and the pool. Serve returns, every upstream
// connection is closed, the map is empty.
func TestStreamAttackDrainRace(t *testing.T) {
	for _, engine := range feEngines {
		for _, path := range []string{"/other/_changes?feed=continuous", "/clinic/_changes?feed=continuous"} {
			t.Run(engine+path, func(t *testing.T) {
				const n = 12
				var wg sync.WaitGroup
				wg.Add(n)
				up := startSAUpstream(t, func(r saReq) bool {
					wg.Done()
					r.conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
					r.conn.write(chunk(`{"seq":0}` + "\n"))
					// Streams end around the time the drain times out
					// (ShutdownTimeout 40ms), or never.
					if r.n%3 != 0 {
						time.Sleep(time.Duration(30+r.n%4*5) * time.Millisecond)
						r.conn.write(chunk(`{"seq":1}` + "\n"))
						r.conn.write("0\r\n\r\n")
						return true
					}
					r.conn.waitPeerClose()
					return false
				})
				sp := startSAProxy(t, engine, up, 40*time.Millisecond)
				var cls []*saClient
				for i := 0; i < n; i++ {
					cl := dialSA(t, sp)
					cl.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					cls = append(cls, cl)
				}
				wg.Wait()
				var rd sync.WaitGroup
				for _, cl := range cls {
					rd.Add(1)
					go func() {
						defer rd.Done()
						if resp, err := cl.head(http.MethodGet, 5*time.Second); err == nil {
							io.Copy(io.Discard, resp.Body)
						}
					}()
				}
				sp.drain(t)
				rd.Wait()
				for _, c := range up.allConns() {
					if !within(c.gone, 3*time.Second) {
						t.Errorf("upstream connection %d still open after the drain", c.id)
					}
				}
				sp.checkNoStreams(t, "after the drain")
			})
		}
	}
}
