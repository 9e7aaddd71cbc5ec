package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Signer computes MACs under the HSM's audit key. hsm.Provider implements
// it.
type Signer interface {
	AuditMAC(ctx context.Context, msg []byte) ([]byte, error)
}

// Options configure Open.
type Options struct {
	// Signer is the HSM's audit key. Required: every entry's MAC comes
	// from a key it derives.
	Signer Signer
	// CheckpointEvery is the longest time between an event and the
	// moment FILE.checkpoint and the witness name a head that covers it.
	// Default 1s.
	CheckpointEvery time.Duration
	// EpochEvery is how long one epoch key MACs entries before the writer
	// asks the HSM for a new one. Default 1h.
	EpochEvery time.Duration
	// Witness, when not nil, receives every head written to
	// FILE.checkpoint, to keep outside the log's host.
	Witness Witness
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
	keys *keyring
	pub  *publisher

	reqs    chan *recordReq
	closing chan struct{}
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error

	stats logStats // stats.go

	// Owned by the writer goroutine (and by Open before it starts).
	f        *os.File
	size     int64 // file size after our last write or check; -1 before the first
	ch       chain // the chain up to size
	epoch    string
	epochKey []byte
	epochMAC hash.Hash // HMAC under epochKey, reused for every line
	epochAt  time.Time
	headSeq  uint64 // the seq FILE.checkpoint names
	needHead bool   // FILE.checkpoint is missing or older than the format
}

type recordReq struct {
	ev   Event
	done chan error
}

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: log is closed")

// ErrTampered is wrapped by the errors of Open and Record when the log or
// its checkpoint file was changed by someone other than sidecrypt in a way
// that cannot be set aside (an edit among genuine entries, a truncation):
// nothing more is appended until an operator has looked (see
// docs/OPERATIONS.md, "When the audit log was tampered with").
var ErrTampered = errors.New("audit: the log was tampered with")

// Open opens (creating with mode 0600 if needed) the audit log at path and
// starts its writer. The directory is created with mode 0700. Lines found
// at the end of the log that sidecrypt did not write are moved aside and
// the fact recorded (see doc.go); an edited or truncated log is refused
// with ErrTampered.
func Open(path string, opts Options) (*Log, error) {
	if opts.Signer == nil {
		return nil, errors.New("audit: Open needs the HSM's audit key (Options.Signer)")
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = time.Second
	}
	if opts.EpochEvery <= 0 {
		opts.EpochEvery = time.Hour
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
	keys := newKeyring(opts.Signer)
	l := &Log{
		path: path, opts: opts, log: lg, f: f, keys: keys,
		reqs:    make(chan *recordReq, 256),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		size:    -1,
		ch:      chain{keys: keys, signer: opts.Signer},
	}
	if opts.Witness != nil {
		l.pub = newPublisher(opts.Witness, lg)
	}
	// Authenticate what is there now, so that a problem is reported at
	// start-up rather than on the first event.
	if err := l.lockAndSync(); err != nil {
		l.stop()
		return nil, err
	}
	l.unlock()
	go l.writer()
	return l, nil
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

// Close writes the head to FILE.checkpoint and the witness, forgets the
// epoch keys and closes the file.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		<-l.done
		l.closeErr = l.stop()
	})
	return l.closeErr
}

