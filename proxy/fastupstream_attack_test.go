package proxy

// Attacks on the upstream side of the fasthttp engine (fastupstream.go:
// its own round trip on the direct transport's pool, with fasthttp's
// request writer and response parser), replayed against the net/http
// engine where the two should agree. The upstream is the recording raw
// upstream of fastengine_attack_test.go; every hostile response below is
// written on a connection that the upstream keeps open (and usually
// followed by a complete, unsolicited response, feEvil), so a proxy that
// reused the connection would hand the unsolicited response to the next
// client. The follow-up requests always come from other client
// connections, so that what they get can only have come through the
// upstream pool.
//
// What holds on both engines (no case here found otherwise): no
// unsolicited or left-over upstream bytes ever reached another client
// (ambiguous framing, HEAD/204/304 with bodies, bodies longer than their
// Content-Length, late answers after a timeout, abandoned streams,
// concurrent clients); a request that may not be replayed reaches the
// upstream once, a GET is retried once and only once; UpstreamTimeout
// gives 504 for silent, dripping and interim-flooding upstreams; a body
// that breaks off never looks complete (502, or cut without the last
// chunk and the connection closed); tokens that do not open stay tokens.
//
// Bugs found in the fasthttp engine (the cases fail on commit f7eba3a;
// fixed in fastupstream.go/fastengine.go since):
//   - Header names with an inner space ("Content Length: 40",
//     "Transfer Encoding: chunked", "X Evil: 1") are forwarded to the
//     client as they are, on the pass-through and the decrypting paths
//     (TestFastUpstreamAttackHeaderValues, TestFastUpstreamAttackFraming
//     "cl-inner-space"). fasthttp's parser tolerates them (and only marks
//     the upstream connection for closing); net/http's server never
//     writes an invalid field name. A downstream parser that squeezes
//     the space sees a second, conflicting Content-Length or a
//     Transfer-Encoding.
//   - A field named by a Connection line spelt in another case
//     ("connection: X-Hop2") is forwarded on the pass-through path
//     (TestFastUpstreamAttackHeaders): copyFastHeader looks the
//     Connection lines up with PeekAll("Connection"), which with
//     normalizing off matches the exact spelling only.
//   - Status "000" reads as 200 (fasthttp's StatusCode() of 0), and the
//     client gets a complete 200 with the body, decrypted on a decrypting
//     route (TestFastUpstreamAttackFraming "status-000",
//     TestFastUpstreamAttackDecrypt "status-000"); the net/http engine
//     drops the connection without an answer.
//   - On a decrypting route, a 304 or 204 carrying a Content-Length
//     (a 304's is the representation's, RFC 9110 section 8.6) becomes a
//     bare 502 and a closed connection (TestFastUpstreamAttackDecrypt
//     "304-with-cl", "204-with-cl"): fastForward gives modifyResponse
//     res.ContentLength from the header with an empty body, and
//     fastWriteResponse then fails to read that many bytes.
//
// Differences that are not bugs of this kind (logged, not failed):
// response header blocks over 32 KiB (the pool's read buffer) get 502 on
// fasthttp, 200 on net/http (TestFastUpstreamAttackLargeHeaders); a
// response with bare-LF line ends and no CRLFCRLF after it waits for
// UpstreamTimeout (504) on fasthttp, 200 on net/http; "Content-Length : 40"
// (space before the colon) with another Content-Length is refused (502)
// by fasthttp, its field dropped by net/http; a repeated identical
// Content-Length is refused by fasthttp; interim responses are passed on
// by net/http only; net/http adds Date and a sniffed Content-Type, the
// fasthttp engine neither.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"golang.org/x/net/http/httpguts"
)

// fuScript is an upstream whose answers are chosen per request-target;
// n is the request's number on its connection (from 1). Targets without
// a script get feAnswer.
type fuScript struct {
	mu     sync.Mutex
	by     map[string]func(c net.Conn, s feSeen, n int) bool
	counts map[net.Conn]int
}

func (f *fuScript) set(path string, h func(c net.Conn, s feSeen, n int) bool) {
	f.mu.Lock()
	f.by[path] = h
	f.mu.Unlock()
}

func (f *fuScript) respond(c net.Conn, s feSeen) bool {
	f.mu.Lock()
	f.counts[c]++
	n := f.counts[c]
	path, _, _ := strings.Cut(s.Target, "?")
	h := f.by[path]
	f.mu.Unlock()
	if h == nil {
		return feAnswer(c, s)
	}
	return h(c, s, n)
}

func startFuUpstream(t *testing.T) (*feUpstream, *fuScript) {
	t.Helper()
	f := &fuScript{by: map[string]func(net.Conn, feSeen, int) bool{}, counts: map[net.Conn]int{}}
	return startFeUpstream(t, f.respond), f
}

func startFuProxy(t *testing.T, engine string, up *feUpstream, timeout time.Duration) *testProxy {
	t.Helper()
	return startProxy(t, Config{
		Engine:          engine,
		Upstream:        up.URL,
		Rules:           newStaticRules(fePlan(t)),
		Keys:            fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1)),
		UpstreamTimeout: timeout,
	})
}

// fuDo sends one raw request on a new client connection and reads one
// answer; fc is returned for checks on the connection.
func fuDo(t *testing.T, tp *testProxy, method, path, body string, hdr ...string) (feResp, bool, *feConn) {
	t.Helper()
	fc := feDial(t, tp)
	req := method + " " + path + " HTTP/1.1\r\nHost: x\r\n"
	for _, h := range hdr {
		req += h + "\r\n"
	}
	if body != "" || method == "POST" || method == "PUT" {
		req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	}
	fc.send(req + "\r\n" + body)
	r, ok := fc.read(method)
	for i := 0; ok && r.Status >= 100 && r.Status < 200 && i < 10; i++ {
		// net/http passes interim responses on; fasthttp drops them.
		r, ok = fc.read(method)
	}
	return r, ok, fc
}

