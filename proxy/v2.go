package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// This file applies version 2 rules: the plan's datastore profile
// classifies each request (datastore.Profile.Classify) and the pipeline
// carries out the decision. Everything the profile marks as touching a
// protected collection also gets the strict request checks below, which
// make the sidecar read a request the way the datastore will: one
// Content-Type, UTF-8 only, no byte-order mark, no method override.

var (
	refUnexpectedBody  = &refusal{http.StatusBadRequest, CodeUnexpectedBody, "this request must not carry a body on a protected collection; nothing was forwarded"}
	refCharset         = &refusal{http.StatusUnsupportedMediaType, CodeUnsupportedCharset, "a protected collection accepts JSON in UTF-8 only: remove the charset parameter or set it to utf-8"}
	refBOM             = &refusal{http.StatusBadRequest, CodeByteOrderMark, "request body starts with a byte-order mark: send plain UTF-8 JSON without one"}
	refContentType     = &refusal{http.StatusBadRequest, CodeBadContentType, "the request's Content-Type is malformed or given more than once"}
	refMediaV2         = &refusal{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "a protected collection accepts JSON bodies only (application/json, a +json type or text/plain); multipart bodies carry attachments the sidecar cannot read"}
	refTokenNotAllowed = &refusal{http.StatusForbidden, CodeTokenNotAllowed, "the request carries a sidecrypt token where this sidecar would not have put it, of a key it opens or masks: an application that sees only plaintext never sends one; nothing was forwarded (docs/FORMAT.md, section 7)"}
	refMethodOverride  = &refusal{http.StatusForbidden, CodeUnprotectedOperation, "method override (X-HTTP-Method-Override and similar headers, or a _method parameter) is refused on protected collections: the datastore could apply another method than the one the sidecar checked"}
)

// methodOverrideHeaders are the headers frameworks read to replace the
// request method ("method tunnelling").
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// protectV2 classifies the request with the plan's profile and protects
// it. It returns a refusal, having changed nothing that would be
// forwarded, when the request must not go upstream.
func (p *Proxy) protectV2(r *http.Request, ex *exchange) *refusal {
	op := ex.plan.Profile.Classify(&datastore.Request{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   r.Header,
		HasBody:  declaresBody(r),
	})
	ex.routeName = op.Endpoint
	switch op.Response {
	case datastore.ResponseNone:
		ex.decrypt = false
	case datastore.ResponseBound:
		ex.dec = op.Decryptor
		ex.decrypt = ex.decrypt && op.Decryptor != nil
	}
	if op.Refusal != nil {
		return profileRefusal(op.Refusal)
	}
	if !op.Protected() {
		return readSmallBody(r, ex)
	}
	if ref := strictRequest(r); ref != nil {
		return ref
	}
	ctx := r.Context()

	body := op.Body
	switch body {
	case datastore.BodyPass, datastore.BodyOpaque:
		// Untouched and unread.
	case datastore.BodyNone:
		if ref := requireNoBody(r); ref != nil {
			return ref
		}
	default:
		if !declaresBody(r) {
			body = datastore.BodyNone // nothing to read or rewrite
			break
		}
		if r.ContentLength > p.maxBody {
			return refTooLarge
		}
		if ct := r.Header.Get("Content-Type"); !jsonMediaType(ct) && !(body == datastore.BodyNDJSON && ndjsonMediaType(ct)) {
			return refMediaV2
		}
		if _, ok := parseCoding(r.Header); !ok {
			return refEncoding
		}
	}
	// Keys are resolved before the body is read: with the HSM down the
	// request is refused before the client sends it.
	if body == datastore.BodyEncrypt || body == datastore.BodyTransform || body == datastore.BodyNDJSON {
		for _, name := range op.Keys {
			if _, err := ex.keys.SealKey(ctx, name); err != nil {
				return p.keyRefusal(ctx, name, err)
			}
		}
	}
	if op.Query != nil && r.URL.RawQuery != "" {
		q, err := op.Query(ctx, r.URL.RawQuery, &ex.keys)
		if err != nil {
			return p.transformRefusal(ctx, ex, err, refBadQuery)
		}
		if q != r.URL.RawQuery {
			u := *r.URL
			u.RawQuery = q
			r.URL = &u
		}
	}
	switch body {
	case datastore.BodyJSON, datastore.BodyEncrypt, datastore.BodyTransform:
		out, ref := p.rewriteBodyV2(ctx, r, ex, op, body)
		if ref != nil {
			return ref
		}
		setBody(r, out)
		ex.body = out
	case datastore.BodyNDJSON:
		out, ref := p.rewriteNDJSON(ctx, r, ex, op) // ndjson.go
		if ref != nil {
			return ref
		}
		setBody(r, out)
		ex.body = out
	}
	return nil
}

