package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// This file is reverse mode's default HTTP engine (Config.Engine
// "fasthttp"; SIDECRYPT_ENGINE=nethttp selects the other): fasthttp's
// server in front of the pipeline. Measured beside nginx
// (docs/BENCHMARKS.md, issue 16),
// net/http's server and httputil.ReverseProxy cost about twice nginx's
// CPU per request before sidecrypt does any work: per request, the server
// starts a background read (a goroutine and a system call) and builds a
// request with a context, ReverseProxy clones it and its header, and the
// response is copied through a ResponseWriter. fasthttp's server reads
// and answers each request on the connection's goroutine and reuses its
// buffers.
//
// What changes, and what does not:
//
//   - The client side is fasthttp's parser (v1.78): it refuses a
//     duplicated Content-Length, any Transfer-Encoding but chunked,
//     Transfer-Encoding on HTTP/1.0, a second Host, and malformed header
//     names and values; with both Content-Length and chunked, the chunked
//     framing is read and the connection is closed after the answer (RFC
//     9112 section 6.3). Each request is turned into an *http.Request
//     (fastRequest) and goes through prepare, the pipeline every mode
//     shares: the same rules, profiles, checks and refusals.
//   - The upstream side is unchanged: the request is written by the
//     standard library through oneWrite (the direct transport, or
//     http.Transport for streaming bodies and TLS upstreams), and the
//     response passes through the same modifyResponse. Hop-by-hop and
//     forwarding headers are handled as httputil.ReverseProxy handles
//     them (fastOutgoing).
//   - Bodies: request bodies up to 64 KiB are read with the headers;
//     larger and chunked ones stream (the server's StreamRequestBody), so
//     a pass-through upload of any size takes bounded memory, and a
//     protected one is still capped at Config.MaxBody. Responses of a
//     known length up to 256 KiB are answered from memory; others stream,
//     chunk by chunk, each chunk flushed (change feeds line by line), and
//     a stream that breaks off (the upstream failed, or decryption did)
//     ends the connection without the last chunk, so a truncated body
//     never looks complete.
//   - Not carried over: protocol upgrades (the Upgrade header is
//     hop-by-hop and removed, so the upstream answers a plain request),
//     interim 1xx responses from the upstream (dropped; the server answers
//     Expect: 100-continue itself, before the body is read, so a request
//     refused for its headers has had its body read and discarded first),
//     and response trailers. A client's disconnect is noticed when a write
//     to it fails, not while the upstream is still thinking.
//   - Repeated response fields: a response passed to the client carries
//     only the last of repeated Content-Type, Content-Encoding and Server
//     lines (fasthttp's header keeps one of each), and no Date (fasthttp
//     manages Date itself; NoDefaultDate leaves it out). Whether to
//     decrypt is decided on every line, read from the raw head
//     (fastForward), as on net/http; a response with more than one
//     Content-Type is never decrypted on either engine.
//
// Forward mode always runs on net/http (goproxy's CONNECT interception).
type fastEngine struct {
	p   *Proxy
	srv *fasthttp.Server

	mu    sync.Mutex
	conns map[net.Conn]*fastConn // open connections
	// closing is set when a drain has timed out and closeAll cuts what is
	// left: a request that takes an upstream connection after that cuts
	// it itself (fastConn.waitOn).
	closing atomic.Bool
}

// fastConn is what the engine keeps per client connection, so that a
// drain that times out can end what the connection is doing (closeAll),
// as net/http's server cancels its requests' contexts.
type fastConn struct {
	remote string // the client's address, formatted once per connection
	// cancel ends the connection's latest exchange: its context, which a
	// response still streaming after its handler returned watches
	// (fastStream.abort, or http.Transport's cancellation). Cancelling
	// an exchange that has already ended does nothing. Guarded by
	// fastEngine.mu, set with the lookup every request makes anyway.
	cancel context.CancelFunc
	// up is the upstream connection the request waits on while
	// fastRoundTrip runs: the exchange does not watch its context, so
	// closeAll closes this connection to end the wait.
	up      atomic.Pointer[directConn]
	closing *atomic.Bool // the engine's
}

