package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"unsafe"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// protect applies the matched route's rules to r, which the pipeline owns
// (a shallow copy of the server's request): query parameters are sealed,
// the JSON body is read under the size cap, decoded, encrypted, re-encoded
// and put back with its length. It returns a refusal, and changes nothing
// that would be forwarded, when any step fails.
func (p *Proxy) protect(r *http.Request, ex *exchange) *refusal {
	route := ex.route
	ctx := r.Context()
	needQuery := route.HasQueryRules() && r.URL.RawQuery != ""
	needBody := route.HasBodyRules() && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if !needQuery && !needBody {
		return nil
	}
	// Checks that need no body come first, so that a request refused for
	// its headers is refused before the client sends the body (with
	// Expect: 100-continue it never does).
	var c coding
	if needBody {
		if r.ContentLength > p.maxBody {
			return refTooLarge
		}
		if r.ContentLength > 0 && !route.AcceptsContentType(mediaType(r.Header.Get("Content-Type"))) {
			return refMedia
		}
		var ok bool
		if c, ok = parseCoding(r.Header); !ok {
			return refEncoding
		}
	}
	// Every key the route seals with is resolved before a body is read:
	// with the HSM or key store down, the request is refused at once,
	// before the client sends the body. A query alone resolves only the
	// keys of the parameters it actually carries (in sealQuery), so that
	// reads that name no protected parameter keep working in an outage.
	if needBody {
		for _, name := range route.Keys {
			if _, err := ex.keys.SealKey(ctx, name); err != nil {
				return p.keyRefusal(ctx, name, err)
			}
		}
	}

	if needQuery {
		counts := make(map[string]int, len(route.Query))
		q, ref := sealQuery(ctx, r.URL.RawQuery, route.Query, &ex.keys, counts)
		if ref != nil {
			return ref
		}
		if q != r.URL.RawQuery {
			u := *r.URL
			u.RawQuery = q
			r.URL = &u
		}
		for k, n := range counts {
			p.obs.Fields(FieldEncrypted, k, n)
		}
	}
	if needBody {
		body, ref := p.sealBody(ctx, r, ex, c)
		if ref != nil {
			return ref
		}
		setBody(r, body)
		ex.body = body
	}
	return nil
}

// sealBody reads, decodes, encrypts and re-encodes the request body.
func (p *Proxy) sealBody(ctx context.Context, r *http.Request, ex *exchange, c coding) ([]byte, *refusal) {
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
	// A chunked body announces no length, so its type is checked only
	// now that it turned out not to be empty.
	if !ex.route.AcceptsContentType(mediaType(r.Header.Get("Content-Type"))) {
		return nil, refMedia
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
	// The operator's depth limit (SIDECRYPT_MAX_DEPTH) applies in the same
	// pass as the encryption.
	sealed, rep, err := ex.route.Body.EncryptBytes(ctx, plain, &ex.keys, &p.encOpts)
	if err != nil {
		return nil, p.encryptRefusal(ctx, ex, err)
	}
	// The input lives in a pooled buffer that is reused once this returns;
	// an implementation that hands back its input unchanged must not make
	// the forwarded body share it.
	if overlaps(sealed, plain) {
		sealed = bytes.Clone(sealed)
	}
	for _, k := range rep.Keys {
		p.obs.Fields(FieldEncrypted, k.Name, k.Fields)
	}
	if c != codingIdentity {
		if sealed, err = encode(c, sealed); err != nil {
			return nil, refInternal
		}
	}
	p.obs.Bytes(ex.routeName, DirectionRequest, int64(len(sealed)))
	return sealed, nil
}

// setBody replaces r's body by b and fixes the framing: a fixed
// Content-Length and no chunking. The outgoing request also loses its
// Expect header (rewrite drops it when the exchange's body is in memory:
// the body is already here, and making the upstream confirm it first
// would only add a round trip). r's header is left as it is: it is the
// client's, shared with the server's request, and the Transport writes
// Content-Length from r.ContentLength, never from the header.
func setBody(r *http.Request, b []byte) {
	if len(b) == 0 {
		r.Body = http.NoBody
		r.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	} else {
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
}

// encryptRefusal maps an error of the body transformer to a refusal. The
// transformer's syntax errors are the client's; anything else means the
// fields could not be protected right now (a key that vanished between
// the check and the seal, a zeroed key), which is a 503 like an HSM outage.
func (p *Proxy) encryptRefusal(ctx context.Context, ex *exchange, err error) *refusal {
	switch {
	case errors.Is(err, fieldcrypt.ErrSyntax):
		return refInvalidJSON
	case errors.Is(err, fieldcrypt.ErrTooDeep):
		return refTooDeep
	case errors.Is(err, fieldcrypt.ErrDuplicateKey):
		return refDuplicateKey
	case errors.Is(err, fieldcrypt.ErrTokenNotAllowed):
		return refTokenNotAllowed
	case errors.Is(err, fieldcrypt.ErrInvalidUTF8):
		return refInvalidUTF8
	case ctx.Err() != nil:
		return refCanceled
	}
	// fieldcrypt's errors name paths and keys, never values.
	p.log.LogAttrs(ctx, slog.LevelWarn, "encryption failed",
		slog.String("route", ex.routeName), slog.String("error", err.Error()))
	return refKeyUnavailable("")
}

// keyRefusal reports a key that could not be resolved.
func (p *Proxy) keyRefusal(ctx context.Context, name string, err error) *refusal {
	if ctx.Err() != nil {
		return refCanceled
	}
	p.log.LogAttrs(ctx, slog.LevelWarn, "key unavailable",
		slog.String("key", name), slog.String("error", err.Error()))
	return refKeyUnavailable(name)
}

// overlaps reports whether a and b share memory.
func overlaps(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0, b0 := uintptr(unsafe.Pointer(unsafe.SliceData(a))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return a0 < b0+uintptr(cap(b)) && b0 < a0+uintptr(cap(a))
}
