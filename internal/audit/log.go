package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Signer computes the checkpoint MAC. hsm.Provider implements it.
type Signer interface {
	AuditMAC(ctx context.Context, msg []byte) ([]byte, error)
}

// Options configure Open.
type Options struct {
	// Signer signs checkpoints. Nil means unsigned checkpoints, which
	// detect accidents but not a deliberate rewrite; Open logs a warning.
	Signer Signer
	// CheckpointEvery is the longest time between an event and the
	// checkpoint that covers it. Default 1s.
	CheckpointEvery time.Duration
	// Logger receives the log's own problems; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Log is an open audit log. It implements Recorder.
type Log struct {
	path string
	opts Options
	log  *slog.Logger

	reqs    chan *recordReq
	closing chan struct{}
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error

	// Owned by the writer goroutine.
	f         *os.File
	size      int64 // file size after our last write
	lastSeq   uint64
	lastHash  string
	signedSeq uint64 // last seq covered by a checkpoint
}

type recordReq struct {
	ev   Event
	done chan error
}

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: log is closed")

const (
	zeroHash          = "0000000000000000000000000000000000000000000000000000000000000000"
	checkpointAction  = "audit.checkpoint"
	checkpointContext = "sidecrypt audit checkpoint v1\n"
)

// Open opens (creating with mode 0600 if needed) the audit log at path and
// starts its writer. The directory is created with mode 0700.
func Open(path string, opts Options) (*Log, error) {
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	l := &Log{
		path: path, opts: opts, log: lg, f: f,
		reqs:    make(chan *recordReq, 256),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		size:    -1, // force a tail read on first write
	}
	// Read the tail once now so that a corrupt last line is reported at
	// start-up rather than on the first event. A line cut short by a crash
	// mid-append is moved aside first (see recoverTornTail).
	torn, err := l.recoverTornTail()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := l.lockAndSync(); err != nil {
		f.Close()
		return nil, err
	}
	l.unlock()
	if torn != "" {
		lg.Warn("audit: the log ended in an incomplete line (a crash while appending); it was moved aside and the chain continues from the last complete line", "file", path, "moved_to", torn)
	}
	if opts.Signer == nil {
		lg.Warn("audit: checkpoints are not signed (no HSM audit key); the log detects accidental damage but not a deliberate rewrite", "file", path)
	}
	go l.writer()
	if torn != "" {
		ev := Event{Actor: "audit", Action: "audit.torn_tail", Outcome: "error",
			Reason:  "the log ended in an incomplete line, left by a crash while appending; it was moved aside",
			Details: map[string]string{"moved_to": filepath.Base(torn)}}
		if err := l.Record(context.Background(), ev); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// recoverTornTail handles a log whose last line has no newline: the tail
// of an append that a crash (power loss, kill -9 mid-write) cut short. That
// line never got its hash on disk whole, so it was never a durable event
// (Record had not returned); it is copied to FILE.torn-<time> for
// inspection, the file is truncated to its last complete line, and Open
// records an "audit.torn_tail" event. Anything else that does not parse is
// left alone: Open then fails and `sidecrypt audit verify` says where.
func (l *Log) recoverTornTail() (string, error) {
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("audit: lock %s: %w", l.path, err)
	}
	defer l.unlock()
	st, err := l.f.Stat()
	if err != nil || st.Size() == 0 {
		return "", err
	}
	size := st.Size()
	last := make([]byte, 1)
	if _, err := l.f.ReadAt(last, size-1); err != nil {
		return "", fmt.Errorf("audit: read %s: %w", l.path, err)
	}
	if last[0] == '\n' {
		return "", nil
	}
	// Find the end of the last complete line.
	cut := int64(0)
	for window := int64(4096); ; window *= 4 {
		off := max(size-window, 0)
		buf := make([]byte, size-off)
		if _, err := l.f.ReadAt(buf, off); err != nil && err != io.EOF {
			return "", fmt.Errorf("audit: read %s: %w", l.path, err)
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			cut = off + int64(i) + 1
			break
		}
		if off == 0 {
			break
		}
	}
	if size-cut > maxLine {
		return "", fmt.Errorf("audit: %s ends in %d bytes without a newline: not a torn append; run sidecrypt audit verify", l.path, size-cut)
	}
	frag := make([]byte, size-cut)
	if _, err := l.f.ReadAt(frag, cut); err != nil && err != io.EOF {
		return "", fmt.Errorf("audit: read %s: %w", l.path, err)
	}
	torn := fmt.Sprintf("%s.torn-%d", l.path, l.opts.Now().UnixNano())
	if err := os.WriteFile(torn, frag, 0o600); err != nil {
		return "", fmt.Errorf("audit: keep torn tail: %w", err)
	}
	if err := l.f.Truncate(cut); err != nil {
		return "", fmt.Errorf("audit: truncate torn tail of %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return "", fmt.Errorf("audit: fsync %s: %w", l.path, err)
	}
	return torn, nil
}

// Path returns the log's file name.
func (l *Log) Path() string { return l.path }

// Record appends e and returns once it is durable on disk. Time defaults
// to now and Outcome to "ok".
func (l *Log) Record(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = l.opts.Now()
	}
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	if e.Actor == "" {
		e.Actor = ActorFrom(ctx)
	}
	r := &recordReq{ev: e, done: make(chan error, 1)}
	select {
	case <-l.closing:
		return ErrClosed
	case l.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The event may still be written; the caller stops waiting.
		return ctx.Err()
	}
}

// Close writes a final checkpoint if events are unsigned, and closes the
// file.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		<-l.done
		l.closeErr = l.f.Close()
	})
	return l.closeErr
}

