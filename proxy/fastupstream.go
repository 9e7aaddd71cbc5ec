package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// The fasthttp engine's round trip to a plain-HTTP upstream, for requests
// whose body is absent or in memory: the direct transport's connections
// (the same pool, dialer, liveness check, header timeout and retry rule,
// direct.go), with fasthttp's request-header writer and response parser
// instead of net/http's. Measured beside nginx, building an *http.Request
// to write and an *http.Response with its header map for every exchange
// was about a tenth of a pass-through request's CPU (docs/BENCHMARKS.md).
// Responses that are decrypted still become an *http.Response (built from
// fasthttp's parsed header) for modifyResponse; responses passed through
// go from the upstream's parser to the client's writer without one.
//
// The upstream sees what the net/http path sends, field for field: the
// request line is the *http.Request's URL.RequestURI() written as it is
// (never re-parsed or normalised), Host the upstream's, the headers the
// pipeline left (fastOutgoing), the framing our own (Content-Length of
// the body in memory; never Transfer-Encoding).
//
// Connections are reused only after a response whose framing fasthttp
// read to its end with nothing left over and no "Connection: close";
// anything else (a body read until close, a response fasthttp's parser
// marked for closing, such as one with both Content-Length and chunked,
// an abandoned stream) closes it.

// fastUsable reports whether out can take the native round trip.
func (p *Proxy) fastUsable(out *http.Request, ex *exchange) bool {
	if p.direct == nil || out.URL.Scheme != "http" || out.Method == http.MethodConnect {
		return false
	}
	if out.Body != nil && out.Body != http.NoBody && (ex.body == nil || out.ContentLength != int64(len(ex.body))) {
		return false
	}
	return len(out.Header["Upgrade"]) == 0
}

// fastRequestHeader writes out's request line and header into h, line
// by line as net/http's request writer would: Host, User-Agent,
// Content-Length, then the other fields in sorted order. fasthttp's
// special handling of fields is off, so nothing is added, merged or
// re-serialised (Cookie, Content-Type) on the way.
func fastRequestHeader(h *fasthttp.RequestHeader, out *http.Request, bodyLen int) {
	h.DisableSpecialHeader()
	h.DisableNormalizing()
	h.SetMethod(out.Method)
	h.SetRequestURI(out.URL.RequestURI())
	h.Add("Host", out.URL.Host)
	if vv := out.Header["User-Agent"]; len(vv) > 0 && vv[0] != "" {
		// An empty User-Agent means none (ReverseProxy's convention).
		h.Add("User-Agent", cleanHeaderValue(vv[0]))
	}
	switch {
	case bodyLen > 0:
		h.Add("Content-Length", strconv.Itoa(bodyLen))
	case out.Method == http.MethodPost || out.Method == http.MethodPut || out.Method == http.MethodPatch:
		// net/http sends "Content-Length: 0" for these; servers expect it.
		h.Add("Content-Length", "0")
	}
	keys := make([]string, 0, len(out.Header))
	for k := range out.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range out.Header[k] {
			h.Add(k, cleanHeaderValue(v))
		}
	}
}

// cleanHeaderValue is what net/http does to a value it writes: line
// breaks become spaces, surrounding white space goes.
func cleanHeaderValue(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == ' ' || c == '\t' {
			return textproto.TrimString(headerNewlineToSpace(v))
		}
	}
	return v
}

func headerNewlineToSpace(v string) string {
	b := []byte(v)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}

