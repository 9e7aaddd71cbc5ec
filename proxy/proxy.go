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
	"net/http/httputil"
	"net/url"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/rules"
)

// Proxy is the sidecar's HTTP handler: reverse mode when Config.Upstream
// is set, forward mode otherwise. Build it with New; serve it with Serve
// (or any http.Server). It is safe for concurrent use.
type Proxy struct {
	cfg       Config
	upstream  *url.URL // nil in forward mode
	rules     rules.Source
	keys      fieldcrypt.Keyring
	obs       Observer
	log       *slog.Logger
	audit     audit.Recorder
	maxBody   int64
	transport *http.Transport
	// egressTransport carries forward-mode requests to destinations other
	// than the datastore: a pool of its own, so that a connection to the
	// datastore never carries an unprotected request (see egress.go).
	egressTransport *http.Transport
	// direct carries reverse-mode requests with no body or one in memory
	// to a plain-HTTP upstream (direct.go); nil otherwise.
	direct *directTransport
	rp     *httputil.ReverseProxy
	fw     *forwarder // nil in reverse mode
	// encOpts are the options of every request body encryption (the
	// operator's depth limit); read-only, shared by all requests.
	encOpts fieldcrypt.CallOptions
	// self is the address Serve listens on, so that a request addressed
	// to the proxy itself is refused instead of looping.
	self atomic.Pointer[selfAddr]
	// Forward mode's egress policy (egress.go).
	egress    *egressPolicy
	guard     []*selfAddr
	lookup    LookupFunc
	dsLookups lookupCache
}

// New checks cfg and builds a Proxy. It does no network I/O.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Proxy{
		cfg:      cfg,
		upstream: cfg.Upstream,
		rules:    cfg.Rules,
		keys:     cfg.Keys,
		obs:      cfg.Observer,
		log:      cfg.Logger,
		audit:    cfg.Audit,
		maxBody:  cfg.MaxBody,
		encOpts:  fieldcrypt.CallOptions{MaxDepth: cfg.MaxDepth},
	}
	egress, err := parseEgress(cfg.PassThrough)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w: %w", ErrConfig, err)
	}
	p.egress = egress
	for _, g := range cfg.Guard {
		a, err := net.ResolveTCPAddr("tcp", g)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w: guarded address %q: %w", ErrConfig, g, err)
		}
		p.guard = append(p.guard, newSelfAddr(a))
	}
	p.lookup = cfg.Lookup
	if p.lookup == nil {
		p.lookup = defaultLookup
	}
	p.dsLookups.ttl = 5 * time.Second
	if cfg.Upstream == nil {
		p.fw = &forwarder{} // marks forward mode for the dialers; built below
	}
	p.transport = newTransport(cfg.UpstreamTLS)
	p.transport.ResponseHeaderTimeout = cfg.UpstreamTimeout
	p.transport.DialContext = p.refuseLoops(p.pinnedDial(p.transport.DialContext, true))
	if cfg.Upstream != nil && cfg.Upstream.Scheme == "http" && !cfg.StandardTransport {
		// The Transport's dialer, looked up per dial: the loop and
		// egress checks are the same, and so is a dialer set later
		// through Transport().
		p.direct = newDirectTransport(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.transport.DialContext(ctx, network, addr)
		}, cfg.UpstreamTimeout)
	}
	p.egressTransport = newTransport(cfg.UpstreamTLS)
	p.egressTransport.ResponseHeaderTimeout = cfg.UpstreamTimeout
	p.egressTransport.DialContext = p.refuseLoops(p.pinnedDial(p.egressTransport.DialContext, false))
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      oneWrite{p},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
		BufferPool:     newCopyBufferPool(),
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	if cfg.Upstream == nil {
		p.fw = newForwarder(p, cfg.CA)
	}
	return p, nil
}

// Mode returns "reverse" or "forward".
func (p *Proxy) Mode() string {
	if p.fw != nil {
		return "forward"
	}
	return "reverse"
}

// Transport returns the upstream transport, so that callers can close idle
// connections or inspect its settings. Do not change it while serving.
func (p *Proxy) Transport() *http.Transport { return p.transport }

// Close stops the interception server of forward mode and closes idle
// upstream connections. Serve calls it on its way out.
func (p *Proxy) Close() error {
	if p.fw != nil {
		p.fw.close()
	}
	p.transport.CloseIdleConnections()
	p.egressTransport.CloseIdleConnections()
	if p.direct != nil {
		p.direct.closeIdle(true)
	}
	return nil
}

