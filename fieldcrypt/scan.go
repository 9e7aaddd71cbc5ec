package fieldcrypt

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"unicode/utf8"
)

// This file is the byte level of the transformer: a validating JSON scanner
// over a window that refills from an io.Reader (or is a whole []byte, never
// copied). It knows nothing about selectors or tokens; transform.go drives it.
//
// The window keeps three positions:
//
//	mark  first input byte not yet copied to the output
//	hold  first byte that must stay in the window (a value being captured,
//	      an object key being read, a token being collected), or -1
//	pos   next byte to scan
//
// with mark <= hold <= pos whenever hold >= 0. Before every blocking Read the
// window copies [mark, min(hold,pos)) to the output, writes the output to the
// destination and calls the flush hook, then slides the window down to the
// hold (or pos). So memory is bounded by the largest held span, not by the
// document: long unmatched strings stream through.

// detailError is a precise description of what went wrong, wrapping one of
// the package's sentinels. It never holds input bytes.
type detailError struct {
	kind error
	msg  string
}

func (e *detailError) Error() string { return "fieldcrypt: " + e.kind.Error() + ": " + e.msg }
func (e *detailError) Unwrap() error { return e.kind }

func syntaxError(msg string) error { return &detailError{ErrSyntax, msg} }

var (
	errUnexpectedEnd  = syntaxError("unexpected end of input")
	errEmpty          = syntaxError("no JSON value")
	errExpectedValue  = syntaxError("expected a JSON value")
	errExpectedKey    = syntaxError(`expected '"' to start an object key`)
	errExpectedColon  = syntaxError("expected ':' after an object key")
	errExpectedObjEnd = syntaxError("expected ',' or '}' after an object member")
	errExpectedArrEnd = syntaxError("expected ',' or ']' after an array element")
	errAfterTop       = syntaxError("data after the top-level value")
	errNeedSpace      = syntaxError("a top-level number or literal must be followed by whitespace in a stream")
	errBadLiteral     = syntaxError("invalid literal (want true, false or null)")
	errBadNumber      = syntaxError("invalid number")
	errBadEscape      = syntaxError("invalid escape in a string")
	errControlChar    = syntaxError("unescaped control character in a string")
	errUnterminated   = syntaxError("unterminated string")
	errBadUTF8        = &detailError{ErrInvalidUTF8, "invalid UTF-8 sequence"}
	errTooDeepDetail  = &detailError{ErrTooDeep, "nesting exceeds the limit"}
)

// strPlain[c] is true for bytes that may appear in a JSON string as they
// are, without a closer look: printable ASCII other than '"' and '\'.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	swarLo = 0x0101010101010101
	swarHi = 0x8080808080808080
)

// swarSpecial is non-zero when any of the 8 bytes in v needs a closer look
// in a string: a control byte, '"', '\' or a non-ASCII byte. It may flag a
// plain byte too (the slow loop then decides), never miss a special one.
func swarSpecial(v uint64) uint64 {
	q := v ^ (swarLo * '"')
	b := v ^ (swarLo * '\\')
	return (v | (v - swarLo*0x20) | ((q - swarLo) &^ q) | ((b - swarLo) &^ b)) & swarHi
}

// scanner is the refillable window described above.
type scanner struct {
	buf  []byte
	pos  int
	end  int
	base int64 // input offset of buf[0]

	r     io.Reader // nil: buf is the whole input
	eof   bool
	ioErr error // a read, write or context error: it ends the call

	hold        int
	holdCap     int  // > 0: the hold may be dropped once it spans more than this
	holdDropped bool // set when a capped hold was dropped

	mark  int
	out   []byte
	w     io.Writer
	flush func() error
	wrote bool // output written since the last flush hook call
	ctx   context.Context

	kinds []uint64 // skipValue's container stack, one bit per level

	maxEnd int // the most of buf ever filled (reader mode), to wipe it
	outMax int // the longest out ever was (reader mode), to wipe it
}

