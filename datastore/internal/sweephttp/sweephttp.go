// Package sweephttp is the HTTP client the profiles' store sweepers share:
// requests to the datastore's own URL (never through the sidecar), its
// credentials and the operator's extra headers on each, bounded answers,
// and errors that name an endpoint but never a document (no URL, which may
// hold an id, and no body).
package sweephttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// MaxResponse bounds an answer a sweeper reads: a page of documents, or
// one document.
const MaxResponse = 256 << 20

// Client sends a sweeper's requests.
type Client struct {
	name   string // the profile, first word of every error
	base   url.URL
	user   *url.Userinfo
	client *http.Client
	header http.Header
}

// New checks t and builds the client; name ("couchdb") starts its errors.
func New(name string, t datastore.SweepTarget) (*Client, error) {
	if t.Base == nil || t.Base.Host == "" {
		return nil, fmt.Errorf("%s: the sweep needs the datastore's URL (SIDECRYPT_UPSTREAM)", name)
	}
	c := t.Client
	if c == nil {
		c = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}, Timeout: 2 * time.Minute}
	}
	base := *t.Base
	base.RawQuery, base.Fragment = "", ""
	var user *url.Userinfo
	if base.User != nil {
		user, base.User = base.User, nil
	}
	return &Client{name: name, base: base, user: user, client: c, header: t.Header.Clone()}, nil
}

// Do sends one request to path (escaped, below the base URL's path) with
// rawQuery, and a body of type ctype when body is not nil. what names the
// request in errors ("GET /{db}/_changes"): never an id or a value.
func (c *Client) Do(ctx context.Context, what, method, path, rawQuery, ctype string, body []byte) (int, http.Header, []byte, error) {
	u := c.base
	u.RawPath = strings.TrimSuffix(c.base.EscapedPath(), "/") + path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = rawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s: %s: %w", c.name, what, redactURLError(err))
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	if c.user != nil {
		pw, _ := c.user.Password()
		req.SetBasicAuth(c.user.Username(), pw)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s: %s: %w", c.name, what, redactURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s: %s: read the answer: %w", c.name, what, err)
	}
	if len(b) > MaxResponse {
		return 0, nil, nil, fmt.Errorf("%s: %s: the answer is larger than %d bytes", c.name, what, MaxResponse)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// redactURLError drops the URL (which may hold a document id) from a
// transport error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
