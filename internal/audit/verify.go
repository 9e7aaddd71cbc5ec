package audit

import (
	"bufio"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Result is the outcome of Verify.
type Result struct {
	OK      bool   `json:"ok"`
	Entries uint64 `json:"entries"`
	// Checkpoints counts in-log checkpoints whose MAC was checked (or,
	// when MACs were not checked, merely found).
	Checkpoints int  `json:"checkpoints"`
	MACsChecked bool `json:"macs_checked"`
	// UnsignedTail counts entries after the last checkpoint: they are
	// hash-chained but not yet covered by a MAC.
	UnsignedTail uint64 `json:"unsigned_tail"`
	// CheckpointFile says what FILE.checkpoint showed: "ok", "missing" or
	// the problem.
	CheckpointFile string `json:"checkpoint_file"`
	// Problem is the first break found: the line number (1-based), the
	// seq there, and what is wrong.
	Problem *Problem `json:"problem,omitempty"`
}

// Problem locates the first break in the chain.
type Problem struct {
	Line   uint64 `json:"line"`
	Seq    uint64 `json:"seq,omitempty"`
	Reason string `json:"reason"`
}

func (p *Problem) String() string {
	if p.Seq > 0 {
		return fmt.Sprintf("line %d (seq %d): %s", p.Line, p.Seq, p.Reason)
	}
	return fmt.Sprintf("line %d: %s", p.Line, p.Reason)
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Signer recomputes checkpoint MACs. Nil skips the MAC check (the
	// result says so); the chain is still checked.
	Signer Signer
	// CheckpointFile is the file written beside the log; empty means
	// path + ".checkpoint". "-" means do not check one.
	CheckpointFile string
}

// VerifyFile checks the log at path: every line's hash, the chain of prev
// hashes, gap-free sequence numbers, every checkpoint's MAC, and the tail
// against the checkpoint file. It returns a Result whose Problem names the
// first break; the error is only for I/O failures.
func VerifyFile(ctx context.Context, path string, opts VerifyOptions) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	res, err := Verify(ctx, f, opts.Signer)
	if err != nil || res.Problem != nil {
		return res, err
	}
	cpPath := opts.CheckpointFile
	if cpPath == "" {
		cpPath = path + ".checkpoint"
	}
	if cpPath == "-" {
		res.CheckpointFile = "not checked"
		return res, nil
	}
	res.CheckpointFile = checkCheckpointFile(ctx, cpPath, f, &res, opts.Signer)
	return res, nil
}

// checkCheckpointFile compares FILE.checkpoint with the log: the log must
// contain the line it names, with the same hash. It sets res.Problem on a
// mismatch (truncation or rewrite).
func checkCheckpointFile(ctx context.Context, cpPath string, f *os.File, res *Result, signer Signer) string {
	b, err := os.ReadFile(cpPath)
	if errors.Is(err, os.ErrNotExist) {
		if res.Entries > 0 {
			return "missing (tail truncation cannot be checked)"
		}
		return "missing"
	}
	if err != nil {
		return "unreadable: " + err.Error()
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		res.OK = false
		res.Problem = &Problem{Reason: "checkpoint file is not valid JSON: " + err.Error()}
		return "invalid"
	}
	if signer != nil {
		if err := checkMAC(ctx, signer, cp.Seq, cp.Hash, cp.MAC); err != nil {
			res.OK = false
			res.Problem = &Problem{Seq: cp.Seq, Reason: "checkpoint file: " + err.Error()}
			return "bad MAC"
		}
	}
	if cp.Seq > res.Entries {
		res.OK = false
		res.Problem = &Problem{Line: res.Entries + 1, Seq: res.Entries + 1,
			Reason: fmt.Sprintf("log ends at seq %d but the checkpoint file covers seq %d: the tail was truncated", res.Entries, cp.Seq)}
		return "log truncated"
	}
	// Find the covered line's hash.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "unreadable: " + err.Error()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for n := uint64(1); sc.Scan(); n++ {
		if n != cp.Seq {
			continue
		}
		e, err := parseLine(sc.Bytes())
		if err != nil || e.Hash != cp.Hash {
			res.OK = false
			res.Problem = &Problem{Line: n, Seq: n, Reason: "line differs from the one the checkpoint file signed"}
			return "mismatch"
		}
		return "ok"
	}
	return "ok"
}

// Verify checks the chain read from r. See VerifyFile.
func Verify(ctx context.Context, r io.Reader, signer Signer) (Result, error) {
	res := Result{OK: true, MACsChecked: signer != nil}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	prev := zeroHash
	var n uint64
	var lastSigned uint64
	fail := func(seq uint64, reason string) (Result, error) {
		res.OK = false
		res.Problem = &Problem{Line: n, Seq: seq, Reason: reason}
		return res, nil
	}
	for sc.Scan() {
		n++
		e, err := parseLine(sc.Bytes())
		if err != nil {
			return fail(0, err.Error())
		}
		switch {
		case e.Seq != n:
			if e.Seq > n {
				return fail(e.Seq, fmt.Sprintf("expected seq %d: %d line(s) missing before this one (deleted), or lines reordered", n, e.Seq-n))
			}
			return fail(e.Seq, fmt.Sprintf("expected seq %d: a line was inserted, duplicated or moved", n))
		case e.Prev != prev:
			return fail(e.Seq, "prev does not match the hash of the line before: the line before was replaced, or lines reordered")
		}
		if e.Action == checkpointAction && e.Actor == "audit" {
			covers, err := strconv.ParseUint(e.Details["covers"], 10, 64)
			if err != nil || covers != e.Seq-1 || e.Details["covers_hash"] != prev {
				return fail(e.Seq, "malformed checkpoint")
			}
			if signer != nil {
				if err := checkMAC(ctx, signer, covers, prev, e.Details["mac"]); err != nil {
					return fail(e.Seq, "checkpoint "+err.Error()+": the lines before it were rewritten")
				}
			}
			res.Checkpoints++
			lastSigned = e.Seq
		}
		prev = e.Hash
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			n++
			return fail(0, fmt.Sprintf("line longer than %d bytes", maxLine))
		}
		return res, fmt.Errorf("audit: read: %w", err)
	}
	res.Entries = n
	res.UnsignedTail = n - lastSigned
	return res, nil
}

func checkMAC(ctx context.Context, signer Signer, seq uint64, hash, macText string) error {
	if macText == "" {
		return errors.New("is unsigned but an HSM audit key is configured")
	}
	got, err := base64.RawURLEncoding.DecodeString(macText)
	if err != nil {
		return errors.New("MAC is not base64url")
	}
	want, err := signer.AuditMAC(ctx, checkpointMessage(seq, hash))
	if err != nil {
		return fmt.Errorf("MAC could not be computed: %w", err)
	}
	if !hmac.Equal(got, want) {
		return errors.New("MAC does not match")
	}
	return nil
}
