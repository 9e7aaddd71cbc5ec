package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// directTransport carries reverse-mode requests to a plain-HTTP upstream
// with the round trip on the calling goroutine: take an idle connection
// (or dial one), write the request, read the response, and put the
// connection back once its body has been read to the end. net/http's
// Transport runs a read-loop and a write-loop goroutine per connection and
// hands every request and response between them and the caller over
// channels; measured with wrk beside nginx (docs/BENCHMARKS.md, "Issue
// 16"), those hand-offs are about a quarter of a pass-through request's
// CPU.
//
// The bytes on the wire are the standard library's: requests are written
// by (*http.Request).Write and responses parsed by http.ReadResponse,
// which is what http.Transport uses (with DisableCompression, which
// newTransport sets, it adds nothing of its own). Only connection
// management is new here, and it is kept to what the fast path needs:
//
//   - Only requests whose body is absent or already in memory come here
//     (oneWrite decides); streaming uploads, Expect: 100-continue,
//     upgrades and CONNECT, TLS upstreams and forward mode keep using
//     http.Transport, so that a body is never written while the response
//     must be read at the same time.
//   - Connections are dialled with the Transport's own DialContext, so the
//     loop and egress checks (refuseLoops, pinnedDial) apply unchanged.
//   - An idle connection is checked before reuse with a non-blocking peek
//     (the upstream may have closed it: Node servers do after 5 s), and is
//     dropped after idleConnTimeout. If a reused connection still fails
//     before any response byte arrives, the request is sent again on a new
//     connection only when http.Transport would: an idempotent method (or
//     an Idempotency-Key header) with a body that can be sent again.
//   - ResponseHeaderTimeout bounds the wait for the response headers (504,
//     never retried); the request's context bounds the whole exchange,
//     body included: when the client goes away, the upstream connection
//     is closed. Headers are limited to 10 MiB and interim responses to
//     5, as in http.Transport. Interim (1xx) responses go to the
//     request's httptrace Got1xxResponse, as http.Transport sends them,
//     so ReverseProxy passes them on to the client.
//   - A body closed before its end closes its connection at once.
//
// proxy/direct_attack_test.go is an attacker's pass over all of this
// (ambiguous framing, smuggled responses, abandoned bodies, cancellations,
// replays); five of its findings were fixed before this shipped.
type directTransport struct {
	dial                  dialFunc
	responseHeaderTimeout time.Duration
	idleTimeout           time.Duration
	maxIdle               int
	now                   func() time.Time

	mu     sync.Mutex
	idle   map[string][]*directConn
	closed bool
}

type directConn struct {
	c       net.Conn
	lr      *limitedConn // under br: bounds what the response headers may take
	br      *bufio.Reader
	bw      *bufio.Writer
	addr    string
	idleAt  time.Time
	stopCtx func() bool // stops the context watch of the current exchange
	probe   *probe      // the liveness check before reuse
}

func newDirectTransport(dial dialFunc, responseHeaderTimeout time.Duration) *directTransport {
	return &directTransport{
		dial:                  dial,
		responseHeaderTimeout: responseHeaderTimeout,
		idleTimeout:           idleConnTimeout,
		maxIdle:               maxIdlePerHost,
		now:                   time.Now,
		idle:                  map[string][]*directConn{},
	}
}

// usable reports whether r may take the direct path: plain HTTP to a
// host, a body that is absent or can be sent again from memory, nothing
// that needs the Transport's interim-response or upgrade handling.
func directUsable(r *http.Request) bool {
	if r.URL == nil || r.URL.Scheme != "http" || r.URL.Host == "" || r.Method == http.MethodConnect {
		return false
	}
	if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
		return false
	}
	h := r.Header
	return len(h["Expect"]) == 0 && len(h["Upgrade"]) == 0 && len(r.TransferEncoding) == 0
}

func directAddr(u string) string {
	if _, _, err := net.SplitHostPort(u); err == nil {
		return u
	}
	return net.JoinHostPort(u, "80")
}

