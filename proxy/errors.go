package proxy

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrConfig: the Config is incomplete or contradictory (no rules, no
	// keyring, forward mode without a CA, a negative limit).
	ErrConfig = errors.New("invalid proxy configuration")
	// ErrCANotFound: the CA directory holds no ca.key/ca.crt pair.
	ErrCANotFound = errors.New("interception CA not found (run `sidecrypt ca init`)")
	// ErrCAExists: InitCA would overwrite an existing CA.
	ErrCAExists = errors.New("interception CA already exists")
	// ErrCAInvalid: ca.key or ca.crt is unreadable, malformed, not a CA
	// certificate, expired, or the key does not belong to the certificate.
	ErrCAInvalid = errors.New("interception CA is invalid")
)

// Error codes of the JSON error bodies the proxy writes. They are stable:
// applications and alerts may match on them. doc.go lists them with their
// statuses.
const (
	CodeBodyTooLarge        = "body_too_large"
	CodeUnsupportedMedia    = "unsupported_media_type"
	CodeUnsupportedEncoding = "unsupported_content_encoding"
	CodeBadEncoding         = "bad_content_encoding"
	CodeInvalidJSON         = "invalid_json"
	CodeTooDeep             = "json_too_deep"
	CodeDuplicateKey        = "duplicate_key"
	CodeInvalidUTF8         = "invalid_utf8"
	CodeBadQuery            = "bad_query"
	CodeBadPath             = "bad_path"
	CodeKeyUnavailable      = "key_unavailable"
	CodeUpstreamUnavailable = "upstream_unavailable"
	CodeUpstreamTimeout     = "upstream_timeout"
	CodeProxyLoop           = "proxy_loop"
	CodeNotProxyRequest     = "not_proxy_request"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeBodyRead            = "body_read_failed"
	CodeInternal            = "internal_error"
	// Codes of the strict request checks on protected collections and
	// routes, and of the datastore profiles' refusals (version 2 rules).
	CodeUnexpectedBody       = "unexpected_body"
	CodeUnsupportedCharset   = "unsupported_charset"
	CodeByteOrderMark        = "byte_order_mark"
	CodeBadContentType       = "bad_content_type"
	CodeUnprotectedOperation = datastore.CodeUnprotected
	CodeUnsupportedQuery     = datastore.CodeUnsupportedQuery
	CodeBadRequest           = datastore.CodeBadRequest
	CodeEgressRefused        = "egress_refused"
	CodeTokenNotAllowed      = "token_not_allowed"
	// CodeCanceled is counted but never seen: the client has gone.
	CodeCanceled = "client_closed_request"
)

// refusal is a request the pipeline answers itself: a status, a stable
// code and a fixed message. Messages are fixed text (plus, at most, a key
// name) so that nothing from the request body or query can reach the
// client, a log line or the audit log through them.
type refusal struct {
	status  int
	code    string
	message string
}

func (r *refusal) Error() string { return "proxy: " + r.code + ": " + r.message }

var (
	refTooLarge       = &refusal{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body exceeds the size limit for a protected route"}
	refMedia          = &refusal{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "the request body's Content-Type is not one this protected route accepts (JSON unless the rules name others)"}
	refEncoding       = &refusal{http.StatusUnsupportedMediaType, CodeUnsupportedEncoding, "a protected route accepts only identity, gzip or deflate Content-Encoding"}
	refBadEncoding    = &refusal{http.StatusBadRequest, CodeBadEncoding, "request body is not valid for its Content-Encoding"}
	refInvalidJSON    = &refusal{http.StatusBadRequest, CodeInvalidJSON, "request body is not valid JSON"}
	refTooDeep        = &refusal{http.StatusBadRequest, CodeTooDeep, "request body is nested too deeply"}
	refDuplicateKey   = &refusal{http.StatusBadRequest, CodeDuplicateKey, "request body repeats an object key on a protected path"}
	refInvalidUTF8    = &refusal{http.StatusBadRequest, CodeInvalidUTF8, "request body is not valid UTF-8"}
	refBadQuery       = &refusal{http.StatusBadRequest, CodeBadQuery, "query string is malformed on a route that protects query parameters"}
	refBadPath        = &refusal{http.StatusBadRequest, CodeBadPath, "request path contains . or .. segments (also percent-encoded), or a malformed escape"}
	refAmbiguousPath  = &refusal{http.StatusBadRequest, CodeBadPath, "request path has an empty segment (//) on a protected route: the datastore may read it differently"}
	refUpstream       = &refusal{http.StatusBadGateway, CodeUpstreamUnavailable, "the upstream could not be reached or failed"}
	refUpstreamTime   = &refusal{http.StatusGatewayTimeout, CodeUpstreamTimeout, "the upstream did not answer in time"}
	refLoop           = &refusal{http.StatusLoopDetected, CodeProxyLoop, "the request is addressed to this proxy itself"}
	refNotProxy       = &refusal{http.StatusBadRequest, CodeNotProxyRequest, "this is a forward proxy: send absolute-form requests (configure it as HTTP_PROXY)"}
	refConnectReverse = &refusal{http.StatusMethodNotAllowed, CodeMethodNotAllowed, "CONNECT is not accepted in reverse mode"}
	refInternal       = &refusal{http.StatusInternalServerError, CodeInternal, "internal error; nothing was forwarded"}
	refBodyRead       = &refusal{http.StatusBadRequest, CodeBodyRead, "request body could not be read"}
	// refCanceled: status 499 (nginx's "client closed request") is only
	// ever seen in metrics, since nobody is left to read it.
	refCanceled = &refusal{499, CodeCanceled, "client closed the request"}
)

// refKeyUnavailable names the key that could not be used; key names are
// safe to show (they are restricted to [a-z0-9_-]).
func refKeyUnavailable(key string) *refusal {
	msg := "an encryption key is unavailable; nothing was forwarded"
	if key != "" {
		msg = "encryption key " + strconv.Quote(key) + " is unavailable; nothing was forwarded"
	}
	return &refusal{http.StatusServiceUnavailable, CodeKeyUnavailable, msg}
}

// writeError writes the JSON error body. It is small and allocation-light
// because refusals can come in floods.
func writeError(w http.ResponseWriter, r *refusal) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	body := make([]byte, 0, 64+len(r.code)+len(r.message))
	body = append(body, `{"error":{"code":`...)
	body = strconv.AppendQuote(body, r.code)
	body = append(body, `,"message":`...)
	body = strconv.AppendQuote(body, r.message)
	body = append(body, "}}\n"...)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(r.status)
	_, _ = w.Write(body)
}