// waitOn records the upstream connection the request is waiting on (nil
// when the wait is over); one taken during a drain is cut at once.
func (fc *fastConn) waitOn(dc *directConn) {
	if fc == nil {
		return
	}
	fc.up.Store(dc)
	if dc != nil && fc.closing.Load() {
		dc.c.Close()
	}
}

// Engine names (Config.Engine, SIDECRYPT_ENGINE).
const (
	EngineNetHTTP  = "nethttp"
	EngineFastHTTP = "fasthttp"
)

// fastReadBuffer bounds a request's line and headers on the fasthttp
// engine (net/http's limit, maxHeaderBytes, is 1 MiB; fasthttp allocates
// its read buffer per connection, so it is kept smaller). A request
// whose headers do not fit gets 431.
const fastReadBuffer = 64 << 10

func newFastEngine(p *Proxy) *fastEngine {
	e := &fastEngine{p: p, conns: map[net.Conn]*fastConn{}}
	e.srv = &fasthttp.Server{
		Handler:                       e.handle,
		ErrorHandler:                  e.badRequest,
		HeaderReceived:                fastRequestConfig,
		ExpectHandler:                 e.expect,
		ReadTimeout:                   readHeaderTimeout,
		IdleTimeout:                   idleTimeout,
		ReadBufferSize:                fastReadBuffer,
		MaxRequestBodySize:            smallBodyMax,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		SecureErrorLogMessage:         true,
		CloseOnShutdown:               true,
		Logger:                        fastLogger{p.log},
		ConnState:                     e.track,
	}
	return e
}

// fastRequestConfig lifts the read deadline once the headers are in:
// ReadTimeout bounds the wait for them (like net/http's
// ReadHeaderTimeout), while bodies, which may be uploads of any size,
// are not bounded, as on the net/http engine.
func fastRequestConfig(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return fasthttp.RequestConfig{ReadTimeout: 100 * 365 * 24 * time.Hour}
}

type fastLogger struct{ log *slog.Logger }

// Printf logs fasthttp's own messages at debug level. SecureErrorLogMessage
// keeps request bytes out of them.
func (l fastLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}

// track keeps the open connections (for closeAll) and their clients'
// addresses, formatted once per connection rather than per request.
func (e *fastEngine) track(c net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateNew:
		fc := &fastConn{closing: &e.closing}
		if a := c.RemoteAddr(); a != nil {
			fc.remote = a.String()
		}
		e.mu.Lock()
		e.conns[c] = fc
		e.mu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
	}
}

// begin looks up the request's connection (its client's address, as
// net/http's Request.RemoteAddr) and makes cancel the one closeAll calls
// for it.
func (e *fastEngine) begin(fctx *fasthttp.RequestCtx, cancel context.CancelFunc) *fastConn {
	e.mu.Lock()
	fc, ok := e.conns[fctx.Conn()]
	if ok && cancel != nil {
		fc.cancel = cancel
	}
	e.mu.Unlock()
	if !ok {
		// Not tracked (no StateNew seen): nothing to register with.
		return &fastConn{remote: fctx.RemoteAddr().String(), closing: &e.closing}
	}
	return fc
}

// closeAll cuts the connections still open after a drain timed out
// (continuous change feeds), and what their requests wait on.
func (e *fastEngine) closeAll() {
	e.closing.Store(true)
	e.mu.Lock()
	for c, fc := range e.conns {
		c.Close()
		// A request waiting for its upstream (a slow view, a feed with
		// nothing to send) does not notice that its client's connection
		// was closed: end its context and cut the upstream connection.
		if fc.cancel != nil {
			fc.cancel()
		}
		if dc := fc.up.Load(); dc != nil {
			dc.c.Close()
		}
	}
	e.mu.Unlock()
}

