package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// Result is the outcome of Verify.
type Result struct {
	// OK: every line is where it belongs and (with MACs checked)
	// authentic, the checkpoint file matches, and so does the witness
	// when asked.
	OK      bool   `json:"ok"`
	Entries uint64 `json:"entries"`
	// V1Entries counts lines of the older format (version 1) at the
	// start of the log, written before an upgrade.
	V1Entries uint64 `json:"v1_entries,omitempty"`
	// Checkpoints counts version 1 checkpoint lines whose MAC was
	// checked (or, when MACs were not checked, merely found).
	Checkpoints int `json:"checkpoints,omitempty"`
	// Epochs counts the epoch keys that MAC the version 2 lines.
	Epochs      int  `json:"epochs"`
	MACsChecked bool `json:"macs_checked"`
	// UnsignedTail counts version 1 entries after the last version 1
	// checkpoint, in a log that is still all version 1.
	UnsignedTail uint64 `json:"unsigned_tail,omitempty"`
	// CheckpointFile says what FILE.checkpoint showed: "ok ...",
	// "missing", "not checked", or the problem.
	CheckpointFile string `json:"checkpoint_file"`
	// Witness says what the witness showed, or "not checked".
	Witness string `json:"witness"`
	// Incidents are the tampering the writers found, set aside and
	// recorded (audit.tampering events). The chain may be intact, but
	// somebody other than sidecrypt wrote to the log.
	Incidents []Incident `json:"incidents,omitempty"`
	// Problem is the first break found: the line number (1-based), the
	// seq there, and what is wrong.
	Problem *Problem `json:"problem,omitempty"`
	// LogID names the log to checkpoints and witnesses.
	LogID string `json:"log_id,omitempty"`
}

// Clean reports an intact log with no recorded tampering.
func (r *Result) Clean() bool { return r.OK && len(r.Incidents) == 0 }

// Incident is one recorded audit.tampering event.
type Incident struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	// Details: where the lines went, how many, the first problem.
	Details map[string]string `json:"details,omitempty"`
}

