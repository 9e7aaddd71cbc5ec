package proxy

// Attacks on the fasthttp engine's allocation cuts (5fa3519: fillHeader,
// canonicalHeaderName, fastMethod, countRawHeader, the client's address
// kept per connection, the shared X-Forwarded array; 7178c0b: the probe
// kept per upstream connection). Every case runs on both engines and
// requires what the upstream received (its header block, line for line)
// and what the client got to be the same on both.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fhExchange is what one engine made of one raw request.
type fhExchange struct {
	status int
	resp   http.Header
	body   string
	upHead []string // the upstream's request line and header lines, Host normalised
	upBody string
	n      int // requests the upstream framed
}

// fhRun sends each raw request on its own connection through a proxy on
// engine and records what the upstream and the client saw. respond, when
// set, answers the upstream's requests.
func fhRun(t *testing.T, engine string, raws []string, respond func(c net.Conn, s feSeen) bool) []fhExchange {
	t.Helper()
	up := startFeUpstream(t, respond)
	tp := startFeProxy(t, engine, up)
	var out []fhExchange
	for _, raw := range raws {
		m := up.mark()
		fc := feDial(t, tp)
		fc.send(raw)
		method, _, _ := strings.Cut(raw, " ")
		r, ok := fc.read(method)
		if !ok {
			t.Fatalf("%s: no answer to %.60q", engine, raw)
		}
		ex := fhExchange{status: r.Status, resp: r.Header, body: r.Body}
		ex.resp.Del("Date")
		seen := up.since(m)
		ex.n = len(seen)
		if len(seen) > 0 {
			ex.upHead = strings.Split(strings.TrimSuffix(string(seen[0].RawHead), "\r\n\r\n"), "\r\n")
			for j, l := range ex.upHead {
				if l == "Host: "+up.URL.Host {
					ex.upHead[j] = "Host: upstream"
				}
			}
			ex.upBody = string(seen[0].Body)
		}
		checkFraming(t, engine, seen)
		out = append(out, ex)
	}
	up.checkNoPlaintext(t, engine)
	return out
}

// fhCompare requires both engines' exchanges to be the same.
func fhCompare(t *testing.T, names []string, got map[string][]fhExchange) {
	t.Helper()
	n, f := got[EngineNetHTTP], got[EngineFastHTTP]
	for i := range n {
		what := names[i]
		t.Logf("%s: %d, %d forwarded", what, n[i].status, n[i].n)
		if n[i].status != f[i].status || n[i].n != f[i].n {
			t.Errorf("%s: nethttp answered %d and forwarded %d, fasthttp %d and %d (%q / %q)",
				what, n[i].status, n[i].n, f[i].status, f[i].n, n[i].body, f[i].body)
			continue
		}
		if strings.Join(n[i].upHead, "\n") != strings.Join(f[i].upHead, "\n") {
			t.Errorf("%s: the upstream's header differs between engines:\n%s", what, lineDiff(n[i].upHead, f[i].upHead))
		}
		if n[i].upBody != f[i].upBody && !sealed([]byte(n[i].upBody)) {
			t.Errorf("%s: the upstream's body differs: %q / %q", what, n[i].upBody, f[i].upBody)
		}
		if fmt.Sprint(n[i].resp) != fmt.Sprint(f[i].resp) {
			t.Errorf("%s: the client's header differs:\nnethttp:  %v\nfasthttp: %v", what, n[i].resp, f[i].resp)
		}
		if n[i].body != f[i].body {
			t.Errorf("%s: the client's body differs:\nnethttp:  %q\nfasthttp: %q", what, n[i].body, f[i].body)
		}
	}
}

