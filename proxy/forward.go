package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
)

// forwarder is forward mode's CONNECT side. goproxy parses CONNECT,
// hijacks the client connection and runs plain tunnels; for hosts the rules
// name, it hands us the connection (ConnectHijack), and we terminate TLS
// with a leaf from our CA and serve the tunnel with a real net/http server
// whose handler is the same pipeline as every other request. Using
// net/http here, rather than goproxy's own request loop, is what makes
// HEAD, 100-continue, chunking and keep-alive inside a tunnel behave
// exactly as they do in reverse mode.
type forwarder struct {
	p      *Proxy
	ca     *CA
	gp     *goproxy.ProxyHttpServer
	dialer net.Dialer

	intercept *goproxy.ConnectAction
	tunnel    *goproxy.ConnectAction

	startOnce sync.Once
	ln        *connQueue
	srv       *http.Server
	targets   sync.Map // *tls.Conn -> *url.URL, until the server picks it up

	mu      sync.Mutex
	tunnels map[*tunnelConn]struct{}
}

type targetKey struct{}

func newForwarder(p *Proxy, ca *CA) *forwarder {
	f := &forwarder{
		p:       p,
		ca:      ca,
		dialer:  net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		ln:      newConnQueue(),
		tunnels: make(map[*tunnelConn]struct{}),
	}
	gp := goproxy.NewProxyHttpServer()
	// goproxy's default Transport skips certificate verification. It is
	// not used for requests here (they go through the pipeline), but set
	// it to ours anyway so that no path through goproxy can skip it.
	gp.Tr = p.transport
	// Its default CONNECT dialer follows HTTPS_PROXY from our environment,
	// which in a sidecar usually points back at us.
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = f.dialTunnel
	gp.Logger = goproxyLogger{p.log}
	gp.Verbose = false
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.refuseEarly(w, r, refNotProxy)
	})
	f.intercept = &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: f.hijack}
	f.tunnel = &goproxy.ConnectAction{Action: goproxy.ConnectAccept}
	gp.OnRequest().HandleConnectFunc(f.decide)
	f.gp = gp
	f.srv = &http.Server{
		Handler:           http.HandlerFunc(f.serveIntercepted),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := f.targets.LoadAndDelete(c); ok {
				return context.WithValue(ctx, targetKey{}, t)
			}
			return ctx
		},
	}
	return f
}

// decide runs for every CONNECT. The rules are read at each CONNECT, so a
// reload that adds a host intercepts its next connection. The datastore
// (by any name or address that reaches it) is intercepted; a destination
// on the pass-through list is tunnelled; anything else is refused (see
// egress.go).
func (f *forwarder) decide(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	reqCtx := context.Background()
	if ctx != nil && ctx.Req != nil {
		reqCtx = ctx.Req.Context()
	}
	d, ref := f.p.destinationFor(reqCtx, f.p.rules.Current(), host, "443")
	if ref != nil {
		return f.refuseConnect(ref), host
	}
	if d.datastore {
		return f.intercept, host
	}
	return f.tunnel, host
}

// refuseConnect answers a CONNECT with a JSON error on the raw connection
// (goproxy has no ResponseWriter for it) and closes it.
func (f *forwarder) refuseConnect(ref *refusal) *goproxy.ConnectAction {
	return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: func(req *http.Request, client net.Conn, _ *goproxy.ProxyCtx) {
		defer client.Close()
		ex := &exchange{start: time.Now(), plan: f.p.rules.Current(), routeName: "connect"}
		f.p.noteRefusal(req, ex, ref)
		f.p.obs.Request("connect", ex.outcome, ex.status, time.Since(ex.start))
		body := fmt.Sprintf("{\"error\":{\"code\":%q,\"message\":%q}}\n", ref.code, ref.message)
		fmt.Fprintf(client, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			ref.status, http.StatusText(ref.status), len(body), body)
	}}
}

// hostOnly strips the port and brackets and lower-cases a host.
func hostOnly(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.Trim(h, "[]"))
}

// hostMatches compares a host from the rules with a CONNECT host: exactly
// (case-insensitive), or "*.example.com" for any subdomain.
func hostMatches(pattern, host string) bool {
	host = strings.TrimSuffix(host, ".") // the absolute form names the same host
	pattern = strings.ToLower(pattern)
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(host, "."+suffix)
	}
	return pattern == host
}