func (l *Log) stop() error {
	if l.pub != nil {
		l.pub.close()
	}
	l.keys.zero()
	clear(l.epochKey)
	l.epochMAC = nil
	return l.f.Close()
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
	armed := false
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
			if err == nil && l.needHead {
				// A new log, or one written by an older version:
				// its first head is written before the first
				// events are reported durable, so that the log
				// never lacks a checkpoint file.
				if cerr := l.checkpoint(); cerr != nil {
					l.log.Error("audit: checkpoint failed", "file", l.path, "err", cerr)
				}
			}
			for _, r := range batch {
				r.done <- err
			}
			if err == nil && l.headSeq < l.ch.seq && !armed {
				// Armed once, not pushed back by every batch:
				// under steady traffic the head still goes out
				// every CheckpointEvery.
				timer.Reset(l.opts.CheckpointEvery)
				armed = true
			}
		case <-timer.C:
			armed = false
			if err := l.checkpoint(); err != nil {
				l.log.Error("audit: checkpoint failed", "file", l.path, "err", err)
				timer.Reset(l.opts.CheckpointEvery)
				armed = true
			}
		case <-l.closing:
			// Flush what is queued, then write the head.
			for {
				select {
				case r := <-l.reqs:
					r.done <- l.writeBatch([]*recordReq{r})
					continue
				default:
				}
				break
			}
			if l.headSeq < l.ch.seq || l.needHead {
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
	evs := make([]Event, len(batch))
	for i, r := range batch {
		evs[i] = r.ev
	}
	return l.appendEvents(evs)
}

// appendEvents encodes events after the chain's last line, appends them
// in one write and fsyncs. The file lock is held.
func (l *Log) appendEvents(evs []Event) error {
	epoch, _, err := l.currentEpoch()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	seq, prev := l.ch.seq, l.ch.prevFor(formatV2)
	var first string
	for _, e := range evs {
		seq++
		line, mac, err := encodeLineWith(seq, e, epoch, l.epochMAC, prev)
		if err != nil {
			return err
		}
		if seq == 1 {
			first = mac
		}
		buf.Write(line)
		prev = mac
	}
	if err := l.appendSync(buf.Bytes()); err != nil {
		return err
	}
	l.ch.seq, l.ch.link, l.ch.format = seq, prev, formatV2
	if first != "" {
		l.ch.logID = first
	}
	return nil
}

// currentEpoch returns the epoch key entries are MAC'd with now, asking
// the HSM for a new one every EpochEvery. When the HSM cannot be reached
// for a new one, the current key is kept (and the problem logged), so
// that an HSM outage does not stop the audit log.
func (l *Log) currentEpoch() (string, []byte, error) {
	now := l.opts.Now()
	if l.epochKey != nil && now.Sub(l.epochAt) < l.opts.EpochEvery {
		return l.epoch, l.epochKey, nil
	}
	id, err := newEpochID()
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	key, err := l.keys.key(ctx, id)
	cancel()
	if err != nil {
		if l.epochKey != nil {
			l.log.Warn("audit: could not start a new epoch key; the current one stays in use", "file", l.path, "err", err)
			l.epochAt = now
			return l.epoch, l.epochKey, nil
		}
		return "", nil, err
	}
	// The old epoch's key is no longer needed here: forgetting it means
	// that a later look into this process's memory cannot rewrite the
	// entries made under it.
	if l.epoch != "" {
		l.keys.forget(l.epoch)
	}
	l.epoch, l.epochKey, l.epochAt = id, key, now
	l.epochMAC = hmac.New(sha256.New, key)
	return id, key, nil
}

// checkpoint writes the chain's head, signed by the HSM, to
// FILE.checkpoint and offers it to the witness.
func (l *Log) checkpoint() error {
	if err := l.lockAndSync(); err != nil {
		return err
	}
	defer l.unlock()
	if l.ch.seq == 0 || l.ch.format != formatV2 {
		return nil
	}
	h := Head{V: formatV2, Log: l.ch.logID, Seq: l.ch.seq, MAC: l.ch.link, Offset: l.size, Time: l.opts.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := h.sign(ctx, l.opts.Signer)
	cancel()
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	if err := writeCheckpointFile(l.path+".checkpoint", h); err != nil {
		return err
	}
	l.headSeq, l.needHead = h.Seq, false
	if l.pub != nil {
		l.pub.offer(h)
	}
	return nil
}

// Head names the last entry of a log at one moment: what FILE.checkpoint
// holds and what is published to a witness. Sig, an HMAC under the HSM's
// audit key, makes it impossible to name a head (after a truncation, say)
// without the HSM.
type Head struct {
	V      int       `json:"v"`
	Log    string    `json:"log"` // the MAC (or, for a log begun in version 1, the hash) of line 1
	Seq    uint64    `json:"seq"`
	MAC    string    `json:"mac"`    // the MAC of the line at Seq
	Offset int64     `json:"offset"` // the byte offset just after that line
	Time   time.Time `json:"time"`
	Sig    string    `json:"sig"`
}

func (h *Head) message() []byte {
	return []byte(headContext + h.Log + "\n" + strconv.FormatUint(h.Seq, 10) + "\n" + h.MAC + "\n" +
		strconv.FormatInt(h.Offset, 10) + "\n" + h.Time.UTC().Format(time.RFC3339Nano) + "\n")
}

func (h *Head) sign(ctx context.Context, s Signer) error {
	mac, err := s.AuditMAC(ctx, h.message())
	if err != nil {
		return err
	}
	h.Sig = base64.RawURLEncoding.EncodeToString(mac)
	return nil
}

// check verifies h's signature.
func (h *Head) check(ctx context.Context, s Signer) error {
	got, err := base64.RawURLEncoding.DecodeString(h.Sig)
	if err != nil || h.Sig == "" {
		return errors.New("the head's signature is missing or malformed")
	}
	want, err := s.AuditMAC(ctx, h.message())
	if err != nil {
		return &hsmError{fmt.Errorf("audit: head signature could not be computed: %w", err)}
	}
	if !hmac.Equal(got, want) {
		return errors.New("the head's signature does not match (not written by sidecrypt with this HSM's audit key)")
	}
	return nil
}

// checkpointFile is FILE.checkpoint in either format.
type checkpointFile struct {
	Head
	// Hash is a version 1 checkpoint's covered line hash (V is 0 then);
	// its MAC sits in Head.MAC.
	Hash string `json:"hash,omitempty"`
}

func readCheckpointFile(path string) (*checkpointFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cp checkpointFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("not a checkpoint file: %w", err)
	}
	if cp.V != formatV2 && !(cp.V == 0 && cp.Hash != "") {
		return nil, errors.New("not a checkpoint file: unknown format")
	}
	return &cp, nil
}

func writeCheckpointFile(path string, h Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := writeFileAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data: temporary file, fsync, rename,
// fsync of the directory.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := tmp.Write(data)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
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
// this process last wrote or read it, authenticates what was added (see
// sync).
func (l *Log) lockAndSync() error {
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("audit: lock %s: %w", l.path, err)
	}
	if err := l.sync(); err != nil {
		l.unlock()
		return err
	}
	return nil
}

func (l *Log) unlock() { _ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) }