// writer is the only goroutine that writes the file: it batches pending
// records into one write and one fsync, and writes checkpoints.
func (l *Log) writer() {
	defer close(l.done)
	defer func() {
		if p := recover(); p != nil {
			l.log.Error("audit: writer panicked; events are no longer recorded", "panic", fmt.Sprint(p))
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []*recordReq
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch[:0], r)
		drain:
			for len(batch) < 1024 {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			err := l.writeBatch(batch)
			for _, r := range batch {
				r.done <- err
			}
			if err == nil && l.signedSeq < l.lastSeq {
				timer.Reset(l.opts.CheckpointEvery)
			}
		case <-timer.C:
			if err := l.checkpoint(); err != nil {
				l.log.Error("audit: checkpoint failed", "file", l.path, "err", err)
				timer.Reset(l.opts.CheckpointEvery)
			}
		case <-l.closing:
			// Flush what is queued, then sign it.
			for {
				select {
				case r := <-l.reqs:
					r.done <- l.writeBatch([]*recordReq{r})
					continue
				default:
				}
				break
			}
			if l.signedSeq < l.lastSeq {
				if err := l.checkpoint(); err != nil {
					l.log.Error("audit: final checkpoint failed", "file", l.path, "err", err)
				}
			}
			return
		}
	}
}

// writeBatch appends the events under the file lock and fsyncs once.
func (l *Log) writeBatch(batch []*recordReq) error {
	if err := l.lockAndSync(); err != nil {
		return err
	}
	defer l.unlock()
	var buf bytes.Buffer
	seq, prev := l.lastSeq, l.lastHash
	for _, r := range batch {
		seq++
		line, hash, err := encodeLine(seq, r.ev, prev)
		if err != nil {
			return err
		}
		buf.Write(line)
		prev = hash
	}
	if err := l.appendSync(buf.Bytes()); err != nil {
		return err
	}
	l.lastSeq, l.lastHash = seq, prev
	return nil
}

// checkpoint appends a signed checkpoint covering the current last line and
// replaces FILE.checkpoint.
func (l *Log) checkpoint() error {
	if err := l.lockAndSync(); err != nil {
		return err
	}
	defer l.unlock()
	covers, coversHash := l.lastSeq, l.lastHash
	if covers == 0 {
		return nil
	}
	cp := Checkpoint{Seq: covers, Hash: coversHash, Time: l.opts.Now().UTC()}
	if l.opts.Signer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		mac, err := l.opts.Signer.AuditMAC(ctx, checkpointMessage(covers, coversHash))
		cancel()
		if err != nil {
			return fmt.Errorf("audit: sign checkpoint: %w", err)
		}
		cp.MAC = base64.RawURLEncoding.EncodeToString(mac)
	}
	ev := Event{
		Time: cp.Time, Actor: "audit", Action: checkpointAction, Outcome: "ok",
		Details: map[string]string{"covers": strconv.FormatUint(covers, 10), "covers_hash": coversHash, "mac": cp.MAC},
	}
	line, hash, err := encodeLine(covers+1, ev, coversHash)
	if err != nil {
		return err
	}
	if err := l.appendSync(line); err != nil {
		return err
	}
	l.lastSeq, l.lastHash = covers+1, hash
	l.signedSeq = l.lastSeq
	return writeCheckpointFile(l.path+".checkpoint", cp)
}

// Checkpoint is the content of FILE.checkpoint.
type Checkpoint struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
	MAC  string    `json:"mac,omitempty"` // base64url HMAC-SHA256; empty when unsigned
}

func checkpointMessage(seq uint64, hash string) []byte {
	return []byte(checkpointContext + strconv.FormatUint(seq, 10) + "\n" + hash + "\n")
}

func writeCheckpointFile(path string, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".checkpoint-*")
	if err != nil {
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lockAndSync takes the inter-process lock and, if the file changed since
// our last write (another process appended), re-reads the chain's tail.
func (l *Log) lockAndSync() error {
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("audit: lock %s: %w", l.path, err)
	}
	st, err := l.f.Stat()
	if err != nil {
		l.unlock()
		return fmt.Errorf("audit: %w", err)
	}
	if st.Size() == l.size {
		return nil
	}
	if st.Size() < l.size {
		l.unlock()
		return fmt.Errorf("audit: %s shrank from %d to %d bytes since it was last written: refusing to append to a truncated log (run sidecrypt audit verify)", l.path, l.size, st.Size())
	}
	seq, hash, err := readTail(l.f, st.Size())
	if err != nil {
		l.unlock()
		return fmt.Errorf("audit: %s: %w", l.path, err)
	}
	l.lastSeq, l.lastHash, l.size = seq, hash, st.Size()
	if l.signedSeq > seq {
		l.signedSeq = seq
	}
	return nil
}