func fhReq(method, path, body string, hdr ...string) string {
	raw := method + " " + path + " HTTP/1.1\r\nHost: sidecar.test\r\n"
	for _, h := range hdr {
		raw += h + "\r\n"
	}
	if body != "" || method == http.MethodPut {
		raw += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	return raw + "\r\n" + body
}

// fhFields is n fields named X-F-00... whose values add up to total bytes.
func fhFields(n, total int) []string {
	var out []string
	for i := range n {
		size := total / n
		if i == n-1 {
			size = total - size*(n-1)
		}
		out = append(out, fmt.Sprintf("X-F-%02d: %s", i, strings.Repeat(string(rune('a'+i%26)), size)))
	}
	return out
}

// TestFastHeadersAttackRequestMaps: requests whose header maps sit on the
// edges of fillHeader's stack buffers (16 fields, 1 KiB of values), whose
// lists later pipeline code rewrites (Connection naming fields,
// Accept-Encoding limited on a decrypted read, Te), whose names are not
// in the table or not canonical, with empty and folded values, odd
// Content-Type and Cookie spellings, and methods fastMethod does not
// know. The upstream must receive the same header block from both
// engines, and the client the same answer.
func TestFastHeadersAttackRequestMaps(t *testing.T) {
	doc := feDoc(0)
	type c struct {
		name string
		raw  string
	}
	var cases []c
	// Exactly on, and just past, the stack buffers. The Host and
	// Content-Length lines count as fields too; vary around them.
	for _, n := range []int{13, 14, 15, 16, 17} {
		cases = append(cases, c{fmt.Sprintf("%d extra fields", n), fhReq("PUT", "/db/p1", `{"a":1}`, fhFields(n, 64)...)})
	}
	for _, total := range []int{1000, 1008, 1023, 1024, 1025, 1040} {
		cases = append(cases, c{fmt.Sprintf("%d bytes of values", total), fhReq("PUT", "/clinic/p1", doc, fhFields(4, total)...)})
	}
	cases = append(cases,
		c{"one field repeated past the buffers, interleaved", fhReq("PUT", "/db/p1", `{"a":1}`, func() []string {
			var h []string
			for i := range 40 {
				h = append(h, fmt.Sprintf("X-Rep: %d", i), fmt.Sprintf("x-other-%d: %s", i%3, strings.Repeat("o", 40)))
			}
			return h
		}()...)},
		c{"Connection names repeated and table fields", fhReq("PUT", "/db/p1", `{"a":1}`,
			"X-Dup: 1", "Accept: a/b", "X-Dup: 2", "Cache-Control: no-cache", "Connection: x-dup, ACCEPT", "connection: Cache-Control", "X-Keep: k")},
		c{"Accept-Encoding limited on a decrypted read", fhReq("GET", "/clinic/p1", "",
			"Accept-Encoding: gzip", "accept-encoding: br, zstd", "Accept-Encoding: x-unknown, identity", "Accept: application/json")},
		c{"Te trailers among others", fhReq("GET", "/db/p1", "", "TE: gzip", "te: trailers", "Te: deflate")},
		c{"names outside the table, any case", fhReq("PUT", "/db/p1", `{"a":1}`,
			"x-MiXeD-cAsE: 1", "X_UNDER_score: 2", "x-1-digit: 3", "ETAG: 4", "www-authenticate: 5", "x-couchdb-body-time: 6", "X-REQUEST-ID: 7", "x-request-id: 8", "Y: 9")},
		c{"empty values", fhReq("PUT", "/db/p1", `{"a":1}`,
			"X-E1:", "X-E2: ", "Accept:", "X-E1:", "User-Agent:", "Authorization:", "X-E3:\t")},
		c{"empty values, protected", fhReq("PUT", "/clinic/p1", doc,
			"X-E1:", "X-E2: ", "Accept:", "X-E1:", "Authorization:", "Content-Type: application/json")},
		c{"folded generic value", fhReq("PUT", "/db/p1", `{"a":1}`, "X-Fold: a", " b", "\tc", "X-After: d")},
		c{"Content-Type in odd case, unprotected", fhReq("PUT", "/db/p1", `{"a":1}`, "cOnTeNt-TyPe: application/json")},
		c{"Content-Type in odd case, twice, unprotected", fhReq("PUT", "/db/p1", `{"a":1}`, "cOnTeNt-TyPe: application/json", "CONTENT-TYPE: text/plain")},
		c{"an empty Content-Type alone, unprotected", fhReq("PUT", "/db/p1", `{"a":1}`, "Content-Type:")},
		c{"two empty Content-Types, unprotected", fhReq("PUT", "/db/p1", `{"a":1}`, "Content-Type:", "content-type: ")},
		c{"an empty Content-Type alone, protected", fhReq("PUT", "/clinic/p1", doc, "Content-Type:")},
		c{"an empty Content-Type then JSON, protected", fhReq("PUT", "/clinic/p1", doc, "Content-Type:", "Content-Type: application/json")},
		c{"folded Content-Type, unprotected", fhReq("PUT", "/db/p1", `{"a":1}`, "Content-Type: application/json;", " charset=utf-8")},
		c{"folded empty Content-Type, protected", fhReq("PUT", "/clinic/p1", doc, "Content-Type:", " text/plain", "Content-Type: application/json")},
		c{"Cookies in odd case and empty", fhReq("GET", "/db/p1", "", "cookie: a=1", "COOKIE: b=\"2\"", "Cookie:", "Cookie: c=3;d=4")},
		c{"Cookie and Content-Type interleaved", fhReq("PUT", "/db/p1", `{"a":1}`, "Cookie: a=1", "Content-Type: application/json", "Cookie: b=2", "Content-Type: text/plain")},
		c{"forwarding fields from the client", fhReq("GET", "/db/p1", "",
			"X-Forwarded-For: 10.0.0.1", "x-forwarded-for: 10.0.0.2", "Forwarded: for=10.0.0.3", "X-Forwarded-Host: evil", "X-Forwarded-Proto: https")},
		c{"COPY with Destination", fhReq("COPY", "/db/p1", "", "Destination: p2")},
		c{"an unknown method", fhReq("PROPFIND", "/db/p1", "", "Depth: 1")},
		c{"a method in lower case", fhReq("get", "/db/p1", "")},
		c{"a method that extends a known one", fhReq("GETS", "/db/p1", "")},
		c{"Connection: close naming a field", fhReq("GET", "/db/p1", "", "X-A: 1", "Connection: close, X-A", "X-B: 2")},
		c{"Trailer twice", fhReq("GET", "/db/p1", "", "Trailer: X-T", "trailer: X-U")},
	)
	names := make([]string, len(cases))
	raws := make([]string, len(cases))
	for i, cs := range cases {
		names[i], raws[i] = cs.name, cs.raw
	}
	got := map[string][]fhExchange{}
	for _, engine := range feEngines {
		got[engine] = fhRun(t, engine, raws, nil)
	}
	fhCompare(t, names, got)
}

// TestFastHeadersAttackResponseMaps: a decrypted response (fillHeader
// builds its *http.Response header on the fasthttp engine) whose fields
// sit on the buffers' edges, repeat, are empty, are spelt in any case,
// and are named by its Connection field. The client must get the same
// header and the same opened body from both engines.
func TestFastHeadersAttackResponseMaps(t *testing.T) {
	type variant struct {
		name   string
		fields []string
	}
	variants := []variant{
		{"16 fields", fhFields(13, 64)},
		{"17 fields", fhFields(14, 64)},
		{"1 KiB of values", fhFields(5, 1024-len("application/json")-2)},
		{"1 KiB and one byte of values", fhFields(5, 1025-len("application/json")-2)},
		{"repeated, empty, any case", []string{
			"Set-Cookie: a=1", "x-resp: 1", "Set-Cookie: b=2", "X-RESP: 2", "x-Resp:", "set-cookie: c=3",
			"X-Empty:", "etag: \"1-a\"", "ETag: \"1-b\"", "www-authenticate: Basic", "x-couch-request-id: r1", "Vary: Accept", "vary: Cookie",
		}},
		{"Connection names repeated fields", []string{
			"X-Hop: 1", "Connection: x-hop, Vary", "X-Hop: 2", "Vary: Accept", "X-Stay: s", "Keep-Alive: timeout=5",
		}},
	}
	doc := feDoc(0)
	got := map[string][]fhExchange{}
	var names []string
	for _, engine := range feEngines {
		var mu sync.Mutex
		var sealedDoc []byte
		var fields []string
		respond := func(c net.Conn, s feSeen) bool {
			mu.Lock()
			body, extra := string(sealedDoc), fields
			mu.Unlock()
			if s.Method != http.MethodGet {
				return feAnswer(c, s)
			}
			var b strings.Builder
			b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
			for _, f := range extra {
				b.WriteString(f + "\r\n")
			}
			fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
			c.Write([]byte(b.String()))
			return true
		}
		up := startFeUpstream(t, respond)
		tp := startFeProxy(t, engine, up)
		m := up.mark()
		fc := feDial(t, tp)
		fc.send(fhReq("PUT", "/clinic/p1", doc, "Content-Type: application/json"))
		if r, ok := fc.read("PUT"); !ok || r.Status != 200 {
			t.Fatalf("%s: the sealed write failed: %v %v", engine, r.Status, ok)
		}
		seen := up.since(m)
		if len(seen) != 1 || !sealed(seen[0].Body) {
			t.Fatalf("%s: the write was not sealed", engine)
		}
		mu.Lock()
		sealedDoc = seen[0].Body
		mu.Unlock()
		names = names[:0]
		for _, v := range variants {
			mu.Lock()
			fields = v.fields
			mu.Unlock()
			names = append(names, v.name)
			fc := feDial(t, tp)
			fc.send(fhReq("GET", "/clinic/p1", ""))
			r, ok := fc.read("GET")
			if !ok {
				t.Fatalf("%s %s: no answer", engine, v.name)
			}
			r.Header.Del("Date")
			if !strings.Contains(r.Body, feMarker) {
				t.Errorf("%s %s: the read was not opened: %q", engine, v.name, r.Body)
			}
			got[engine] = append(got[engine], fhExchange{status: r.Status, resp: r.Header, body: r.Body, n: 1})
		}
		up.checkNoPlaintext(t, engine)
	}
	fhCompare(t, names, got)
}

// TestFastHeadersAttackForwardedFor: the client's address is kept per
// connection on the fasthttp engine. Over keep-alive requests, several
// connections at once, and requests that carry their own forwarding
// fields, the upstream must get exactly one X-Forwarded-For, the client's
// own address, on both engines.
func TestFastHeadersAttackForwardedFor(t *testing.T) {
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			up := startFeUpstream(t, nil)
			tp := startFeProxy(t, engine, up)
			const conns, perConn = 6, 5
			var wg sync.WaitGroup
			errs := make(chan string, conns*perConn)
			for i := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", tp.URL.Host)
					if err != nil {
						errs <- err.Error()
						return
					}
					defer c.Close()
					fc := &feConn{t: t, c: c}
					fc.br = bufio.NewReader(c)
					for j := range perConn {
						path := fmt.Sprintf("/db/xff-%d-%d", i, j)
						fc.c.Write([]byte(fhReq("GET", path, "", "X-Forwarded-For: 10.1.1.1", "Forwarded: for=10.2.2.2")))
						resp, err := http.ReadResponse(fc.br, &http.Request{Method: "GET"})
						if err != nil {
							errs <- fmt.Sprintf("%s: %v", path, err)
							return
						}
						resp.Body.Close()
						if resp.StatusCode != 200 {
							errs <- fmt.Sprintf("%s: status %d", path, resp.StatusCode)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			seen := up.since(feMark{})
			if len(seen) != conns*perConn {
				t.Fatalf("the upstream framed %d requests, want %d", len(seen), conns*perConn)
			}
			for _, s := range seen {
				if v := headerLines(s.RawHead, "X-Forwarded-For"); fmt.Sprint(v) != "[127.0.0.1]" {
					t.Errorf("%s: X-Forwarded-For %q", s.Target, v)
				}
				if v := headerLines(s.RawHead, "Forwarded"); len(v) != 0 {
					t.Errorf("%s: Forwarded %q reached the upstream", s.Target, v)
				}
				if v := headerLines(s.RawHead, "X-Forwarded-Host"); fmt.Sprint(v) != "[sidecar.test]" {
					t.Errorf("%s: X-Forwarded-Host %q", s.Target, v)
				}
			}
		})
	}
}

