package main

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"
)

// fastHTTPProxy is the usual fasthttp reverse-proxy pattern: the server's
// handler (one goroutine per request) forwards ctx.Request through a
// HostClient into ctx.Response.
type fastHTTPProxy struct {
	srv *fasthttp.Server
}

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1) never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// connectionTokens returns the header names listed in a Connection value.
func connectionTokens(v []byte) []string {
	var names []string
	for f := range bytes.SplitSeq(v, []byte{','}) {
		if f = bytes.TrimSpace(f); len(f) > 0 {
			names = append(names, string(f))
		}
	}
	return names
}

func stripRequestHop(h *fasthttp.RequestHeader) {
	for _, v := range h.PeekAll("Connection") {
		for _, name := range connectionTokens(v) {
			h.Del(name)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func stripResponseHop(h *fasthttp.ResponseHeader) {
	for _, v := range h.PeekAll("Connection") {
		for _, name := range connectionTokens(v) {
			h.Del(name)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func newFastHTTPProxy(upstream *url.URL, tr *transformer) *fastHTTPProxy {
	host := upstream.Host
	hc := &fasthttp.HostClient{
		Addr:                     host,
		MaxConns:                 1024,
		MaxIdleConnDuration:      90 * time.Second,
		ReadTimeout:              60 * time.Second,
		WriteTimeout:             60 * time.Second,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
	}
	// SetURL in the net/http engine joins the upstream's path in front.
	prefix := []byte(upstream.Path)
	if len(prefix) > 0 && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}

	handler := func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		resp := &ctx.Response
		// The server has already noted a client "Connection: close" (before
		// calling the handler); stripping it keeps the pooled upstream
		// connection open. Stripping an upstream "Connection: close" from the
		// response likewise keeps the client connection open.
		stripRequestHop(&req.Header)
		req.URI().DisablePathNormalizing = true
		if len(prefix) > 0 {
			req.URI().SetPathBytes(append(append([]byte(nil), prefix...), req.URI().PathOriginal()...))
		}
		req.SetHost(host)
		req.Header.SetHost(host)

		if tr != nil && (ctx.IsPost() || ctx.IsPut()) && isJSON(string(req.Header.ContentType())) {
			out, err := tr.encryptBody(req.Body())
			if err != nil {
				ctx.Error("invalid JSON body", fasthttp.StatusBadRequest)
				return
			}
			req.SetBodyRaw(out)
		}

		if err := hc.Do(req, resp); err != nil {
			resp.Reset()
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			return
		}
		stripResponseHop(&resp.Header)

		if tr != nil && ctx.IsGet() && isJSON(string(resp.Header.ContentType())) &&
			len(resp.Header.ContentEncoding()) == 0 {
			if out, ok := tr.decryptBody(resp.Body()); ok {
				resp.SetBodyRaw(out)
			}
		}
	}
	return &fastHTTPProxy{srv: newFastHTTPServer(handler)}
}

// newFastHTTPServer is the server both fasthttp engines run.
func newFastHTTPServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h,
		ReadTimeout:                  60 * time.Second,
		WriteTimeout:                 60 * time.Second,
		IdleTimeout:                  120 * time.Second,
		MaxRequestBodySize:           maxBodySize,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
	}
}

func (p *fastHTTPProxy) serve(ln net.Listener) error { return p.srv.Serve(ln) }

func (p *fastHTTPProxy) shutdown(ctx context.Context) error { return p.srv.ShutdownWithContext(ctx) }
