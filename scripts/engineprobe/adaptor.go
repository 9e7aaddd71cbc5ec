package main

import (
	"context"
	"net"
	"net/url"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// adaptorProxy is fasthttp's server in front of the very net/http handler
// that nethttp-direct runs (ReverseProxy with the direct round tripper),
// joined by fasthttpadaptor. It measures whether sidecrypt could keep its
// net/http request path and change only the server under it: fasthttp's
// connection loop and request parser, net/http's types from there on.
type adaptorProxy struct {
	srv *fasthttp.Server
}

func newAdaptorProxy(upstream *url.URL, tr *transformer) *adaptorProxy {
	h := newNetHTTPProxy(upstream, tr, true).srv.Handler
	srv := newFastHTTPServer(fasthttpadaptor.NewFastHTTPHandler(h))
	// fasthttp drops a Date header the handler sets; it writes its own.
	srv.NoDefaultDate = false
	return &adaptorProxy{srv: srv}
}

func (p *adaptorProxy) serve(ln net.Listener) error { return p.srv.Serve(ln) }

func (p *adaptorProxy) shutdown(ctx context.Context) error { return p.srv.ShutdownWithContext(ctx) }