// closedAfter reports whether the proxy ends the client connection
// (EOF or reset) rather than keeping it open.
func (fc *feConn) closedAfter() bool {
	fc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := fc.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func (u *feUpstream) count(method, path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.seen {
		if s.Method == method && s.Target == path {
			n++
		}
	}
	return n
}

// fuFollowUps sends requests on new client connections after an attack:
// each must get its own answer, never the unsolicited one, and the POST
// must reach the upstream once.
func fuFollowUps(t *testing.T, tp *testProxy, up *feUpstream, what string, tag int) {
	t.Helper()
	seq := fuSeq.Add(1)
	for i, method := range []string{"GET", "POST", "HEAD", "GET", "PUT"} {
		path := fmt.Sprintf("/db/after-%d-%d-%d", tag, seq, i)
		body := ""
		if method == "POST" || method == "PUT" {
			body = `{"n":` + strconv.Itoa(i) + `}`
		}
		r, ok, _ := fuDo(t, tp, method, path, body)
		want := `{"ok":true,"id":"x","rev":"1-a"}`
		if method == "HEAD" {
			want = ""
		}
		switch {
		case !ok:
			t.Errorf("%s: follow-up %s %s: no answer", what, method, path)
		case r.Header.Get("X-Echo") == "EVIL" || strings.Contains(r.Body, "EVIL"):
			t.Errorf("%s: BUG: follow-up %s %s from another client got the upstream's unsolicited response: %d %q", what, method, path, r.Status, r.Body)
		case r.Status != 200 || r.echo() != path || r.Body != want || r.Err != nil:
			t.Errorf("%s: follow-up %s %s got %d echo %q %q (%v)", what, method, path, r.Status, r.echo(), r.Body, r.Err)
		}
		if body != "" {
			if n := up.count(method, path); n != 1 {
				t.Errorf("%s: BUG: follow-up %s %s reached the upstream %d times", what, method, path, n)
			}
		}
	}
}

// fuSeq makes every follow-up path unique.
var fuSeq atomic.Int64

// ---- response framing and queue poisoning ----

// fuFraming is one hostile answer to the first request.
type fuFraming struct {
	name   string
	method string
	resp   string
	noEvil bool
	close  bool     // the upstream closes after resp (and feEvil)
	bodies []string // complete 2xx bodies acceptable for the first request ("" for none)
	// status the client must get per engine (0: not checked); a cut
	// body (r.Err) is acceptable only with cutOK.
	net, fast int
	cutOK     bool
	check     func(t *testing.T, what string, raw string)
}

// fuNoBadNames fails unless every header line the client got has a
// valid field name (net/http's server never writes another).
func fuNoBadNames(t *testing.T, what, raw string) {
	t.Helper()
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, _, _ := strings.Cut(line, ":")
		if !httpguts.ValidHeaderFieldName(k) {
			t.Errorf("%s: BUG: the client got a header line with an invalid name: %q (head %q)", what, line, head)
		}
	}
}

