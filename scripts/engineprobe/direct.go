package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// directTransport is an http.RoundTripper for one plain-HTTP upstream
// that does a round trip on the calling goroutine, the way fasthttp's
// HostClient does: take an idle connection (or dial), write the request,
// read the response, and put the connection back when its body has been
// read to the end. net/http's Transport instead runs a read loop and a
// write loop goroutine per connection and hands every request and
// response between them and the caller over channels. Framing stays the
// standard library's: (*http.Request).Write and http.ReadResponse are
// what the Transport uses too. Anything unusual (Expect: 100-continue,
// upgrades, another scheme or host) goes to fallback.
//
// It exists here to measure what those hand-offs cost (engine
// "nethttp-direct"); it is not used by sidecrypt.
type directTransport struct {
	addr     string
	fallback http.RoundTripper
	dialer   net.Dialer

	mu   sync.Mutex
	idle []*directConn
}

type directConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

const maxIdleDirect = 1024

func (t *directTransport) get() (*directConn, bool, error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		dc := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return dc, true, nil
	}
	t.mu.Unlock()
	c, err := t.dialer.Dial("tcp", t.addr)
	if err != nil {
		return nil, false, err
	}
	return &directConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

func (t *directTransport) put(dc *directConn) {
	t.mu.Lock()
	if len(t.idle) < maxIdleDirect {
		t.idle = append(t.idle, dc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	dc.c.Close()
}

func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

func (t *directTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "http" || r.URL.Host != t.addr || r.Header.Get("Expect") != "" ||
		r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect {
		return t.fallback.RoundTrip(r)
	}
	for attempt := 0; ; attempt++ {
		dc, reused, err := t.get()
		if err != nil {
			return nil, err
		}
		if attempt > 0 && r.GetBody != nil {
			if r.Body, err = r.GetBody(); err != nil {
				dc.c.Close()
				return nil, err
			}
		}
		resp, err := t.exchange(dc, r)
		if err == nil {
			return resp, nil
		}
		dc.c.Close()
		// A reused connection the upstream closed while it was idle
		// fails on first use: try once more on a new one, if the
		// request can be sent again.
		if reused && attempt == 0 && replayable(r) && r.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

func (t *directTransport) exchange(dc *directConn, r *http.Request) (*http.Response, error) {
	if dl, ok := r.Context().Deadline(); ok {
		dc.c.SetDeadline(dl)
	} else {
		dc.c.SetDeadline(time.Time{})
	}
	if err := r.Write(dc.bw); err != nil {
		return nil, err
	}
	if err := dc.bw.Flush(); err != nil {
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(dc.br, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // 1xx before the final response
		}
		resp.Body = &directBody{rc: resp.Body, t: t, dc: dc, keep: !resp.Close && !r.Close}
		return resp, nil
	}
}

// directBody returns its connection to the pool once the body has been
// read to its end, and closes it otherwise.
type directBody struct {
	rc   io.ReadCloser
	t    *directTransport
	dc   *directConn
	keep bool
	eof  bool
	done bool
}

func (b *directBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.rc.Close()
	if b.eof && b.keep && err == nil {
		b.t.put(b.dc)
		return nil
	}
	b.dc.c.Close()
	return err
}