// rewriteBodyV2 reads, decodes, checks and rewrites a JSON body as the
// operation says, and re-encodes it.
func (p *Proxy) rewriteBodyV2(ctx context.Context, r *http.Request, ex *exchange, op *datastore.Operation, rule datastore.BodyRule) ([]byte, *refusal) {
	c, _ := parseCoding(r.Header)
	raw := getBuffer()
	defer putBuffer(raw)
	tooLarge, err := readCapped(r.Body, raw, p.maxBody)
	if err != nil {
		if ctx.Err() != nil {
			return nil, refCanceled
		}
		return nil, refBodyRead
	}
	if tooLarge {
		return nil, refTooLarge
	}
	if raw.Len() == 0 {
		return []byte{}, nil
	}
	plain := raw.Bytes()
	if c != codingIdentity {
		dec := getBuffer()
		defer putBuffer(dec)
		actual, err := decodeCapped(c, plain, dec, p.maxBody)
		if errors.Is(err, errDecodedTooLarge) {
			return nil, refTooLarge
		}
		if err != nil {
			return nil, refBadEncoding
		}
		plain, c = dec.Bytes(), actual
	}
	if hasBOM(plain) {
		return nil, refBOM
	}
	var out []byte
	switch rule {
	case datastore.BodyJSON:
		// Ids and revisions: nothing to seal, but the body must be what
		// the datastore will read it as, one valid UTF-8 JSON document.
		if _, _, err := jsonValidator.EncryptBytes(ctx, plain, p.keys, &p.encOpts); err != nil {
			return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
		}
		if op.Check != nil {
			if err := op.Check(plain); err != nil {
				return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
			}
		}
		// Forward the bytes exactly as they came, encoding included.
		return bytes.Clone(raw.Bytes()), nil
	case datastore.BodyEncrypt:
		if op.Check != nil {
			// The body's shape, before anything is sealed: a value
			// outside the places Encryptor seals must not pass.
			if err := op.Check(plain); err != nil {
				return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
			}
		}
		if op.Preserve != nil && len(ex.plan.MaskKeys) > 0 {
			// Masked values written back keep their stored tokens
			// (masked.go).
			kept, err := op.Preserve(ctx, plain, p.writeEnv(r, ex))
			if err != nil {
				return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
			}
			plain = kept
		}
		sealed, rep, err := op.Encryptor.EncryptBytes(ctx, plain, &ex.keys, &p.encOpts)
		if err != nil {
			return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
		}
		for _, k := range rep.Keys {
			p.obs.Fields(FieldEncrypted, k.Name, k.Fields)
		}
		out = sealed
	case datastore.BodyTransform:
		// The transform holds the document in memory anyway; the depth
		// limit is checked by the same validating pass first.
		if _, _, err := jsonValidator.EncryptBytes(ctx, plain, p.keys, &p.encOpts); err != nil {
			return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
		}
		t, err := op.Transform(ctx, plain, &ex.keys)
		if err != nil {
			return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
		}
		out = t
	}
	if overlaps(out, plain) || overlaps(out, raw.Bytes()) {
		out = bytes.Clone(out)
	}
	if c != codingIdentity {
		enc, err := encode(c, out)
		if err != nil {
			return nil, refInternal
		}
		out = enc
	}
	p.obs.Bytes(ex.routeName, DirectionRequest, int64(len(out)))
	return out, nil
}

// jsonValidator checks that a body is one JSON document (valid UTF-8,
// within the depth limit, nothing after it) without changing it.
var jsonValidator = mustEncryptor(nil)

func mustEncryptor(rules []fieldcrypt.FieldRule) *fieldcrypt.Encryptor {
	e, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		panic(err)
	}
	return e
}

// transformRefusal maps an error from a profile's query or body transform
// to a refusal: the profile's own refusal, a syntax problem of the
// client's (fallback is the refusal for malformed input), or a key that
// could not be used.
func (p *Proxy) transformRefusal(ctx context.Context, ex *exchange, err error, fallback *refusal) *refusal {
	var dr *datastore.Refusal
	if errors.As(err, &dr) {
		return profileRefusal(dr)
	}
	switch {
	case errors.Is(err, fieldcrypt.ErrSyntax):
		return fallback
	case errors.Is(err, fieldcrypt.ErrTooDeep):
		return refTooDeep
	case errors.Is(err, fieldcrypt.ErrDuplicateKey):
		return refDuplicateKey
	case errors.Is(err, fieldcrypt.ErrTokenNotAllowed):
		return refTokenNotAllowed
	case errors.Is(err, fieldcrypt.ErrInvalidUTF8):
		if fallback == refBadQuery {
			return refBadQuery
		}
		return refInvalidUTF8
	}
	return p.encryptRefusal(ctx, ex, err)
}

