package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// netHTTPProxy is http.Server + httputil.ReverseProxy with a Transport tuned
// as a production sidecar would tune it.
type netHTTPProxy struct {
	srv *http.Server
}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func newNetHTTPProxy(upstream *url.URL, tr *transformer, direct bool) *netHTTPProxy {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  60 * time.Second,
		ExpectContinueTimeout:  1 * time.Second,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		MaxResponseHeaderBytes: 1 << 20,
	}
	var rt http.RoundTripper = transport
	if direct {
		rt = &directTransport{addr: upstream.Host, fallback: transport, dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // also sets the outbound Host to the upstream's
		},
		Transport:  rt,
		BufferPool: newBufferPool(),
	}
	var h http.Handler = rp
	if tr != nil {
		rp.ModifyResponse = func(res *http.Response) error {
			if res.Request.Method != http.MethodGet || !isJSON(res.Header.Get("Content-Type")) ||
				res.Header.Get("Content-Encoding") != "" {
				return nil
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				return err
			}
			if out, ok := tr.decryptBody(body); ok {
				body = out
			}
			res.Body = io.NopCloser(bytes.NewReader(body))
			res.ContentLength = int64(len(body))
			res.TransferEncoding = nil
			res.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		}
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (r.Method == http.MethodPost || r.Method == http.MethodPut) && isJSON(r.Header.Get("Content-Type")) {
				body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodySize))
				if err != nil {
					status := http.StatusBadRequest
					var mbe *http.MaxBytesError
					if errors.As(err, &mbe) {
						status = http.StatusRequestEntityTooLarge
					}
					http.Error(w, "cannot read request body", status)
					return
				}
				out, err := tr.encryptBody(body)
				if err != nil {
					http.Error(w, "invalid JSON body", http.StatusBadRequest)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(out))
				r.ContentLength = int64(len(out))
				r.TransferEncoding = nil
				r.Header.Del("Content-Length")
			}
			rp.ServeHTTP(w, r)
		})
	}
	return &netHTTPProxy{srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
	}}
}

func (p *netHTTPProxy) serve(ln net.Listener) error {
	if err := p.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (p *netHTTPProxy) shutdown(ctx context.Context) error { return p.srv.Shutdown(ctx) }