// get returns a live idle connection to addr, or dials one.
func (t *directTransport) get(ctx context.Context, addr string) (*directConn, bool, error) {
	now := t.now()
	for {
		t.mu.Lock()
		list := t.idle[addr]
		var dc *directConn
		if n := len(list); n > 0 {
			dc = list[n-1]
			list[n-1] = nil
			t.idle[addr] = list[:n-1]
		}
		t.mu.Unlock()
		if dc == nil {
			break
		}
		if now.Sub(dc.idleAt) < t.idleTimeout && dc.probe.alive() && dc.br.Buffered() == 0 {
			return dc, true, nil
		}
		dc.c.Close()
	}
	c, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	lr := &limitedConn{c: c, n: -1}
	return &directConn{c: c, lr: lr, br: bufio.NewReaderSize(lr, ioBufferSize), bw: bufio.NewWriterSize(c, ioBufferSize), addr: addr, probe: newProbe(c)}, false, nil
}

// maxResponseHeaderBytes and max1xxResponses are http.Transport's limits:
// a hostile upstream must not make the sidecar buffer headers without end.
const (
	maxResponseHeaderBytes = 10 << 20
	max1xxResponses        = 5
)

var errResponseHeaderTooLarge = errors.New("proxy: the upstream's response headers are larger than 10 MiB")

// limitedConn reads from c, at most n more bytes while n >= 0 (the
// response headers), without limit while n < 0 (bodies).
type limitedConn struct {
	c net.Conn
	n int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.c.Read(p)
	}
	if l.n == 0 {
		return 0, errResponseHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}

// directTimeoutError is the response-header timeout: a net.Error whose
// Timeout is true, so the proxy answers 504 upstream_timeout.
type directTimeoutError struct{}

func (directTimeoutError) Error() string {
	return "proxy: the upstream did not send its response headers in time"
}
func (directTimeoutError) Timeout() bool   { return true }
func (directTimeoutError) Temporary() bool { return true }

var errDirectTimeout net.Error = directTimeoutError{}

