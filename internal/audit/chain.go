package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// chain is the state of a log read from its start (or from a point known
// to be good): the writer keeps one to continue the log, the verifier one
// to check it.
type chain struct {
	// keys authenticates lines; nil checks only their structure
	// (verify --no-mac).
	keys *keyring
	// signer checks version 1 checkpoints; nil skips them.
	signer Signer

	seq    uint64
	link   string // the last line's MAC (v2) or hash (v1)
	format int    // the last line's format; 0 for an empty log
	logID  string // the link of line 1: names the log for checkpoints and witnesses
	// v1Signed is the seq of the last version 1 checkpoint line whose MAC
	// was checked (or found, without a signer).
	v1Signed uint64
}

// prevFor is what the next line's prev must be.
func (c *chain) prevFor(format int) string {
	switch {
	case c.format != 0:
		return c.link
	case format == formatV1:
		return zeroHash
	default:
		return ""
	}
}

// authenticated reports whether every line so far is vouched for by the
// HSM: the last line is a version 2 line (each one's MAC covers all
// before it), or a checked version 1 checkpoint (or the log is empty).
func (c *chain) authenticated() bool {
	return c.format == 0 || c.format == formatV2 || c.v1Signed == c.seq
}

// next checks that p continues the chain and advances it.
func (c *chain) next(ctx context.Context, p *parsed) error {
	want := c.seq + 1
	switch {
	case p.Seq > want:
		return fmt.Errorf("expected seq %d: %d line(s) missing before this one (deleted), or lines reordered", want, p.Seq-want)
	case p.Seq < want:
		return fmt.Errorf("expected seq %d: a line was inserted, duplicated or moved", want)
	case p.Prev != c.prevFor(p.Format):
		return errors.New("prev does not match the line before: the line before was replaced, or lines reordered")
	}
	switch p.Format {
	case formatV1:
		if c.format == formatV2 {
			return errors.New("a version 1 line after version 2 lines: not written by this sidecrypt")
		}
		if isV1Checkpoint(&p.Entry) {
			covers, err := strconv.ParseUint(p.Details["covers"], 10, 64)
			if err != nil || covers != p.Seq-1 || p.Details["covers_hash"] != p.Prev {
				return errors.New("malformed checkpoint")
			}
			if c.signer != nil {
				if err := checkV1MAC(ctx, c.signer, covers, p.Prev, p.Details["mac"]); err != nil {
					var he *hsmError
					if errors.As(err, &he) {
						return err
					}
					return errors.New("checkpoint " + err.Error() + ": the lines before it were rewritten")
				}
			}
			c.v1Signed = p.Seq
		}
	case formatV2:
		if c.format == formatV1 && c.v1Signed != c.seq {
			return fmt.Errorf("version 2 entries continue version 1 entries (after seq %d) that no checkpoint covers", c.v1Signed)
		}
		if c.keys != nil {
			if err := c.keys.checkMAC(ctx, p); err != nil {
				return err
			}
		}
	}
	c.seq, c.link, c.format = p.Seq, p.link(), p.Format
	if p.Seq == 1 {
		c.logID = c.link
	}
	return nil
}

// lineReader yields the complete lines of a reader with their offsets.
type lineReader struct {
	br  *bufio.Reader
	off int64 // offset of the next line
	buf []byte
}

func newLineReader(r io.Reader, off int64) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), off: off}
}

// errTorn: the data ends in a fragment without a newline; errTooLong: a
// line longer than maxLine.
var (
	errTorn    = errors.New("the last line is incomplete")
	errTooLong = fmt.Errorf("line longer than %d bytes", maxLine)
)