// fastRoundTrip sends out and reads the response header and body (in
// memory up to smallResponse, a stream otherwise) into resp. On success
// the connection belongs to resp's body: release must be called once the
// body has been consumed (eof reports whether it was read to its end).
//
// With rawHead non-nil, the response's head is also copied there as it
// came (fasthttp's parser keeps only the last of some repeated fields).
func (p *Proxy) fastRoundTrip(ctx context.Context, fc *fastConn, out *http.Request, body []byte, resp *fasthttp.Response, rawHead *[]byte) (release func(eof bool), err error) {
	t := p.direct
	addr := directAddr(out.URL.Host)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	fastRequestHeader(&req.Header, out, len(body))
	for attempt := 0; ; attempt++ {
		dc, reused, err := t.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp.Reset()
		fc.waitOn(dc)
		release, err := p.fastExchange(dc, &req.Header, body, out.Method == http.MethodHead, resp, rawHead)
		fc.waitOn(nil)
		if err == nil {
			return release, nil
		}
		dc.c.Close()
		if reused && attempt == 0 && errors.Is(err, errDirectNoResponse) && retryable(out) && ctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

func (p *Proxy) fastExchange(dc *directConn, h *fasthttp.RequestHeader, body []byte, head bool, resp *fasthttp.Response, rawHead *[]byte) (func(bool), error) {
	t := p.direct
	// The exchange does not watch the request's context as the direct
	// transport does (context.AfterFunc closing the connection): on this
	// engine nothing can cancel that context while it runs. fasthttp's
	// server does not read a connection while its handler runs, so it
	// cannot learn that a client went away; the exchange's context is
	// cancelled only by the handler's own goroutine once fastForward has
	// returned, or when the server closes a streamed body, and fastStream
	// releases the connection before that. A watch would never fire, and
	// cost five allocations per request. (A drain that times out closes
	// dc to end the wait, fastConn.waitOn; a streamed body, which
	// outlives the handler, is watched: fastStream.abort.)
	if err := h.Write(dc.bw); err != nil {
		return nil, errors.Join(errDirectNoResponse, err)
	}
	if len(body) > 0 {
		if _, err := dc.bw.Write(body); err != nil {
			return nil, errors.Join(errDirectNoResponse, err)
		}
	}
	if err := dc.bw.Flush(); err != nil {
		return nil, errors.Join(errDirectNoResponse, err)
	}
	var deadline time.Time
	if t.responseHeaderTimeout > 0 {
		deadline = t.now().Add(t.responseHeaderTimeout)
		dc.c.SetReadDeadline(deadline)
	}
	timedOut := func(err error) bool {
		return isTimeout(err) || errors.Is(err, fasthttp.ErrTimeout) || (!deadline.IsZero() && !t.now().Before(deadline))
	}
	for interim := 0; ; interim++ {
		dc.lr.n = maxResponseHeaderBytes - int64(dc.br.Buffered())
		if _, err := dc.br.Peek(1); err != nil {
			if timedOut(err) {
				return nil, errDirectTimeout
			}
			if interim > 0 {
				return nil, err
			}
			return nil, errors.Join(errDirectNoResponse, err)
		}
		if ok, err := statusLineOK(dc.br); err != nil || !ok {
			if err != nil && timedOut(err) {
				return nil, errDirectTimeout
			}
			return nil, errMalformedUpstreamHeader
		}
		if rawHead != nil {
			b, err := peekHead(dc.br)
			if err != nil {
				if timedOut(err) {
					return nil, errDirectTimeout
				}
				return nil, err
			}
			*rawHead = append((*rawHead)[:0], b...)
		}
		resp.Header.DisableNormalizing()
		// No invented Content-Type: the client gets the upstream's
		// fields and no others.
		resp.Header.SetNoDefaultContentType(true)
		if err := resp.Header.Read(dc.br); err != nil {
			if timedOut(err) {
				return nil, errDirectTimeout
			}
			return nil, err
		}
		for k, v := range resp.Header.All() {
			// fasthttp's parser takes a name with a space inside
			// ("Content Length"); net/http's refuses the response, and a
			// lenient client could read such a field as another one.
			if !httpguts.ValidHeaderFieldName(string(k)) || !httpguts.ValidHeaderFieldValue(string(v)) {
				return nil, errMalformedUpstreamHeader
			}
		}
		code := resp.Header.StatusCode()
		if code == http.StatusSwitchingProtocols {
			return nil, errors.New("proxy: the upstream switched protocols on a request that did not ask to")
		}
		if code >= 100 && code < 200 {
			if interim >= max1xxResponses {
				return nil, errors.New("proxy: the upstream sent too many interim (1xx) responses")
			}
			resp.Header.Reset()
			resp.Header.SetNoDefaultContentType(true)
			continue // the fasthttp engine does not pass interim responses on
		}
		break
	}
	dc.lr.n = -1
	if t.responseHeaderTimeout > 0 {
		dc.c.SetReadDeadline(time.Time{})
	}
	keep := !resp.Header.ConnectionClose()
	release := func(eof bool) {
		if eof && keep {
			t.put(dc)
			return
		}
		dc.c.Close()
	}
	code := resp.Header.StatusCode()
	if head || code == http.StatusNoContent || code == http.StatusNotModified {
		resp.SkipBody = true
		return release, nil
	}
	cl := resp.Header.ContentLength()
	if cl >= 0 && cl <= smallResponse {
		if err := resp.ReadBody(dc.br, smallResponse); err != nil {
			release(false)
			return nil, err
		}
		return release, nil
	}
	if cl == -2 {
		keep = false // the body ends when the upstream closes
	}
	resp.StreamBody = true
	if err := resp.ReadBody(dc.br, 0); err != nil {
		release(false)
		return nil, err
	}
	// fasthttp's server sends a streamed response's head with its first
	// body bytes. A body of known length has some already (ReadBody
	// waited for them); a chunked or close-delimited one may have none
	// yet (a long-polling feed, a stream that has only flushed its
	// head): then the head is flushed at once, as net/http's engine
	// does, or the client would wait for the first bytes to see the
	// status. The flag is read by fastForward, not by fasthttp.
	resp.ImmediateHeaderFlush = cl < 0 && dc.br.Buffered() == 0
	return release, nil
}

// statusLineOK checks the status line at the head of br as net/http
// reads one: "HTTP/1.x", a space, three digits from 100, then a space or
// the end of the line. fasthttp's parser takes "HTTP/1.1 000" and then
// reports status 200. It looks only at bytes already received, asking
// for one more at a time, as fasthttp's own header reader does.
func statusLineOK(br *bufio.Reader) (bool, error) {
	n := br.Buffered()
	for {
		b, err := br.Peek(n)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return checkStatusLine(bytes.TrimSuffix(b[:i], []byte{'\r'})), nil
		}
		if err != nil {
			return false, err
		}
		if n >= 4096 {
			return false, nil
		}
		n = len(b) + 1
	}
}

// peekHead returns the response head at the front of br, from the
// status line to the empty line that ends it, without consuming it; it
// asks for one more byte at a time, as statusLineOK does. A head that
// does not fit in br's buffer is refused (fasthttp's parser would refuse
// it too).
func peekHead(br *bufio.Reader) ([]byte, error) {
	n := br.Buffered()
	for {
		b, err := br.Peek(n)
		if end := headEnd(b); end >= 0 {
			return b[:end], nil
		}
		if err != nil {
			return nil, err
		}
		if n >= br.Size() {
			return nil, errors.New("proxy: the upstream's response head does not fit in the read buffer")
		}
		n = len(b) + 1
	}
}

// headEnd is the length of the head in b up to and including the first
// empty line (CRLF or bare LF), which ends it (b starts with a status
// line statusLineOK has checked), or -1 when b holds no such line.
func headEnd(b []byte) int {
	for start := 0; start < len(b); {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return -1
		}
		line := bytes.TrimSuffix(b[start:start+i], []byte{'\r'})
		start += i + 1
		if len(line) == 0 {
			return start
		}
	}
	return -1
}

