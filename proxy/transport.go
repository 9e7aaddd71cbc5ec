package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport tuning. The numbers favour a sidecar: one application, one
// datastore, many concurrent requests over loopback or a pod network.
const (
	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	// maxIdlePerHost is high because a sidecar talks to one upstream host:
	// Go's default of 2 would make a busy app open and close a connection
	// for nearly every request (TIME_WAIT storms, TLS handshakes).
	maxIdlePerHost  = 512
	maxIdle         = 1024
	idleConnTimeout = 90 * time.Second
	// expectContinueTimeout: how long a request with Expect: 100-continue
	// waits for the upstream's interim answer before sending its body
	// anyway, as RFC 9110 section 10.1.1 allows.
	expectContinueTimeout = time.Second
	// ioBufferSize is the transport's socket buffer size and the size of
	// the pooled copy buffers: larger than the 4 KiB default so that bulk
	// bodies move in fewer system calls.
	ioBufferSize = 32 << 10
)

// newTransport builds the upstream transport: verified TLS, no HTTP/2 (a
// sidecar's loopback hop gains nothing from multiplexing, and HTTP/1.1
// keeps streaming and 100-continue semantics simple), no environment proxy
// (the application's HTTP_PROXY points at us; following it would loop),
// and no transparent compression (the client's Accept-Encoding passes
// through; the Transport must not add its own).
func newTransport(tlsConf *tls.Config) *http.Transport {
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		tlsConf = tlsConf.Clone()
	}
	// Only HTTP/1.1 on TLS, even if the caller's config lists h2.
	tlsConf.NextProtos = []string{"http/1.1"}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: expectContinueTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		Protocols:             protocols,
		WriteBufferSize:       ioBufferSize,
		ReadBufferSize:        ioBufferSize,
	}
}

// copyBufferPool implements httputil.BufferPool so that ReverseProxy does
// not allocate a 32 KiB buffer per response. It pools array pointers: a
// slice converts back to one without allocating, where pooling *[]byte
// would allocate a header on every Put.
type copyBufferPool struct{ p sync.Pool }

func newCopyBufferPool() *copyBufferPool {
	return &copyBufferPool{p: sync.Pool{New: func() any { return new([ioBufferSize]byte) }}}
}

func (c *copyBufferPool) Get() []byte { return c.p.Get().(*[ioBufferSize]byte)[:] }

func (c *copyBufferPool) Put(b []byte) {
	if cap(b) != ioBufferSize {
		return
	}
	c.p.Put((*[ioBufferSize]byte)(b[:ioBufferSize]))
}
