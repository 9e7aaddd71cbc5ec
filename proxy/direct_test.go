package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the connections an upstream accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startCountingUpstream(t *testing.T, h http.Handler) (*countingListener, *url.URL) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return cl, u
}

// TestDirectTransportNoCrossTalk: many clients at once, each response
// must be the one for its own request (a pooled connection handed to two
// requests, or handed back before its body was read, would mix them),
// and the connections are reused.
func TestDirectTransportNoCrossTalk(t *testing.T) {
	cl, u := startCountingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		// A body larger than one read, so that a response is read in
		// several pieces.
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.URL.Path, body, strings.Repeat("x", 40<<10))
	}))
	tp := startProxy(t, Config{Upstream: u})
	if tp.direct == nil {
		t.Fatal("a plain-HTTP reverse proxy has no direct transport")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := fmt.Sprintf("g%d-%d", g, i)
				method, body := "GET", ""
				if i%2 == 1 {
					method, body = "POST", "body-"+id
				}
				req, _ := http.NewRequest(method, tp.URL.String()+"/db/"+id, strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("%s /db/%s %s ", method, id, body)
				if err != nil || resp.StatusCode != 200 || !bytes.HasPrefix(got, []byte(want)) || len(got) != len(want)+40<<10 {
					errs <- fmt.Errorf("%s %s: status %d, %d bytes starting %.40q, %v", method, id, resp.StatusCode, len(got), got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := cl.n.Load(); n > 32 {
		t.Errorf("400 requests from 16 clients opened %d upstream connections: not reused", n)
	}
}

// TestDirectTransportIdleClosedByUpstream: an upstream that closes idle
// connections (Node servers do after 5 s) must not make the next request
// fail, whatever its method: the closed connection is noticed before use.
func TestDirectTransportIdleClosedByUpstream(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	tp := startProxy(t, Config{Upstream: u})
	for i, method := range []string{"GET", "POST", "PUT", "DELETE", "POST"} {
		if i > 0 {
			time.Sleep(200 * time.Millisecond) // the upstream closes the idle connection
		}
		req, _ := http.NewRequest(method, tp.URL.String()+"/db/doc", strings.NewReader(`{"a":1}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s after the upstream closed the idle connection: %d %s", method, resp.StatusCode, b)
		}
	}
}

// rawUpstream answers each request on a connection with handle's bytes.
func rawUpstream(t *testing.T, handle func(c net.Conn, br *bufio.Reader, req *http.Request)) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
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
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					handle(c, br, req)
				}
			}()
		}
	}()
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u
}

// TestDirectTransportUnsolicitedBytes: bytes an upstream sends on an idle
// connection (a second response nobody asked for) must never be read as
// the answer to the next request.
func TestDirectTransportUnsolicitedBytes(t *testing.T) {
	var n atomic.Int32
	u := rawUpstream(t, func(c net.Conn, _ *bufio.Reader, req *http.Request) {
		i := n.Add(1)
		body := "answer-" + strconv.Itoa(int(i))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		if i == 1 {
			// A smuggled extra response after the first.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
		}
	})
	tp := startProxy(t, Config{Upstream: u})
	for i := 1; i <= 3; i++ {
		resp, err := http.Get(tp.URL.String() + "/db/doc")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) == "smuggled" || !strings.HasPrefix(string(b), "answer-") {
			t.Fatalf("request %d got %q", i, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectTransportConnectionClose: a response that closes its
// connection (Connection: close, HTTP/1.0) is not pooled, and the next
// request gets a new connection and its own answer.
func TestDirectTransportConnectionClose(t *testing.T) {
	var conns atomic.Int32
	u := rawUpstream(t, func(c net.Conn, _ *bufio.Reader, req *http.Request) {
		conns.Add(1)
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
		c.Close()
	})
	tp := startProxy(t, Config{Upstream: u})
	for i := range 3 {
		resp, err := http.Get(tp.URL.String() + "/db/doc")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "until close" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if conns.Load() != 3 {
		t.Fatalf("%d upstream exchanges for 3 requests", conns.Load())
	}
}

// TestDirectTransportClientGoneClosesUpstream: when the client goes away
// in the middle of a response that does not end (a continuous change
// feed), the upstream connection is closed too, and not pooled.
func TestDirectTransportClientGoneClosesUpstream(t *testing.T) {
	closed := make(chan struct{})
	u := rawUpstream(t, func(c net.Conn, _ *bufio.Reader, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
		for {
			line := `{"seq":1,"id":"a","changes":[]}` + "\n"
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(line), line); err != nil {
				close(closed)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	tp := startProxy(t, Config{Upstream: u})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", tp.URL.String()+"/db/_changes?feed=continuous", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"seq"`) {
		t.Fatalf("first change: %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream connection of a feed stayed open after its client went away")
	}
}

// TestDirectTransportResponseHeaderTimeout: an upstream that never
// answers gets the request refused after UpstreamTimeout, as with
// net/http's Transport.
func TestDirectTransportResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	u := rawUpstream(t, func(c net.Conn, _ *bufio.Reader, req *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // before rawUpstream's cleanup waits
	tp := startProxy(t, Config{Upstream: u, UpstreamTimeout: 200 * time.Millisecond})
	resp, err := http.Get(tp.URL.String() + "/db/doc")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Fatalf("an upstream that never answered gave %d %s", resp.StatusCode, b)
	}
}

// TestDirectTransportInterimResponses: 1xx answers before the final one
// reach the client as the standard transport passes them on (ReverseProxy
// forwards what the round tripper reports to its trace), and the final
// response is the one the client gets.
func TestDirectTransportInterimResponses(t *testing.T) {
	u := rawUpstream(t, func(c net.Conn, _ *bufio.Reader, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
	})
	for _, standard := range []bool{false, true} {
		tp := startProxy(t, Config{Upstream: u, StandardTransport: standard})
		if (tp.direct != nil) == standard {
			t.Fatalf("standard %v: direct transport %v", standard, tp.direct != nil)
		}
		var interim []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			interim = append(interim, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", tp.URL.String()+"/db/doc", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "final" {
			t.Fatalf("standard %v: %d %q", standard, resp.StatusCode, b)
		}
		want := []string{"103 </a>; rel=preload"}
		if tp.cfg.Engine == EngineFastHTTP {
			// fasthttp's server cannot send an interim response before
			// the final one: it drops them (fastengine.go).
			want = nil
		}
		if !slices.Equal(interim, want) {
			t.Errorf("standard %v: the client saw interim responses %q, want %q", standard, interim, want)
		}
	}
}

// TestDirectTransportOnlyForBodiesInMemory: a streamed (chunked) upload
// does not take the direct path, and the standard transport option turns
// it off altogether.
func TestDirectTransportOnlyForBodiesInMemory(t *testing.T) {
	for _, tc := range []struct {
		r    *http.Request
		want bool
	}{
		{&http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{}}, true},
		{&http.Request{Method: "POST", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), ContentLength: 1}, false},
		{&http.Request{Method: "POST", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), GetBody: func() (io.ReadCloser, error) { return nil, nil }, ContentLength: 1}, true},
		{&http.Request{Method: "PUT", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{"Expect": {"100-continue"}}}, false},
		{&http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{"Upgrade": {"websocket"}}}, false},
		{&http.Request{Method: "GET", URL: &url.URL{Scheme: "https", Host: "db:6984"}, Header: http.Header{}}, false},
		{&http.Request{Method: "POST", URL: &url.URL{Scheme: "http", Host: "db:5984"}, Header: http.Header{}, TransferEncoding: []string{"chunked"}, Body: io.NopCloser(strings.NewReader("x")), GetBody: func() (io.ReadCloser, error) { return nil, nil }}, false},
	} {
		if got := directUsable(tc.r); got != tc.want {
			t.Errorf("%s %s %v: direct %v, want %v", tc.r.Method, tc.r.URL, tc.r.Header, got, tc.want)
		}
	}
	_, u := startUpstream(t, nil)
	if startProxy(t, Config{Upstream: u, StandardTransport: true}).direct != nil {
		t.Error("StandardTransport left the direct transport on")
	}
}