func (t *directTransport) put(dc *directConn) {
	dc.idleAt = t.now()
	t.mu.Lock()
	if !t.closed && len(t.idle[dc.addr]) < t.maxIdle {
		t.idle[dc.addr] = append(t.idle[dc.addr], dc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	dc.c.Close()
}

// closeIdle closes the idle connections; with close set, it
// also stops pooling (Proxy.Close).
func (t *directTransport) closeIdle(close bool) {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*directConn{}
	t.closed = t.closed || close
	t.mu.Unlock()
	for _, list := range idle {
		for _, dc := range list {
			dc.c.Close()
		}
	}
}

// retryable mirrors http.Transport's rule for sending a request again on
// a new connection after a reused one failed before the response: the
// request must be replayable (idempotent, or marked with an idempotency
// key) and its body available again.
func retryable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		if len(r.Header["Idempotency-Key"]) == 0 && len(r.Header["X-Idempotency-Key"]) == 0 {
			return false
		}
	}
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

// errDirectNoResponse marks an exchange that failed before any byte of a
// response was read.
var errDirectNoResponse = errors.New("proxy: upstream connection closed before a response")

func (t *directTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	addr := directAddr(r.URL.Host)
	ctx := r.Context()
	body := r.Body
	for attempt := 0; ; attempt++ {
		dc, reused, err := t.get(ctx, addr)
		if err != nil {
			closeBody(body)
			return nil, err
		}
		if attempt > 0 && body != nil && body != http.NoBody {
			if r.GetBody == nil {
				dc.c.Close()
				return nil, errDirectNoResponse
			}
			if body, err = r.GetBody(); err != nil {
				dc.c.Close()
				return nil, err
			}
		}
		resp, err := t.exchange(ctx, dc, r, body)
		if err == nil {
			return resp, nil
		}
		dc.c.Close()
		if reused && attempt == 0 && errors.Is(err, errDirectNoResponse) && retryable(r) && ctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

func closeBody(b io.ReadCloser) {
	if b != nil {
		b.Close()
	}
}

// exchange sends r with body on dc and reads the response headers. On
// success dc belongs to the returned response's body.
func (t *directTransport) exchange(ctx context.Context, dc *directConn, r *http.Request, body io.ReadCloser) (*http.Response, error) {
	// The context closes the connection if the client goes away, until
	// the body is finished (directBody stops the watch). Closing, not a
	// deadline in the past: the read deadlines set below would undo that.
	dc.stopCtx = context.AfterFunc(ctx, func() { dc.c.Close() })
	fail := func(err error) (*http.Response, error) {
		dc.stopCtx()
		return nil, err
	}
	out := *r
	out.Body = body
	if err := out.Write(dc.bw); err != nil {
		return fail(errors.Join(errDirectNoResponse, err))
	}
	if err := dc.bw.Flush(); err != nil {
		return fail(errors.Join(errDirectNoResponse, err))
	}
	var deadline time.Time
	if t.responseHeaderTimeout > 0 {
		deadline = t.now().Add(t.responseHeaderTimeout)
		dc.c.SetReadDeadline(deadline)
	}
	// timedOut reports whether a failed header read is the timeout: a
	// deadline that passes in the middle of a line surfaces as a
	// malformed header, not as a net.Error.
	timedOut := func(err error) bool {
		return isTimeout(err) || (!deadline.IsZero() && !t.now().Before(deadline))
	}
	for interim := 0; ; interim++ {
		// Bytes already buffered count against the limit too: they
		// came in with the request's response.
		dc.lr.n = maxResponseHeaderBytes - int64(dc.br.Buffered())
		if _, err := dc.br.Peek(1); err != nil {
			if timedOut(err) {
				return fail(errDirectTimeout)
			}
			if interim > 0 {
				return fail(err)
			}
			// Nothing of a response arrived: the connection was dead.
			return fail(errors.Join(errDirectNoResponse, err))
		}
		resp, err := http.ReadResponse(dc.br, r)
		if err != nil {
			if timedOut(err) {
				return fail(errDirectTimeout)
			}
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if interim >= max1xxResponses {
				return fail(errors.New("proxy: the upstream sent too many interim (1xx) responses"))
			}
			// Reported as http.Transport reports it: ReverseProxy's trace
			// passes it on to the client.
			if trace := httptrace.ContextClientTrace(r.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue // an interim response; the final one follows
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			resp.Body.Close()
			return fail(errors.New("proxy: the upstream switched protocols on a request that did not ask to"))
		}
		dc.lr.n = -1
		if t.responseHeaderTimeout > 0 {
			dc.c.SetReadDeadline(time.Time{})
		}
		resp.Body = &directBody{rc: resp.Body, t: t, dc: dc, keep: !resp.Close && !r.Close}
		return resp, nil
	}
}

// directBody hands its connection back to the pool once the body has been
// read to its end and closed, and closes the connection otherwise (a body
// abandoned half-way leaves the stream at an unknown place).
type directBody struct {
	rc   io.ReadCloser
	t    *directTransport
	dc   *directConn
	keep bool
	eof  bool
	done bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("proxy: read on a closed response body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF { //nolint:errorlint // io.EOF is returned unwrapped by contract
		b.eof = true
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if !b.eof {
		// Not read to its end: the connection cannot be reused, and
		// closing it first keeps the body's Close from draining what
		// is left (a feed may never end).
		b.dc.stopCtx()
		b.dc.c.Close()
		b.rc.Close()
		return nil
	}
	err := b.rc.Close()
	stopped := b.dc.stopCtx()
	// stopped is false when the context was cancelled and the deadline
	// set: the connection is no longer usable whatever was read.
	if b.eof && b.keep && err == nil && stopped {
		b.t.put(b.dc)
		return nil
	}
	b.dc.c.Close()
	return err
}