func TestFastUpstreamAttackFraming(t *testing.T) {
	ok2 := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	interim := "HTTP/1.1 100 Continue\r\n\r\n"
	cases := []fuFraming{
		{name: "cl-then-te", resp: ok2 + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", bodies: []string{"hello"}, net: 200, fast: 200},
		{name: "te-then-cl", resp: ok2 + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n5\r\nhello\r\n0\r\n\r\n", bodies: []string{"hello"}, net: 200, fast: 200},
		{name: "te-then-cl-short", resp: ok2 + "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n", bodies: []string{"hello"}, net: 200, fast: 200},
		{name: "two-cl", resp: ok2 + "Content-Length: 2\r\nContent-Length: 40\r\n\r\nok", net: 502, fast: 502},
		{name: "same-cl-twice", resp: ok2 + "Content-Length: 2\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}},
		{name: "cl-list", resp: ok2 + "Content-Length: 2, 40\r\n\r\nok", net: 502, fast: 502},
		{name: "cl-plus", resp: ok2 + "Content-Length: +2\r\n\r\nok", net: 502, fast: 502},
		{name: "cl-negative", resp: ok2 + "Content-Length: -1\r\n\r\nok", net: 502, fast: 502},
		// net/http drops the field with a space before the colon, fasthttp
		// reads it as a second Content-Length.
		{name: "cl-space-colon", resp: ok2 + "Content-Length : 40\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, fast: 502},
		// net/http drops the invalid field when it writes the response; the
		// fasthttp engine must not pass it on (a 502 is as good).
		{name: "cl-inner-space", resp: ok2 + "Content Length: 40\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, check: fuNoBadNames},
		{name: "cl-too-small", resp: ok2 + "Content-Length: 2\r\n\r\nokokok", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "te-gzip-chunked", resp: ok2 + "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", bodies: []string{"ok"}},
		{name: "te-gzip", resp: ok2 + "Transfer-Encoding: gzip\r\n\r\nok", bodies: []string{"ok"}, cutOK: true},
		{name: "te-identity-cl", resp: ok2 + "Transfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}},
		{name: "te-twice", resp: ok2 + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", bodies: []string{"ok"}},
		{name: "te-chunked-then-identity", resp: ok2 + "Transfer-Encoding: chunked, identity\r\n\r\n2\r\nok\r\n0\r\n\r\n", bodies: []string{"ok"}},
		{name: "chunked-trailers", resp: ok2 + "Trailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: v\r\n\r\n", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "chunked-forbidden-trailer", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 40\r\n\r\n", bodies: []string{"ok"}, cutOK: true},
		{name: "chunked-ext", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\n2;a=\"b\"\r\nok\r\n0;x\r\n\r\n", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "chunked-huge-size", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nok\r\n", cutOK: true},
		{name: "chunked-bad-size", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", cutOK: true},
		{name: "chunked-size-lf-only", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n", bodies: []string{"ok"}, cutOK: true},
		{name: "chunked-data-too-long", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\n2\r\nokEXTRA\r\n0\r\n\r\n", cutOK: true},
		{name: "chunked-no-final-crlf", resp: ok2 + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n", bodies: []string{"ok"}, cutOK: true},
		{name: "head-with-body", method: "HEAD", resp: "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(feEvil)) + "\r\n\r\n" + feEvil, noEvil: true, bodies: []string{""}, net: 200, fast: 200},
		{name: "head-chunked-body", method: "HEAD", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(feEvil) + "0\r\n\r\n", noEvil: true, bodies: []string{""}, net: 200, fast: 200},
		{name: "204-with-body", resp: "HTTP/1.1 204 No Content\r\nContent-Length: " + strconv.Itoa(len(feEvil)) + "\r\n\r\n" + feEvil, noEvil: true, bodies: []string{""}, net: 204, fast: 204},
		{name: "304-with-body", resp: "HTTP/1.1 304 Not Modified\r\nContent-Length: " + strconv.Itoa(len(feEvil)) + "\r\n\r\n" + feEvil, noEvil: true, bodies: []string{""}, net: 304, fast: 304},
		{name: "204-chunked", method: "DELETE", resp: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n", bodies: []string{""}, net: 204, fast: 204},
		{name: "http10-no-length", resp: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok", close: true, bodies: []string{"ok", "ok" + feEvil}},
		{name: "http10-keepalive-no-length", resp: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nok", close: true, bodies: []string{"ok", "ok" + feEvil}},
		{name: "http10-keepalive-cl", resp: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "http10-te-chunked", resp: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\nok\r\n0\r\n\r\n", bodies: []string{"2\r\nok\r\n0\r\n\r\n"[:5]}},
		{name: "http11-no-length", resp: ok2 + "\r\nok", close: true, bodies: []string{"ok", "ok" + feEvil}},
		{name: "connection-close-cl", resp: ok2 + "Connection: close\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "connection-close-chunked", resp: ok2 + "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "100-then-final", resp: interim + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "5-interim-then-final", resp: strings.Repeat(interim, 5) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}, net: 200, fast: 200},
		{name: "6-interim", resp: strings.Repeat(interim, 6) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", net: 502, fast: 502},
		{name: "101-to-get", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", net: 502, fast: 502},
		{name: "bare-lf", resp: "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", bodies: []string{"ok"}},
		{name: "obs-fold", resp: "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}},
		{name: "garbage-status", resp: "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", net: 502, fast: 502},
		// net/http's ReverseProxy cannot write status 0 and drops the
		// connection; fasthttp reads 000 as 200 (its StatusCode of 0).
		{name: "status-000", resp: "HTTP/1.1 000 Nothing\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{name: "status-099", resp: "HTTP/1.1 099 Odd\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{name: "not-http", resp: "SSH-2.0-OpenSSH\r\n\r\n", net: 502, fast: 502},
		{name: "nul-in-header", resp: ok2 + "X-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}},
		{name: "cr-in-header", resp: ok2 + "X-A: a\rb\r\nContent-Length: 2\r\n\r\nok", bodies: []string{"ok"}},
	}
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			for i, c := range cases {
				method := c.method
				if method == "" {
					method = "GET"
				}
				path := fmt.Sprintf("/db/attack-%d", i)
				evilSent := make(chan struct{})
				sc.set(path, func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, c.resp)
					if !c.noEvil {
						io.WriteString(conn, feEvil)
					}
					close(evilSent)
					return !c.close
				})
				what := engine + "/" + c.name
				r, ok, fc := fuDo(t, tp, method, path, "")
				<-evilSent
				t.Logf("%s: first answer %v %d %q err=%v hdr=%v", what, ok, r.Status, r.Body, r.Err, r.Header)
				if ok {
					if r.Header.Get("X-Echo") == "EVIL" || (r.Status < 300 && r.Err == nil && strings.Contains(r.Body, "EVIL") && !containsStr(c.bodies, r.Body)) {
						t.Errorf("%s: BUG: the first request got the unsolicited response: %d %q", what, r.Status, r.Body)
					}
					if r.Status >= 200 && r.Status < 300 && r.Err == nil && !containsStr(c.bodies, r.Body) {
						t.Errorf("%s: BUG: a complete-looking %d %q, want one of %q or an error (raw answer %q)", what, r.Status, r.Body, c.bodies, fc.raw.String())
					}
					if r.Err != nil && !c.cutOK {
						t.Errorf("%s: body cut off: %v", what, r.Err)
					}
					if r.Err != nil && !fc.closedAfter() {
						t.Errorf("%s: the client connection stayed open after a cut-off body", what)
					}
				}
				if c.check != nil && ok {
					c.check(t, what, fc.raw.String())
				}
				want := c.net
				if engine == EngineFastHTTP {
					want = c.fast
				}
				if want != 0 && (!ok || r.Status != want) {
					t.Errorf("%s: got %d (answered %v), want %d", what, r.Status, ok, want)
				}
				// The unsolicited bytes are on the wire before the next
				// request; give them a moment to reach the proxy's socket.
				time.Sleep(10 * time.Millisecond)
				fuFollowUps(t, tp, up, what, i)
			}
		})
	}
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ---- connection reuse: dead pooled connections and replays ----

// TestFastUpstreamAttackReuseDropped: the upstream reads a request that
// arrives on a reused connection and hangs up without answering. A GET
// or HEAD is sent again on a new connection (200); a request that may
// not be replayed reaches the upstream once and the client gets 502.
// Also: the upstream closes a pooled connection while it is idle; the
// next requests, of any method, go out once on a new connection.
func TestFastUpstreamAttackReuseDropped(t *testing.T) {
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			drop := func(c net.Conn, s feSeen, n int) bool {
				if n >= 2 {
					return false // read it, then hang up
				}
				return feAnswer(c, s)
			}
			type step struct {
				method, body string
				hdr          []string
				status, sent int
			}
			steps := []step{
				{method: "GET", status: 200, sent: 2},
				{method: "HEAD", status: 200, sent: 2},
				{method: "POST", body: `{"a":1}`, status: 502, sent: 1},
				{method: "PUT", body: `{"a":1}`, status: 502, sent: 1},
				{method: "PATCH", body: `{"a":1}`, status: 502, sent: 1},
				{method: "DELETE", status: 502, sent: 1},
				{method: "POST", status: 502, sent: 1}, // no body
				// Protected (sealed in memory): still once.
				{method: "PUT", body: feDoc(0), status: 502, sent: 1},
				// An idempotency key allows a replay (http.Transport's
				// rule); status 0: either answer, sent at most twice.
				{method: "POST", body: `{"a":1}`, hdr: []string{"Idempotency-Key: k1"}, status: 0, sent: 0},
			}
			for i, st := range steps {
				path := fmt.Sprintf("/db/drop-%d", i)
				if st.body == feDoc(0) {
					path = fmt.Sprintf("/clinic/drop-%d", i)
				}
				sc.set(path, drop)
				if r, ok, _ := fuDo(t, tp, "GET", fmt.Sprintf("/db/warm-%d", i), ""); !ok || r.Status != 200 {
					t.Fatalf("warm-up: %d %v", r.Status, ok)
				}
				r, ok, _ := fuDo(t, tp, st.method, path, st.body, st.hdr...)
				what := engine + " " + st.method + " " + path
				if st.status == 0 {
					n := up.count(st.method, path)
					t.Logf("%s with %v: %d, sent %d times", what, st.hdr, r.Status, n)
					if n > 2 || (r.Status == 200) != (n == 2) {
						t.Errorf("%s with %v: %d, sent %d times", what, st.hdr, r.Status, n)
					}
					continue
				}
				if !ok || r.Status != st.status {
					t.Errorf("%s on a connection the upstream dropped: %d (answered %v) %q, want %d", what, r.Status, ok, r.Body, st.status)
				}
				if n := up.count(st.method, path); n != st.sent {
					sev := ""
					if st.sent == 1 {
						sev = "BUG: "
					}
					t.Errorf("%s%s reached the upstream %d times, want %d", sev, what, n, st.sent)
				}
			}
			up.checkNoPlaintext(t, engine)

			// An upstream that drops every request: a GET is sent again
			// once, never a third time.
			sc.set("/db/drop-always", func(c net.Conn, s feSeen, n int) bool { return false })
			if r, ok, _ := fuDo(t, tp, "GET", "/db/warm-always", ""); !ok || r.Status != 200 {
				t.Fatalf("warm-up: %d %v", r.Status, ok)
			}
			if r, ok, _ := fuDo(t, tp, "GET", "/db/drop-always", ""); !ok || r.Status != 502 {
				t.Errorf("%s GET /db/drop-always: %d (%v), want 502", engine, r.Status, ok)
			}
			if n := up.count("GET", "/db/drop-always"); n != 2 {
				t.Errorf("%s GET /db/drop-always reached the upstream %d times, want 2 (one retry)", engine, n)
			}

			// Idle close: the upstream answers, then closes the
			// connection a moment later (as Node does after 5 s).
			for i, method := range []string{"GET", "POST", "PUT", "DELETE"} {
				warm := fmt.Sprintf("/db/idle-warm-%d", i)
				closed := make(chan struct{})
				sc.set(warm, func(c net.Conn, s feSeen, n int) bool {
					feAnswer(c, s)
					time.Sleep(20 * time.Millisecond)
					close(closed)
					return false
				})
				if r, ok, _ := fuDo(t, tp, "GET", warm, ""); !ok || r.Status != 200 {
					t.Fatalf("warm-up: %d %v", r.Status, ok)
				}
				<-closed
				time.Sleep(10 * time.Millisecond) // the FIN reaches the proxy
				path := fmt.Sprintf("/db/idle-%d", i)
				body := ""
				if method == "POST" || method == "PUT" {
					body = `{"i":1}`
				}
				r, ok, _ := fuDo(t, tp, method, path, body)
				if !ok || r.Status != 200 || r.echo() != path {
					t.Errorf("%s %s after an idle close: %d %q (%v)", engine, method, r.Status, r.echo(), ok)
				}
				if n := up.count(method, path); n != 1 {
					t.Errorf("%s %s after an idle close reached the upstream %d times", engine, method, n)
				}
			}
		})
	}
}

// TestFastUpstreamAttackTimeout: UpstreamTimeout (300ms here) bounds the
// wait for the response headers: no answer, a status line and then
// nothing, headers dripped byte by byte, and an endless stream of
// interim responses all get 504 in about that time, and a request that
// timed out on a reused connection is not sent again.
func TestFastUpstreamAttackTimeout(t *testing.T) {
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 300*time.Millisecond)
			done := make(chan struct{})
			t.Cleanup(func() { close(done) })
			wait := func() {
				select {
				case <-done:
				case <-time.After(3 * time.Second):
				}
			}
			sc.set("/db/silent", func(c net.Conn, s feSeen, n int) bool { wait(); return false })
			sc.set("/db/status-line", func(c net.Conn, s feSeen, n int) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Ty")
				wait()
				return false
			})
			drip := func(hdr string) func(c net.Conn, s feSeen, n int) bool {
				return func(c net.Conn, s feSeen, n int) bool {
					for i := range len(hdr) {
						if _, err := c.Write([]byte{hdr[i]}); err != nil {
							return false
						}
						select {
						case <-done:
							return false
						case <-time.After(10 * time.Millisecond):
						}
					}
					return false
				}
			}
			sc.set("/db/drip", drip("HTTP/1.1 200 OK\r\n"+strings.Repeat("X-Drip: 1\r\n", 1000)))
			sc.set("/clinic/drip", drip("HTTP/1.1 200 OK\r\n"+strings.Repeat("X-Drip: 1\r\n", 1000)))
			sc.set("/db/interim-drip", drip(strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 4)+"HTTP/1.1 200 OK\r\n"+strings.Repeat("X-Drip: 1\r\n", 1000)))
			for _, c := range []struct{ method, path, body string }{
				{"GET", "/db/silent", ""},
				{"GET", "/db/status-line", ""},
				{"GET", "/db/drip", ""},
				{"GET", "/clinic/drip", ""},
				{"GET", "/db/interim-drip", ""},
				{"PUT", "/db/silent", `{"x":1}`},
			} {
				// A warm connection first, so the request goes out on a
				// reused one (where a retry would be possible).
				if r, ok, _ := fuDo(t, tp, "GET", "/db/warm", ""); !ok || r.Status != 200 {
					t.Fatalf("warm-up: %d %v", r.Status, ok)
				}
				m := up.mark()
				start := time.Now()
				r, ok, _ := fuDo(t, tp, c.method, c.path, c.body)
				d := time.Since(start)
				if !ok || r.Status != http.StatusGatewayTimeout || jsonCode(r.Body) != CodeUpstreamTimeout {
					t.Errorf("%s %s %s: %d %q (answered %v), want 504 upstream_timeout", engine, c.method, c.path, r.Status, r.Body, ok)
				}
				if d > 2*time.Second {
					t.Errorf("%s %s %s: answered after %v", engine, c.method, c.path, d)
				}
				if got := targetsOf(up.since(m)); len(got) != 1 {
					t.Errorf("%s %s %s: the upstream got %q, want the request once", engine, c.method, c.path, got)
				}
			}
			// Bare-LF line ends and nothing after: net/http reads it
			// (200); fasthttp's parser waits for a CRLFCRLF that never
			// comes, until UpstreamTimeout (504; with no UpstreamTimeout
			// it would wait until the upstream closes).
			sc.set("/db/bare-lf", func(c net.Conn, s feSeen, n int) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n\nok")
				return true
			})
			start := time.Now()
			r, ok, _ := fuDo(t, tp, "GET", "/db/bare-lf", "")
			t.Logf("DIFFERENCE %s: a bare-LF response: %d %q after %v", engine, r.Status, r.Body, time.Since(start).Round(time.Millisecond))
			switch {
			case !ok:
				t.Errorf("%s: a bare-LF response: no answer", engine)
			case engine == EngineNetHTTP && (r.Status != 200 || r.Body != "ok"):
				t.Errorf("%s: a bare-LF response: %d %q, want 200 ok", engine, r.Status, r.Body)
			case r.Status != 200 && r.Status != http.StatusGatewayTimeout:
				t.Errorf("%s: a bare-LF response: %d %q", engine, r.Status, r.Body)
			}

			// A late answer on a connection that timed out is another
			// exchange's: it must never reach a later client.
			lateSent := make(chan struct{})
			sc.set("/db/late", func(c net.Conn, s feSeen, n int) bool {
				select {
				case <-done:
				case <-time.After(500 * time.Millisecond):
				}
				io.WriteString(c, feEvil)
				close(lateSent)
				return true
			})
			if r, ok, _ := fuDo(t, tp, "GET", "/db/late", ""); !ok || r.Status != http.StatusGatewayTimeout {
				t.Errorf("%s /db/late: %d (%v), want 504", engine, r.Status, ok)
			}
			<-lateSent
			fuFollowUps(t, tp, up, engine+"/late", 0)
		})
	}
}

// ---- decrypted responses ----

// fuSealed stores feDoc(0) through tp and returns the sealed document the
// upstream got.
func fuSealed(t *testing.T, tp *testProxy, up *feUpstream) string {
	t.Helper()
	m := up.mark()
	if r, ok, _ := fuDo(t, tp, "PUT", "/clinic/p1", feDoc(0)); !ok || r.Status != 200 {
		t.Fatalf("PUT through the proxy: %d %v", r.Status, ok)
	}
	seen := up.since(m)
	if len(seen) != 1 || !sealed(seen[0].Body) {
		t.Fatalf("the upstream got %q", targetsOf(seen))
	}
	return string(seen[0].Body)
}

// TestFastUpstreamAttackDecrypt: a decrypting route (GET on the clinic
// collection, which opens ssn) whose upstream framing is hostile. The
// client gets the opened document or an error, never a complete-looking
// body that is not the document; tokens that do not open stay tokens;
// and the next clients get their own answers.
func TestFastUpstreamAttackDecrypt(t *testing.T) {
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			doc := fuSealed(t, tp, up)
			tok := doc[strings.Index(doc, `"sc`)+1:]
			tok = tok[:strings.IndexByte(tok, '"')]
			tampered := strings.Replace(doc, tok, tok[:len(tok)-2]+"AA", 1)
			if tampered == doc {
				tampered = strings.Replace(doc, tok, tok[:len(tok)-2]+"BB", 1)
			}
			json := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			pad := strings.Repeat(" ", 300<<10)
			type dcase struct {
				name   string
				method string
				resp   string
				close  bool
				noEvil bool
				status int    // 0: any error status, or a cut body
				body   string // the complete body a 2xx must carry ("open": the opened document)
			}
			cases := []dcase{
				{name: "plain", resp: json + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n" + doc, status: 200, body: "open"},
				{name: "cl-then-te", resp: json + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(doc) + "0\r\n\r\n", status: 200, body: "open"},
				{name: "te-then-cl", resp: json + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunk(doc) + "0\r\n\r\n", status: 200, body: "open"},
				{name: "long", resp: json + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n" + doc + `{"ssn":"x"}`, status: 200, body: "open"},
				{name: "chunked-then-evil", resp: json + "Transfer-Encoding: chunked\r\n\r\n" + chunk(doc) + "0\r\n\r\n", status: 200, body: "open"},
				{name: "http10-until-close", resp: "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + doc, close: true, noEvil: true, status: 200, body: "open"},
				{name: "tampered-token", resp: json + "Content-Length: " + strconv.Itoa(len(tampered)) + "\r\n\r\n" + tampered, status: 200, body: tampered},
				{name: "two-cl", resp: json + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\nContent-Length: 3\r\n\r\n" + doc},
				{name: "cut-small", resp: json + "Content-Length: " + strconv.Itoa(len(doc)+50) + "\r\n\r\n" + doc, close: true, noEvil: true},
				{name: "cut-chunked-after-doc", resp: json + "Transfer-Encoding: chunked\r\n\r\n" + chunk(doc), close: true, noEvil: true},
				{name: "cut-chunk-data", resp: json + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n", len(doc)+40) + doc, close: true, noEvil: true},
				{name: "cut-big", resp: json + "Content-Length: " + strconv.Itoa(len(doc)+len(pad)+10) + "\r\n\r\n" + doc + pad, close: true, noEvil: true},
				// An invalid status: net/http's ReverseProxy cannot write
				// it and drops the connection; nothing may read as a 200.
				{name: "status-000", resp: "HTTP/1.1 000 X\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n" + doc},
				{name: "bad-chunk-size", resp: json + "Transfer-Encoding: chunked\r\n\r\n" + chunk(doc) + "zz\r\n\r\n", close: true, noEvil: true},
				// Conditional requests and HEAD on a decrypting route: no
				// body, whatever Content-Length the upstream announces
				// (a 304's is the representation's, RFC 9110 8.6).
				{name: "304-with-cl", resp: "HTTP/1.1 304 Not Modified\r\nETag: \"1-a\"\r\nContent-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n", noEvil: false, status: 304, body: ""},
				{name: "304-no-cl", resp: "HTTP/1.1 304 Not Modified\r\nETag: \"1-a\"\r\n\r\n", status: 304, body: ""},
				{name: "204-with-cl", resp: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", status: 204, body: ""},
				{name: "head", method: "HEAD", resp: json + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n", status: 200, body: ""},
				{name: "head-with-body", method: "HEAD", resp: json + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n" + doc, status: 200, body: ""},
			}
			// The decrypting follow-up's answer, well framed and alone (an
			// unsolicited response written a moment after a good one can
			// reach the next request on any HTTP/1.1 client: not tested).
			sc.set("/clinic/clean", func(conn net.Conn, s feSeen, n int) bool {
				io.WriteString(conn, json+"Content-Length: "+strconv.Itoa(len(doc))+"\r\n\r\n"+doc)
				return true
			})
			opened := ""
			for i, c := range cases {
				method := c.method
				if method == "" {
					method = "GET"
				}
				path := fmt.Sprintf("/clinic/d%d", i)
				sent := make(chan struct{})
				var once sync.Once
				sc.set(path, func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, c.resp)
					if !c.noEvil {
						io.WriteString(conn, feEvil)
					}
					once.Do(func() { close(sent) })
					return !c.close
				})
				what := engine + "/decrypt/" + c.name
				r, ok, fc := fuDo(t, tp, method, path, "")
				<-sent
				t.Logf("%s: %v %d %.120q err=%v", what, ok, r.Status, r.Body, r.Err)
				if c.name == "plain" {
					opened = r.Body
					if !strings.Contains(opened, feMarker) || strings.Contains(opened, `"sc`) {
						t.Fatalf("%s: the document was not opened: %q", what, opened)
					}
				}
				want := c.body
				if want == "open" {
					want = opened
				}
				complete := ok && r.Err == nil
				switch {
				case c.status == 0:
					if complete && r.Status < 300 {
						t.Errorf("%s: BUG: a complete-looking %d %.200q from a hostile or broken upstream response (raw %.300q)", what, r.Status, r.Body, fc.raw.String())
					}
					if ok && r.Err != nil && !fc.closedAfter() {
						t.Errorf("%s: the connection stayed open after a cut body", what)
					}
				case !ok || r.Status != c.status || r.Err != nil:
					t.Errorf("%s: BUG: %d (answered %v) %.200q err=%v, want %d (raw %q)", what, r.Status, ok, r.Body, r.Err, c.status, fc.raw.String())
				case r.Body != want:
					t.Errorf("%s: body %.200q, want %.200q", what, r.Body, want)
				}
				if ok && (r.Status == 204 || r.Status == 304) {
					head, _, _ := strings.Cut(fc.raw.String(), "\r\n\r\n")
					if len(headerLines([]byte(head), "Transfer-Encoding")) > 0 || (r.Status == 204 && len(headerLines([]byte(head), "Content-Length")) > 0) {
						t.Errorf("%s: a %d was framed: %q", what, r.Status, head)
					}
					t.Logf("%s: head %q", what, head)
				}
				if c.name == "head" && r.Header.Get("Content-Length") != strconv.Itoa(len(doc)) {
					t.Errorf("%s: HEAD Content-Length %q, want %d", what, r.Header.Get("Content-Length"), len(doc))
				}
				if complete && strings.Contains(r.Body, "EVIL") {
					t.Errorf("%s: BUG: the unsolicited response reached the client: %q", what, r.Body)
				}
				time.Sleep(10 * time.Millisecond)
				// A decrypting follow-up from another client.
				if r, ok, _ := fuDo(t, tp, "GET", "/clinic/clean", ""); !ok || r.Status != 200 || r.Body != opened {
					t.Errorf("%s: the next decrypting request got %d %q (%v)", what, r.Status, r.Body, ok)
				}
				fuFollowUps(t, tp, up, what, i)
			}
		})
	}
}

// ---- header hygiene ----

// fuHead returns the header lines of a raw head, "name: value" with the
// name lower-cased, in order, without Date.
func fuHead(raw string) []string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	var out []string
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, _ := strings.Cut(line, ":")
		k = strings.ToLower(k)
		if k == "date" {
			continue
		}
		out = append(out, k+": "+strings.TrimSpace(v))
	}
	return out
}

func fuHas(lines []string, name string) []string {
	var vals []string
	for _, l := range lines {
		if k, v, _ := strings.Cut(l, ": "); k == name {
			vals = append(vals, v)
		}
	}
	return vals
}

// TestFastUpstreamAttackHeaders: hop-by-hop fields never cross the proxy
// in either direction, forwarding fields are the proxy's, and what the
// client gets of the upstream's fields (Set-Cookie lines with the same
// cookie name included) is what the net/http engine passes on.
func TestFastUpstreamAttackHeaders(t *testing.T) {
	reqHdr := []string{
		"Connection: X-Secret, keep-alive", "X-Secret: s", "Keep-Alive: timeout=5",
		"Proxy-Authorization: Basic eDp5", "Proxy-Connection: keep-alive", "Te: trailers, gzip",
		"Trailer: X-T", "Forwarded: for=6.6.6.6", "X-Forwarded-For: 6.6.6.6",
		"X-Forwarded-Host: evil.example", "X-Forwarded-Proto: https", "X-Keep: 1",
	}
	// The second Connection line is spelt in lower case: the fields it
	// names are as hop-by-hop as the first line's.
	respHdr := "Connection: X-Hop, keep-alive\r\nconnection: X-Hop2\r\nX-Hop: 1\r\nX-Hop2: 2\r\nKeep-Alive: timeout=5\r\n" +
		"Proxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nTe: trailers\r\n" +
		"Set-Cookie: a=1; Path=/\r\nSet-Cookie: a=2; Path=/x\r\nSet-Cookie: b=3\r\nSet-Cookie: a=1; Path=/\r\n" +
		"X-Dup: 1\r\nX-Dup: 2\r\nX-Keep: k\r\n"
	type got struct{ up, client map[string][]string }
	results := map[string]got{}
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			doc := fuSealed(t, tp, up)
			res := got{up: map[string][]string{}, client: map[string][]string{}}
			for _, c := range []struct{ name, path, resp string }{
				{"pass-cl", "/db/h1", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + respHdr + "Content-Length: 2\r\n\r\nok"},
				{"pass-chunked", "/db/h2", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + respHdr + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
				{"decrypt-cl", "/clinic/h3", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + respHdr + "Content-Length: " + strconv.Itoa(len(doc)) + "\r\n\r\n" + doc},
				{"decrypt-chunked", "/clinic/h4", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + respHdr + "Transfer-Encoding: chunked\r\n\r\n" + chunk(doc) + "0\r\n\r\n"},
			} {
				resp := c.resp
				sc.set(c.path, func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, resp)
					return true
				})
				m := up.mark()
				r, ok, fc := fuDo(t, tp, "GET", c.path, "", reqHdr...)
				what := engine + "/" + c.name
				if !ok || r.Status != 200 || r.Err != nil {
					t.Errorf("%s: %d %q %v", what, r.Status, r.Body, r.Err)
					continue
				}
				seen := up.since(m)
				if len(seen) != 1 {
					t.Fatalf("%s: upstream got %q", what, targetsOf(seen))
				}
				upLines := fuHead(string(seen[0].RawHead))
				clLines := fuHead(fc.raw.String())
				res.up[c.name] = upLines
				res.client[c.name] = clLines
				for _, h := range []string{"connection", "x-secret", "keep-alive", "proxy-authorization", "proxy-connection", "trailer", "forwarded", "upgrade", "transfer-encoding"} {
					if v := fuHas(upLines, h); len(v) > 0 {
						t.Errorf("%s: the upstream got %s: %q", what, h, v)
					}
				}
				if v := fuHas(upLines, "te"); len(v) != 1 || v[0] != "trailers" {
					t.Errorf("%s: the upstream got Te %q, want [trailers]", what, v)
				}
				if v := fuHas(upLines, "x-forwarded-for"); len(v) != 1 || v[0] != "127.0.0.1" {
					t.Errorf("%s: X-Forwarded-For %q", what, v)
				}
				if v := fuHas(upLines, "x-forwarded-host"); len(v) != 1 || v[0] != "x" {
					t.Errorf("%s: X-Forwarded-Host %q", what, v)
				}
				if v := fuHas(upLines, "x-forwarded-proto"); len(v) != 1 || v[0] != "http" {
					t.Errorf("%s: X-Forwarded-Proto %q", what, v)
				}
				for _, h := range []string{"x-hop", "x-hop2", "keep-alive", "proxy-authenticate", "proxy-connection", "trailer", "upgrade", "te"} {
					if h == "trailer" && engine == EngineNetHTTP {
						// ReverseProxy announces the trailers it will
						// copy (its own Trailer field, not the upstream's).
						continue
					}
					if v := fuHas(clLines, h); len(v) > 0 {
						t.Errorf("%s: BUG: the client got the hop-by-hop field %s: %q (head %q)", what, h, v, strings.SplitN(fc.raw.String(), "\r\n\r\n", 2)[0])
					}
				}
				if v := fuHas(clLines, "connection"); len(v) > 0 && (len(v) > 1 || v[0] != "keep-alive") {
					t.Errorf("%s: the client got Connection %q", what, v)
				}
				if v := fuHas(clLines, "x-keep"); len(v) != 1 || v[0] != "k" {
					t.Errorf("%s: the client got X-Keep %q", what, v)
				}
				t.Logf("%s: Set-Cookie to the client: %q; X-Dup %q", what, fuHas(clLines, "set-cookie"), fuHas(clLines, "x-dup"))
			}
			results[engine] = res
		})
	}
	// The engines agree on what crosses, field for field (order of
	// different names aside).
	n, f := results[EngineNetHTTP], results[EngineFastHTTP]
	for name := range n.up {
		for _, h := range []string{"set-cookie", "x-dup", "x-keep", "content-type", "content-length", "transfer-encoding"} {
			if a, b := fuHas(n.client[name], h), fuHas(f.client[name], h); fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("%s: the client got %s %q on nethttp, %q on fasthttp", name, h, a, b)
			}
		}
		var a, b []string
		for _, l := range n.up[name] {
			if !strings.HasPrefix(l, "host: ") {
				a = append(a, l)
			}
		}
		for _, l := range f.up[name] {
			if !strings.HasPrefix(l, "host: ") {
				b = append(b, l)
			}
		}
		sortStrings(a)
		sortStrings(b)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: the upstream got\n nethttp  %q\n fasthttp %q", name, a, b)
		}
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestFastUpstreamAttackHeaderValues: header lines from the upstream
// with bytes a client must not get: names with spaces or other invalid
// bytes, values with NUL, bare CR or LF. The client gets only valid
// lines (or an error), on both engines.
func TestFastUpstreamAttackHeaderValues(t *testing.T) {
	cases := []struct{ name, line string }{
		{"name-inner-space", "X Evil: 1"},
		{"name-inner-space-cl", "Content Length: 40"},
		{"name-inner-space-te", "Transfer Encoding: chunked"},
		{"name-tab", "X-A\t: 1"},
		{"value-nul", "X-A: a\x00b"},
		{"value-bare-cr", "X-A: a\rb"},
		{"value-del", "X-A: a\x7fb"},
		{"value-obs-text", "X-A: caf\xe9"},
	}
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			for i, c := range cases {
				for _, route := range []string{"/db", "/clinic"} {
					path := fmt.Sprintf("%s/hv-%d", route, i)
					line := c.line
					sc.set(path, func(conn net.Conn, s feSeen, n int) bool {
						io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"+line+"\r\nContent-Length: 2\r\n\r\n{}")
						return true
					})
					r, ok, fc := fuDo(t, tp, "GET", path, "")
					what := engine + "/" + c.name + route
					t.Logf("%s: %v %d %q head %q", what, ok, r.Status, r.Body, strings.SplitN(fc.raw.String(), "\r\n\r\n", 2)[0])
					if ok {
						fuNoBadNames(t, what, fc.raw.String())
						head, _, _ := strings.Cut(fc.raw.String(), "\r\n\r\n")
						if strings.ContainsAny(head, "\x00\x7f") || strings.Contains(strings.ReplaceAll(head, "\r\n", ""), "\r") {
							t.Errorf("%s: the client got a control byte in the head: %q", what, head)
						}
					}
					tag := 100 + 2*i
					if route == "/clinic" {
						tag++
					}
					fuFollowUps(t, tp, up, what, tag)
				}
			}
		})
	}
}

// ---- large header blocks, stalls, concurrency ----

// TestFastUpstreamAttackLargeHeaders: response header blocks past the
// fasthttp engine's 32 KiB read buffer, and past the 10 MiB limit.
// Whatever each engine answers, the connection is not reused with the
// rest of the block in it.
func TestFastUpstreamAttackLargeHeaders(t *testing.T) {
	cases := []struct {
		name     string
		hdr      string
		net, fst int
	}{
		{"one-40KiB-field", "X-Big: " + strings.Repeat("a", 40<<10) + "\r\n", 200, 0},
		{"many-fields-40KiB", strings.Repeat("X-Many: "+strings.Repeat("b", 90)+"\r\n", 400), 200, 0},
		{"31KiB", "X-Big: " + strings.Repeat("a", 31<<10) + "\r\n", 200, 200},
		{"11MiB", "X-Big: " + strings.Repeat("a", 11<<20) + "\r\n", 502, 502},
	}
	got := map[string]int{}
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			for i, c := range cases {
				path := fmt.Sprintf("/db/big-%d", i)
				hdr := c.hdr
				sc.set(path, func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"+hdr+"Content-Length: 2\r\n\r\nok"+feEvil)
					return true
				})
				r, ok, _ := fuDo(t, tp, "GET", path, "")
				what := engine + "/" + c.name
				t.Logf("%s: %v %d %.100q", what, ok, r.Status, r.Body)
				got[what] = r.Status
				want := c.net
				if engine == EngineFastHTTP {
					want = c.fst
				}
				if want != 0 && (!ok || r.Status != want) {
					t.Errorf("%s: %d (answered %v), want %d", what, r.Status, ok, want)
				}
				if ok && r.Status == 200 && r.Body != "ok" {
					t.Errorf("%s: body %.100q", what, r.Body)
				}
				time.Sleep(10 * time.Millisecond)
				fuFollowUps(t, tp, up, what, 200+i)
			}
		})
	}
	for _, c := range cases[:2] {
		if n, f := got[EngineNetHTTP+"/"+c.name], got[EngineFastHTTP+"/"+c.name]; n != f {
			t.Logf("DIFFERENCE %s: nethttp answers %d, fasthttp %d", c.name, n, f)
		}
	}
}

