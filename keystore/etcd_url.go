package keystore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultEtcdPrefix is where an etcd:// URL without a path keeps sidecrypt's
// records.
const DefaultEtcdPrefix = "/sidecrypt"

// EtcdURL is a parsed etcd:// or etcds:// URL:
//
//	etcd://host:2379,host:2379/prefix     plain gRPC
//	etcds://host:2379,host:2379/prefix    TLS (or plain etcd:// with SIDECRYPT_ETCD_CA/CERT/KEY)
//
// A host without a port gets etcd's client port, 2379. An empty host list
// (etcd:///sidecrypt/rules) means "the keystore's endpoints"; only a rules
// URL may say that.
type EtcdURL struct {
	Endpoints []string // host:port, in the order given
	// Path is the URL's path as given, without a trailing slash; "" when
	// the URL has none.
	Path string
	TLS  bool // etcds://
}

// IsEtcdURL reports whether s names etcd rather than a file.
func IsEtcdURL(s string) bool {
	return strings.HasPrefix(s, "etcd://") || strings.HasPrefix(s, "etcds://")
}

// ParseEtcdURL parses an etcd:// or etcds:// URL. Credentials, queries and
// fragments are refused: etcd authentication is by client certificate
// (SIDECRYPT_ETCD_CERT/KEY), so that no password sits in an environment
// variable that logs and `ps e` show.
func ParseEtcdURL(raw string) (EtcdURL, error) {
	var u EtcdURL
	rest, ok := strings.CutPrefix(raw, "etcd://")
	if !ok {
		if rest, ok = strings.CutPrefix(raw, "etcds://"); !ok {
			return u, fmt.Errorf("keystore: %q is not an etcd:// or etcds:// URL", raw)
		}
		u.TLS = true
	}
	if strings.ContainsAny(rest, "?#") {
		return u, fmt.Errorf("keystore: etcd URL %q: query and fragment are not supported", raw)
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if strings.Contains(hosts, "@") {
		return u, fmt.Errorf("keystore: etcd URL %q: credentials in the URL are not supported; use client certificates (SIDECRYPT_ETCD_CERT, SIDECRYPT_ETCD_KEY)", redactEtcdURL(raw))
	}
	if hosts != "" {
		for _, h := range strings.Split(hosts, ",") {
			ep, err := endpoint(h)
			if err != nil {
				return u, fmt.Errorf("keystore: etcd URL %q: %w", raw, err)
			}
			u.Endpoints = append(u.Endpoints, ep)
		}
	}
	if path != "" {
		u.Path = "/" + strings.TrimRight(path, "/")
		if u.Path == "/" {
			u.Path = ""
		}
		if strings.Contains(u.Path, "//") {
			return u, fmt.Errorf("keystore: etcd URL %q: empty path segment", raw)
		}
	}
	return u, nil
}

// endpoint checks one host[:port] of the list.
func endpoint(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", errors.New("empty host in the host list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: etcd's client port.
		if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
			return "", fmt.Errorf("host %q: %v", h, err)
		}
		host, port = strings.Trim(h, "[]"), "2379"
	}
	if host == "" {
		return "", fmt.Errorf("host %q: no host name", h)
	}
	if strings.Contains(host, ":") {
		if net.ParseIP(host) == nil {
			return "", fmt.Errorf("host %q: invalid IPv6 address", h)
		}
	} else if strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
		return "", fmt.Errorf("host %q: invalid host name", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: invalid port", h)
	}
	return net.JoinHostPort(host, port), nil
}

// redactEtcdURL drops any userinfo, for error messages.
func redactEtcdURL(raw string) string {
	scheme, rest, _ := strings.Cut(raw, "://")
	hosts, path, hasPath := strings.Cut(rest, "/")
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		hosts = "REDACTED@" + hosts[i+1:]
	}
	if hasPath {
		return scheme + "://" + hosts + "/" + path
	}
	return scheme + "://" + hosts
}

// Prefix returns the keystore prefix the URL names: its path, or
// DefaultEtcdPrefix.
func (u EtcdURL) Prefix() string {
	if u.Path == "" {
		return DefaultEtcdPrefix
	}
	return u.Path
}

// String gives the URL back in canonical form.
func (u EtcdURL) String() string {
	scheme := "etcd://"
	if u.TLS {
		scheme = "etcds://"
	}
	return scheme + strings.Join(u.Endpoints, ",") + u.Path
}

// EtcdTLS names PEM files for the TLS client settings
// (SIDECRYPT_ETCD_CA, SIDECRYPT_ETCD_CERT, SIDECRYPT_ETCD_KEY).
type EtcdTLS struct {
	CA   string // CA certificates that sign the etcd servers' certificates; empty: system roots
	Cert string // client certificate, for etcd's --client-cert-auth
	Key  string // its private key
}

// Enabled reports whether any file is set, which turns TLS on even for an
// etcd:// URL.
func (t EtcdTLS) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// Config builds the tls.Config: TLS 1.2 or later, the CA file's roots (or
// the system's), and the client certificate when one is given.
func (t EtcdTLS) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("keystore: SIDECRYPT_ETCD_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("keystore: SIDECRYPT_ETCD_CA: %s holds no PEM certificate", t.CA)
		}
		c.RootCAs = pool
	}
	switch {
	case t.Cert != "" && t.Key != "":
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			// LoadX509KeyPair's errors name files and formats, never key
			// bytes.
			return nil, fmt.Errorf("keystore: SIDECRYPT_ETCD_CERT/SIDECRYPT_ETCD_KEY: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	case t.Cert != "" || t.Key != "":
		return nil, errors.New("keystore: set both SIDECRYPT_ETCD_CERT and SIDECRYPT_ETCD_KEY, or neither")
	}
	return c, nil
}

// EtcdClientConfig is the clientv3 configuration sidecrypt uses for u.
//
// The client dials without blocking (a sidecar starts, and reports
// not-ready, while etcd is down), reconnects with a back-off capped at two
// seconds (gRPC's default cap is two minutes, far too slow to notice that
// etcd is back), and pings an idle connection every 5s so that a silent
// partition is noticed within about 8s. The client's own zap logging is
// off: the store logs through slog what an operator needs.
func EtcdClientConfig(u EtcdURL, files EtcdTLS) (clientv3.Config, error) {
	if len(u.Endpoints) == 0 {
		return clientv3.Config{}, fmt.Errorf("keystore: etcd URL %q names no host", u.String())
	}
	cfg := clientv3.Config{
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream:  true,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 2 * time.Second,
			}),
		},
	}
	scheme := "http://"
	if u.TLS || files.Enabled() {
		tc, err := files.Config()
		if err != nil {
			return clientv3.Config{}, err
		}
		cfg.TLS = tc
		scheme = "https://"
	}
	for _, ep := range u.Endpoints {
		cfg.Endpoints = append(cfg.Endpoints, scheme+ep)
	}
	return cfg, nil
}

// NewEtcdClient returns a client for u. It does not wait for a connection.
func NewEtcdClient(u EtcdURL, files EtcdTLS) (*clientv3.Client, error) {
	cfg, err := EtcdClientConfig(u, files)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("keystore: etcd client for %s: %w", u.String(), err)
	}
	return cli, nil
}