// initBytes makes s scan src in place.
func (s *scanner) initBytes(src []byte) {
	s.buf, s.pos, s.end, s.base = src, 0, len(src), 0
	s.r, s.eof, s.ioErr = nil, true, nil
	s.hold, s.holdCap, s.holdDropped = -1, 0, false
	s.mark = 0
}

// initReader makes s scan r through buf, writing output to w.
func (s *scanner) initReader(r io.Reader, buf []byte) {
	s.buf, s.pos, s.end, s.base, s.maxEnd, s.outMax = buf[:cap(buf)], 0, 0, 0, 0, 0
	s.r, s.eof, s.ioErr = r, false, nil
	s.hold, s.holdCap, s.holdDropped = -1, 0, false
	s.mark = 0
}

// offset is the input offset of the scan position, for error messages.
func (s *scanner) offset() int64 { return s.base + int64(s.pos) }

// emit writes the pending output to the destination and calls the flush
// hook. In bytes mode there is no destination: the output accumulates.
func (s *scanner) emit() error {
	if s.w == nil {
		return nil
	}
	if len(s.out) > 0 {
		s.outMax = max(s.outMax, len(s.out))
		if _, err := s.w.Write(s.out); err != nil {
			return err
		}
		s.out = s.out[:0]
		s.wrote = true
	}
	if s.wrote && s.flush != nil {
		s.wrote = false
		return s.flush()
	}
	return nil
}

