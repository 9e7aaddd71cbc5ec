package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestUpstreamProbe: /readyz's upstream check follows the datastore going
// away and coming back, and logs each change once.
func TestUpstreamProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var logs bytes.Buffer
	u, _ := url.Parse("http://" + addr)
	p := newUpstreamProbe(u, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	if err := p.Ready(ctx); err == nil || !strings.Contains(err.Error(), "not probed yet") {
		t.Fatalf("before the first probe: %v", err)
	}
	p.probe(ctx)
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("listening upstream: %v", err)
	}
	ln.Close()
	p.probe(ctx)
	p.probe(ctx)
	if err := p.Ready(ctx); err == nil || !strings.Contains(err.Error(), addr+" unreachable since") {
		t.Fatalf("closed upstream: %v", err)
	}
	if n := strings.Count(logs.String(), "upstream unreachable"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer ln.Close()
	p.probe(ctx)
	if err := p.Ready(ctx); err != nil || !strings.Contains(logs.String(), "upstream reachable again") {
		t.Fatalf("back: %v\n%s", err, logs.String())
	}

	// Run stops with its context.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(rctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}

	// Default ports.
	for in, want := range map[string]string{"http://db": "db:80", "https://db": "db:443", "https://[::1]:6984/x": "[::1]:6984"} {
		u, _ := url.Parse(in)
		if got := newUpstreamProbe(u, slog.Default()).addr; got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