func checkStatusLine(l []byte) bool {
	if len(l) < 12 || !bytes.HasPrefix(l, []byte("HTTP/1.")) || l[7] < '0' || l[7] > '9' || l[8] != ' ' {
		return false
	}
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return l[9] != '0' && (len(l) == 12 || l[12] == ' ')
}

var errMalformedUpstreamHeader = errors.New("proxy: the upstream sent a malformed status line or header field")

// fastStream is a streamed upstream body: it hands the connection back
// once read to its end, closes it otherwise.
type fastStream struct {
	r       io.Reader
	resp    *fasthttp.Response
	release func(bool)
	cancel  context.CancelFunc
	eof     bool
	// stopWatch ends the watch on the exchange's context (abort).
	stopWatch func() bool

	mu      sync.Mutex // done and aborted: abort runs on another goroutine
	done    bool
	aborted bool
}

// abort cuts a stream that is still open, from another goroutine: the
// exchange's context ended (a drain timed out, closeAll) while the
// server may be waiting in Read for the upstream. Closing the upstream
// connection (release(false)) makes that Read fail; Close then releases
// it unpooled too.
func (s *fastStream) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.aborted = true
	s.release(false)
}

func (s *fastStream) Read(b []byte) (int, error) {
	if s.done { // only Close sets it, on the goroutine that reads
		return 0, errors.New("proxy: read on a closed response body")
	}
	n, err := s.r.Read(b)
	if err == io.EOF { //nolint:errorlint // io.EOF is returned unwrapped by contract
		s.eof = true
	}
	return n, err
}

func (s *fastStream) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	aborted := s.aborted
	s.mu.Unlock()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if !s.eof || aborted {
		// Close the connection first, so that closing the stream does
		// not drain what is left (a feed may never end).
		s.release(false)
		s.resp.CloseBodyStream()
	} else {
		s.resp.CloseBodyStream()
		s.release(true)
	}
	fasthttp.ReleaseResponse(s.resp)
	if s.cancel != nil {
		s.cancel()
	}
	return nil
}

