package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// smallResponse: a JSON response with a known length up to this size is
// decrypted in memory and keeps an exact Content-Length; larger ones, and
// ones of unknown length (change feeds), are decrypted as they stream.
const smallResponse = 256 << 10

// A buffered response in which fieldcrypt.MayHoldTokens finds no string
// starting like a token ("sc1." or "sc2." after a quote) has nothing to
// open and skips the decrypter (the common case for traffic that no rule
// touches). An upstream that escaped the prefix letters as \uXXXX would
// have its tokens left as tokens, never exposed.

// maxAuditPaths bounds the JSON paths listed per key version in one
// open-failure audit event.
const maxAuditPaths = 16

// modifyResponse decides whether a response is decrypted and sets that up
// (httputil.ReverseProxy.ModifyResponse). An error here becomes a 502.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	ex := exchangeFrom(resp.Request.Context())
	// Whatever happens next, ReverseProxy writes headers after this.
	defer func() { ex.committed = true }()
	ex.status = resp.StatusCode
	if !ex.sent.IsZero() {
		p.obs.UpstreamLatency(ex.routeName, time.Since(ex.sent))
	}
	if !ex.decrypt || !decryptableResponse(resp) {
		return nil
	}
	c, ok := parseCoding(resp.Header)
	if !ok {
		// br, zstd, ...: the request side asked for gzip or deflate only,
		// so an upstream that still sends these is passed through as it
		// is. Its tokens stay tokens: nothing is exposed.
		return nil
	}
	if mediaType(resp.Header.Get("Content-Type")) == "text/event-stream" {
		p.decryptEvents(resp, ex, c)
		return nil
	}
	if c == codingIdentity && resp.ContentLength > 0 && resp.ContentLength <= smallResponse {
		return p.decryptBuffered(resp, ex)
	}
	p.decryptStreaming(resp, ex, c)
	return nil
}

// decryptableResponse: a body that may hold JSON with tokens. text/plain is
// included because CouchDB labels JSON text/plain for clients that do not
// ask for application/json; non-JSON text passes through the lenient
// decrypter unchanged.
func decryptableResponse(resp *http.Response) bool {
	if resp.Request.Method == http.MethodHead || resp.StatusCode < 200 ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified ||
		resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength == 0 {
		return false
	}
	if len(resp.Header["Content-Type"]) > 1 {
		// Which line counts is anyone's guess (net/http's Get takes the
		// first, other readers the last): an ambiguous response is passed
		// on as it came, its tokens left tokens.
		return false
	}
	switch mt := mediaType(resp.Header.Get("Content-Type")); mt {
	case "application/x-ndjson", "application/jsonl", "application/json-lines", "text/plain", "text/event-stream":
		return true
	default:
		return isJSONType(mt)
	}
}

var decryptOptions = fieldcrypt.CallOptions{Stream: true, Lenient: true}

func (p *Proxy) decryptBuffered(resp *http.Response, ex *exchange) error {
	// The length is known and small: read into a slice of exactly that
	// size, which becomes the response body as it is when it holds no
	// token (the common case), with no copy and no pool.
	in := make([]byte, resp.ContentLength)
	_, err := io.ReadFull(resp.Body, in)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("proxy: read upstream response: %w", err)
	}
	out := in
	var rep fieldcrypt.Report
	if fieldcrypt.MayHoldTokens(in) {
		opts := decryptOptions
		out, rep, err = ex.dec.DecryptBytes(resp.Request.Context(), in, p.keys, &opts)
		if err != nil {
			// Lenient decryption fails only when the request is gone or
			// the decrypter broke; the untouched bytes hold tokens, not
			// plaintext, so they are the safe answer.
			p.log.LogAttrs(resp.Request.Context(), slog.LevelDebug, "response decryption failed",
				slog.String("route", ex.routeName), slog.String("error", err.Error()))
			out, rep = in, fieldcrypt.Report{}
		}
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
		if len(rep.Keys) > 0 || rep.Masked > 0 {
			dropDigests(resp.Header)
		}
	}
	resp.Body = &bytesBody{b: out}
	resp.ContentLength = int64(len(out))
	p.reportDecrypt(resp.Request, ex, rep, int64(len(out)))
	return nil
}

// decryptStreaming replaces the body by a pipe fed by a goroutine that
// decodes and decrypts the upstream body value by value, writing each out
// before it waits for more input, so that a change feed reaches the client
// line by line. The response goes out chunked (ContentLength -1, which
// also makes ReverseProxy flush after every write) and, if it was gzip or
// deflate, as identity: the client asked for that coding among others and
// identity is always acceptable, while re-compressing a stream would hold
// back lines.
func (p *Proxy) decryptStreaming(resp *http.Response, ex *exchange, c coding) {
	src := resp.Body
	pr, pw := io.Pipe()
	resp.Body = pr
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	if c != codingIdentity {
		resp.Header.Del("Content-Encoding")
	}
	dropDigests(resp.Header)
	go p.decryptStream(resp.Request, ex, src, pw, c)
}

