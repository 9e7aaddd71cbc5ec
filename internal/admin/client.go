package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// ClientConfig says how the CLI reaches a running sidecar's admin API:
// the Unix socket by default, or a TCP URL with a token or a client
// certificate.
type ClientConfig struct {
	// Socket is SIDECRYPT_ADMIN_SOCKET; used when URL is empty.
	Socket string
	// URL is SIDECRYPT_ADMIN_URL, e.g. https://sidecar:8081.
	URL string
	// Token is a bearer token (SIDECRYPT_ADMIN_CLIENT_TOKEN); on the
	// socket it names a principal other than the one the uid maps to.
	Token string
	// CA verifies an https URL's server (SIDECRYPT_ADMIN_CLIENT_CA);
	// empty uses the system roots.
	CA string
	// Cert and Key are a client certificate for mTLS.
	Cert, Key string
}

// Client calls the admin API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient builds a client.
func NewClient(c ClientConfig) (*Client, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 2, IdleConnTimeout: 10 * time.Second}
	cl := &Client{token: c.Token, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
	if c.URL == "" {
		if c.Socket == "" || c.Socket == "off" {
			return nil, fmt.Errorf("admin: no admin socket (SIDECRYPT_ADMIN_SOCKET) and no SIDECRYPT_ADMIN_URL")
		}
		sock := c.Socket
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		cl.base = "http://sidecrypt"
		return cl, nil
	}
	cl.base = strings.TrimSuffix(c.URL, "/")
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("admin: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin: %s holds no PEM certificate", c.CA)
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("admin: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = tc
	return cl, nil
}

// Do sends one request; body, when not nil, is sent as JSON (or as is,
// with contentType). It returns the status and body; err is for transport
// failures only.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, contentType string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if method != http.MethodGet && method != http.MethodHead {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("admin: %s %s: %w (is sidecrypt serve running, with this SIDECRYPT_ADMIN_SOCKET or URL?)", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// ErrorMessage extracts {"error":{"message"}} from an answer, or returns
// the body.
func ErrorMessage(body []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message + " (" + e.Error.Code + ")"
	}
	return strings.TrimSpace(string(body))
}