// Server timeouts for the proxy's own listeners. No read or write timeout
// bounds whole requests: uploads and change feeds may legitimately last.
const (
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 1 << 20
)

// Engine is the HTTP engine Serve runs (EngineFastHTTP or
// EngineNetHTTP): Config.Engine, or the mode's default.
func (p *Proxy) Engine() string { return p.cfg.engine() }

// Serve serves the proxy on ln until ctx ends, then drains: it stops
// accepting, lets requests in flight finish for up to
// Config.ShutdownTimeout, and then closes what is left (long-polling feeds,
// forward-mode tunnels). It returns nil after a drain, or the listener's
// error if serving failed.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	p.self.Store(newSelfAddr(ln.Addr()))
	if p.cfg.engine() == EngineFastHTTP {
		return newFastEngine(p).serve(ctx, ln)
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		p.Close()
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	p.log.Info("proxy draining", "timeout", p.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if p.fw != nil {
		err = errors.Join(err, p.fw.shutdown(sctx))
	}
	if err != nil {
		// Streams that outlive the drain (continuous change feeds) are
		// cut: that is what the timeout is for, not a failure.
		p.log.Warn("proxy drain timed out; closing remaining connections", "error", err)
		srv.Close()
	}
	<-errc
	p.Close()
	return nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.fw == nil {
		if r.Method == http.MethodConnect {
			p.refuseEarly(w, r, refConnectReverse)
			return
		}
		p.pipeline(w, r, modeReverse, "", nil)
		return
	}
	if r.Method == http.MethodConnect {
		p.fw.gp.ServeHTTP(w, r)
		return
	}
	if !r.URL.IsAbs() || (r.URL.Scheme != "http" && r.URL.Scheme != "https") {
		p.refuseEarly(w, r, refNotProxy)
		return
	}
	p.pipeline(w, r, modeForward, r.URL.Hostname(), nil)
}

// mode says how the exchange reached the pipeline, which decides how the
// outgoing URL is built.
type mode uint8

const (
	modeReverse     mode = iota // to Config.Upstream
	modeForward                 // absolute-form request through HTTP_PROXY
	modeIntercepted             // inside an intercepted CONNECT tunnel
)

// exchange is the state of one request as it moves through the pipeline.
// It is created once per request and only touched by the goroutine serving
// it, except for the response decrypter, which reads plan, route and
// routeName (set before it starts).
type exchange struct {
	plan      *rules.Plan
	route     *rules.Route
	routeName string
	mode      mode
	target    *url.URL // modeIntercepted: https://host:port of the tunnel
	start     time.Time
	sent      time.Time
	status    int
	outcome   string
	// committed: response headers may have been written, so a panic can
	// no longer become a JSON error.
	committed bool
	// decrypt: responses are run through dec: the plan's decryptor
	// (version 1: tokens opened wherever they are), or the profile's bound
	// one for the operation (version 2: only in the protected fields of
	// the documents the response carries).
	decrypt bool
	dec     *fieldcrypt.Decryptor
	// body is the request body when it is in memory (sealed, or a small
	// unmatched body): the transport sends it with the headers in one
	// write. nil when the body streams.
	body []byte
	// dest is a forward-mode request's checked destination; nil in
	// reverse mode.
	dest *destination
	// keys is the request's view of Proxy.keys (keys.go), for sealing.
	keys requestKeys
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// pipeline is the one path every request takes, in every mode: take the
// rules once, match a route, protect the request, forward it, transform
// the response.
func (p *Proxy) pipeline(w http.ResponseWriter, r *http.Request, m mode, host string, target *url.URL) {
	ex := p.newExchange(m, target)
	defer p.finish(w, r, ex)
	out, ref := p.prepare(r, ex, host)
	if ref != nil {
		p.refuse(w, r, ex, ref)
		return
	}
	p.rp.ServeHTTP(w, out)
}

func (p *Proxy) newExchange(m mode, target *url.URL) *exchange {
	ex := &exchange{mode: m, target: target, start: time.Now()}
	ex.keys.Keyring = p.keys
	return ex
}

// prepare is the request half of the pipeline, shared by both HTTP
// engines (net/http here, fasthttp in fastengine.go): take the rules
// once, match a route, protect the request. It returns the request to
// forward, which carries the exchange in its context, or the refusal to
// answer with, having forwarded nothing.
func (p *Proxy) prepare(r *http.Request, ex *exchange, host string) (*http.Request, *refusal) {
	m := ex.mode
	ex.plan = p.rules.Current()

	if hasDotSegment(r.URL.Path) {
		return nil, refBadPath
	}
	if ex.plan != nil {
		// A plan that neither opens nor masks any key would leave every
		// token as it is: skip the decrypter altogether.
		ex.decrypt = ex.plan.Decryptor != nil && (len(ex.plan.DecryptKeys) > 0 || len(ex.plan.MaskKeys) > 0)
		ex.dec = ex.plan.Decryptor
	}
	if m != modeReverse {
		hostport, defPort := r.URL.Host, "80"
		if m == modeIntercepted {
			hostport, defPort = ex.target.Host, "443"
		} else if r.URL.Scheme == "https" {
			defPort = "443"
		}
		d, ref := p.destinationFor(r.Context(), ex.plan, hostport, defPort)
		if ref != nil {
			return nil, ref
		}
		ex.dest = d
		if d.name != "" {
			host = d.name
		}
	}
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	if ex.plan != nil {
		// A request carries a token only where these rules would have put
		// it (fieldcrypt.WithTokenPolicy, docs/FORMAT.md section 7).
		ctx = fieldcrypt.WithTokenPolicy(ctx, ex.plan.TokenPolicy())
	}
	out := r.WithContext(ctx)
	var ref *refusal
	switch {
	case ex.plan == nil:
		ref = readSmallBody(out, ex)
	case ex.plan.Profile != nil:
		// Version 2: the datastore profile decides, for requests bound
		// for the datastore.
		if m == modeReverse || ex.dest.datastore {
			ref = p.protectV2(out, ex)
		} else {
			// Not the datastore: nothing in its answers is a token the
			// rules put there.
			ex.decrypt = false
			ref = readSmallBody(out, ex)
		}
	default:
		ref = p.protectV1(out, ex, host)
	}
	if ref != nil {
		return nil, ref
	}
	return out, nil
}

// protectV1 matches a version 1 route and applies it. Routes are matched
// on the path as the datastore reads it: split at '/' before unescaping,
// so that "%2F" inside a segment stays in that segment (see routePath).
func (p *Proxy) protectV1(r *http.Request, ex *exchange, host string) *refusal {
	rp, empty, ok := routePath(r.URL.EscapedPath())
	if !ok {
		return refBadPath
	}
	ex.route = ex.plan.Match(rules.Request{
		Method:      r.Method,
		Host:        host,
		Path:        rp,
		ContentType: mediaType(r.Header.Get("Content-Type")),
	})
	if ex.route == nil {
		return readSmallBody(r, ex)
	}
	ex.routeName = ex.route.Name
	if empty {
		return refAmbiguousPath
	}
	if ref := strictRequest(r); ref != nil {
		return ref
	}
	return p.protect(r, ex)
}

// routePath turns an escaped request path into the form version 1 routes
// are matched against: each segment unescaped once, except that a '/'
// that was "%2F" inside a segment is kept as the three characters "%2F",
// which no route pattern can contain, so that the segment stays one
// segment as it is for the datastore ("/clinic/a%2Fb" is the document
// "a/b" in "clinic", matched by "/clinic/*"). empty reports an empty
// segment before the last ("//"), which datastores read in different
// ways. ok is false for a malformed escape or a "." or ".." segment.
func routePath(escaped string) (path string, empty, ok bool) {
	if !strings.Contains(escaped, "%") && !strings.Contains(escaped, "//") {
		return escaped, false, !hasDotSegment(escaped)
	}
	segs := strings.Split(escaped, "/")
	for i, seg := range segs {
		if seg == "" {
			if i > 0 && i < len(segs)-1 {
				empty = true
			}
			continue
		}
		dec, err := url.PathUnescape(seg)
		if err != nil || dec == "." || dec == ".." {
			return "", false, false
		}
		segs[i] = strings.ReplaceAll(dec, "/", "%2F")
	}
	return strings.Join(segs, "/"), empty, true
}

// smallBodyMax is the largest unmatched request body read in one piece
// before forwarding.
const smallBodyMax = 64 << 10

// readSmallBody reads an unmatched request's body in one piece when its
// length is declared and small, without looking at or changing it, so that
// it is sent upstream with its headers in one write (see oneWrite). nginx
// buffers request bodies the same way by default. Memory stays bounded
// (64 KiB per request in flight); larger, chunked and Expect:
// 100-continue bodies still stream untouched.
func readSmallBody(r *http.Request, ex *exchange) *refusal {
	if r.ContentLength <= 0 || r.ContentLength > smallBodyMax || len(r.TransferEncoding) > 0 || r.Header.Get("Expect") != "" {
		return nil
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return refBodyRead
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	ex.body = b
	return nil
}

// oneWrite is the upstream RoundTripper. net/http's Transport flushes the
// request headers on their own before copying a body it does not know to
// be in memory ("in case the server needs the headers early"), and
// ReverseProxy wraps every outgoing body in a reader of its own, so every
// proxied request cost the proxy two writes and the upstream two TCP
// segments. When the exchange's body is in memory, oneWrite hands the
// Transport that memory directly, and headers and body go out together.
// It also picks the connection pool: forward-mode requests for
// destinations other than the datastore go through egressTransport. In
// reverse mode with a plain-HTTP upstream, a request whose body is absent
// or in memory takes the direct transport (direct.go), which makes the
// round trip on this goroutine; everything else takes the Transport.
type oneWrite struct{ p *Proxy }

func (o oneWrite) RoundTrip(r *http.Request) (*http.Response, error) {
	t := o.p.transport
	ex := exchangeFrom(r.Context())
	if ex != nil && ex.dest != nil && !ex.dest.datastore {
		t = o.p.egressTransport
	}
	inMemory := r.Body == nil || r.Body == http.NoBody
	if ex != nil && ex.body != nil && r.Body != nil && r.ContentLength == int64(len(ex.body)) {
		b := ex.body
		r2 := *r // RoundTrippers must not modify the caller's request
		r2.Body = io.NopCloser(bytes.NewReader(b))
		r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		r = &r2
		inMemory = true
	}
	if inMemory && t == o.p.transport && o.p.direct != nil && directUsable(r) {
		return o.p.direct.RoundTrip(r)
	}
	return t.RoundTrip(r)
}

// finish recovers a panic (answering 500 and forwarding nothing when the
// response has not started) and reports the request to the Observer.
func (p *Proxy) finish(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if v := recover(); v != nil {
		// ReverseProxy aborts a response whose body broke off (the
		// upstream died mid-stream) with http.ErrAbortHandler.
		abort := v == http.ErrAbortHandler //nolint:errorlint // sentinel panic value
		if !abort {
			// Only the panic's type and the stack: a panic value built
			// from request data must not reach the log.
			p.log.Error("proxy: panic in pipeline",
				"route", ex.routeName, "method", r.Method,
				"panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
		}
		if abort || ex.committed {
			// Headers are out: all that is left is to cut the
			// connection, so the client cannot take a truncated
			// body for a whole one.
			ex.outcome = OutcomeUpstreamError
			p.obs.Request(ex.routeName, ex.outcome, ex.status, time.Since(ex.start))
			panic(http.ErrAbortHandler)
		}
		p.refuse(w, r, ex, refInternal)
	}
	if ex.outcome == "" {
		ex.outcome = OutcomeForwarded
	}
	d := time.Since(ex.start)
	p.obs.Request(ex.routeName, ex.outcome, ex.status, d)
	if p.log.Enabled(r.Context(), slog.LevelDebug) {
		p.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("route", ex.routeName), slog.String("method", r.Method),
			slog.Int("status", ex.status), slog.String("outcome", ex.outcome),
			slog.Duration("duration", d))
	}
}

// refuse answers a request with a JSON error, forwards nothing, counts it
// and audits it. The audit event is durable before the client sees the
// answer, so a client that was refused can rely on the refusal being on
// record; refusals are rare enough for the wait on the disk not to matter.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, ex *exchange, ref *refusal) {
	defer writeError(w, ref)
	p.noteRefusal(r, ex, ref)
}

// noteRefusal counts, logs and audits a refusal (refuse does that and
// answers; a refused CONNECT answers on the raw connection).
func (p *Proxy) noteRefusal(r *http.Request, ex *exchange, ref *refusal) {
	ex.status, ex.outcome, ex.committed = ref.status, OutcomeRefused, true
	if ref == refCanceled {
		ex.outcome = OutcomeCanceled
	}
	p.obs.Refused(ex.routeName, ref.code)
	if ex.outcome == OutcomeCanceled {
		return
	}
	p.log.LogAttrs(r.Context(), slog.LevelWarn, "request refused",
		slog.String("route", ex.routeName), slog.String("method", r.Method),
		slog.Int("status", ref.status), slog.String("code", ref.code),
		slog.Duration("duration", time.Since(ex.start)))
	ev := audit.Event{
		Time:    time.Now().UTC(),
		Actor:   "proxy",
		Action:  "request.refused",
		Outcome: "denied",
		Reason:  ref.code,
		Details: map[string]string{"method": r.Method, "status": fmt.Sprint(ref.status)},
	}
	if ex.plan != nil {
		ev.Rules = ex.plan.Hash
	}
	if ex.routeName != "" {
		ev.Details["route"] = ex.routeName
	}
	if err := p.audit.Record(context.WithoutCancel(r.Context()), ev); err != nil {
		p.log.Error("proxy: audit refusal", "error", err)
	}
}

// refuseEarly answers requests that never enter the pipeline (CONNECT in
// reverse mode, origin-form requests in forward mode).
func (p *Proxy) refuseEarly(w http.ResponseWriter, r *http.Request, ref *refusal) {
	ex := &exchange{start: time.Now(), plan: p.rules.Current()}
	p.refuse(w, r, ex, ref)
	p.obs.Request("", ex.outcome, ex.status, time.Since(ex.start))
}

// rewrite builds the outgoing request (httputil.ReverseProxy.Rewrite).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeFrom(pr.In.Context())
	switch ex.mode {
	case modeReverse:
		pr.SetURL(p.upstream)
		pr.SetXForwarded()
		// ReverseProxy drops query parameters it cannot parse before
		// Rewrite; put the query back exactly as the client sent it
		// (after sealQuery), as a direct connection would carry it.
		pr.Out.URL.RawQuery = joinQuery(p.upstream.RawQuery, pr.In.URL.RawQuery)
	case modeForward:
		pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	case modeIntercepted:
		pr.Out.URL.Scheme = ex.target.Scheme
		pr.Out.URL.Host = ex.target.Host
		pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	}
	if ex.decrypt {
		limitAcceptEncoding(pr.Out.Header)
	}
	if ex.body != nil {
		// The body is in memory (setBody, readSmallBody): nothing to
		// wait for a 100 Continue about.
		delete(pr.Out.Header, "Expect")
	}
	ex.sent = time.Now()
}

func joinQuery(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "&" + b
}

// limitAcceptEncoding keeps only the content codings the response side can
// decode, so that a JSON response always arrives in a form its tokens can
// be opened in. Without it, an upstream answering br would hand the client
// undecryptable tokens.
func limitAcceptEncoding(h http.Header) {
	vals := h["Accept-Encoding"]
	if len(vals) == 0 {
		return
	}
	unknown := false
	for _, v := range vals {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if !decodableCoding(tok) {
				unknown = true
			}
		}
	}
	if !unknown {
		return
	}
	var kept []string
	for _, v := range vals {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = strings.TrimSpace(tok); tok != "" && decodableCoding(tok) {
				kept = append(kept, tok)
			}
		}
	}
	if len(kept) == 0 {
		h.Set("Accept-Encoding", "identity")
		return
	}
	h.Set("Accept-Encoding", strings.Join(kept, ", "))
}