func (l *Log) unlock() { _ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) }

func (l *Log) appendSync(b []byte) error {
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit: write %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", l.path, err)
	}
	l.size += int64(len(b))
	return nil
}

// readTail returns the seq and hash of the last line of a file of the
// given size, or (0, zeroHash) for an empty file.
func readTail(f *os.File, size int64) (uint64, string, error) {
	if size == 0 {
		return 0, zeroHash, nil
	}
	// Lines are short; read backwards in growing windows until a whole
	// last line is in view.
	for window := int64(4096); ; window *= 4 {
		off := max(size-window, 0)
		buf := make([]byte, size-off)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return 0, "", err
		}
		if buf[len(buf)-1] != '\n' {
			return 0, "", errors.New("last line is incomplete (a crash mid-write, or an edit): run sidecrypt audit verify")
		}
		body := buf[:len(buf)-1]
		i := bytes.LastIndexByte(body, '\n')
		if i < 0 && off > 0 {
			continue
		}
		e, err := parseLine(body[i+1:])
		if err != nil {
			return 0, "", fmt.Errorf("last line: %w", err)
		}
		return e.Seq, e.Hash, nil
	}
}

// Entry is one parsed line.
type Entry struct {
	Seq uint64 `json:"seq"`
	Event
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// line is the on-disk field order; Event's fields are inlined after seq.
type line struct {
	Seq     uint64            `json:"seq"`
	Time    string            `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Key     string            `json:"key,omitempty"`
	Version uint32            `json:"version,omitempty"`
	Rules   string            `json:"rules,omitempty"`
	Outcome string            `json:"outcome"`
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Prev    string            `json:"prev"`
}

// encodeLine renders one event as a line ending in its hash and "\n".
func encodeLine(seq uint64, e Event, prev string) (b []byte, hash string, err error) {
	body, err := json.Marshal(line{
		Seq: seq, Time: e.Time.UTC().Format(time.RFC3339Nano), Actor: e.Actor, Action: e.Action,
		Key: e.Key, Version: e.Version, Rules: e.Rules, Outcome: e.Outcome, Reason: e.Reason,
		Details: e.Details, Prev: prev,
	})
	if err != nil {
		return nil, "", fmt.Errorf("audit: encode: %w", err)
	}
	sum := sha256.Sum256(body)
	hash = hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(body)+len(hash)+12)
	out = append(out, body[:len(body)-1]...)
	out = append(out, `,"hash":"`...)
	out = append(out, hash...)
	out = append(out, "\"}\n"...)
	return out, hash, nil
}

// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
const hashSuffixLen = 9 + 64 + 2

// parseLine parses one line (without its newline) and checks that its hash
// field matches its bytes.
func parseLine(b []byte) (Entry, error) {
	var e Entry
	if len(b) < hashSuffixLen+2 || !bytes.HasPrefix(b[len(b)-hashSuffixLen:], []byte(`,"hash":"`)) || !bytes.HasSuffix(b, []byte(`"}`)) {
		return e, errors.New("line does not end with its hash field")
	}
	var l struct {
		line
		Hash string `json:"hash"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return e, fmt.Errorf("not a valid audit line: %w", err)
	}
	body := make([]byte, 0, len(b)-hashSuffixLen+1)
	body = append(body, b[:len(b)-hashSuffixLen]...)
	body = append(body, '}')
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != l.Hash {
		return e, errors.New("hash does not match the line's content (the line was edited)")
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return e, fmt.Errorf("bad time: %w", err)
	}
	e = Entry{
		Seq: l.Seq, Prev: l.Prev, Hash: l.Hash,
		Event: Event{Time: t, Actor: l.Actor, Action: l.Action, Key: l.Key, Version: l.Version,
			Rules: l.Rules, Outcome: l.Outcome, Reason: l.Reason, Details: l.Details},
	}
	return e, nil
}

// Tail returns the last n entries of the log file at path, oldest first,
// without verifying the chain.
func Tail(path string, n int) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	ring := make([]Entry, 0, n)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for sc.Scan() {
		e, err := parseLine(sc.Bytes())
		if err != nil {
			continue
		}
		if len(ring) == n {
			copy(ring, ring[1:])
			ring = ring[:n-1]
		}
		if n > 0 {
			ring = append(ring, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", path, err)
	}
	return ring, nil
}

// maxLine bounds one audit line; events are small, and a verifier must not
// be made to buffer an arbitrarily long line.
const maxLine = 1 << 20

var _ Recorder = (*Log)(nil)
