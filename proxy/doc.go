// Package proxy is sidecrypt's HTTP side: a sidecar that sits between an
// application and its datastore's HTTP API, encrypts the JSON fields and
// query parameters that the rules name on the way in, and opens (or masks)
// tokens on the way out. The application is not changed: it points its
// datastore URL at the sidecar (reverse mode) or sets HTTP_PROXY and
// HTTPS_PROXY to it (forward mode).
//
// # Building and running
//
//	p, err := proxy.New(proxy.Config{
//		Upstream: upstreamURL,          // nil for forward mode
//		Rules:    ruleSource,           // rules.Static(plan) or a rules.FileSource
//		Keys:     keyring,              // the key cache
//		CA:       ca,                   // forward mode only: proxy.LoadCA(dir)
//		Audit:    auditLog,
//		Observer: metrics,
//		Logger:   logger,
//		MaxBody:  16 << 20,
//	})
//	err = p.Serve(ctx, listener)      // drains when ctx ends
//
// Config documents every setting and its default; Config.Validate checks
// one without I/O. A Proxy is also an http.Handler.
//
// # The pipeline
//
// Every request, in every mode (reverse, forward plain HTTP, and requests
// inside an intercepted HTTPS tunnel), takes the same path:
//
//  1. The rules in force are read once (Rules.Current, an atomic load); that
//     one Plan serves the whole exchange, so a reload never splits a request
//     between two rule sets.
//  2. A path with a "." or ".." segment (also percent-encoded) is refused
//     (bad_path): an upstream that resolved it could store a body where
//     no rule looked.
//  3. Forward mode only: the destination is resolved and checked (see
//     "Forward mode" below); the datastore is recognised by every name
//     and address that reaches it, and anything else not listed is
//     refused.
//  4. Version 2 rules: the plan's datastore profile classifies the
//     request (datastore.Profile.Classify) and the pipeline carries out
//     the decision (v2.go). Version 1 rules: the Plan picks the first
//     matching route by method, path and (forward mode) host. Paths are
//     read as the datastore reads them, split at '/' before unescaping:
//     "/clinic/a%2Fb" is the document "a/b" in "clinic".
//  5. A request that reaches a protected collection (or matches a route)
//     gets the strict checks, then is protected, or refused with nothing
//     forwarded (see below).
//  6. The request goes upstream through httputil.ReverseProxy: hop-by-hop
//     headers removed, X-Forwarded-For/Host/Proto set (reverse mode only),
//     the query string passed exactly as sent (after sealing).
//  7. The response is decrypted if it may hold tokens (see below).
//
// # Strict checks
//
// A request that reaches a protected collection (version 2) or matches a
// route (version 1) must be read by the datastore exactly as the sidecar
// checked it: one Content-Type header; no charset but UTF-8 (a store that
// honours charset=utf-7 reads "+AHM-sn" as "ssn"); no byte-order mark; no
// method override (X-HTTP-Method-Override, X-HTTP-Method,
// X-Method-Override, a _method parameter). Version 2 reads every body of a
// protected collection as JSON whatever its label, as CouchDB does, and
// refuses media types other than JSON, +json and text/plain (multipart
// carries attachments it cannot read); an empty segment ("//") on a
// version 1 route is refused as ambiguous.
//
// A request that no route matches streams through untouched and
// unbuffered in both directions (a 1 GiB upload is tested to keep the heap
// bounded).
//
// # Protecting a request
//
// On a route with query rules, every occurrence of a named parameter is
// replaced by fieldcrypt.SealString of its value, so that a deterministic
// token in a query equals the one stored in a document. '&' and ';' both
// separate parameters, as CouchDB's parser reads them; a parameter name or
// protected value that does not unescape (or is not UTF-8) is refused.
// Every other byte of the query is left as it was.
//
// On a route with body rules, a non-empty body must have a media type that
// the route accepts (JSON and +json by default): a mislabelled body would
// otherwise bypass encryption. The body is read under MaxBody (a declared
// Content-Length over it is refused before reading, so an Expect:
// 100-continue client never sends it), decoded if its Content-Encoding is
// gzip or deflate (zlib, or raw DEFLATE as some clients send; the decoded
// size is capped too), encrypted by the route's fieldcrypt.Encryptor,
// re-encoded the way it came, and forwarded with an exact Content-Length
// and no Expect header (the body is already in hand). Every key the route
// seals with is resolved before the body is read, so an HSM outage refuses
// at once (503) and the client never sends the body. A request that carries
// no body and no protected query parameter needs no key and passes even
// during an outage.
//
// # Refusals
//
// A refused request gets a JSON body {"error":{"code":"...","message":"..."}}
// with one of these stable codes, one Observer.Refused call, one audit event
// (action "request.refused", reason = the code; recorded before the client
// sees the answer) and one log line. Nothing is forwarded. Messages are
// fixed text: no request content can reach them.
//
//	status  code                          when
//	400     bad_path                      a "." or ".." path segment, a bad escape, "//" on a route
//	400     bad_request                   the profile cannot read the request as the store would
//	400     bad_content_type              a malformed or repeated Content-Type on a protected request
//	400     byte_order_mark               a body that starts with a byte-order mark
//	400     unexpected_body               a body where the profile allows none (a read, a delete)
//	400     unsupported_query             a comparison that cannot work on an encrypted field
//	400     bad_query                     a malformed query on a route with query rules
//	400     bad_content_encoding          a gzip/deflate body that does not decode
//	400     body_read_failed              the client's body broke off
//	400     invalid_json                  the body is not one JSON value
//	400     json_too_deep                 nesting past MaxDepth (SIDECRYPT_MAX_DEPTH)
//	400     duplicate_key                 an object repeats a key on a protected path
//	400     invalid_utf8                  the body is not UTF-8
//	400     not_proxy_request             forward mode got an origin-form request
//	403     unprotected_operation         the profile does not know the request to be safe (deny by
//	                                      default), or a method override on a protected request
//	403     egress_refused                forward mode: a destination neither the datastore nor listed
//	405     method_not_allowed            CONNECT in reverse mode
//	413     body_too_large                over MaxBody, declared, streamed or decoded
//	415     unsupported_media_type        a body type the route does not accept
//	415     unsupported_content_encoding  br, zstd, compress, or stacked codings
//	415     unsupported_charset           a charset other than UTF-8 on a protected request
//	500     internal_error                a panic before forwarding (nothing forwarded)
//	502     upstream_unavailable          the upstream could not be reached or failed
//	503     key_unavailable               a key, the key store or the HSM is unavailable
//	504     upstream_timeout              no response headers within UpstreamTimeout
//	508     proxy_loop                    the request (or CONNECT) names this proxy's own address
//
// 502 and 504 are not refusals (the request may have reached the
// upstream); they are logged and counted with outcome "upstream_error", not
// audited.
//
// # Responses
//
// A response is run through the Plan's fieldcrypt.Decryptor, in lenient
// streaming mode, when the plan opens or masks some key and the response
// may hold JSON: application/json, application/*+json,
// application/x-ndjson, application/jsonl, and text/plain (CouchDB labels
// JSON text/plain for clients that do not ask for application/json;
// non-JSON text passes through the lenient decrypter unchanged). HEAD,
// 1xx, 204 and 304 responses and every other media type pass untouched.
//
// Tokens of keys the plan opens are replaced by their values, with their
// JSON types (a number past 2^53 comes back digit for digit); masked keys
// are masked; other tokens stay tokens. A token that fails to open
// (tampered, destroyed or unknown key) stays as it is; the response never
// fails because of it. Such failures are counted (Observer.Fields with
// FieldOpenFailed) and audited once per response (action
// "response.open_failed"), grouped by key version with JSON paths, never
// values.
//
// A response of known length up to 256 KiB is decrypted in memory and
// keeps an exact Content-Length. Larger ones, and ones of unknown length,
// are decrypted as they stream, value by value: each top-level value of a
// line-delimited stream (a CouchDB continuous _changes feed, NDJSON)
// reaches the client as soon as it is complete. They go out chunked.
//
// Compression: while a plan decrypts, the request's Accept-Encoding is
// reduced to the codings the sidecar can decode (gzip, deflate, identity),
// so that an upstream never answers in one it cannot open. A gzip or
// deflate JSON response is decoded and served as identity (the client
// offered identity implicitly; re-compressing a stream would hold lines
// back). A response in any other coding passes through untouched, its
// tokens unopened.
//
// # HTTP behaviour
//
// HEAD, 204, 304, chunked bodies, Expect: 100-continue and keep-alive
// connections behave as they do without the sidecar; a table test sends
// each case directly and through the sidecar and compares what the client
// sees. The upstream Transport keeps up to 512 idle connections (the
// sidecar talks to one host), verifies TLS against the system roots plus
// UpstreamTLSConfig's CA file, never follows the environment's
// HTTP_PROXY (it would point back at the sidecar), adds no compression of
// its own, and speaks HTTP/1.1 only: on a loopback hop, HTTP/2
// multiplexing gains nothing, and HTTP/1.1 keeps streaming and
// 100-continue semantics plain.
//
// In reverse mode with a plain-HTTP upstream, requests with no body or a
// body already in memory (sealed bodies, and unmatched ones up to 64 KiB)
// take the direct transport instead (direct.go): the same request writer
// and response parser as the Transport, the same dialer with its loop and
// egress checks, the same idle limits and response-header timeout, but
// the round trip runs on the request's goroutine instead of being handed
// to a connection's read and write loops, which costs 10-25% less CPU per
// request (docs/BENCHMARKS.md). Streamed uploads, Expect: 100-continue,
// upgrades and TLS upstreams keep the Transport. Config.StandardTransport
// (SIDECRYPT_UPSTREAM_TRANSPORT=standard) turns the direct path off.
//
// # HTTP engines
//
// Reverse mode is served by fasthttp's server (Config.Engine "fasthttp",
// the default in reverse mode, fastengine.go) or by net/http ("nethttp",
// SIDECRYPT_ENGINE=nethttp). Both run the same request half of the
// pipeline (prepare), the same upstream transports and the same response
// decryption; only the client-facing server differs, and with it what is
// refused before the pipeline sees a request (fasthttp's parser) and a
// few things the fasthttp engine does not carry: 1xx responses, protocol
// upgrades, response trailers. fasthttp was chosen by measurement: 12-46%
// less CPU per request than net/http's server and httputil.ReverseProxy
// for the same pipeline (docs/BENCHMARKS.md, issue 16). make test runs
// this package's tests and the end-to-end attack suite on both.
//
// # Forward mode and interception
//
// In forward mode, absolute-form requests (plain HTTP) enter the pipeline
// directly; CONNECT is handled by github.com/elazarl/goproxy. Every request
// and every CONNECT is decided on the addresses the sidecar will connect
// to (egress.go):
//
//   - The datastore the rules name (version 2 "hosts", version 1 route
//     hosts) is recognised by every name and address that reaches it: a
//     destination whose resolved address is one of the datastore's is the
//     datastore, whatever the application called it, and gets the rules;
//     a CONNECT to it is intercepted.
//   - Version 1 routes with "*.example.com" hosts, or without hosts,
//     intercept what they match, at public addresses only.
//   - Anything else must be listed in Config.PassThrough
//     (SIDECRYPT_PASSTHROUGH) and is then passed, or tunnelled, untouched;
//     a listed name reaches public addresses only, and loopback, private,
//     link-local (cloud metadata) and other special addresses only when an
//     IP or CIDR entry lists them. Unlisted requests get 403
//     egress_refused, unlisted CONNECTs a 403 on the raw connection.
//   - The proxy's own listener and Config.Guard (the admin API) are never
//     reached (508 proxy_loop).
//
// The checked addresses are pinned: the request goes to one of them, never
// to a second resolution of the name, and datastore and non-datastore
// requests use separate connection pools, so a connection to the
// datastore never carries a request that was not protected.
//
// An intercepted connection is terminated with a leaf certificate for the
// host, signed by the local CA and cached per host (ECDSA P-256, valid 7
// days, renewed a day before expiry), and served by a net/http server
// whose handler is the same pipeline; the upstream is then reached over
// TLS with full verification. goproxy's own request loop and its default
// Transport (which skips certificate verification) are not used, and its
// CONNECT dialer ignores HTTPS_PROXY.
//
// The CA lives in SIDECRYPT_CA_DIR: ca.key (PKCS#8, mode 0600; LoadCA
// refuses a key file others can read) and ca.crt, which `sidecrypt ca
// init` creates and prints for the application's trust store (`sidecrypt
// ca show` prints it again). Forward mode requires it.
//
// # Logs, metrics, audit
//
// Logs carry the route name, method, status, reason code and duration;
// never a path, query string, header value, body or field value (query
// parameters may be protected; errors from the Transport are unwrapped
// from *url.Error, which would print the URL). A panic is logged with its
// type and stack only. Every request is reported to Observer.Request
// (route, outcome, status, duration); refusals, field counts by key,
// upstream latency and transformed bytes have their own methods. Label
// values are route names, codes and key names only.
//
// # Shutdown
//
// Serve drains when its context ends: it stops accepting, lets requests in
// flight finish for up to ShutdownTimeout, then closes what is left
// (continuous feeds, tunnels, which have no request boundary to stop at).
package proxy