// sync brings l.ch up to the end of the file. The first time it starts
// from the head that FILE.checkpoint names (or, without one, from the
// first line); later from where this process last was. Every line after
// that point must continue the chain with a valid MAC: lines that do not
// are moved to FILE.quarantine-<time> and an audit.tampering event says
// so; a line cut short by a crash mid-append goes to FILE.torn-<time>
// with an audit.torn_tail event. An edited or truncated log is refused.
func (l *Log) sync() error {
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	size := st.Size()
	if size == l.size {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var notes []Event
	start := l.size
	if start < 0 {
		start, notes, err = l.startingPoint(ctx, size)
		if err != nil {
			return err
		}
	} else if size < l.size {
		return fmt.Errorf("%w: %s shrank from %d to %d bytes since it was last written: refusing to append to a truncated log (run sidecrypt audit verify)", ErrTampered, l.path, l.size, size)
	}
	sr := io.NewSectionReader(l.f, start, size-start)
	res, err := scan(ctx, sr, start, &l.ch)
	if err != nil {
		return fmt.Errorf("audit: %s: %w", l.path, err)
	}
	if res.edited {
		return fmt.Errorf("%w: %s: the line after seq %d is not genuine (%s) but genuine lines follow it: the log was edited; run sidecrypt audit verify", ErrTampered, l.path, l.ch.seq, res.bad)
	}
	l.size = size
	switch {
	case res.bad != "":
		ev, err := l.moveAside(res.good, size, "quarantine")
		if err != nil {
			return err
		}
		ev.Action, ev.Outcome = "audit.tampering", "error"
		ev.Reason = "lines not written by sidecrypt were found at the end of the log; they were moved aside and not adopted"
		ev.Details["lines"] = strconv.Itoa(res.badLines)
		ev.Details["after_seq"] = strconv.FormatUint(l.ch.seq, 10)
		ev.Details["problem"] = sanitize(res.bad)
		l.log.Error("audit: TAMPERING: lines not written by sidecrypt were found at the end of the log; moved aside, not adopted",
			"file", l.path, "moved_to", ev.Details["moved_to"], "lines", res.badLines, "after_seq", l.ch.seq, "problem", res.bad)
		notes = append(notes, ev)
	case res.torn:
		ev, err := l.moveAside(res.good, size, "torn")
		if err != nil {
			return err
		}
		ev.Action, ev.Outcome = "audit.torn_tail", "error"
		ev.Reason = "the log ended in an incomplete line, left by a crash while appending; it was moved aside"
		l.log.Warn("audit: the log ended in an incomplete line (a crash while appending); it was moved aside and the chain continues from the last complete line",
			"file", l.path, "moved_to", ev.Details["moved_to"])
		notes = append(notes, ev)
	}
	if len(notes) > 0 {
		for i := range notes {
			l.countNote(notes[i].Action)
			notes[i].Time = l.opts.Now()
			notes[i].Actor = "audit"
		}
		return l.appendEvents(notes)
	}
	return nil
}

// startingPoint is where the first sync of this process starts reading:
// just after the line that FILE.checkpoint names, with the chain set to
// it, after checking that the line is there. Without a version 2
// checkpoint the whole file is read (a version 1 checkpoint is checked
// against it as the verifier does).
func (l *Log) startingPoint(ctx context.Context, size int64) (int64, []Event, error) {
	cpPath := l.path + ".checkpoint"
	cp, err := readCheckpointFile(cpPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l.needHead = true
		if size == 0 {
			return 0, nil, nil
		}
		l.log.Error("audit: the log has no checkpoint file: it is authenticated from its first line, and the missing file is recorded", "file", l.path, "checkpoint", cpPath)
		return 0, []Event{{Action: "audit.tampering", Outcome: "error",
			Reason:  "the checkpoint file was missing: a truncation of the log before this point cannot be ruled out",
			Details: map[string]string{"checkpoint": filepath.Base(cpPath)}}}, nil
	case err != nil:
		return 0, nil, fmt.Errorf("%w: %s: %v (run sidecrypt audit verify)", ErrTampered, cpPath, err)
	}
	if cp.V != formatV2 {
		// A version 1 log: read it all, once; the first version 2 entry
		// then writes a version 2 checkpoint.
		l.needHead = true
		if cp.Seq > 0 && size == 0 {
			return 0, nil, fmt.Errorf("%w: %s is empty but its checkpoint file names seq %d", ErrTampered, l.path, cp.Seq)
		}
		if err := l.checkV1Checkpoint(ctx, cp); err != nil {
			return 0, nil, err
		}
		return 0, nil, nil
	}
	if err := cp.check(ctx, l.opts.Signer); err != nil {
		return 0, nil, fmt.Errorf("%w: %s: %v", ErrTampered, cpPath, err)
	}
	if cp.Offset > size {
		return 0, nil, fmt.Errorf("%w: %s ends at byte %d but its checkpoint names seq %d ending at byte %d: the log was truncated (run sidecrypt audit verify)", ErrTampered, l.path, size, cp.Seq, cp.Offset)
	}
	first, err := readLineAt(l.f, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: first line: %v", ErrTampered, l.path, err)
	}
	last, err := readLineBefore(l.f, cp.Offset)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: the line the checkpoint names: %v", ErrTampered, l.path, err)
	}
	if first.link() != cp.Log || last.Seq != cp.Seq || last.link() != cp.MAC {
		return 0, nil, fmt.Errorf("%w: %s does not hold seq %d as its checkpoint file names it: the log was rewritten or replaced (run sidecrypt audit verify)", ErrTampered, l.path, cp.Seq)
	}
	l.ch.seq, l.ch.link, l.ch.format, l.ch.logID = cp.Seq, cp.MAC, last.Format, cp.Log
	l.headSeq = cp.Seq
	return cp.Offset, nil, nil
}