// profileRefusal turns a profile's refusal into the pipeline's. The
// message is the profile's, which names endpoints, fields and operators,
// never a value.
func profileRefusal(r *datastore.Refusal) *refusal {
	return &refusal{status: r.Status, code: r.Code, message: r.Message}
}

// declaresBody reports whether the request says it has a body: a positive
// Content-Length, or a body of unknown length (chunked).
func declaresBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// requireNoBody refuses a request that carries a body where none may
// travel. A chunked body that turns out empty is accepted.
func requireNoBody(r *http.Request) *refusal {
	if !declaresBody(r) {
		return nil
	}
	if r.ContentLength > 0 {
		return refUnexpectedBody
	}
	var one [1]byte
	n, err := io.ReadFull(r.Body, one[:])
	if n > 0 {
		return refUnexpectedBody
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return refBodyRead
	}
	r.Body.Close()
	r.Body = http.NoBody
	r.ContentLength = 0
	r.TransferEncoding = nil
	return nil
}

// strictRequest is what every request that reaches a protected collection
// (or route) must satisfy, whatever its body: no method override, and a
// Content-Type that says nothing but UTF-8.
func strictRequest(r *http.Request) *refusal {
	for _, h := range methodOverrideHeaders {
		if _, ok := r.Header[h]; ok {
			return refMethodOverride
		}
	}
	if queryHasName(r.URL.RawQuery, "_method") {
		return refMethodOverride
	}
	cts := r.Header.Values("Content-Type")
	if len(cts) > 1 {
		return refContentType
	}
	if len(cts) == 1 && strings.TrimSpace(cts[0]) != "" && !plainMediaType(cts[0]) {
		_, params, err := mime.ParseMediaType(cts[0])
		if err != nil {
			return refContentType
		}
		for k, v := range params {
			if strings.EqualFold(k, "charset") && !strings.EqualFold(v, "utf-8") && !strings.EqualFold(v, "utf8") {
				return refCharset
			}
		}
	}
	return nil
}

// plainMediaType reports whether ct is an ASCII media type without
// parameters that mime.ParseMediaType accepts ("application/json"): a
// token, optionally "/" and a second token, between ASCII white space.
// Such a value has no charset to check, and the common case skips
// ParseMediaType, which allocates a map per call. Anything else (a ';',
// a non-ASCII byte, a malformed type) goes through ParseMediaType.
func plainMediaType(ct string) bool {
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c >= 0x80 || c == ';' {
			return false
		}
	}
	s := strings.TrimSpace(ct)
	typ := len(s) - len(strings.TrimLeftFunc(s, isTokenRune))
	if typ == 0 {
		return false
	}
	rest := s[typ:]
	if rest == "" {
		return true
	}
	if rest[0] != '/' {
		return false
	}
	rest = rest[1:]
	sub := len(rest) - len(strings.TrimLeftFunc(rest, isTokenRune))
	return sub > 0 && sub == len(rest)
}

// isTokenRune is mime's isTokenChar: a visible ASCII character that is
// not a tspecial (RFC 2045 section 5.1).
func isTokenRune(r rune) bool {
	return r > 0x20 && r < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, r)
}

// queryHasName reports whether the raw query has a parameter called name,
// splitting at '&' and ';' and unescaping names as CouchDB's server does.
func queryHasName(raw, name string) bool {
	for raw != "" {
		var seg string
		if i := strings.IndexAny(raw, "&;"); i >= 0 {
			seg, raw = raw[:i], raw[i+1:]
		} else {
			seg, raw = raw, ""
		}
		n, _, _ := strings.Cut(seg, "=")
		if u, err := url.QueryUnescape(n); err == nil {
			n = u
		}
		if n == name {
			return true
		}
	}
	return false
}

// jsonMediaType reports whether a body of this Content-Type is read as
// JSON on a protected collection: none given (the datastore parses JSON
// anyway), application/json, a +json type, or text/plain (how some
// clients label JSON). Anything else, multipart above all, is refused.
func jsonMediaType(ct string) bool {
	mt := mediaType(ct)
	return mt == "" || mt == "text/plain" || isJSONType(mt)
}

// hasBOM reports whether b starts with a byte-order mark of UTF-8, UTF-16
// or UTF-32. A store that honours it would read the body in another
// encoding than the one the sidecar checked.
func hasBOM(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}) ||
		bytes.HasPrefix(b, []byte{0xFE, 0xFF}) || bytes.HasPrefix(b, []byte{0xFF, 0xFE}) ||
		bytes.HasPrefix(b, []byte{0, 0, 0xFE, 0xFF})
}