// more reads more input into the window. It reports false at the end of
// the input or on an error (then ioErr is set).
func (s *scanner) more() bool {
	if s.r == nil || s.eof || s.ioErr != nil {
		return false
	}
	if s.ctx != nil {
		if err := s.ctx.Err(); err != nil {
			s.ioErr = err
			return false
		}
	}
	if s.hold >= 0 && s.holdCap > 0 && s.pos-s.hold > s.holdCap {
		s.hold, s.holdDropped = -1, true
	}
	keep := s.pos
	if s.hold >= 0 && s.hold < keep {
		keep = s.hold
	}
	if s.mark < keep {
		s.out = append(s.out, s.buf[s.mark:keep]...)
		s.mark = keep
	}
	if err := s.emit(); err != nil {
		s.ioErr = err
		return false
	}
	if keep > 0 {
		s.end = copy(s.buf, s.buf[keep:s.end])
		s.pos -= keep
		s.mark -= keep
		if s.hold >= 0 {
			s.hold -= keep
		}
		s.base += int64(keep)
	}
	if s.end == len(s.buf) {
		// The held span fills the window: grow it. This is the only
		// place memory grows, and only for what a hold needs.
		nb := make([]byte, 2*len(s.buf)+512)
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	for empty := 0; ; empty++ {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		s.maxEnd = max(s.maxEnd, s.end)
		if err != nil {
			if err == io.EOF {
				s.eof = true
			} else {
				s.ioErr = err
			}
			return n > 0
		}
		if n > 0 {
			return true
		}
		if empty == 100 {
			s.ioErr = io.ErrNoProgress
			return false
		}
	}
}

// ensure makes at least n bytes available from pos, unless the input ends.
func (s *scanner) ensure(n int) bool {
	for s.end-s.pos < n {
		if !s.more() {
			return false
		}
	}
	return true
}

// skipWS skips JSON whitespace and reports whether a byte follows.
func (s *scanner) skipWS() bool {
	for {
		buf := s.buf[:s.end]
		pos := s.pos
		for pos < len(buf) {
			switch buf[pos] {
			case ' ', '\n', '\r', '\t':
				pos++
				continue
			}
			s.pos = pos
			return true
		}
		s.pos = pos
		if !s.more() {
			return false
		}
	}
}

// scanString scans a string starting at the opening quote at pos, up to and
// including the closing quote. It reports whether the string has escapes.
func (s *scanner) scanString() (escaped bool, err error) {
	s.pos++
	return s.scanStringRest(false)
}

// scanStringRest continues scanning a string whose opening quote has been
// consumed.
func (s *scanner) scanStringRest(escaped bool) (bool, error) {
	for {
		buf := s.buf[:s.end]
		pos := s.pos
		for pos+8 <= len(buf) && swarSpecial(binary.LittleEndian.Uint64(buf[pos:])) == 0 {
			pos += 8
		}
		for pos < len(buf) && strPlain[buf[pos]] {
			pos++
		}
		s.pos = pos
		if pos == len(buf) {
			if !s.more() {
				return escaped, errUnterminated
			}
			continue
		}
		switch c := buf[pos]; {
		case c == '"':
			s.pos++
			return escaped, nil
		case c == '\\':
			escaped = true
			if err := s.scanEscape(); err != nil {
				return escaped, err
			}
		case c < 0x20:
			return escaped, errControlChar
		default:
			if err := s.scanRune(); err != nil {
				return escaped, err
			}
		}
	}
}

// scanEscape checks the escape sequence at pos (which is a backslash).
func (s *scanner) scanEscape() error {
	if !s.ensure(2) {
		return errUnterminated
	}
	switch s.buf[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
		if !s.ensure(6) {
			return errUnterminated
		}
		for _, c := range s.buf[s.pos+2 : s.pos+6] {
			if hexVal(c) < 0 {
				return errBadEscape
			}
		}
		s.pos += 6
		return nil
	}
	return errBadEscape
}

// scanRune checks the UTF-8 sequence starting at pos.
func (s *scanner) scanRune() error {
	s.ensure(utf8.UTFMax)
	r, size := utf8.DecodeRune(s.buf[s.pos:s.end])
	if r == utf8.RuneError && size <= 1 {
		return errBadUTF8
	}
	s.pos += size
	return nil
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// peek returns the byte at pos, reading more input if needed.
func (s *scanner) peek() (byte, bool) {
	if s.pos < s.end || s.more() {
		return s.buf[s.pos], true
	}
	return 0, false
}

// digits skips a run of decimal digits and reports how many it skipped.
func (s *scanner) digits() int {
	n := 0
	for {
		buf := s.buf[:s.end]
		pos := s.pos
		for pos < len(buf) && buf[pos]-'0' <= 9 {
			pos++
		}
		n += pos - s.pos
		s.pos = pos
		if pos < len(buf) || !s.more() {
			return n
		}
	}
}

// scanNumber scans a number starting at pos, by the grammar of RFC 8259:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) scanNumber() error {
	c, ok := s.peek()
	if ok && c == '-' {
		s.pos++
		c, ok = s.peek()
	}
	switch {
	case !ok:
		return errBadNumber
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return errBadNumber
	}
	c, ok = s.peek()
	if ok && c == '.' {
		s.pos++
		if s.digits() == 0 {
			return errBadNumber
		}
		c, ok = s.peek()
	}
	if ok && (c == 'e' || c == 'E') {
		s.pos++
		if c, ok = s.peek(); ok && (c == '+' || c == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return errBadNumber
		}
	}
	return nil
}

// scanLiteral scans true, false or null at pos.
func (s *scanner) scanLiteral(lit string) error {
	if !s.ensure(len(lit)) || string(s.buf[s.pos:s.pos+len(lit)]) != lit {
		return errBadLiteral
	}
	s.pos += len(lit)
	return nil
}

// scanScalar scans the string, number or literal starting with c at pos.
func (s *scanner) scanScalar(c byte) (escaped bool, err error) {
	switch c {
	case '"':
		return s.scanString()
	case 't':
		return false, s.scanLiteral("true")
	case 'f':
		return false, s.scanLiteral("false")
	case 'n':
		return false, s.scanLiteral("null")
	}
	if c == '-' || c-'0' <= 9 {
		return false, s.scanNumber()
	}
	return false, errExpectedValue
}

// setKind records at level i of skipValue's stack whether it is an object.
func (s *scanner) setKind(i int, obj bool) {
	for i/64 >= len(s.kinds) {
		s.kinds = append(s.kinds, 0)
	}
	if obj {
		s.kinds[i/64] |= 1 << (i % 64)
	} else {
		s.kinds[i/64] &^= 1 << (i % 64)
	}
}

func (s *scanner) isObj(i int) bool { return s.kinds[i/64]&(1<<(i%64)) != 0 }

// skipValue validates one complete JSON value at pos (after optional
// whitespace) and leaves pos after it. depth is the nesting level of the
// position (containers already open around it); a container inside the
// value may bring the total to at most maxDepth (< 0: no limit).
//
// It is the fast path for everything no selector can reach and for matched
// values, which are captured whole.
func (s *scanner) skipValue(depth, maxDepth int) error {
	open := 0 // containers opened by this call
	for {
		// A value is expected.
		if !s.skipWS() {
			return errUnexpectedEnd
		}
		c := s.buf[s.pos]
		closed := false
		if c == '{' || c == '[' {
			if maxDepth >= 0 && depth+open+1 > maxDepth {
				return errTooDeepDetail
			}
			s.setKind(open, c == '{')
			open++
			s.pos++
			if !s.skipWS() {
				return errUnexpectedEnd
			}
			d := s.buf[s.pos]
			switch {
			case c == '{' && d == '}', c == '[' && d == ']':
				s.pos++
				open--
				closed = true
			case c == '{':
				if err := s.skipKeyColon(); err != nil {
					return err
				}
				continue
			default:
				continue
			}
		}
		if !closed {
			if _, err := s.scanScalar(c); err != nil {
				return err
			}
		}
		// After a value: close containers or move to the next element.
		for {
			if open == 0 {
				return nil
			}
			if !s.skipWS() {
				return errUnexpectedEnd
			}
			c := s.buf[s.pos]
			obj := s.isObj(open - 1)
			if c == ',' {
				s.pos++
				if obj {
					if !s.skipWS() {
						return errUnexpectedEnd
					}
					if err := s.skipKeyColon(); err != nil {
						return err
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				s.pos++
				open--
				continue
			}
			if obj {
				return errExpectedObjEnd
			}
			return errExpectedArrEnd
		}
	}
}

// skipKeyColon scans an object key at pos and the colon after it.
func (s *scanner) skipKeyColon() error {
	if s.buf[s.pos] != '"' {
		return errExpectedKey
	}
	if _, err := s.scanString(); err != nil {
		return err
	}
	if !s.skipWS() {
		return errUnexpectedEnd
	}
	if s.buf[s.pos] != ':' {
		return errExpectedColon
	}
	s.pos++
	return nil
}

// validValue reports whether b is exactly one JSON value (no surrounding
// whitespace) whose first byte has the type typ. It is used on decrypted
// plaintext: a token must open to what its header declares. s is scratch
// (its container stack is reused).
func (s *scanner) validValue(b []byte, typ Type) bool {
	if len(b) == 0 || typeOf(b[0]) != typ {
		return false
	}
	s.initBytes(b)
	ok := s.skipValue(0, -1) == nil && s.pos == len(b)
	s.buf = nil
	return ok
}

// validStringContent reports whether b is the text between the quotes of a
// valid JSON string.
func validStringContent(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case strPlain[c]:
			i++
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false
				}
				for _, h := range b[i+2 : i+6] {
					if hexVal(h) < 0 {
						return false
					}
				}
				i += 6
			default:
				return false
			}
		case c < 0x80:
			return false // '"' or a control byte
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return false
			}
			i += size
		}
	}
	return true
}

// typeOf gives the JSON type of the value that starts with c, or 0.
func typeOf(c byte) Type {
	switch c {
	case '"':
		return TypeString
	case '{':
		return TypeObject
	case '[':
		return TypeArray
	case 't', 'f':
		return TypeBool
	case 'n':
		return TypeNull
	}
	if c == '-' || c-'0' <= 9 {
		return TypeNumber
	}
	return 0
}

// isScanError reports whether err comes from the input's syntax (as opposed
// to keys, tokens or I/O).
func isScanError(err error) bool {
	return errors.Is(err, ErrSyntax) || errors.Is(err, ErrTooDeep) || errors.Is(err, ErrInvalidUTF8)
}