// TestFastUpstreamAttackStall: the upstream sends the headers and part
// of the body, stalls, then hangs up. While it stalls the client must not
// have a complete-looking answer; once it hangs up the client gets an
// error (502) or a body that breaks off, and a connection that closes.
func TestFastUpstreamAttackStall(t *testing.T) {
	big := strings.Repeat("A", 300<<10)
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			doc := fuSealed(t, tp, up)
			cases := []struct{ name, path, resp string }{
				{"small-cl", "/db/stall-1", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nshort"},
				{"big-cl", "/db/stall-2", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(big)+10) + "\r\n\r\n" + big},
				{"chunked", "/db/stall-3", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("part")},
				{"decrypt-small-cl", "/clinic/stall-4", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(doc)+10) + "\r\n\r\n" + doc},
				{"decrypt-chunked-doc", "/clinic/stall-5", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(doc)},
				{"decrypt-chunked-half", "/clinic/stall-6", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(doc[:len(doc)/2])},
			}
			for ci, c := range cases {
				written := make(chan struct{})
				hangUp := make(chan struct{})
				resp := c.resp
				sc.set(c.path, func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, resp)
					close(written)
					<-hangUp
					return false
				})
				what := engine + "/" + c.name
				fc := feDial(t, tp)
				fc.send("GET " + c.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
				<-written
				// While the upstream stalls: what has the client got?
				fc.c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
				buf := make([]byte, 64<<10)
				var early []byte
				for {
					n, err := fc.c.Read(buf)
					early = append(early, buf[:n]...)
					if err != nil {
						break
					}
				}
				close(hangUp)
				fc.c.SetReadDeadline(time.Now().Add(3 * time.Second))
				br := bufio.NewReader(io.MultiReader(bytes.NewReader(early), fc.c))
				r, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil {
					if isTimeout(err) {
						t.Errorf("%s: no answer and no close after the upstream hung up", what)
					}
					t.Logf("%s: during the stall the client had %d bytes (%.80q); then no answer (%v)", what, len(early), early, err)
					fuFollowUps(t, tp, up, what, 300+ci)
					continue
				}
				b, berr := io.ReadAll(r.Body)
				t.Logf("%s: during the stall the client had %d bytes (%.80q); then %d %.60q (%v)", what, len(early), early, r.StatusCode, b, berr)
				switch {
				case r.StatusCode == http.StatusBadGateway && jsonCode(string(b)) == CodeUpstreamUnavailable && berr == nil:
				case berr != nil:
					if _, err := br.ReadByte(); err == nil || isTimeout(err) {
						t.Errorf("%s: the client connection stayed open after a cut body (%v)", what, err)
					}
				default:
					t.Errorf("%s: BUG: a complete-looking %d %.100q from a body that broke off", what, r.StatusCode, b)
				}
				fuFollowUps(t, tp, up, what, 300+ci)
			}
		})
	}
}

