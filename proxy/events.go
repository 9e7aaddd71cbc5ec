package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// maxEventLine bounds one line of an event stream held in memory to
// decrypt it. A longer "data:" line is passed on as it came: its tokens
// stay tokens, nothing is exposed.
const maxEventLine = 16 << 20

// decryptEvents decrypts a server-sent event stream (CouchDB's
// _changes?feed=eventsource): each "data:" line carries one JSON value,
// which is opened like any response body; every other line (event, id,
// retry, comments, blank separators) passes as it is. Like the other
// streams it goes out line by line, chunked, as identity.
func (p *Proxy) decryptEvents(resp *http.Response, ex *exchange, c coding) {
	src := resp.Body
	pr, pw := io.Pipe()
	resp.Body = pr
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	if c != codingIdentity {
		resp.Header.Del("Content-Encoding")
	}
	dropDigests(resp.Header)
	go func() {
		defer src.Close()
		defer func() {
			if v := recover(); v != nil {
				p.log.Error("proxy: panic in event stream decryption", "route", ex.routeName, "panic_type", fmt.Sprintf("%T", v))
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
		rep, err := p.copyEvents(resp.Request, ex, cw, dec)
		p.reportDecrypt(resp.Request, ex, rep, cw.n)
		pw.CloseWithError(err)
	}()
}

func (p *Proxy) copyEvents(req *http.Request, ex *exchange, dst io.Writer, src io.Reader) (fieldcrypt.Report, error) {
	var total fieldcrypt.Report
	br := bufio.NewReaderSize(src, 64<<10)
	opts := decryptOptions
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line[:0], chunk...)
		for errors.Is(err, bufio.ErrBufferFull) && len(line) <= maxEventLine {
			chunk, err = br.ReadSlice('\n')
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// Too long to hold: pass the rest of the line through.
			if _, werr := dst.Write(line); werr != nil {
				return total, werr
			}
			for errors.Is(err, bufio.ErrBufferFull) {
				chunk, err = br.ReadSlice('\n')
				if _, werr := dst.Write(chunk); werr != nil {
					return total, werr
				}
			}
			line = line[:0]
		} else if len(line) > 0 {
			out := line
			if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok && fieldcrypt.MayHoldTokens(rest) {
				body, eol := splitEOL(rest)
				lead := 0
				if len(body) > 0 && body[0] == ' ' {
					lead = 1
				}
				plain, rep, derr := ex.dec.DecryptBytes(req.Context(), body[lead:], p.keys, &opts)
				if derr == nil {
					out = make([]byte, 0, len(line)+len(plain)-len(body))
					out = append(out, "data:"...)
					out = append(out, body[:lead]...)
					out = append(out, plain...)
					out = append(out, eol...)
					total.Keys = append(total.Keys, rep.Keys...)
					total.Masked += rep.Masked
					total.Failures = append(total.Failures, rep.Failures...)
				}
			}
			if _, werr := dst.Write(out); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// splitEOL splits a line into its content and its line ending ("\n",
// "\r\n" or none).
func splitEOL(b []byte) (body, eol []byte) {
	n := len(b)
	if n > 0 && b[n-1] == '\n' {
		n--
		if n > 0 && b[n-1] == '\r' {
			n--
		}
	}
	return b[:n], b[n:]
}
