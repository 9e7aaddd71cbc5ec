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
	// The lines shown, with where they end. When bytes already shown
	// change under the view (a writer moved foreign lines aside, or
	// someone edited or cut the file), reading resumes after the last
	// shown line that is still there unchanged, so that nothing new or
	// changed is ever skipped; if none is, from the start.
	var shown shownRing
	if prev != nil {
		if b, end, err := lastLineOf(f, off); err == nil {
			shown.add(b, end)
		}
	}
	resume := func(note string) error {
		off, partial, prev = shown.lastIntact(f), nil, nil
		if off > 0 {
			prev = shown.entryAt(off)
		}
		return fn(FollowEvent{Note: note})
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
		// inode under the same name: followed from its start.
		if nst, err := os.Stat(path); err == nil && !os.SameFile(st, nst) {
			nf, err := os.Open(path)
			if err != nil {
				continue
			}
			f.Close()
			f, st, off, partial, prev, shown = nf, nst, 0, nil, nil, shownRing{}
			if err := fn(FollowEvent{Note: "the log file was replaced; following the new file from its start"}); err != nil {
				return err
			}
		}
		cur, err := f.Stat()
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		switch {
		case cur.Size() < off:
			if err := resume(fmt.Sprintf("the log file shrank to %d bytes (cut, or lines moved aside by a writer); following it from its last unchanged line", cur.Size())); err != nil {
				return err
			}
		case cur.Size() > off && !shown.lastStillThere(f):
			if err := resume("the log was rewritten under this view (lines moved aside by a writer, or edited); following it from its last unchanged line"); err != nil {
				return err
			}
		}
		if cur.Size() <= off {
			continue
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
			line := append([]byte(nil), partial[:i+1]...)
			partial = partial[i+1:]
			shown.add(line, off-int64(len(partial)))
			line = line[:len(line)-1]
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
			if err := fn(ev); err != nil {
				return err
			}
		}
		if len(partial) > maxLine {
			partial = partial[:0]
		}
	}
}

// shownRing remembers the last lines Follow showed and where each ends.
type shownRing struct {
	lines []shownLine
}

type shownLine struct {
	b   []byte // with its newline
	end int64
}

// maxShown bounds how far back Follow looks for an unchanged line.
const maxShown = 1000

func (r *shownRing) add(b []byte, end int64) {
	if len(r.lines) == maxShown {
		r.lines = append(r.lines[:0], r.lines[1:]...)
	}
	r.lines = append(r.lines, shownLine{b: b, end: end})
}

func (l shownLine) intact(f *os.File) bool {
	buf := make([]byte, len(l.b))
	_, err := f.ReadAt(buf, l.end-int64(len(l.b)))
	return err == nil && bytes.Equal(buf, l.b)
}

// lastStillThere reports whether the last shown line is unchanged.
func (r *shownRing) lastStillThere(f *os.File) bool {
	return len(r.lines) == 0 || r.lines[len(r.lines)-1].intact(f)
}

// lastIntact drops the shown lines that changed and returns where the
// last unchanged one ends (0 when none is left).
func (r *shownRing) lastIntact(f *os.File) int64 {
	for len(r.lines) > 0 {
		if l := r.lines[len(r.lines)-1]; l.intact(f) {
			return l.end
		}
		r.lines = r.lines[:len(r.lines)-1]
	}
	return 0
}

// entryAt returns the entry of the shown line that ends at end.
func (r *shownRing) entryAt(end int64) *Entry {
	for i := len(r.lines) - 1; i >= 0; i-- {
		if r.lines[i].end == end {
			if p, err := parseLine(bytes.TrimSuffix(r.lines[i].b, []byte("\n"))); err == nil {
				return &p.Entry
			}
			return nil
		}
	}
	return nil
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

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}
