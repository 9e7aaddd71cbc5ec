package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sidecrypt/sidecrypt/rules"
)

// TestSmallUnmatchedBodyInOneWrite: a small unmatched request goes to the
// upstream in one write of headers and body (as nginx sends it), not the
// headers first and the body after, and arrives unchanged. The proxy's
// writes on its upstream connection are counted.
func TestSmallUnmatchedBodyInOneWrite(t *testing.T) {
	rc, u := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: u})
	var writes atomic.Int32
	tr := tp.Transport()
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}
	body := bytes.Repeat([]byte("\x00binary, not JSON\xff"), 60) // ~1 KiB
	for _, size := range []int{len(body), 20} {
		writes.Store(0)
		resp, err := http.Post(tp.URL.String()+"/elsewhere/doc", "application/octet-stream", bytes.NewReader(body[:size]))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := writes.Load(); n != 1 {
			t.Fatalf("%d-byte body: the proxy wrote the request upstream in %d writes, want 1", size, n)
		}
		if got := rc.last(t); !bytes.Equal(got.Body, body[:size]) || got.Header.Get("Content-Length") != fmt.Sprint(size) {
			t.Fatalf("body or Content-Length changed: %d bytes, Content-Length %q", len(got.Body), got.Header.Get("Content-Length"))
		}
	}
}

// TestEncryptedBodyInOneWrite: the same for a body the proxy encrypted.
func TestEncryptedBodyInOneWrite(t *testing.T) {
	rc, u := startUpstream(t, nil)
	tp := startProxy(t, Config{Upstream: u, Rules: rules.Static(clinicPlan(t)), Keys: testKeyring(t)})
	var writes atomic.Int32
	tr := tp.Transport()
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}
	resp, err := http.Post(tp.URL.String()+"/clinic/p1", "application/json", strings.NewReader(`{"ssn":"123-45-6789","ward":"B"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := writes.Load(); n != 1 {
		t.Fatalf("the proxy wrote the encrypted request upstream in %d writes, want 1", n)
	}
	if got := rc.last(t).Body; bytes.Contains(got, []byte("123-45-6789")) || !bytes.Contains(got, []byte(`"ssn":"sc2.`)) {
		t.Fatalf("upstream body: %s", got)
	}
}

type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestUnmatchedBodySizes: around the one-piece limit, chunked, and a
// client that sends less than it announced.
func TestUnmatchedBodySizes(t *testing.T) {
	rc, u := startUpstream(t, nil)
	front := startProxy(t, Config{Upstream: u}).URL.String()
	for _, n := range []int{1, smallBodyMax - 1, smallBodyMax, smallBodyMax + 1, 3 * smallBodyMax} {
		body := bytes.Repeat([]byte{'x'}, n)
		resp, err := http.Post(front+"/elsewhere", "text/plain", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := rc.last(t).Body; !bytes.Equal(got, body) {
			t.Fatalf("%d-byte body arrived as %d bytes", n, len(got))
		}
	}
	// Chunked (no declared length) streams as before.
	req, _ := http.NewRequest("POST", front+"/elsewhere", io.MultiReader(strings.NewReader("chunk one "), strings.NewReader("chunk two")))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := string(rc.last(t).Body); got != "chunk one chunk two" {
		t.Fatalf("chunked body arrived as %q", got)
	}
	// A body shorter than its Content-Length is refused, not forwarded.
	before := rc.count()
	c, err := net.Dial("tcp", strings.TrimPrefix(front, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
	c.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	c.Close()
	if rc.count() != before {
		t.Fatal("a truncated body was forwarded")
	}
	if !bytes.HasPrefix(reply, []byte("HTTP/1.1 400")) {
		t.Fatalf("truncated body: %q", reply)
	}
}