func (p *Proxy) decryptStream(req *http.Request, ex *exchange, src io.ReadCloser, pw *io.PipeWriter, c coding) {
	defer src.Close()
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("proxy: panic in response decryption",
				"route", ex.routeName, "panic_type", fmt.Sprintf("%T", v))
			pw.CloseWithError(errors.New("proxy: response decryption failed"))
		}
	}()
	dec, _, err := newDecoder(c, src)
	if err != nil {
		pw.CloseWithError(fmt.Errorf("proxy: decode upstream response: %w", err))
		return
	}
	defer dec.Close()
	cw := &countingWriter{w: pw}
	opts := decryptOptions
	opts.Flush = flushNothing
	rep, err := ex.dec.Decrypt(req.Context(), cw, dec, p.keys, &opts)
	// Counted and audited before the response ends, so that a client that
	// has read it to the end finds any failure on record.
	p.reportDecrypt(req, ex, rep, cw.n)
	// nil closes the pipe with EOF: the response ends normally. An error
	// (the upstream broke off) makes ReverseProxy abort the client
	// connection, so a truncated stream never looks complete.
	pw.CloseWithError(err)
}

// flushNothing: the pipe hands every write to ReverseProxy at once, and
// ReverseProxy flushes each to the client. Setting Flush still matters: it
// tells the decrypter to write out what it has before it blocks.
func flushNothing() error { return nil }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// dropDigests removes headers that describe the upstream's bytes, which
// no longer match once tokens are opened.
func dropDigests(h http.Header) {
	for _, k := range []string{"Content-Md5", "Digest", "Content-Digest", "Repr-Digest"} {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
}

// reportDecrypt counts what the decrypter did and audits tokens that failed
// to open: one event per response, grouped by key version, with paths and
// never values.
func (p *Proxy) reportDecrypt(req *http.Request, ex *exchange, rep fieldcrypt.Report, n int64) {
	for _, k := range rep.Keys {
		action := FieldDecrypted
		if slices.Contains(ex.plan.MaskKeys, k.Name) {
			action = FieldMasked
		}
		p.obs.Fields(action, k.Name, k.Fields)
	}
	p.obs.Bytes(ex.routeName, DirectionResponse, n)
	failures := rep.Failures[:0:0]
	for _, f := range rep.Failures {
		// The lenient decrypter reports a body that is not JSON (or stops
		// being JSON) as a keyless syntax failure and copies the rest
		// through: normal for text/plain, and not a token failure.
		if f.Key == "" && (errors.Is(f.Err, fieldcrypt.ErrSyntax) || errors.Is(f.Err, fieldcrypt.ErrTooDeep) || errors.Is(f.Err, fieldcrypt.ErrInvalidUTF8)) {
			continue
		}
		failures = append(failures, f)
	}
	if len(failures) == 0 {
		return
	}
	type group struct {
		key     string
		version uint32
		paths   []string
		count   int
	}
	var groups []*group
	for _, f := range failures {
		var g *group
		for _, x := range groups {
			if x.key == f.Key && x.version == f.Version {
				g = x
				break
			}
		}
		if g == nil {
			g = &group{key: f.Key, version: f.Version}
			groups = append(groups, g)
		}
		g.count++
		if len(g.paths) < maxAuditPaths {
			g.paths = append(g.paths, f.Path)
		}
	}
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].key != groups[j].key {
			return groups[i].key < groups[j].key
		}
		return groups[i].version < groups[j].version
	})
	ev := audit.Event{
		Time:    time.Now().UTC(),
		Actor:   "proxy",
		Action:  "response.open_failed",
		Rules:   ex.plan.Hash,
		Outcome: "error",
		Reason:  "tokens that could not be opened were left in the response",
		Details: map[string]string{
			"method":   req.Method,
			"status":   strconv.Itoa(ex.status),
			"failures": strconv.Itoa(len(failures)),
		},
	}
	if ex.routeName != "" {
		ev.Details["route"] = ex.routeName
	}
	keys := make([]string, 0, len(groups))
	perKey := map[string]int{}
	for _, g := range groups {
		name := fmt.Sprintf("%s v%d", g.key, g.version)
		if g.key == "" {
			name = "unparsable"
		}
		keys = append(keys, name)
		paths := strings.Join(g.paths, " ")
		if g.count > len(g.paths) {
			paths += fmt.Sprintf(" (+%d more)", g.count-len(g.paths))
		}
		ev.Details["paths "+name] = paths
		perKey[g.key] += g.count
	}
	if len(groups) == 1 {
		ev.Key, ev.Version = groups[0].key, groups[0].version
	}
	ev.Details["keys"] = strings.Join(keys, ", ")
	for k, c := range perKey {
		p.obs.Fields(FieldOpenFailed, k, c)
	}
	ctx := context.WithoutCancel(req.Context())
	p.log.LogAttrs(ctx, slog.LevelWarn, "tokens left unopened in response",
		slog.String("route", ex.routeName), slog.Int("count", len(failures)),
		slog.String("keys", ev.Details["keys"]))
	if err := p.audit.Record(ctx, ev); err != nil {
		p.log.Error("proxy: audit open failures", "error", err)
	}
}

// bytesBody is a response body in memory: one allocation where
// io.NopCloser(bytes.NewReader(b)) takes two, on every small response.
type bytesBody struct {
	b []byte
}

func (r *bytesBody) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// WriteTo lets io.Copy hand the whole body to the writer at once.
func (r *bytesBody) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r.b)
	r.b = r.b[n:]
	return int64(n), err
}

func (r *bytesBody) Close() error { return nil }