func decodableCoding(tok string) bool {
	name, _, _ := strings.Cut(tok, ";")
	name = strings.TrimSpace(name)
	switch strings.ToLower(name) {
	case "", "gzip", "x-gzip", "deflate", "identity":
		return true
	}
	return false
}

// upstreamError answers when the upstream cannot be reached, times out, or
// ModifyResponse fails (httputil.ReverseProxy.ErrorHandler).
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	ex.committed = true
	ref := refUpstream
	ex.outcome = OutcomeUpstreamError
	switch {
	case r.Context().Err() != nil:
		ex.outcome = OutcomeCanceled
	case errors.Is(err, errProxyLoop):
		ref = refLoop
	case errors.Is(err, errEgress):
		ref = refEgress
	case isTimeout(err):
		ref = refUpstreamTime
	}
	ex.status = ref.status
	writeError(w, ref)
	if ex.outcome == OutcomeCanceled {
		return
	}
	// A *url.Error would print the request URL, query string included,
	// and query parameters may be protected: log only what lies beneath.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	p.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream failed",
		slog.String("route", ex.routeName), slog.String("method", r.Method),
		slog.Int("status", ref.status), slog.String("code", ref.code),
		slog.String("error", err.Error()))
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hasDotSegment reports whether a path has a "." or ".." segment. Such
// paths are refused rather than resolved: rules match the resolved path,
// and an upstream that reads the raw one differently could store a body
// under a path that no rule covered. Clients resolve dot segments before
// sending (RFC 3986 section 5.2.4), so only crafted requests carry them.
func hasDotSegment(p string) bool {
	for len(p) > 0 {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// mediaType returns the media type of a Content-Type value, lower case,
// without parameters. It allocates only for upper-case input.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// isJSONType reports whether a request body of this media type is JSON:
// application/json or a structured +json type (RFC 6839).
func isJSONType(mt string) bool {
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

var _ http.Handler = (*Proxy)(nil)
