package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/rules"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxBody         = 16 << 20
	DefaultUpstreamTimeout = 60 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// Config configures a Proxy. The zero value of each optional field selects
// the documented default.
type Config struct {
	// Upstream is the datastore's base URL (http or https). Set, the proxy
	// runs in reverse mode; nil, in forward mode (the application sets
	// HTTP_PROXY/HTTPS_PROXY to the proxy).
	Upstream *url.URL
	// UpstreamTLS configures TLS to HTTPS upstreams (reverse mode, and
	// intercepted hosts in forward mode). Certificates are always
	// verified; nil means the system roots. UpstreamTLSConfig builds one
	// that adds a private CA (SIDECRYPT_UPSTREAM_CA).
	UpstreamTLS *tls.Config
	// StandardTransport sends every reverse-mode request through
	// net/http's Transport, even those the direct transport (direct.go)
	// would take: for comparing the two, and a way back if an upstream
	// misbehaves with it.
	StandardTransport bool
	// Engine is reverse mode's HTTP server: EngineFastHTTP ("fasthttp",
	// the default in reverse mode: fasthttp's server in front of the
	// pipeline, fastengine.go) or EngineNetHTTP ("nethttp": net/http and
	// httputil.ReverseProxy in front of the same pipeline and upstream
	// transports). Empty means the mode's default; forward mode always
	// runs on net/http. SIDECRYPT_ENGINE.
	Engine string
	// UpstreamTimeout bounds the wait for the upstream's response headers.
	// Default 60s. Streaming bodies after the headers are not bounded.
	UpstreamTimeout time.Duration
	// Rules supplies the rules in force (required): rules.Static for a
	// fixed Plan, rules.FileSource for a reloaded file. Current must be
	// cheap (an atomic load): the proxy calls it once per request and
	// uses that one Plan for the whole exchange, so a reload never splits
	// a request between two rule sets. A nil Plan means "no rules":
	// everything passes through and nothing is decrypted.
	Rules rules.Source
	// Keys resolves data keys (required): the key cache in production,
	// fieldcrypt.StaticKeyring in tests.
	Keys fieldcrypt.Keyring
	// Audit receives refusals and response open failures. Default
	// audit.Discard.
	Audit audit.Recorder
	// Observer receives metrics. Default NopObserver.
	Observer Observer
	// Logger receives one line per refusal or upstream failure (and one
	// per request at debug level). Default: discard.
	Logger *slog.Logger
	// MaxBody is the largest request body, in bytes, buffered for
	// encryption on a protected route; larger ones get 413. It bounds the
	// decoded size as well as the encoded size of a compressed body.
	// Default 16 MiB (SIDECRYPT_MAX_BODY).
	MaxBody int64
	// MaxDepth is the deepest nesting of JSON objects and arrays accepted
	// in a request body on a protected route (SIDECRYPT_MAX_DEPTH);
	// deeper bodies get 400 json_too_deep. Default, and upper bound,
	// fieldcrypt.DefaultMaxDepth: the rules compile their transformers
	// with that limit, so a larger value changes nothing.
	MaxDepth int
	// CA signs the leaf certificates for intercepted HTTPS hosts in
	// forward mode (required there; ignored in reverse mode). See InitCA
	// and LoadCA.
	CA *CA
	// ShutdownTimeout bounds the graceful drain in Serve. Default 30s.
	ShutdownTimeout time.Duration
	// PassThrough lists the destinations that forward mode may reach
	// besides the datastore the rules name (SIDECRYPT_PASSTHROUGH):
	// "host", "host:port", "*.example.com", an IP, "ip:port" or a CIDR.
	// A name reaches only public addresses; loopback, private, link-local
	// and other special addresses only when an IP or CIDR entry lists
	// them. Empty (the default): forward mode reaches the datastore only.
	PassThrough []string
	// Guard lists other listeners of this process ("host:port", the admin
	// API's) that forward mode must never reach, like the proxy's own.
	Guard []string
	// Lookup resolves host names in forward mode. Default: the system
	// resolver. Tests set it to map names without DNS.
	Lookup LookupFunc
}

// Validate checks the configuration without doing any I/O.
func (c *Config) Validate() error {
	var errs []error
	if c.Rules == nil {
		errs = append(errs, errors.New("Rules is required"))
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("Keys is required"))
	}
	if c.Upstream != nil {
		switch c.Upstream.Scheme {
		case "http", "https":
		default:
			errs = append(errs, fmt.Errorf("upstream scheme %q: want http or https", c.Upstream.Scheme))
		}
		if c.Upstream.Host == "" {
			errs = append(errs, errors.New("upstream URL has no host"))
		}
		if c.Upstream.User != nil {
			// Credentials in the URL would be logged by anyone who
			// prints the config; the application sends its own
			// Authorization header instead.
			errs = append(errs, errors.New("upstream URL must not carry credentials"))
		}
	} else if c.CA == nil {
		errs = append(errs, errors.New("forward mode (no upstream) needs an interception CA: run `sidecrypt ca init`"))
	}
	switch c.Engine {
	case "", EngineNetHTTP:
	case EngineFastHTTP:
		// Named explicitly: forward mode has no fasthttp engine (an
		// empty Engine there means net/http).
		if c.Upstream == nil {
			errs = append(errs, errors.New("engine fasthttp serves reverse mode only: set an upstream, or use the nethttp engine"))
		}
	default:
		errs = append(errs, fmt.Errorf("engine %q: want nethttp or fasthttp", c.Engine))
	}
	if c.UpstreamTLS != nil && c.UpstreamTLS.InsecureSkipVerify {
		errs = append(errs, errors.New("UpstreamTLS.InsecureSkipVerify is not allowed: upstream certificates are always verified"))
	}
	if c.MaxBody < 0 || c.MaxDepth < 0 || c.UpstreamTimeout < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("MaxBody, MaxDepth, UpstreamTimeout and ShutdownTimeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: %w: %w", ErrConfig, err)
	}
	return nil
}

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxDepth == 0 || c.MaxDepth > fieldcrypt.DefaultMaxDepth {
		c.MaxDepth = fieldcrypt.DefaultMaxDepth
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// UpstreamTLSConfig returns a TLS client configuration that trusts the
// system roots plus the PEM certificates in caFile (SIDECRYPT_UPSTREAM_CA).
// An empty caFile returns nil: the system roots alone.
func UpstreamTLSConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream CA: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("proxy: upstream CA %s: no PEM certificate found", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// engine is the HTTP engine Serve runs: Engine, or the mode's default
// when it is empty (fasthttp in reverse mode, net/http in forward mode).
func (c *Config) engine() string {
	if c.Engine != "" {
		return c.Engine
	}
	if c.Upstream != nil {
		return EngineFastHTTP
	}
	return EngineNetHTTP
}