// Problem locates the first break in the chain.
type Problem struct {
	Line   uint64 `json:"line,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Reason string `json:"reason"`
}

func (p *Problem) String() string {
	switch {
	case p.Line > 0 && p.Seq > 0:
		return fmt.Sprintf("line %d (seq %d): %s", p.Line, p.Seq, p.Reason)
	case p.Line > 0:
		return fmt.Sprintf("line %d: %s", p.Line, p.Reason)
	case p.Seq > 0:
		return fmt.Sprintf("seq %d: %s", p.Seq, p.Reason)
	}
	return p.Reason
}

// VerifyOptions configure VerifyFile.
type VerifyOptions struct {
	// Signer recomputes MACs with the HSM's audit key. Nil checks only
	// the structure (seq, links, version 1 hashes) and says so: without
	// it a rewritten log cannot be told from a genuine one.
	Signer Signer
	// CheckpointFile is the file written beside the log; empty means
	// path + ".checkpoint". "-" means do not check one.
	CheckpointFile string
	// Witness, when not nil, is asked for the heads it saw of this log;
	// each must be in the log. A log rolled back together with its
	// checkpoint file lacks the later ones.
	Witness WitnessReader
}

// VerifyFile checks the log at path: every line's place in the chain
// (seq, prev), every version 2 line's MAC, every version 1 line's hash and
// checkpoint MAC, the checkpoint file (which must exist for a non-empty
// log) and, when asked, the witness. It returns a Result whose Problem
// names the first break; the error is only for I/O and HSM failures.
func VerifyFile(ctx context.Context, path string, opts VerifyOptions) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	v := newVerifier(opts.Signer)

	// What must be looked up during the one pass: the checkpoint's line
	// and the witness's heads, which need the log's name (line 1). The
	// witness first: a head it holds was written to the log before it was
	// published, so the log as read afterwards holds it.
	var heads []Head
	if opts.Witness != nil {
		first, ferr := readLineAt(f, 0)
		if ferr == nil {
			v.res.LogID = first.link()
			if heads, err = opts.Witness.Heads(ctx, v.res.LogID); err != nil {
				return v.res, err
			}
			for _, h := range heads {
				v.want[h.Seq] = true
			}
		}
	}
	// Then, under a shared lock (writers append whole lines and replace
	// the checkpoint file under an exclusive one), the log's size and
	// its checkpoint file, consistent with each other; the log is read
	// up to that size, so a writer appending meanwhile is no problem.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		return Result{}, fmt.Errorf("audit: lock %s: %w", path, err)
	}
	st, err := f.Stat()
	var cp *checkpointFile
	var cpErr error
	cpPath := opts.CheckpointFile
	if cpPath == "" {
		cpPath = path + ".checkpoint"
	}
	if cpPath != "-" {
		cp, cpErr = readCheckpointFile(cpPath)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err != nil {
		return Result{}, fmt.Errorf("audit: %w", err)
	}
	cpStatus := "not checked"
	if cpPath != "-" {
		switch {
		case errors.Is(cpErr, os.ErrNotExist):
			cp, cpStatus = nil, "missing"
		case cpErr != nil:
			v.res.CheckpointFile = "invalid"
			v.res.OK = false
			v.res.Problem = &Problem{Reason: "checkpoint file: " + cpErr.Error()}
			return v.res, nil
		default:
			v.want[cp.Seq] = true
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Result{}, fmt.Errorf("audit: %w", err)
	}
	if err := v.run(ctx, io.LimitReader(f, st.Size())); err != nil {
		return v.res, err
	}
	res := &v.res
	res.CheckpointFile = cpStatus
	if res.Problem != nil {
		return *res, nil
	}
	if cpPath != "-" {
		if err := v.checkCheckpoint(ctx, cp); err != nil {
			return *res, err
		}
	}
	if res.Problem == nil && opts.Witness != nil {
		if err := v.checkWitness(ctx, heads); err != nil {
			return *res, err
		}
	} else if opts.Witness == nil {
		res.Witness = "not checked"
	}
	return *res, nil
}

// Verify checks the chain read from r, without a checkpoint file or a
// witness. See VerifyFile.
func Verify(ctx context.Context, r io.Reader, signer Signer) (Result, error) {
	v := newVerifier(signer)
	err := v.run(ctx, r)
	v.res.CheckpointFile, v.res.Witness = "not checked", "not checked"
	return v.res, err
}

type verifier struct {
	ch     chain
	res    Result
	want   map[uint64]bool // seqs whose link and end offset must be kept
	seen   map[uint64]seenLine
	epochs map[string]bool
}

type seenLine struct {
	link string
	end  int64
}

func newVerifier(signer Signer) *verifier {
	v := &verifier{want: map[uint64]bool{}, seen: map[uint64]seenLine{}, epochs: map[string]bool{}}
	v.ch.signer = signer
	if signer != nil {
		v.ch.keys = newKeyring(signer)
	}
	v.res = Result{OK: true, MACsChecked: signer != nil}
	return v
}

func (v *verifier) run(ctx context.Context, r io.Reader) error {
	defer func() {
		if v.ch.keys != nil {
			v.ch.keys.zero()
		}
	}()
	lr := newLineReader(r, 0)
	var n uint64
	fail := func(seq uint64, reason string) error {
		v.res.OK = false
		v.res.Problem = &Problem{Line: n, Seq: seq, Reason: reason}
		return nil
	}
	for {
		b, _, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		n++
		switch {
		case errors.Is(err, errTorn):
			return fail(0, "the log ends in an incomplete line (a crash mid-append that no writer has recovered yet, or a cut)")
		case errors.Is(err, errTooLong):
			return fail(0, err.Error())
		case err != nil:
			return fmt.Errorf("audit: read: %w", err)
		}
		p, err := parseLine(b)
		if err != nil {
			return fail(0, err.Error())
		}
		if err := v.ch.next(ctx, &p); err != nil {
			var he *hsmError
			if errors.As(err, &he) {
				return err
			}
			if p.Format == formatV2 && errors.Is(err, errMACMismatch) {
				return fail(p.Seq, err.Error())
			}
			return fail(p.Seq, err.Error())
		}
		if v.want[p.Seq] {
			v.seen[p.Seq] = seenLine{link: p.link(), end: lr.off}
		}
		switch p.Format {
		case formatV1:
			v.res.V1Entries++
			if isV1Checkpoint(&p.Entry) {
				v.res.Checkpoints++
			}
		case formatV2:
			v.epochs[p.Epoch] = true
			if p.Action == "audit.tampering" && p.Actor == "audit" {
				v.res.Incidents = append(v.res.Incidents, Incident{Seq: p.Seq, Time: p.Time, Reason: p.Reason, Details: p.Details})
			}
		}
	}
	v.res.Entries = n
	v.res.Epochs = len(v.epochs)
	v.res.LogID = v.ch.logID
	if v.ch.format == formatV1 {
		v.res.UnsignedTail = v.ch.seq - v.ch.v1Signed
	}
	return nil
}

// checkCheckpoint compares FILE.checkpoint with the log: it must exist
// when the log has entries, carry the HSM's signature, name this log, and
// the log must hold the line it names, unchanged.
func (v *verifier) checkCheckpoint(ctx context.Context, cp *checkpointFile) error {
	res := &v.res
	bad := func(status string, p *Problem) error {
		res.OK = false
		res.CheckpointFile = status
		res.Problem = p
		return nil
	}
	if cp == nil {
		if res.Entries == 0 {
			res.CheckpointFile = "missing (the log is empty)"
			return nil
		}
		return bad("missing", &Problem{Reason: "the checkpoint file is missing: a truncated log cannot be told from a whole one; it is written beside the log by every writer, so its absence means it was removed"})
	}
	if cp.V != formatV2 {
		// A version 1 checkpoint: its covered line's hash and MAC.
		if v.ch.signer != nil {
			if err := checkV1MAC(ctx, v.ch.signer, cp.Seq, cp.Hash, cp.MAC); err != nil {
				var he *hsmError
				if errors.As(err, &he) {
					return err
				}
				return bad("bad MAC", &Problem{Seq: cp.Seq, Reason: "checkpoint file: " + err.Error()})
			}
		}
		if cp.Seq > res.Entries {
			return bad("log truncated", &Problem{Line: res.Entries + 1, Seq: res.Entries + 1,
				Reason: fmt.Sprintf("log ends at seq %d but the checkpoint file covers seq %d: the tail was truncated", res.Entries, cp.Seq)})
		}
		if s, ok := v.seen[cp.Seq]; !ok || s.link != cp.Hash {
			return bad("mismatch", &Problem{Line: cp.Seq, Seq: cp.Seq, Reason: "line differs from the one the checkpoint file signed"})
		}
		res.CheckpointFile = fmt.Sprintf("ok (version 1, covers seq %d of %d)", cp.Seq, res.Entries)
		return nil
	}
	if v.ch.signer != nil {
		if err := cp.check(ctx, v.ch.signer); err != nil {
			var he *hsmError
			if errors.As(err, &he) {
				return err
			}
			return bad("bad signature", &Problem{Seq: cp.Seq, Reason: "checkpoint file: " + err.Error()})
		}
	}
	if cp.Log != res.LogID {
		return bad("another log", &Problem{Reason: "the checkpoint file belongs to another log (its first line differs): the log was replaced"})
	}
	if cp.Seq > res.Entries {
		return bad("log truncated", &Problem{Line: res.Entries + 1, Seq: res.Entries + 1,
			Reason: fmt.Sprintf("log ends at seq %d but the checkpoint file names seq %d (written %s): the tail was truncated", res.Entries, cp.Seq, cp.Time.Format(time.RFC3339))})
	}
	if s := v.seen[cp.Seq]; s.link != cp.MAC || s.end != cp.Offset {
		return bad("mismatch", &Problem{Line: cp.Seq, Seq: cp.Seq, Reason: "line differs from the one the checkpoint file names"})
	}
	res.CheckpointFile = fmt.Sprintf("ok (covers seq %d of %d)", cp.Seq, res.Entries)
	return nil
}

// checkWitness checks that every head the witness saw is in the log.
func (v *verifier) checkWitness(ctx context.Context, heads []Head) error {
	res := &v.res
	if len(heads) == 0 {
		res.OK = false
		res.Witness = "no record of this log"
		res.Problem = &Problem{Reason: "the witness holds no head of this log: the log was replaced, or the witness is not the one this log publishes to"}
		return nil
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].Seq < heads[j].Seq })
	for _, h := range heads {
		if v.ch.signer != nil {
			if err := h.check(ctx, v.ch.signer); err != nil {
				var he *hsmError
				if errors.As(err, &he) {
					return err
				}
				res.OK = false
				res.Witness = "bad record"
				res.Problem = &Problem{Seq: h.Seq, Reason: "a witness record: " + err.Error()}
				return nil
			}
		}
		if h.Seq > res.Entries {
			res.OK = false
			res.Witness = "log rolled back"
			res.Problem = &Problem{Seq: h.Seq, Reason: fmt.Sprintf("the witness saw this log reach seq %d at %s, but it ends at seq %d: the log (and its checkpoint file) were rolled back or truncated",
				h.Seq, h.Time.Format(time.RFC3339), res.Entries)}
			return nil
		}
		if s := v.seen[h.Seq]; s.link != h.MAC {
			res.OK = false
			res.Witness = "log rewritten"
			res.Problem = &Problem{Line: h.Seq, Seq: h.Seq, Reason: fmt.Sprintf("the witness saw another entry at seq %d (at %s): the log was rewritten from there", h.Seq, h.Time.Format(time.RFC3339))}
			return nil
		}
	}
	last := heads[len(heads)-1]
	res.Witness = "ok (" + strconv.Itoa(len(heads)) + " head(s), the latest seq " + strconv.FormatUint(last.Seq, 10) + " at " + last.Time.Format(time.RFC3339) + ")"
	return nil
}
