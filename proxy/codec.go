package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// coding is a Content-Encoding the pipeline can decode and re-encode.
type coding uint8

const (
	codingIdentity coding = iota
	codingGzip
	// codingDeflate is "deflate" as RFC 9110 defines it: a zlib stream
	// (RFC 1950). Some clients send raw DEFLATE (RFC 1951) under the same
	// name; both are read, and a request body is re-encoded the way it came.
	codingDeflate
	codingRawDeflate
)

// parseCoding reads Content-Encoding. ok is false for anything but one of
// identity, gzip (x-gzip) or deflate: br, zstd, compress, and any stack of
// two or more codings. A stack of known codings could be unwound, but no
// client sends one, and refusing keeps the decoder small.
func parseCoding(h http.Header) (c coding, ok bool) {
	vals := h["Content-Encoding"]
	if len(vals) == 0 {
		return codingIdentity, true
	}
	n := 0
	c = codingIdentity
	for _, v := range vals {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			n++
			switch {
			case strings.EqualFold(tok, "identity"):
				n-- // identity adds no layer
			case strings.EqualFold(tok, "gzip"), strings.EqualFold(tok, "x-gzip"):
				c = codingGzip
			case strings.EqualFold(tok, "deflate"):
				c = codingDeflate
			default:
				return 0, false
			}
		}
	}
	if n > 1 {
		return 0, false
	}
	return c, true
}

// errDecodedTooLarge: a compressed body inflates past the limit.
var errDecodedTooLarge = errors.New("proxy: decoded body exceeds the size limit")

// newDecoder returns a reader of the decoded stream. For deflate it sniffs
// the zlib header and reports in actual whether the stream was zlib or raw.
func newDecoder(c coding, r io.Reader) (dec io.ReadCloser, actual coding, err error) {
	switch c {
	case codingGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, c, err
		}
		return zr, c, nil
	case codingDeflate:
		br := bufio.NewReader(r)
		hdr, _ := br.Peek(2)
		if len(hdr) == 2 && isZlibHeader(hdr[0], hdr[1]) {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, c, err
			}
			return zr, codingDeflate, nil
		}
		return flate.NewReader(br), codingRawDeflate, nil
	}
	return io.NopCloser(r), codingIdentity, nil
}

// isZlibHeader checks RFC 1950's CMF/FLG pair: method 8 (deflate), window
// at most 32 KiB, and the check bits.
func isZlibHeader(cmf, flg byte) bool {
	return cmf&0x0f == 8 && cmf>>4 <= 7 && (uint16(cmf)<<8|uint16(flg))%31 == 0
}

// decodeCapped decodes src into buf, failing with errDecodedTooLarge when
// the result would exceed limit bytes (decompression bombs).
func decodeCapped(c coding, src []byte, buf *bytes.Buffer, limit int64) (coding, error) {
	dec, actual, err := newDecoder(c, bytes.NewReader(src))
	if err != nil {
		return actual, err
	}
	defer dec.Close()
	n, err := buf.ReadFrom(io.LimitReader(dec, limit+1))
	if err != nil {
		return actual, err
	}
	if n > limit {
		return actual, errDecodedTooLarge
	}
	return actual, nil
}

var (
	gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}
	zlibWriters = sync.Pool{New: func() any { return zlib.NewWriter(io.Discard) }}
)

// encode compresses data with c, appending to a fresh slice.
func encode(c coding, data []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(data)/2 + 64)
	switch c {
	case codingGzip:
		zw := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(zw)
		zw.Reset(&out)
		if _, err := zw.Write(data); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	case codingDeflate:
		zw := zlibWriters.Get().(*zlib.Writer)
		defer zlibWriters.Put(zw)
		zw.Reset(&out)
		if _, err := zw.Write(data); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	case codingRawDeflate:
		fw, err := flate.NewWriter(&out, flate.DefaultCompression)
		if err != nil {
			return nil, err
		}
		if _, err := fw.Write(data); err != nil {
			return nil, err
		}
		if err := fw.Close(); err != nil {
			return nil, err
		}
	default:
		return data, nil
	}
	return out.Bytes(), nil
}

// Buffers for request bodies. Buffers that grew past maxPooledBuffer are
// dropped rather than pooled, so one large upload does not pin memory.
const maxPooledBuffer = 1 << 20

var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// putBuffer wipes a buffer and returns it to the pool. Request bodies hold
// plaintext of protected fields; a pooled buffer must not carry it on into
// whatever reuses the memory next (issue 12: "pooled proxy body buffers
// are not wiped").
func putBuffer(b *bytes.Buffer) {
	b.Reset()
	clear(b.Bytes()[:b.Cap()])
	if b.Cap() > maxPooledBuffer {
		return
	}
	bufferPool.Put(b)
}

// readCapped reads r to EOF into buf. It returns tooLarge (and stops
// reading) once more than limit bytes arrive.
func readCapped(r io.Reader, buf *bytes.Buffer, limit int64) (tooLarge bool, err error) {
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return false, err
	}
	return n > limit, nil
}