// serve is Proxy.Serve on this engine.
func (e *fastEngine) serve(ctx context.Context, ln net.Listener) error {
	p := e.p
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Serve(lingerListener{ln}) }()
	select {
	case err := <-errc:
		p.Close()
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	p.log.Info("proxy draining", "timeout", p.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
	defer cancel()
	if err := e.srv.ShutdownWithContext(sctx); err != nil {
		p.log.Warn("proxy drain timed out; closing remaining connections", "error", err)
		e.closeAll()
	}
	// Shutdown closes the listeners the server has registered; one whose
	// Serve had not yet started when ctx ended is closed here.
	ln.Close()
	<-errc
	p.Close()
	return nil
}

// lingerListener hands fasthttp's server connections that close
// gracefully (lingerConn).
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c}, nil
}

// Lingering close, as net/http's server does it (closeWriteAndWait and
// its rstAvoidanceDelay): how long a closed connection waits for the
// client, and how much of what it still sends is read meanwhile.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 256 << 10
)

// lingerConn is a client connection whose Close first ends the sending
// side (FIN after the answer) and waits up to lingerTimeout before it
// closes the socket, as net/http's server does; fasthttp closes at once.
// A socket closed with unread bytes in it answers with a reset: a client
// still sending an upload that the sidecar refused (413 for a body over
// SIDECRYPT_MAX_BODY, a refusal of its headers) has its write fail, and
// Go's client, among others, then reports the failed write instead of
// the answer it was sent. While it waits, the connection reads and
// discards up to lingerMax bytes, so that a client that has already
// finished (the usual case: its FIN is read at once) is closed without
// waiting; past that it stops reading, so a client still uploading
// blocks on its full window and reads the answer. All of this runs on
// its own goroutine: Close, and a drain's closeAll, never wait for it.
type lingerConn struct {
	net.Conn
	once sync.Once
	err  error
}

func (c *lingerConn) Close() error {
	c.once.Do(func() {
		cw, ok := c.Conn.(interface{ CloseWrite() error })
		if !ok || cw.CloseWrite() != nil {
			c.err = c.Conn.Close()
			return
		}
		go func() {
			deadline := time.Now().Add(lingerTimeout)
			c.Conn.SetReadDeadline(deadline)
			if n, _ := io.CopyN(io.Discard, c.Conn, lingerMax); n >= lingerMax {
				time.Sleep(time.Until(deadline))
			}
			c.Conn.Close()
		}()
	})
	return c.err
}

// badRequest answers what fasthttp's parser refused, without echoing any
// of it.
func (e *fastEngine) badRequest(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	msg := "malformed HTTP request; nothing was forwarded"
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) {
		status = fasthttp.StatusRequestHeaderFieldsTooLarge
		msg = "request line and headers are too large; nothing was forwarded"
	}
	e.p.obs.Refused("", CodeBadRequest)
	writeFastError(ctx, &refusal{status: status, code: CodeBadRequest, message: msg})
	ctx.SetConnectionClose()
}

func writeFastError(ctx *fasthttp.RequestCtx, r *refusal) {
	var w fastWriter
	writeError(&w, r)
	w.commit(ctx)
}

// fastWriter collects a response written by code made for net/http (the
// pipeline's error answers) and hands it to fasthttp.
type fastWriter struct {
	h      http.Header
	status int
	body   []byte
}

func (w *fastWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *fastWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *fastWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, b...)
	return len(b), nil
}

func (w *fastWriter) commit(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(w.status)
	for k, vv := range w.h {
		if k == "Content-Length" {
			continue // from the body
		}
		for _, v := range vv {
			resp.Header.Add(k, v)
		}
	}
	resp.SetBodyRaw(w.body)
}

// fastCancelBody is a streamed response body whose Close also ends the
// exchange's context and takes the request body back (guardedBody).
type fastCancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