// fastForward is the fasthttp engine's exchange with the native round
// trip: send, then answer from the upstream's response, through
// modifyResponse when the exchange decrypts.
func (e *fastEngine) fastForward(fctx *fasthttp.RequestCtx, fc *fastConn, out *http.Request, ex *exchange, cancel context.CancelFunc, w *fastWriter) (streaming bool) {
	p := e.p
	up := fasthttp.AcquireResponse()
	var rawHead *[]byte
	if ex.decrypt {
		// modifyResponse decides on Content-Type and Content-Encoding,
		// which fasthttp's parser keeps one line of: it gets them all.
		rawHead = new([]byte)
	}
	release, err := p.fastRoundTrip(out.Context(), fc, out, ex.body, up, rawHead)
	if err != nil {
		fasthttp.ReleaseResponse(up)
		p.upstreamError(w, out, err)
		w.commit(fctx)
		return false
	}
	ex.status = up.StatusCode()
	if !ex.sent.IsZero() {
		p.obs.UpstreamLatency(ex.routeName, time.Since(ex.sent))
	}
	var stream *fastStream
	if up.IsBodyStream() {
		stream = &fastStream{r: up.BodyStream(), resp: up, release: release, cancel: cancel}
		// Only a stream outlives the handler, and so can be waiting for
		// its upstream when the exchange is ended from outside.
		stream.stopWatch = context.AfterFunc(out.Context(), stream.abort)
	}
	if !ex.decrypt {
		resp := &fctx.Response
		resp.SetStatusCode(up.StatusCode())
		copyFastHeader(&resp.Header, &up.Header)
		ex.committed = true
		if up.SkipBody {
			resp.SkipBody = true
			if cl := up.Header.ContentLength(); cl >= 0 {
				resp.Header.SetContentLength(cl)
			}
		}
		if stream == nil {
			resp.SetBody(up.Body())
			release(true)
			fasthttp.ReleaseResponse(up)
			return false
		}
		size := up.Header.ContentLength()
		if size < 0 {
			size = -1
		}
		resp.SetBodyStream(stream, size)
		resp.ImmediateHeaderFlush = up.ImmediateHeaderFlush
		return true
	}
	// Decrypted: modifyResponse reads an *http.Response.
	res := &http.Response{
		Status:     "",
		StatusCode: up.StatusCode(),
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  make(http.Header, 8),
		Request: out,
	}
	var fieldsBuf [16]fieldSpan
	var valuesBuf [1024]byte
	fields, values := fieldsBuf[:0], valuesBuf[:0]
	for k, v := range up.Header.All() {
		fields = append(fields, fieldSpan{canonicalHeaderName(k), len(values), len(values) + len(v)})
		values = append(values, v...)
	}
	fillHeader(res.Header, fields, values)
	for _, f := range [...]struct{ raw, canonical string }{{"content-type", "Content-Type"}, {"content-encoding", "Content-Encoding"}} {
		if countRawHeader(*rawHead, f.raw) != len(res.Header[f.canonical]) {
			res.Header[f.canonical] = rawHeaderValues(*rawHead, f.raw)
		}
	}
	removeHopByHopHeaders(res.Header)
	switch {
	case up.SkipBody:
		res.ContentLength = int64(up.Header.ContentLength())
		res.Body = http.NoBody
		release(true)
		fasthttp.ReleaseResponse(up)
	case stream == nil:
		b := append([]byte(nil), up.Body()...)
		res.ContentLength = int64(len(b))
		res.Body = &bytesBody{b: b}
		release(true)
		fasthttp.ReleaseResponse(up)
	default:
		res.ContentLength = int64(up.Header.ContentLength())
		if res.ContentLength < 0 {
			res.ContentLength = -1
		}
		res.Body = stream
	}
	if err := p.modifyResponse(res); err != nil {
		res.Body.Close()
		p.upstreamError(w, out, err)
		w.commit(fctx)
		return false
	}
	streaming = fastWriteResponse(fctx, res, cancel, stream != nil && up.ImmediateHeaderFlush)
	if !streaming {
		res.Body.Close()
	}
	return streaming
}

// copyFastHeader copies an upstream response header to the client's,
// without hop-by-hop fields (and those the Connection field names) and
// without Content-Length, which the body sets.
func copyFastHeader(dst, src *fasthttp.ResponseHeader) {
	var named []string
	for k, v := range src.All() {
		if equalFoldASCII(string(k), "Connection") {
			for f := range bytesSplitComma(v) {
				named = append(named, f)
			}
		}
	}
	dst.DisableNormalizing()
	for k, v := range src.All() {
		name := string(k)
		if isHopHeader(name) || textproto.CanonicalMIMEHeaderKey(name) == "Content-Length" || containsFold(named, name) {
			continue
		}
		dst.AddBytesV(name, v)
	}
	if len(src.ContentType()) == 0 {
		dst.SetNoDefaultContentType(true)
	}
}

func isHopHeader(name string) bool {
	for _, h := range hopHeaders {
		if equalFoldASCII(h, name) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if equalFoldASCII(x, s) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// bytesSplitComma yields the trimmed, non-empty elements of a
// comma-separated header value.
func bytesSplitComma(v []byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		s := string(v)
		for s != "" {
			var f string
			if i := strings.IndexByte(s, ','); i >= 0 {
				f, s = s[:i], s[i+1:]
			} else {
				f, s = s, ""
			}
			if f = textproto.TrimString(f); f != "" && !yield(f) {
				return
			}
		}
	}
}
