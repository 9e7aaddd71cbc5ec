package main

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// The dry run of a datastore.BodyNDJSON operation (Elasticsearch's _bulk
// and _msearch, and its single-document writes): the body is handed to the
// profile's line transformer line by line, as the proxy does, and the
// values it sealed are found by comparing each line with what became of
// it.

// ndjsonMedia: the media types a BodyNDJSON body may have (the proxy's
// ndjsonMediaType).
func ndjsonMedia(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/x-ndjson" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+x-ndjson") || jsonMedia(ct)
}

// runNDJSON transforms body; on a refusal it returns the exit code.
func (d *dryRun) runNDJSON(ctx context.Context, op *datastore.Operation, body []byte) (stored []byte, sealed []sealedValue, code int, ok bool) {
	lt := op.Lines(ctx, &datastore.LinesEnv{Keys: d.ring})
	var out []byte
	rest := body
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		o, err := lt.Line(line)
		if err != nil {
			return nil, nil, d.refuseErr(err, 400, "invalid_json"), false
		}
		out = append(out, o...)
	}
	o, err := lt.End()
	if err != nil {
		return nil, nil, d.refuseErr(err, 400, "invalid_json"), false
	}
	out = append(out, o...)
	in, got := bytes.Split(body, []byte("\n")), bytes.Split(out, []byte("\n"))
	if len(in) != len(got) {
		// One document read whole.
		for _, s := range jsonSeals(body, out, "$") {
			s.field = attributeField(op.Collection, s)
			sealed = append(sealed, s)
		}
		return out, sealed, 0, true
	}
	for i := range in {
		if bytes.Equal(in[i], got[i]) {
			continue
		}
		for _, s := range jsonSeals(in[i], got[i], "$") {
			s.field = attributeField(op.Collection, s)
			s.path = fmt.Sprintf("line %d %s", i+1, s.path)
			sealed = append(sealed, s)
		}
	}
	return out, sealed, 0, true
}