// Close ends the exchange's context once the server is done with the
// response body (written out, or the client went away).
func (b *fastCancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.cancel)
	return err
}

var (
	refExpectation = &refusal{http.StatusExpectationFailed, CodeBadRequest, "the only expectation understood is 100-continue; nothing was forwarded"}
	refVersion     = &refusal{http.StatusHTTPVersionNotSupported, CodeBadRequest, "HTTP/1.1 and HTTP/1.0 only; nothing was forwarded"}
)

var refBadHeader = &refusal{http.StatusBadRequest, CodeBadRequest, "malformed header field name; nothing was forwarded"}

// errBodyNotSent is the body of expect's dry run.
var errBodyNotSent = errors.New("proxy: the body has not been sent yet")

type notSentBody struct{}

func (notSentBody) Read([]byte) (int, error) { return 0, errBodyNotSent }
func (notSentBody) Close() error             { return nil }

// expect decides an Expect: 100-continue request on its headers, as the
// net/http engine does by answering before it reads the body: the
// pipeline runs on the headers with a body that cannot be read yet, and a
// refusal that does not come from reading the body (too large, wrong
// media type, a key that cannot be used, a path or an operation the
// profile refuses) is answered at once, counted and audited, and the body
// is never read. fasthttp sends the status alone, without the JSON
// error, and closes the connection. Anything else gets 100 Continue and
// the full pipeline once the body is in.
func (e *fastEngine) expect(fctx *fasthttp.RequestCtx) int {
	p := e.p
	in, ref := fastRequest(context.Background(), fctx, e.begin(fctx, nil).remote)
	ex := p.newExchange(modeReverse, nil)
	if ref == nil {
		in.Body = notSentBody{}
		_, ref = p.prepare(in, ex, "")
	}
	if ref == nil || ref == refBodyRead {
		return fasthttp.StatusContinue
	}
	p.noteRefusal(in, ex, ref)
	p.obs.Request(ex.routeName, ex.outcome, ex.status, time.Since(ex.start))
	return ref.status
}

func (e *fastEngine) handle(fctx *fasthttp.RequestCtx) {
	p := e.p
	ctx, cancelCtx := context.WithCancel(context.Background())
	fc := e.begin(fctx, cancelCtx)
	in, ref := fastRequest(ctx, fctx, fc.remote)
	// cancel ends the exchange: its context, and the loan of the request
	// body. It runs when the handler returns, or, for a streamed
	// response, when the server closes the stream (fastCancelBody), in
	// both cases before the server reads the connection again.
	cancel := func() {
		cancelCtx()
		if g, ok := in.Body.(*guardedBody); ok {
			g.stop()
		}
	}
	streaming := false
	defer func() {
		if !streaming {
			cancel()
		}
	}()
	ex := p.newExchange(modeReverse, nil)
	var w fastWriter
	defer func() {
		// A panic must not take the process down: fasthttp's server does
		// not recover handlers.
		if v := recover(); v != nil {
			p.log.Error("proxy: panic in pipeline",
				"route", ex.routeName, "method", string(fctx.Method()),
				"panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			if ex.committed {
				fctx.Response.Reset()
				fctx.SetConnectionClose()
				fctx.Response.SetStatusCode(http.StatusInternalServerError)
				ex.outcome = OutcomeUpstreamError
			} else {
				p.noteRefusal(in, ex, refInternal)
				writeFastError(fctx, refInternal)
			}
		}
		if ex.outcome == "" {
			ex.outcome = OutcomeForwarded
		}
		d := time.Since(ex.start)
		p.obs.Request(ex.routeName, ex.outcome, ex.status, d)
		if p.log.Enabled(ctx, slog.LevelDebug) {
			p.log.LogAttrs(ctx, slog.LevelDebug, "request",
				slog.String("route", ex.routeName), slog.String("method", in.Method),
				slog.Int("status", ex.status), slog.String("outcome", ex.outcome),
				slog.Duration("duration", d))
		}
	}()
	if ref == nil && in.Method == http.MethodConnect {
		ref = refConnectReverse
	}
	if ref == nil && in.URL.Path == "*" {
		// OPTIONS * (fastRequest refuses anything else with "*").
		ex.status, ex.outcome = http.StatusOK, OutcomeForwarded
		fctx.Response.Header.SetContentLength(0)
		return
	}
	if ref != nil {
		ex.plan = p.rules.Current()
		p.refuse(&w, in, ex, ref)
		w.commit(fctx)
		return
	}
	out, ref := p.prepare(in, ex, "")
	if ref != nil {
		p.refuse(&w, in, ex, ref)
		w.commit(fctx)
		return
	}
	p.fastOutgoing(in, out, ex)
	if p.fastUsable(out, ex) {
		streaming = e.fastForward(fctx, fc, out, ex, cancel, &w)
		return
	}
	res, err := oneWrite{p}.RoundTrip(out)
	if err == nil {
		removeHopByHopHeaders(res.Header)
		if err = p.modifyResponse(res); err != nil {
			res.Body.Close()
		}
	}
	if err != nil {
		p.upstreamError(&w, out, err)
		w.commit(fctx)
		return
	}
	// A response through http.Transport (a streamed upload, a TLS
	// upstream): whether its body has begun is not known here.
	streaming = fastWriteResponse(fctx, res, cancel, true)
	if !streaming {
		res.Body.Close()
	}
}

