package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
)

// BenchmarkFastEngine measures the fasthttp engine end to end in process:
// a keep-alive client on loopback sends one request at a time to the
// engine (Proxy.Serve with Engine "fasthttp"), which serves it with the
// rules and upstream of BenchmarkServeHTTP. Neither the client nor the
// upstream allocates per request, so allocs/op is the engine's own, front
// side included; ns/op includes the client's and the upstream's system
// calls on the same CPUs.
//
//	go test -run '^$' -bench BenchmarkFastEngine -benchmem ./proxy/
func BenchmarkFastEngine(b *testing.B) {
	doc := []byte(benchPatient(1))
	okWrite := `{"ok":true,"id":"p1","rev":"1-a"}`

	b.Run("passthrough", func(b *testing.B) {
		addr, up := benchFastProxy(b, "not-this-database")
		up.answer("POST /clinic", "application/json", okWrite)
		up.answer("GET /clinic/p1", "application/json", string(doc))
		b.Run("write-1KiB", func(b *testing.B) { runFastBench(b, addr, "POST", "/clinic", doc) })
		b.Run("read-1KiB", func(b *testing.B) { runFastBench(b, addr, "GET", "/clinic/p1", nil) })
	})

	addr, up := benchFastProxy(b, "clinic")
	up.answer("POST /clinic", "application/json", okWrite)
	c := newFastBenchClient(b, addr)
	c.do(b, "POST", "/clinic", doc)
	sealed := up.received("POST /clinic")
	if bytes.Contains(sealed, []byte("078-05-")) || !bytes.Contains(sealed, []byte(`"ssn":"sc`)) {
		b.Fatalf("the write was not sealed: %s", sealed)
	}
	up.answer("GET /clinic/p1", "application/json", string(sealed))
	b.Run("encrypt/write-1KiB-4-fields", func(b *testing.B) { runFastBench(b, addr, "POST", "/clinic", doc) })
	b.Run("decrypt/read-1KiB-4-fields", func(b *testing.B) {
		n := runFastBench(b, addr, "GET", "/clinic/p1", nil)
		if n >= len(sealed) || !bytes.Contains(c.do(b, "GET", "/clinic/p1", nil), []byte("078-05-0001")) {
			b.Fatalf("the read was not opened: %d bytes out of %d", n, len(sealed))
		}
	})
}

func benchFastProxy(b *testing.B, protect string) (string, *memUpstream) {
	p, up := benchProxy(b, protect)
	p.cfg.Engine = EngineFastHTTP
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ctx, ln)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String(), up
}

func runFastBench(b *testing.B, addr, method, target string, body []byte) int {
	c := newFastBenchClient(b, addr)
	n := len(c.do(b, method, target, body)) // warm the pools and the connections
	b.ReportAllocs()
	if body != nil {
		b.SetBytes(int64(len(body)))
	}
	b.ResetTimer()
	for b.Loop() {
		c.do(b, method, target, body)
	}
	return n
}

// fastBenchClient is a keep-alive HTTP/1.1 client that reuses its buffers.
type fastBenchClient struct {
	c    net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
}

func newFastBenchClient(b *testing.B, addr string) *fastBenchClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &fastBenchClient{c: c, br: bufio.NewReaderSize(c, 64<<10)}
}

// do sends one request and returns the response body (valid until the
// next call); any status but 200 and 201 fails the benchmark.
func (c *fastBenchClient) do(b *testing.B, method, target string, body []byte) []byte {
	c.req = fmt.Appendf(c.req[:0], "%s %s HTTP/1.1\r\nHost: sidecar\r\nAccept: application/json\r\nUser-Agent: bench\r\n", method, target)
	if body != nil {
		c.req = fmt.Appendf(c.req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	c.req = append(c.req, "\r\n"...)
	c.req = append(c.req, body...)
	if _, err := c.c.Write(c.req); err != nil {
		b.Fatal(err)
	}
	status, err := c.br.ReadSlice('\n')
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) && !bytes.HasPrefix(status, []byte("HTTP/1.1 201 ")) {
		b.Fatalf("%s %s: %q", method, target, status)
	}
	n := -1
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(h) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n < 0 {
		b.Fatalf("%s %s: no Content-Length", method, target)
	}
	if cap(c.body) < n {
		c.body = make([]byte, n)
	}
	c.body = c.body[:n]
	if _, err := io.ReadFull(c.br, c.body); err != nil {
		b.Fatal(err)
	}
	return c.body
}