// next returns the next line without its newline and its start offset.
// At the end it returns io.EOF, or errTorn when a fragment without a
// newline remains (its offset is returned).
func (lr *lineReader) next() ([]byte, int64, error) {
	lr.buf = lr.buf[:0]
	start := lr.off
	for {
		chunk, err := lr.br.ReadSlice('\n')
		lr.buf = append(lr.buf, chunk...)
		lr.off += int64(len(chunk))
		switch {
		case err == nil:
			return lr.buf[:len(lr.buf)-1], start, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(lr.buf) > maxLine {
				return nil, start, errTooLong
			}
			continue
		case errors.Is(err, io.EOF):
			if len(lr.buf) == 0 {
				return nil, start, io.EOF
			}
			return lr.buf, start, errTorn
		default:
			return nil, start, err
		}
	}
}

// scanResult is what the writer learns from reading lines that it did
// not write (another process's, or anyone's).
type scanResult struct {
	// good is the offset up to which every line is authenticated; the
	// chain describes the log up to there.
	good int64
	// bad is the first problem after good ("" when none), badLine its
	// 1-based line number counted from the scan's start, and
	// badLines the number of complete lines from good to the end.
	bad      string
	badLines int
	// torn: the only thing after good is a fragment without a newline.
	torn bool
	// edited: a line after the problem authenticates, so the problem is
	// an edit among genuine lines, not something appended.
	edited bool
}

// maxEditProbe bounds how many lines after a problem are checked for
// genuine ones (each may cost one HSM call for an unknown epoch).
const maxEditProbe = 1000

// scan reads lines from r (which starts at offset off) and advances c over
// every authenticated one. It stops at the first line that does not
// continue the chain or cannot be authenticated, and reports what
// follows. Version 1 lines are only authenticated by a later version 1
// checkpoint, so the good point moves at checkpoints.
func scan(ctx context.Context, r io.Reader, off int64, c *chain) (scanResult, error) {
	res := scanResult{good: off}
	lr := newLineReader(r, off)
	good := *c
	for {
		b, start, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errTorn) {
			if res.bad == "" && c.authenticated() && start == res.good {
				res.torn = true
				*c = good
				return res, nil
			}
			if res.bad == "" {
				res.bad = "the log ends in an incomplete line"
			}
			break
		}
		if errors.Is(err, errTooLong) {
			if res.bad == "" {
				res.bad = err.Error()
			}
			break
		}
		if err != nil {
			return res, err
		}
		if res.bad != "" {
			res.badLines++
			if res.badLines <= maxEditProbe && isGenuine(ctx, c.keys, b) {
				res.edited = true
				break
			}
			continue
		}
		p, perr := parseLine(b)
		if perr == nil {
			perr = c.next(ctx, &p)
		}
		if perr != nil {
			if errors.Is(perr, context.Canceled) || errors.Is(perr, context.DeadlineExceeded) {
				return res, perr
			}
			var hsmErr *hsmError
			if errors.As(perr, &hsmErr) {
				return res, perr
			}
			res.bad = fmt.Sprintf("seq %d: %v", p.Seq, perr)
			if p.Seq == 0 {
				res.bad = perr.Error()
			}
			res.badLines = 1
			continue
		}
		if c.authenticated() {
			good = *c
			res.good = lr.off
		}
	}
	if res.bad == "" && !c.authenticated() {
		// Version 1 lines after the last version 1 checkpoint.
		res.bad = fmt.Sprintf("version 1 entries after seq %d are not covered by a checkpoint", good.seq)
		res.badLines = int(c.seq - good.seq)
	}
	*c = good
	return res, nil
}

// isGenuine reports whether b is a version 2 line with a valid MAC.
func isGenuine(ctx context.Context, keys *keyring, b []byte) bool {
	if keys == nil || !bytes.HasPrefix(b, v2Prefix) {
		return false
	}
	p, err := parseV2(b)
	return err == nil && keys.checkMAC(ctx, &p) == nil
}

// hsmError marks a failure to reach the HSM, which says nothing about the
// line being checked.
type hsmError struct{ err error }

func (e *hsmError) Error() string { return e.err.Error() }
func (e *hsmError) Unwrap() error { return e.err }