// fastRequest turns fasthttp's request into the *http.Request the
// pipeline reads, as net/http's server would have built it: the
// request-target parsed by url.ParseRequestURI, Host out of the header
// map, Transfer-Encoding into TransferEncoding, header names canonical.
// A request the standard library would not have parsed is refused.
func fastRequest(ctx context.Context, fctx *fasthttp.RequestCtx, remote string) (*http.Request, *refusal) {
	fr := &fctx.Request
	rawURI := string(fr.Header.RequestURI())
	// Built as a value and copied once by WithContext (which sets the
	// unexported context field): one Request on the heap, not two.
	base := http.Request{
		Method:     fastMethod(fr.Header.Method()),
		RequestURI: rawURI,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		// Room for the fields and the three X-Forwarded ones that
		// fastOutgoing adds, so that the map is not grown on the way.
		Header:     make(http.Header, fr.Header.Len()+3),
		Host:       string(fr.Header.Host()),
		RemoteAddr: remote,
		Body:       http.NoBody,
	}
	if !fr.Header.IsHTTP11() {
		base.Proto, base.ProtoMinor = "HTTP/1.0", 0
	}
	r := base.WithContext(ctx)
	if proto := string(fr.Header.Protocol()); proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		r.URL = &url.URL{}
		return r, refVersion
	}
	if rawURI == "*" {
		// "OPTIONS *" asks about the server: net/http answers it itself
		// and so does this engine (handle); nothing else may use "*".
		r.URL = &url.URL{Path: "*"}
		if r.Method == http.MethodOptions {
			return r, nil
		}
		return r, refBadPath
	}
	u, err := url.ParseRequestURI(rawURI)
	if err != nil {
		r.URL = &url.URL{}
		return r, refBadPath
	}
	r.URL = u
	if u.Host != "" {
		// Absolute form: the target's authority is the host (RFC 9112
		// section 3.2.2), as net/http reads it.
		r.Host = u.Host
	}
	var fieldsBuf [16]fieldSpan
	var valuesBuf [1024]byte
	fields, values := fieldsBuf[:0], valuesBuf[:0]
	contentTypes := 0
	for k, v := range fr.Header.All() {
		if !httpguts.ValidHeaderFieldName(string(k)) {
			// fasthttp accepts a name with a space inside ("Content
			// Length"); net/http refuses it, and a lenient upstream
			// could read it as another field.
			return r, refBadHeader
		}
		name := canonicalHeaderName(k)
		switch name {
		case "Host", "Transfer-Encoding":
			continue
		case "Content-Type":
			contentTypes++
		}
		fields = append(fields, fieldSpan{name, len(values), len(values) + len(v)})
		values = append(values, v...)
	}
	fillHeader(r.Header, fields, values)
	// fasthttp keeps only the last of several Content-Type lines, and
	// none when that one is empty; the pipeline refuses more than one on
	// a protected collection and forwards them all elsewhere, as on the
	// net/http engine, so it must see every line.
	raw := fr.Header.RawHeaders()
	if countRawHeader(raw, "content-type") != contentTypes {
		r.Header["Content-Type"] = rawHeaderValues(raw, "content-type")
	}
	// The same for User-Agent: fasthttp keeps the last line, net/http
	// (and so the upstream, on the net/http engine) the first.
	if countRawHeader(raw, "user-agent") != len(r.Header["User-Agent"]) {
		r.Header["User-Agent"] = rawHeaderValues(raw, "user-agent")
	}
	if _, ok := r.Header["Cookie"]; ok {
		// fasthttp parses cookies and writes them back merged and
		// unquoted; the upstream gets them as the client sent them.
		r.Header["Cookie"] = rawHeaderValues(raw, "cookie")
	}
	if exp, ok := r.Header["Expect"]; ok && (len(exp) != 1 || !strings.EqualFold(exp[0], "100-continue")) {
		// net/http answers 417 to an expectation it does not know.
		return r, refExpectation
	}
	if fr.Header.ConnectionClose() {
		r.Close = true
	}
	cl := fr.Header.ContentLength()
	switch {
	case cl == -1: // chunked
		r.TransferEncoding = []string{"chunked"}
		r.ContentLength = -1
		r.Body = &guardedBody{r: fctx.RequestBodyStream(), conn: fctx.Conn()}
	case cl > 0:
		r.ContentLength = int64(cl)
		r.Body = &guardedBody{r: &lengthBody{r: fctx.RequestBodyStream(), left: int64(cl)}, conn: fctx.Conn()}
	}
	return r, nil
}

