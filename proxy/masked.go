package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// writeEnv is what a profile's Preserve hook needs to keep the stored
// token of a masked value that the app writes back (docs/RULES.md,
// "Decrypt and masks"): which keys this plan masks, what a mask shows,
// and a way to read the stored revision straight from the datastore, with
// the app's own credentials.
func (p *Proxy) writeEnv(r *http.Request, ex *exchange) *datastore.WriteEnv {
	plan := ex.plan
	return &datastore.WriteEnv{
		Keys:      p.keys,
		Masked:    func(key string) bool { return slices.Contains(plan.MaskKeys, key) },
		Candidate: plan.MaskCandidate,
		Shown: func(ctx context.Context, token []byte) ([]byte, bool) {
			return plan.ShownFor(ctx, token, p.keys)
		},
		Fetch: func(ctx context.Context, method, path, rawQuery string, body []byte) (int, []byte, error) {
			return p.fetch(ctx, r, ex, method, path, rawQuery, body)
		},
	}
}

// fetch sends one request to the datastore the exchange is bound for,
// bypassing the rules (it reads stored tokens, which stay tokens), with
// the credentials of the request it serves. The answer is capped at
// MaxBody.
func (p *Proxy) fetch(ctx context.Context, orig *http.Request, ex *exchange, method, path, rawQuery string, body []byte) (int, []byte, error) {
	var u url.URL
	t := p.transport
	switch ex.mode {
	case modeReverse:
		u = *p.upstream
		base := strings.TrimSuffix(u.EscapedPath(), "/")
		u.Path, u.RawPath = "", ""
		full, err := url.Parse(base + path)
		if err != nil {
			return 0, nil, err
		}
		u.Path, u.RawPath = full.Path, full.RawPath
	case modeForward:
		u = url.URL{Scheme: orig.URL.Scheme, Host: orig.URL.Host}
		full, err := url.Parse(path)
		if err != nil {
			return 0, nil, err
		}
		u.Path, u.RawPath = full.Path, full.RawPath
	case modeIntercepted:
		u = url.URL{Scheme: ex.target.Scheme, Host: ex.target.Host}
		full, err := url.Parse(path)
		if err != nil {
			return 0, nil, err
		}
		u.Path, u.RawPath = full.Path, full.RawPath
	}
	u.RawQuery = rawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The dialers pin forward-mode requests to the exchange's checked
	// addresses: give the fetch the same destination.
	fctx := context.WithValue(ctx, exchangeKey{}, &exchange{mode: ex.mode, dest: ex.dest, target: ex.target})
	req, err := http.NewRequestWithContext(fctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range []string{"Authorization", "Cookie"} {
		if v := orig.Header.Values(h); len(v) > 0 {
			req.Header[h] = slices.Clone(v)
		}
	}
	resp, err := t.RoundTrip(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	buf := getBuffer()
	defer putBuffer(buf)
	tooLarge, err := readCapped(resp.Body, buf, p.maxBody)
	if err != nil {
		return 0, nil, err
	}
	if tooLarge {
		return 0, nil, errors.New("proxy: stored document exceeds the body size limit")
	}
	return resp.StatusCode, bytes.Clone(buf.Bytes()), nil
}
