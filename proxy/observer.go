package proxy

import "time"

// Outcome of one request, as reported to Observer.Request.
const (
	// OutcomeForwarded: the request went upstream and an answer came back
	// (whatever its status).
	OutcomeForwarded = "forwarded"
	// OutcomeRefused: the pipeline answered itself (4xx/5xx JSON error)
	// and forwarded nothing.
	OutcomeRefused = "refused"
	// OutcomeUpstreamError: the upstream could not be reached, timed out
	// or broke off (502/504).
	OutcomeUpstreamError = "upstream_error"
	// OutcomeCanceled: the client went away before an answer.
	OutcomeCanceled = "canceled"
)

// Field actions, as reported to Observer.Fields.
const (
	FieldEncrypted  = "encrypted"
	FieldDecrypted  = "decrypted"
	FieldMasked     = "masked"
	FieldOpenFailed = "open_failed"
)

// Directions of Observer.Bytes.
const (
	DirectionRequest  = "request"
	DirectionResponse = "response"
)

// Observer receives the proxy's metrics. The lead's Prometheus wiring
// implements it; every method is called on the request path, so it must be
// cheap and safe for concurrent use.
//
// Label values are only ever route names (empty for a request that no
// route matched), outcome and reason codes, field actions and key names:
// never a path, a query, a header value or field content.
type Observer interface {
	// Request is called once per request with the matched route, the
	// outcome, the status sent to the client and the time from arrival
	// to the response headers.
	Request(route, outcome string, status int, d time.Duration)
	// Refused is called once per refusal with the error code (see the
	// Code* constants).
	Refused(route, code string)
	// Fields counts field values transformed with one key: action is one
	// of the Field* constants.
	Fields(action, key string, n int)
	// UpstreamLatency is the time from sending the request upstream to
	// receiving its response headers.
	UpstreamLatency(route string, d time.Duration)
	// Bytes counts body bytes that the pipeline transformed: request
	// bodies as forwarded after encryption, response bodies as sent to
	// the client after decryption. Pass-through bodies are not counted,
	// since counting them would mean wrapping every stream.
	Bytes(route, direction string, n int64)
}

// NopObserver discards every observation. It is the default.
type NopObserver struct{}

func (NopObserver) Request(string, string, int, time.Duration) {}
func (NopObserver) Refused(string, string)                     {}
func (NopObserver) Fields(string, string, int)                 {}
func (NopObserver) UpstreamLatency(string, time.Duration)      {}
func (NopObserver) Bytes(string, string, int64)                {}

var _ Observer = NopObserver{}
