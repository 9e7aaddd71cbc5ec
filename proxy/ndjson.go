package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// This file carries out datastore.BodyNDJSON: a body read line by line
// (Elasticsearch's _bulk and _msearch) and rewritten by the profile's line
// transformer. The request body is read as it arrives, through its
// Content-Encoding, one line at a time; only the transformer's output is
// kept. Nothing is forwarded until every line has been transformed and
// the transformer's End has accepted the body: one refused line refuses
// the whole request. The output has to be held for that, so the body is
// bounded like every other protected body (Config.MaxBody, on the bytes
// received and again on the decoded bytes), while the input is never held
// whole and no line is ever parsed into more than one value.

// ndjsonMediaType reports whether a BodyNDJSON body may carry this
// Content-Type: the NDJSON types (application/x-ndjson and a structured
// +x-ndjson type such as Elasticsearch 8's
// application/vnd.elasticsearch+x-ndjson) or any JSON type that
// jsonMediaType accepts (Elasticsearch reads both as JSON).
func ndjsonMediaType(ct string) bool {
	mt := mediaType(ct)
	return mt == "application/x-ndjson" ||
		(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+x-ndjson")) ||
		jsonMediaType(ct)
}

// errNDJSONTooLarge: the body, as received or decoded, passed the limit.
var errNDJSONTooLarge = errors.New("proxy: body exceeds the size limit")

// cappedReader fails with errNDJSONTooLarge once more than limit bytes
// have been read through it.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errNDJSONTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n, errNDJSONTooLarge
	}
	return n, err
}

// wireError marks an error of reading the client's bytes, as opposed to
// decoding them.
type wireError struct{ err error }

func (w *wireError) Error() string { return w.err.Error() }
func (w *wireError) Unwrap() error { return w.err }

type wireReader struct{ r io.Reader }

func (w wireReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, errNDJSONTooLarge) {
		err = &wireError{err}
	}
	return n, err
}

// rewriteNDJSON reads a BodyNDJSON body and returns what to forward, in
// the body's own Content-Encoding.
func (p *Proxy) rewriteNDJSON(ctx context.Context, r *http.Request, ex *exchange, op *datastore.Operation) ([]byte, *refusal) {
	c, _ := parseCoding(r.Header)
	wire := wireReader{&cappedReader{r: r.Body, left: p.maxBody}}
	dec, actual, err := newDecoder(c, wire)
	if err != nil {
		return nil, p.ndjsonReadRefusal(ctx, err)
	}
	defer dec.Close()
	env := &datastore.LinesEnv{Keys: p.keys, MaxDepth: p.encOpts.MaxDepth}
	if len(ex.plan.MaskKeys) > 0 {
		env.Write = p.writeEnv(r, ex)
	}
	lt := op.Lines(ctx, env)
	if lt == nil {
		return nil, refInternal
	}

	out := getBuffer()
	defer putBuffer(out)
	br := bufio.NewReaderSize(&cappedReader{r: dec, left: p.maxBody}, 64<<10)
	var long []byte // a line longer than br's buffer, assembled
	defer func() { clear(long) }()
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return nil, p.ndjsonReadRefusal(ctx, err)
		}
		if len(line) > 0 {
			if first && hasBOM(line) {
				return nil, refBOM
			}
			first = false
			o, terr := lt.Line(line)
			if terr != nil {
				return nil, p.transformRefusal(ctx, ex, terr, refInvalidJSON)
			}
			out.Write(o)
		}
		if err == io.EOF {
			break
		}
	}
	tail, err := lt.End()
	if err != nil {
		return nil, p.transformRefusal(ctx, ex, err, refInvalidJSON)
	}
	out.Write(tail)
	result := bytes.Clone(out.Bytes())
	if actual != codingIdentity {
		enc, err := encode(actual, result)
		clear(result)
		if err != nil {
			return nil, refInternal
		}
		result = enc
	}
	p.obs.Bytes(ex.routeName, DirectionRequest, int64(len(result)))
	return result, nil
}

func (p *Proxy) ndjsonReadRefusal(ctx context.Context, err error) *refusal {
	var we *wireError
	switch {
	case errors.Is(err, errNDJSONTooLarge):
		return refTooLarge
	case ctx.Err() != nil:
		return refCanceled
	case errors.As(err, &we):
		return refBodyRead
	}
	return refBadEncoding
}
