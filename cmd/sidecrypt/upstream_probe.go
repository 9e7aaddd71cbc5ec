package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"
)

// upstreamProbe tells /readyz whether the datastore can be reached, so that
// a load balancer or the kubelet stops sending traffic to a sidecar whose
// every request would end in 502.
//
// What it costs: one TCP connection to the upstream's address, opened and
// closed at once, every probeEvery (5s), whoever asks /readyz and however
// often. No HTTP request and no TLS handshake are made, so the datastore
// does no work and logs nothing. It checks that something accepts
// connections at that address, not that the datastore behind a load
// balancer is healthy: that is the datastore's own health check.
type upstreamProbe struct {
	addr  string // host:port
	every time.Duration
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	log   *slog.Logger
	now   func() time.Time

	mu    sync.Mutex
	err   error     // of the last probe; errNotProbed before the first
	since time.Time // when the current state began
}

const (
	probeEvery   = 5 * time.Second
	probeTimeout = 2 * time.Second
)

var errNotProbed = errors.New("not probed yet")

func newUpstreamProbe(u *url.URL, log *slog.Logger) *upstreamProbe {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	d := &net.Dialer{Timeout: probeTimeout}
	return &upstreamProbe{addr: net.JoinHostPort(u.Hostname(), port), every: probeEvery, dial: d.DialContext, log: log, now: time.Now, err: errNotProbed}
}

// Run probes at once, then every p.every, until ctx ends. It logs when
// the upstream becomes unreachable and when it is back, not every probe.
func (p *upstreamProbe) Run(ctx context.Context) error {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		p.probe(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *upstreamProbe) probe(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("upstream probe: panic recovered", "panic", fmt.Sprint(r))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	conn, err := p.dial(ctx, "tcp", p.addr)
	cancel()
	if err == nil {
		conn.Close()
	} else if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return // shutting down
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.err
	p.err = err
	switch {
	case err != nil && (was == nil || was == errNotProbed):
		p.since = p.now()
		p.log.Warn("upstream unreachable: /readyz reports not ready until it answers again", "upstream", p.addr, "err", err)
	case err == nil && was != nil:
		p.since = p.now()
		if was != errNotProbed {
			p.log.Info("upstream reachable again", "upstream", p.addr)
		}
	}
}

// Ready is the readiness check: nil when the last probe connected.
func (p *upstreamProbe) Ready(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		return nil
	}
	if p.err == errNotProbed {
		return fmt.Errorf("%s: %w", p.addr, p.err)
	}
	return fmt.Errorf("%s unreachable since %s: %v", p.addr, p.since.UTC().Format(time.RFC3339), p.err)
}