// TestFastUpstreamAttackConcurrentPoison: many clients at once, each on
// its own connection, with an upstream that answers some requests with
// a hostile framing followed by an unsolicited response on a connection
// it keeps open. Every answer to a well-behaved request must be its own.
func TestFastUpstreamAttackConcurrentPoison(t *testing.T) {
	hostile := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + feEvil,
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + feEvil,
		"HTTP/1.1 204 No Content\r\nContent-Length: " + strconv.Itoa(len(feEvil)) + "\r\n\r\n" + feEvil,
		"HTTP/1.1 304 Not Modified\r\nContent-Length: " + strconv.Itoa(len(feEvil)) + "\r\n\r\n" + feEvil,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n" + feEvil,
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + feEvil,
	}
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			for i, h := range hostile {
				resp := h
				sc.set(fmt.Sprintf("/db/hostile-%d", i), func(conn net.Conn, s feSeen, n int) bool {
					io.WriteString(conn, resp)
					return true
				})
			}
			var wg sync.WaitGroup
			errs := make(chan string, 1000)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 25 {
						if i%3 == 0 {
							fc := feDialNoT(tp)
							if fc == nil {
								continue
							}
							fmt.Fprintf(fc, "GET /db/hostile-%d HTTP/1.1\r\nHost: x\r\n\r\n", (g+i)%len(hostile))
							br := bufio.NewReader(fc)
							for range 3 {
								r, err := http.ReadResponse(br, &http.Request{Method: "GET"})
								if err != nil {
									break
								}
								io.Copy(io.Discard, r.Body)
								if r.StatusCode >= 200 {
									break
								}
							}
							fc.Close()
							continue
						}
						method := []string{"GET", "POST", "HEAD"}[i%3]
						path := fmt.Sprintf("/db/own-%d-%d", g, i)
						body := ""
						if method == "POST" {
							body = `{"g":1}`
						}
						fc := feDialNoT(tp)
						if fc == nil {
							errs <- "dial failed"
							continue
						}
						req := method + " " + path + " HTTP/1.1\r\nHost: x\r\n"
						if method == "POST" {
							req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
						}
						io.WriteString(fc, req+"\r\n"+body)
						r, err := http.ReadResponse(bufio.NewReader(fc), &http.Request{Method: method})
						if err != nil {
							errs <- fmt.Sprintf("%s %s: %v", method, path, err)
							fc.Close()
							continue
						}
						b, _ := io.ReadAll(r.Body)
						fc.Close()
						if r.Header.Get("X-Echo") == "EVIL" || strings.Contains(string(b), "EVIL") {
							errs <- fmt.Sprintf("BUG: %s %s got the unsolicited response: %d %q", method, path, r.StatusCode, b)
						} else if r.StatusCode != 200 || r.Header.Get("X-Echo") != strings.ReplaceAll(path, "/", "%2F") {
							errs <- fmt.Sprintf("%s %s: %d echo %q %q", method, path, r.StatusCode, r.Header.Get("X-Echo"), b)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			n := 0
			for e := range errs {
				if n++; n <= 10 {
					t.Error(e)
				}
			}
			up.mu.Lock()
			counts := map[string]int{}
			for _, s := range up.seen {
				counts[s.Method+" "+s.Target]++
			}
			up.mu.Unlock()
			for k, v := range counts {
				if v > 1 && strings.HasPrefix(k, "POST") {
					t.Errorf("BUG: %s reached the upstream %d times", k, v)
				}
			}
		})
	}
}