// guardedBody is a request body that the server's connection lends to
// the exchange. A streamed upload goes upstream through http.Transport,
// whose write loop may still be reading it when the upstream has
// answered early; fasthttp's server then reads (discards) the rest of
// the same body from the same buffer, and a read from two goroutines at
// once corrupts it (a panic that fasthttp does not recover, found by the
// engine's attacker pass). stop ends the loan before the server takes the
// connection back: later reads fail, and a read still waiting for the
// client is interrupted, which costs the connection (the server closes it
// when its own read then fails).
type guardedBody struct {
	mu     sync.Mutex
	r      io.Reader
	conn   net.Conn
	closed bool
}

var errBodyReturned = errors.New("proxy: the request body was returned to the server")

func (g *guardedBody) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errBodyReturned
	}
	return g.r.Read(p)
}

func (g *guardedBody) Close() error { return nil }

func (g *guardedBody) stop() {
	if !g.mu.TryLock() {
		g.conn.SetReadDeadline(time.Now())
		g.mu.Lock()
	}
	g.closed = true
	g.mu.Unlock()
}

// lengthBody reads a body of a declared length. fasthttp's stream ends
// with io.EOF when the client closes the connection before sending all
// of it; a truncated body must be an error, as it is on net/http
// (io.ErrUnexpectedEOF), or a body cut after a complete JSON value would
// be sealed and forwarded.
type lengthBody struct {
	r    io.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF { //nolint:errorlint // io.EOF is returned unwrapped by contract
		if b.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
	}
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// rawHeaderValues returns the values of every field of the raw header
// block whose name is name (lower case), with obsolete line folding
// undone as fasthttp and net/http undo it (a continuation line joins the
// previous field's value with a space).
func rawHeaderValues(raw []byte, name string) []string {
	var vals []string
	eachRawHeader(raw, name, func(v []byte) { vals = append(vals, string(v)) }, func(more []byte) {
		if vals[len(vals)-1] != "" {
			vals[len(vals)-1] += " "
		}
		vals[len(vals)-1] += string(more)
	})
	return vals
}

// countRawHeader is the number of values rawHeaderValues returns, counted
// without copying them (most requests have as many as fasthttp kept).
func countRawHeader(raw []byte, name string) int {
	n := 0
	eachRawHeader(raw, name, func([]byte) { n++ }, func([]byte) {})
	return n
}

// eachRawHeader calls field with the value of each line of raw named
// name, and more with each non-empty continuation line (obs-fold) that
// extends such a field, white space trimmed.
func eachRawHeader(raw []byte, name string, field, more func([]byte)) {
	extends := false // whether a continuation line extends a field named name
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if extends {
				if v := bytes.TrimSpace(line); len(v) > 0 {
					more(v)
				}
			}
			continue
		}
		extends = false
		k, v, ok := bytes.Cut(line, []byte{':'})
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			field(bytes.TrimSpace(v))
			extends = true
		}
	}
}

