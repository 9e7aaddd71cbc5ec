package datastore

import "github.com/sidecrypt/sidecrypt/fieldcrypt"

// BodyNDJSON: the body is read line by line and each line handed to the
// operation's Lines transformer (newline-delimited JSON: Elasticsearch's
// _bulk and _msearch). A transformer may also hold the lines it is given
// and answer at End, to read a JSON document whole.
//
// The proxy reads the request body as it arrives, one line at a time (no
// line longer than the body limit), and keeps only what the transformer
// returns; the body as a whole is bounded by the same limit as every
// other protected body (SIDECRYPT_MAX_BODY, counted on the decoded
// bytes). Nothing is forwarded until End has returned without error: one
// line refused refuses the request, as the datastore itself would refuse
// it (Elasticsearch fails a whole _bulk request on a malformed action
// line) or, worse, accept the other lines (it indexes the sources of a
// _bulk request item by item).
const BodyNDJSON BodyRule = BodyTransform + 1

// LinesEnv is what a line transformer gets from the proxy.
type LinesEnv struct {
	// Keys seal values.
	Keys fieldcrypt.Keyring
	// MaxDepth bounds the nesting of each JSON value (the operator's
	// SIDECRYPT_MAX_DEPTH); zero means fieldcrypt.DefaultMaxDepth.
	MaxDepth int
	// Write is set when this sidecar shows some key masked, so that a
	// masked value written back keeps its stored token (PreserveMasked);
	// nil otherwise.
	Write *WriteEnv
}

// LineTransformer rewrites one request's BodyNDJSON body. The proxy calls
// Line once per line, in order, from one goroutine, then End.
type LineTransformer interface {
	// Line gets one line with its terminating "\n" (the last line of a
	// body may lack one) and returns the bytes to forward in its place,
	// its line ending included; it may return nothing and hold the line
	// until End. The line's bytes are only valid during the call. It
	// returns a *Refusal, a fieldcrypt error (syntax, depth, UTF-8,
	// duplicate key) or a key error to refuse the request.
	Line(line []byte) ([]byte, error)
	// End is called after the last line and returns what is still to be
	// forwarded, or an error that refuses the request (a body that ends
	// in the middle of something).
	End() ([]byte, error)
}