func feDialNoT(tp *testProxy) net.Conn {
	c, err := net.Dial("tcp", tp.URL.Host)
	if err != nil {
		return nil
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// TestFastUpstreamAttackAbandoned: clients that hang up while their
// response streams (a large body followed by an unsolicited response on
// the same upstream connection), or while the upstream is still thinking
// (its late answer well framed), must not leave a half-read connection
// in the pool: the next clients get their own answers.
func TestFastUpstreamAttackAbandoned(t *testing.T) {
	big := strings.Repeat("A", 1<<20)
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up, sc := startFuUpstream(t)
			tp := startFuProxy(t, engine, up, 2*time.Second)
			sc.set("/db/big", func(c net.Conn, s feSeen, n int) bool {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(big)+len(feEvil))
				io.WriteString(c, big)
				io.WriteString(c, feEvil)
				return true
			})
			sc.set("/db/big-chunked", func(c net.Conn, s feSeen, n int) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
				for i := 0; i < 64; i++ {
					io.WriteString(c, chunk(big[:16<<10]))
				}
				io.WriteString(c, chunk(feEvil)+"0\r\n\r\n"+feEvil)
				return true
			})
			answered := make(chan struct{}, 16)
			sc.set("/db/slow", func(c net.Conn, s feSeen, n int) bool {
				time.Sleep(100 * time.Millisecond)
				feAnswer(c, s)
				io.WriteString(c, feEvil) // and a stray response after it
				answered <- struct{}{}
				return true
			})
			for round := range 3 {
				for _, path := range []string{"/db/big", "/db/big-chunked"} {
					fc := feDial(t, tp)
					fc.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
					io.ReadFull(fc.br, make([]byte, 4000*(round+1)))
					fc.c.Close()
					fuFollowUps(t, tp, up, engine+" after abandoning "+path, 400+round*2+len(path)%2)
				}
			}
			for i := range 3 {
				fc := feDial(t, tp)
				fc.send("GET /db/slow HTTP/1.1\r\nHost: x\r\n\r\n")
				fc.c.Close()
				select {
				case <-answered:
				case <-time.After(2 * time.Second):
					// The client left before the request went upstream:
					// the net/http engine cancels it with the client's
					// context, so the upstream may never see it. Nothing
					// to wait for (a bound on the wait, not an assertion).
				}
				time.Sleep(20 * time.Millisecond) // the proxy writes to the dead client
				fuFollowUps(t, tp, up, engine+" after a client left early", 500+i)
			}
		})
	}
}