// checkV1Checkpoint checks a version 1 checkpoint file against the log
// before it is upgraded: the log must hold the line it names.
func (l *Log) checkV1Checkpoint(ctx context.Context, cp *checkpointFile) error {
	if err := checkV1MAC(ctx, l.opts.Signer, cp.Seq, cp.Hash, cp.MAC); err != nil {
		return fmt.Errorf("%w: %s.checkpoint: %v", ErrTampered, l.path, err)
	}
	if _, err := l.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sc := bufio.NewScanner(l.f)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for n := uint64(1); sc.Scan(); n++ {
		if n == cp.Seq {
			e, err := parseV1(sc.Bytes())
			if err != nil || e.Hash != cp.Hash {
				return fmt.Errorf("%w: %s: line %d differs from the one its checkpoint file signed", ErrTampered, l.path, n)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s ends before seq %d, which its checkpoint file names: the log was truncated", ErrTampered, l.path, cp.Seq)
}

// readLineAt parses the line starting at off.
func readLineAt(f *os.File, off int64) (parsed, error) {
	lr := newLineReader(io.NewSectionReader(f, off, maxLine+1), off)
	b, _, err := lr.next()
	if err != nil {
		return parsed{}, err
	}
	return parseLine(b)
}

// readLineBefore parses the line that ends (with its newline) at end.
func readLineBefore(f *os.File, end int64) (parsed, error) {
	if end <= 0 {
		return parsed{}, errors.New("no line there")
	}
	for window := int64(4096); ; window *= 4 {
		off := max(end-window, 0)
		buf := make([]byte, end-off)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return parsed{}, err
		}
		if buf[len(buf)-1] != '\n' {
			return parsed{}, errors.New("no line ends there")
		}
		body := buf[:len(buf)-1]
		i := bytes.LastIndexByte(body, '\n')
		if i < 0 && off > 0 {
			if window > maxLine {
				return parsed{}, errTooLong
			}
			continue
		}
		return parseLine(body[i+1:])
	}
}

// moveAside copies the bytes from off to end to FILE.<kind>-<time>,
// truncates the log to off and fsyncs. It returns the start of the event
// that records it.
func (l *Log) moveAside(off, end int64, kind string) (Event, error) {
	frag := make([]byte, end-off)
	if _, err := l.f.ReadAt(frag, off); err != nil && err != io.EOF {
		return Event{}, fmt.Errorf("audit: read %s: %w", l.path, err)
	}
	aside := fmt.Sprintf("%s.%s-%d", l.path, kind, l.opts.Now().UnixNano())
	if err := writeFileAtomic(aside, frag); err != nil {
		return Event{}, fmt.Errorf("audit: keep what was moved aside: %w", err)
	}
	if err := l.f.Truncate(off); err != nil {
		return Event{}, fmt.Errorf("audit: truncate %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return Event{}, fmt.Errorf("audit: fsync %s: %w", l.path, err)
	}
	l.size = off
	return Event{Details: map[string]string{"moved_to": filepath.Base(aside), "bytes": strconv.FormatInt(end-off, 10)}}, nil
}

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

// Tail returns the last n entries of the log file at path, oldest first,
// without verifying the chain.
func Tail(path string, n int) ([]Entry, error) {
	f, err := os.Open(path)
	if err == nil && n <= 0 {
		f.Close()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	ring := make([]Entry, 0, n)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for sc.Scan() {
		p, err := parseLine(sc.Bytes())
		if err != nil {
			continue
		}
		if len(ring) == n {
			copy(ring, ring[1:])
			ring = ring[:n-1]
		}
		if n > 0 {
			ring = append(ring, p.Entry)
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