// TestFastHeadersAttackIdleUnsolicited: the probe (kept per upstream
// connection since 7178c0b) must still refuse an idle connection on which
// the upstream wrote an unsolicited response, or which it closed, after a
// complete answer. Each client must get its own answer, never the forged
// one, and each request must reach the upstream once, on both engines.
func TestFastHeadersAttackIdleUnsolicited(t *testing.T) {
	const forged = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: forged\r\nContent-Length: 15\r\n\r\n{\"forged\":true}"
	for _, engine := range feEngines {
		t.Run(engine, func(t *testing.T) {
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			// in says that the forged bytes or the FIN have been written:
			// on loopback they are then in the proxy's socket buffer, so
			// the next request does not race them.
			in := make(chan struct{}, 1)
			up := startFeUpstream(t, func(c net.Conn, s feSeen) bool {
				feAnswer(c, s)
				switch {
				case strings.Contains(s.Target, "forge"):
					// Later, while the connection sits idle in the pool.
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(30 * time.Millisecond)
						io.WriteString(c, forged)
						in <- struct{}{}
					}()
				case strings.Contains(s.Target, "close"):
					c.Close() // FIN after a keep-alive answer
					in <- struct{}{}
					return false
				default:
					in <- struct{}{}
				}
				return true
			})
			tp := startFeProxy(t, engine, up)
			fc := feDial(t, tp)
			m := up.mark()
			var paths []string
			for i := range 12 {
				kind := []string{"forge", "close", "plain"}[i%3]
				path := fmt.Sprintf("/db/%s-%d", kind, i)
				paths = append(paths, "GET "+path)
				fc.send(fhReq("GET", path, ""))
				r, ok := fc.read("GET")
				if !ok {
					t.Fatalf("%s: no answer", path)
				}
				if r.Status != 200 || r.echo() != path || strings.Contains(r.Body, "forged") {
					t.Errorf("%s: the client got %d, echo %q, body %q", path, r.Status, r.echo(), r.Body)
				}
				select {
				case <-in:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: the upstream never finished its part", path)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if got := targetsOf(up.since(m)); fmt.Sprint(got) != fmt.Sprint(paths) {
				t.Errorf("the upstream framed %q, want %q", got, paths)
			}
			if errs := up.errorsSince(m); len(errs) > 0 {
				t.Errorf("the upstream got malformed bytes: %v", errs)
			}
		})
	}
}

// TestFastHeadersAttackCollapsedFields: fields fasthttp's parsers keep
// one of (the last) though they may repeat: User-Agent in a request;
// Content-Type, Content-Encoding and Server in a response. net/http keeps
// every line. Found by this file's attacker pass (older than the commits
// it attacked):
//
//   - The upstream got the last User-Agent on the fasthttp engine, the
//     first on net/http's (whose writer sends one). fastRequest now
//     restores every line from the raw header, as it does for
//     Content-Type and Cookie, and the first is sent.
//   - The pipeline decided whether to decrypt on the first Content-Type
//     (net/http) or the only one fasthttp kept (the last), so a response
//     with two could be opened on one engine and not on the other. A
//     response with more than one Content-Type line is now never
//     decrypted on either engine (decryptableResponse), and the fasthttp
//     engine reads a decrypting exchange's Content-Type and
//     Content-Encoding lines from the raw head (peekHead), so it sees
//     what net/http sees.
//
// What stays different, documented in fastengine.go: a response passed
// to the client on the fasthttp engine carries the last of repeated
// Content-Type, Content-Encoding and Server lines only.
func TestFastHeadersAttackCollapsedFields(t *testing.T) {
	raws := []string{fhReq("GET", "/db/p1", "", "User-Agent: first", "user-agent: second")}
	got := map[string][]fhExchange{}
	for _, engine := range feEngines {
		got[engine] = fhRun(t, engine, raws, nil)
	}
	fhCompare(t, []string{"two User-Agent lines"}, got)
	if ua := headerLines([]byte(strings.Join(got[EngineFastHTTP][0].upHead, "\r\n")), "User-Agent"); fmt.Sprint(ua) != "[first]" {
		t.Errorf("the upstream got User-Agent %q on the fasthttp engine, want the first line (net/http writes one)", ua)
	}

	// A decrypting read whose response repeats Content-Type (either
	// order) or Content-Encoding: never opened, on either engine (each
	// engine has its own upstream and so its own token).
	for _, tc := range []struct{ name, fields string }{
		{"two Content-Types, JSON last", "Content-Type: application/octet-stream\r\nContent-Type: application/json\r\n"},
		{"two Content-Types, JSON first", "Content-Type: application/json\r\ncontent-type: application/octet-stream\r\n"},
		{"two Content-Types, both JSON", "Content-Type: application/json\r\nContent-Type: application/json\r\n"},
		{"two Content-Encodings", "Content-Type: application/json\r\nContent-Encoding: identity, x-unknown\r\nContent-Encoding: identity\r\n"},
	} {
		for _, engine := range feEngines {
			up := startFeUpstream(t, nil)
			tp := startFeProxy(t, engine, up)
			m := up.mark()
			fc := feDial(t, tp)
			fc.send(fePut("/clinic/p1", feDoc(0), "Content-Type: application/json"))
			if r, ok := fc.read("PUT"); !ok || r.Status != http.StatusOK {
				t.Fatalf("%s: the protected write failed", engine)
			}
			token := up.since(m)[0].Body
			if !sealed(token) {
				t.Fatalf("%s: the write was not sealed: %s", engine, token)
			}
			up.mu.Lock()
			up.respond = func(c net.Conn, s feSeen) bool {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", tc.fields, len(token), token)
				return true
			}
			up.mu.Unlock()
			fc.send("GET /clinic/p1 HTTP/1.1\r\nHost: x\r\n\r\n")
			r, ok := fc.read("GET")
			if !ok || r.Status != http.StatusOK {
				t.Fatalf("%s %s: no answer (%d)", tc.name, engine, r.Status)
			}
			if strings.Contains(r.Body, feMarker) || r.Body != string(token) {
				t.Errorf("%s on %s: the client got %q, want the upstream's bytes unopened", tc.name, engine, r.Body)
			}
		}
	}

	// Passed through: the client gets the last of repeated response lines
	// on the fasthttp engine (documented), the same body on both.
	respond := func(c net.Conn, s feSeen) bool {
		body := `{"ok":true}`
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nServer: a\r\n"+
			"Content-Type: application/json\r\nServer: b\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	}
	got = map[string][]fhExchange{}
	for _, engine := range feEngines {
		got[engine] = fhRun(t, engine, []string{fhReq("GET", "/db/p1", "")}, respond)
	}
	n, f := got[EngineNetHTTP][0], got[EngineFastHTTP][0]
	if n.body != f.body || n.status != f.status {
		t.Errorf("passed through: the engines answered differently: %d %q / %d %q", n.status, n.body, f.status, f.body)
	}
	if fmt.Sprint(n.resp["Content-Type"], n.resp["Server"]) != "[application/octet-stream application/json] [a b]" ||
		fmt.Sprint(f.resp["Content-Type"], f.resp["Server"]) != "[application/json] [b]" {
		t.Errorf("passed through: Content-Type and Server %v %v (nethttp), %v %v (fasthttp); update fastengine.go's list of differences if this changed",
			n.resp["Content-Type"], n.resp["Server"], f.resp["Content-Type"], f.resp["Server"])
	}
}