// fastOutgoing turns the pipeline's request into the one sent upstream,
// as httputil.ReverseProxy with Proxy.rewrite does on the net/http engine:
// hop-by-hop headers out ("Te: trailers" kept), forwarding headers
// replaced by X-Forwarded-For/-Host/-Proto, no Go User-Agent, the URL
// joined to the upstream's.
func (p *Proxy) fastOutgoing(in, out *http.Request, ex *exchange) {
	trailers := headerValuesContainToken(in.Header["Te"], "trailers")
	if out.ContentLength == 0 {
		out.Body = nil
	}
	out.Close = false
	out.RequestURI = ""
	removeHopByHopHeaders(out.Header)
	if trailers {
		out.Header.Set("Te", "trailers")
	}
	h := out.Header
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	// One array for the three fields' values; each list has its own
	// element and no spare capacity, so an append elsewhere copies.
	xf := []string{"", in.Host, "http"}
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		xf[0] = ip
		h["X-Forwarded-For"] = xf[0:1:1]
	}
	if in.Host != "" {
		h["X-Forwarded-Host"] = xf[1:2:2]
	}
	h["X-Forwarded-Proto"] = xf[2:3:3]
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""}
	}
	u := *p.upstream
	u.Path, u.RawPath = joinURLPath(p.upstream, out.URL)
	u.RawQuery = joinQuery(p.upstream.RawQuery, out.URL.RawQuery)
	out.URL = &u
	out.Host = ""
	if ex.decrypt {
		limitAcceptEncoding(h)
	}
	// The server answered any Expect: 100-continue before the body was
	// read; the upstream gets the body with the headers.
	delete(h, "Expect")
	ex.sent = time.Now()
}

// fastWriteResponse hands the upstream's response to fasthttp. A body in
// memory, or of a known length up to smallResponse, is answered from
// memory; any other streams, and then the stream owns res.Body and the
// exchange's context (cancel runs when the server closes it). It reports
// whether the body streams. flushHead sends a streamed response's head
// before its first body bytes are read (otherwise they go out together).
func fastWriteResponse(fctx *fasthttp.RequestCtx, res *http.Response, cancel context.CancelFunc, flushHead bool) bool {
	resp := &fctx.Response
	resp.SetStatusCode(res.StatusCode)
	for k, vv := range res.Header {
		switch k {
		case "Content-Length":
			continue // set below, from the body
		}
		for _, v := range vv {
			resp.Header.Add(k, v)
		}
	}
	if len(res.Header["Content-Type"]) == 0 {
		resp.Header.SetNoDefaultContentType(true)
	}
	if bb, ok := res.Body.(*bytesBody); ok {
		resp.SetBodyRaw(bb.b)
		return false
	}
	if res.Body == http.NoBody || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified ||
		(res.Request != nil && res.Request.Method == http.MethodHead) {
		if res.ContentLength >= 0 {
			resp.Header.SetContentLength(int(res.ContentLength))
		}
		resp.SkipBody = true
		return false
	}
	if res.ContentLength >= 0 && res.ContentLength <= smallResponse {
		b := make([]byte, res.ContentLength)
		if _, err := io.ReadFull(res.Body, b); err != nil {
			// The upstream broke off: answer nothing a client could take
			// for the whole body.
			resp.Reset()
			resp.SetStatusCode(http.StatusBadGateway)
			fctx.SetConnectionClose()
			return false
		}
		resp.SetBodyRaw(b)
		return false
	}
	size := int(res.ContentLength) // -1: chunked
	resp.SetBodyStream(&fastCancelBody{ReadCloser: res.Body, cancel: cancel}, size)
	resp.ImmediateHeaderFlush = flushHead
	return true
}

