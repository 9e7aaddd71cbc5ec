package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// FollowEvent is one thing Follow saw: an entry (with its raw line), or a
// note about the file (truncated, replaced, a line that is not an audit
// line, a break in the chain).
type FollowEvent struct {
	Entry *Entry
	Line  []byte
	// Note is set, and Entry nil, for a problem with the file.
	Note string
	// Broken says the entry does not continue the chain of the ones
	// before it (wrong seq or prev): an edit, an insertion, or lines
	// from somewhere else. MACs are not checked here; audit verify does.
	Broken string
}

// FollowOptions configure Follow.
type FollowOptions struct {
	// Last is how many entries already in the file are shown first.
	Last int
	// Poll is how often the file is checked for growth. Default 250ms.
	Poll time.Duration
}

// Follow shows the last entries of the log and then every entry appended
// to it, like tail -f, until ctx ends or fn returns an error. It notices
// a file that was truncated or replaced (a new inode) and starts again
// from its beginning, saying so.
func Follow(ctx context.Context, path string, opts FollowOptions, fn func(FollowEvent) error) error {
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	last, err := Tail(path, opts.Last)
	if err != nil {
		return err
	}
	var prev *Entry
	for i := range last {
		e := last[i]
		if err := fn(FollowEvent{Entry: &e}); err != nil {
			return err
		}
		prev = &e
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer func() { f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	off := st.Size()
	var partial []byte
	// The last complete line shown and where it ends: if those bytes
	// change, the file was rewritten under us (a writer moved foreign
	// lines aside, or someone edited it), and it is read again from the
	// start, showing only what was not shown yet.
	var lastLine []byte
	lastEnd := int64(-1)
	var shownSeq uint64
	if prev != nil {
		shownSeq = prev.Seq
		if b, end, err := lastLineOf(f, off); err == nil {
			lastLine, lastEnd = b, end
		}
	}
	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// A replaced file (rotation, or a rewrite by rename) has a new
		// inode under the same name; a truncated one got smaller.
		if nst, err := os.Stat(path); err == nil && !os.SameFile(st, nst) {
			nf, err := os.Open(path)
			if err != nil {
				continue
			}
			f.Close()
			f, st, off, partial, prev = nf, nst, 0, nil, nil
			if err := fn(FollowEvent{Note: "the log file was replaced; following the new file from its start"}); err != nil {
				return err
			}
		}
		cur, err := f.Stat()
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if cur.Size() < off {
			off, partial, prev = 0, nil, nil
			if err := fn(FollowEvent{Note: fmt.Sprintf("the log file shrank to %d bytes (truncated); following it from its start", cur.Size())}); err != nil {
				return err
			}
		}
		if cur.Size() == off {
			continue
		}
		if lastEnd >= 0 && cur.Size() >= lastEnd {
			b := make([]byte, len(lastLine))
			if _, err := f.ReadAt(b, lastEnd-int64(len(lastLine))); err == nil && !bytesEqual(b, lastLine) {
				off, partial, prev, lastEnd = 0, nil, nil, -1
				if err := fn(FollowEvent{Note: "the log was rewritten under this view (lines moved aside by a writer, or edited); reading it again from the start"}); err != nil {
					return err
				}
			}
		}
		chunk := make([]byte, cur.Size()-off)
		n, err := f.ReadAt(chunk, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("audit: read %s: %w", path, err)
		}
		off += int64(n)
		partial = append(partial, chunk[:n]...)
		for {
			i := indexNewline(partial)
			if i < 0 {
				break
			}
			line := append([]byte(nil), partial[:i]...)
			partial = partial[i+1:]
			lastLine, lastEnd = append(line, '\n'), off-int64(len(partial))
			p, err := parseLine(line)
			if err != nil {
				if err := fn(FollowEvent{Line: line, Note: "not an audit line: " + err.Error()}); err != nil {
					return err
				}
				continue
			}
			ev := FollowEvent{Entry: &p.Entry, Line: line}
			if prev != nil && (p.Seq != prev.Seq+1 || p.Prev != prev.link()) {
				ev.Broken = fmt.Sprintf("does not continue seq %d", prev.Seq)
			}
			e := p.Entry
			prev = &e
			if ev.Broken == "" && p.Seq <= shownSeq {
				continue // shown before a re-read
			}
			shownSeq = max(shownSeq, p.Seq)
			if err := fn(ev); err != nil {
				return err
			}
		}
		if len(partial) > maxLine {
			partial = partial[:0]
		}
	}
}

// lastLineOf returns the last complete line of f (of size size) with its
// newline, and the offset where it ends.
func lastLineOf(f *os.File, size int64) ([]byte, int64, error) {
	off := max(size-maxLine, 0)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		return nil, 0, errors.New("no complete line")
	}
	start := bytes.LastIndexByte(buf[:end], '\n') + 1
	return append([]byte(nil), buf[start:end+1]...), off + int64(end) + 1, nil
}

func bytesEqual(a, b []byte) bool { return bytes.Equal(a, b) }

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}
