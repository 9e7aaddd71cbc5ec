// Command engineprobe is a pure pass-through HTTP/1.1 reverse proxy built on
// either net/http (httputil.ReverseProxy) or fasthttp (Server + HostClient).
// It exists to measure, with a load generator such as wrk, how much proxy CPU
// per request and throughput each HTTP engine costs (issue 16), optionally
// with an approximation of sidecrypt's JSON field encryption (-transform).
//
// It is its own Go module so that fasthttp never enters sidecrypt's
// dependency graph.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout bounds the graceful shutdown after SIGINT/SIGTERM.
const shutdownTimeout = 5 * time.Second

// maxBodySize bounds request bodies read into memory (fasthttp reads every
// request body fully; the transform path does so for both engines).
const maxBodySize = 64 << 20

type config struct {
	engine    string // "nethttp" or "fasthttp"
	upstream  *url.URL
	transform bool
}

func main() {
	engine := flag.String("engine", "nethttp", "HTTP engine: nethttp, nethttp-direct (net/http server and ReverseProxy, round trips on the caller's goroutine), fasthttp, or fasthttp-adaptor (fasthttp's server in front of nethttp-direct's handler)")
	listen := flag.String("listen", "127.0.0.1:8080", "listen address host:port")
	upstream := flag.String("upstream", "", "upstream base URL, e.g. http://127.0.0.1:5984")
	transform := flag.Bool("transform", false, "encrypt 4 JSON fields of POST/PUT bodies and decrypt them in GET responses")
	flag.Parse()

	cfg, err := parseConfig(*engine, *upstream, *transform)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engineprobe: %v\n", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engineprobe: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mode := ""
	if cfg.transform {
		mode = " (transform)"
	}
	fmt.Fprintf(os.Stderr, "engineprobe: %s listening on %s -> %s%s\n", cfg.engine, ln.Addr(), cfg.upstream, mode)
	if err := run(ctx, cfg, ln); err != nil {
		fmt.Fprintf(os.Stderr, "engineprobe: %v\n", err)
		os.Exit(1)
	}
}

func parseConfig(engine, upstream string, transform bool) (config, error) {
	switch engine {
	case "nethttp", "nethttp-direct", "fasthttp", "fasthttp-adaptor":
	default:
		return config{}, fmt.Errorf("-engine %q: want nethttp, nethttp-direct, fasthttp or fasthttp-adaptor", engine)
	}
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return config{}, fmt.Errorf("-upstream %q: want http://host:port", upstream)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "80")
	}
	return config{engine: engine, upstream: u, transform: transform}, nil
}

// run serves the proxy on ln until ctx is done, then shuts down gracefully
// within shutdownTimeout. It closes ln.
func run(ctx context.Context, cfg config, ln net.Listener) error {
	var tr *transformer
	if cfg.transform {
		var err error
		if tr, err = newTransformer(); err != nil {
			return err
		}
	}
	var srv interface {
		serve(net.Listener) error
		shutdown(context.Context) error
	}
	switch cfg.engine {
	case "nethttp":
		srv = newNetHTTPProxy(cfg.upstream, tr, false)
	case "nethttp-direct":
		srv = newNetHTTPProxy(cfg.upstream, tr, true)
	case "fasthttp":
		srv = newFastHTTPProxy(cfg.upstream, tr)
	case "fasthttp-adaptor":
		srv = newAdaptorProxy(cfg.upstream, tr)
	default:
		ln.Close()
		return fmt.Errorf("unknown engine %q", cfg.engine)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	serr := srv.shutdown(sctx)
	if err := <-errc; err != nil && serr == nil {
		serr = err
	}
	if errors.Is(serr, context.DeadlineExceeded) {
		return fmt.Errorf("graceful shutdown did not finish within %s", shutdownTimeout)
	}
	return serr
}