// Hop-by-hop headers (RFC 9110 section 7.6.1), as httputil.ReverseProxy
// removes them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

func headerValuesContainToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// joinURLPath is httputil's: the upstream's path, then the request's,
// with one slash between them, keeping the request's escaping.
func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath := a.EscapedPath()
	bpath := b.EscapedPath()
	aslash := strings.HasSuffix(apath, "/")
	bslash := strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

func singleJoiningSlash(a, b string) string {
	aslash := strings.HasSuffix(a, "/")
	bslash := strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}

// fieldSpan is a header field collected for fillHeader: its canonical
// name and where its value is in the values collected with it.
type fieldSpan struct {
	name     string
	from, to int
}

// fillHeader adds fields to h, each with its value values[from:to]. The
// values are copied into one string and the value lists share one array:
// two allocations, not two per field. Each list has no spare capacity, so
// that appending to one copies it.
func fillHeader(h http.Header, fields []fieldSpan, values []byte) {
	all := string(values)
	lists := make([]string, len(fields))
	for i, f := range fields {
		lists[i] = all[f.from:f.to]
		if vv, ok := h[f.name]; ok {
			h[f.name] = append(vv, lists[i])
		} else {
			h[f.name] = lists[i : i+1 : i+1]
		}
	}
}

// fastMethod is the request's method as a string, without allocating
// for the usual ones.
func fastMethod(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodHead:
		return http.MethodHead
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	case "COPY":
		return "COPY"
	}
	return string(m)
}

// commonHeaderNames maps the names that requests to a datastore and its
// answers usually carry to themselves, so that canonicalHeaderName finds them without
// allocating (fasthttp's server hands names over in canonical form, and
// datastores write the usual ones so).
var commonHeaderNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language",
		"Authorization", "Cache-Control", "Connection", "Content-Encoding",
		"Content-Length", "Content-Type", "Cookie", "Destination", "Expect",
		"Forwarded", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"Keep-Alive", "Origin", "Pragma", "Proxy-Authorization",
		"Proxy-Connection", "Range", "Referer", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "User-Agent", "Via",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Http-Method-Override", "X-Request-Id", "X-Requested-With",
		// and in responses
		"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Allow",
		"Content-Disposition", "Content-Range", "Date", "Etag", "Expires",
		"Last-Modified", "Location", "Retry-After", "Server", "Set-Cookie",
		"Vary", "Www-Authenticate", "X-Content-Type-Options",
		"X-Couch-Request-Id", "X-Couchdb-Body-Time", "X-Elastic-Product",
		"X-Powered-By",
	} {
		m[n] = n
	}
	return m
}()

// canonicalHeaderName is textproto.CanonicalMIMEHeaderKey(string(k)).
func canonicalHeaderName(k []byte) string {
	if n, ok := commonHeaderNames[string(k)]; ok {
		return n
	}
	return textproto.CanonicalMIMEHeaderKey(string(k))
}