// hijack takes over an intercepted CONNECT: confirm the tunnel, start TLS
// with a leaf for the host, and queue the connection for the interception
// server.
func (f *forwarder) hijack(req *http.Request, client net.Conn, ctx *goproxy.ProxyCtx) {
	hostport := req.URL.Host
	if hostport == "" {
		hostport = req.Host
	}
	host := hostOnly(hostport)
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(host, "443")
	}
	leaf, err := f.ca.leaf(host, time.Now())
	if err != nil {
		f.p.log.Error("proxy: cannot mint interception certificate", "host", host, "error", err)
		_, _ = client.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		client.Close()
		return
	}
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		client.Close()
		return
	}
	f.startOnce.Do(func() { go func() { _ = f.srv.Serve(f.ln) }() })
	tc := tls.Server(client, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		// HTTP/1.1 only: the pipeline and its tests are HTTP/1.1, and a
		// client that offers h2 falls back cleanly.
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	f.targets.Store(tc, &url.URL{Scheme: "https", Host: hostport})
	if !f.ln.push(tc) {
		f.targets.Delete(tc)
		tc.Close()
	}
}

// serveIntercepted is the interception server's handler: requests inside
// a tunnel, in origin form, bound for the tunnel's host.
func (f *forwarder) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	target, _ := r.Context().Value(targetKey{}).(*url.URL)
	if target == nil {
		f.p.refuseEarly(w, r, refInternal)
		return
	}
	f.p.pipeline(w, r, modeIntercepted, hostOnly(target.Host), target)
}

// dialTunnel dials the destination of a plain (not intercepted) tunnel and
// tracks the connection so that shutdown can close it.
func (f *forwarder) dialTunnel(req *http.Request, network, addr string) (net.Conn, error) {
	ctx := context.Background()
	if req != nil {
		ctx = req.Context()
	}
	// Checked again on the addresses dialled now: decide saw this
	// destination as not the datastore, and a tunnel carries whatever
	// the client sends through it.
	d, ref := f.p.destinationFor(ctx, f.p.rules.Current(), addr, "443")
	if ref != nil {
		return nil, ref
	}
	if d.datastore {
		return nil, errEgress
	}
	dial := f.p.refuseLoops(f.p.pinnedDial(f.dialer.DialContext, false))
	c, err := dial(context.WithValue(ctx, exchangeKey{}, &exchange{dest: d}), network, addr)
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	t := &tunnelConn{TCPConn: tcp, f: f}
	f.mu.Lock()
	f.tunnels[t] = struct{}{}
	f.mu.Unlock()
	return t, nil
}

// tunnelConn is a tunnelled destination connection. Embedding *TCPConn
// keeps CloseRead/CloseWrite, which goroutines in goproxy use to half-close
// tunnels cleanly.
type tunnelConn struct {
	*net.TCPConn
	f    *forwarder
	once sync.Once
}

func (t *tunnelConn) Close() error {
	t.once.Do(func() {
		t.f.mu.Lock()
		delete(t.f.tunnels, t)
		t.f.mu.Unlock()
	})
	return t.TCPConn.Close()
}

// shutdown drains the interception server, then closes every plain tunnel
// (a tunnel has no request boundary to drain at).
func (f *forwarder) shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	f.ln.Close()
	f.closeTunnels()
	return err
}

func (f *forwarder) close() {
	f.ln.Close()
	_ = f.srv.Close()
	f.closeTunnels()
}

func (f *forwarder) closeTunnels() {
	f.mu.Lock()
	ts := make([]*tunnelConn, 0, len(f.tunnels))
	for t := range f.tunnels {
		ts = append(ts, t)
	}
	f.mu.Unlock()
	for _, t := range ts {
		t.Close()
	}
}

// connQueue is a net.Listener fed with connections from hijack.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return interceptAddr{} }

type interceptAddr struct{}

func (interceptAddr) Network() string { return "intercept" }
func (interceptAddr) String() string  { return "intercepted-connect" }

// goproxyLogger routes goproxy's messages (tunnel dial and copy errors) to
// the debug level: they are per-connection noise, and the request-level
// outcome is logged by the pipeline.
type goproxyLogger struct{ l *slog.Logger }

func (g goproxyLogger) Printf(format string, v ...any) {
	if g.l.Enabled(context.Background(), slog.LevelDebug) {
		g.l.Debug("goproxy: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}

var (
	_ net.Listener   = (*connQueue)(nil)
	_ goproxy.Logger = goproxyLogger{}
)
