package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hmacSigner stands in for the HSM's audit key.
type hmacSigner struct{ key []byte }

func (s hmacSigner) AuditMAC(_ context.Context, msg []byte) ([]byte, error) {
	m := hmac.New(sha256.New, s.key)
	m.Write(msg)
	return m.Sum(nil), nil
}

// testSigner is the key testdata/v1.log was written with.
var testSigner = hmacSigner{key: []byte("audit key held by the HSM.......")}

// otherSigner is somebody else's key: what a forger without the HSM has.
var otherSigner = hmacSigner{key: []byte("a key the forger made up........")}

func ctxActor() context.Context { return WithActor(context.Background(), "cli:test") }

func open(t *testing.T, path string, opts Options) *Log {
	t.Helper()
	if opts.Signer == nil {
		opts.Signer = testSigner
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = time.Hour
	}
	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func record(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		if err := l.Record(ctxActor(), Event{Action: "key.rotate", Key: "pii", Version: uint32(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
}

// writeLog records n key events through a fresh log and closes it (which
// writes the checkpoint file).
func writeLog(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "audit.log")
	l := open(t, path, Options{})
	record(t, l, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func verify(t *testing.T, path string) Result {
	t.Helper()
	res, err := VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	return lines[:len(lines)-1] // the empty string after the last newline
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	s := strings.Join(lines, "")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func mustParse(t *testing.T, line string) parsed {
	t.Helper()
	p, err := parseLine([]byte(strings.TrimSuffix(line, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// forge builds the line a forger would append after last: the right seq
// and prev, a made-up epoch, and a MAC under a key that is not the HSM's.
func forge(t *testing.T, last string, e Event) string {
	t.Helper()
	p := mustParse(t, last)
	if e.Time.IsZero() {
		e.Time = time.Now().Add(-24 * time.Hour) // back-dated
	}
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	epoch, _ := newEpochID()
	key, _ := otherSigner.AuditMAC(context.Background(), []byte(epochContext+epoch))
	line, _, err := encodeLine(p.Seq+1, e, epoch, key, p.link())
	if err != nil {
		t.Fatal(err)
	}
	return string(line)
}

func TestIntactLogVerifies(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	res := verify(t, path)
	if !res.Clean() || res.Problem != nil {
		t.Fatalf("intact log: %+v %v", res, res.Problem)
	}
	if res.Entries != 5 || res.V1Entries != 0 || res.Epochs != 1 || !res.MACsChecked || !strings.HasPrefix(res.CheckpointFile, "ok") {
		t.Fatalf("unexpected result: %+v", res)
	}
	for _, f := range []string{path, path + ".checkpoint"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	lines := readLines(t, path)
	if !strings.HasPrefix(lines[0], `{"v":2,"seq":1,`) || !strings.Contains(lines[0], `"actor":"cli:test"`) || !strings.Contains(lines[0], `"prev":""`) {
		t.Errorf("first line lacks version, actor or genesis prev: %s", lines[0])
	}
	// Each line's prev is the MAC of the one before.
	for i := 1; i < len(lines); i++ {
		if mustParse(t, lines[i]).Prev != mustParse(t, lines[i-1]).MAC {
			t.Fatalf("line %d does not chain to the MAC of line %d", i+1, i)
		}
	}
}

// TestTamperingIsDetected edits the log in every way the threat model
// names and checks that verify points at the right line.
func TestTamperingIsDetected(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(t *testing.T, l []string) []string
		wantLine uint64
		wantText string
	}{
		{"edit a value", func(_ *testing.T, l []string) []string {
			l[2] = strings.Replace(l[2], `"version":3`, `"version":9`, 1)
			return l
		}, 3, "MAC does not match"},
		{"edit and recompute the MAC without the HSM", func(t *testing.T, l []string) []string {
			p := mustParse(t, l[2])
			p.Event.Outcome = "denied"
			key, _ := otherSigner.AuditMAC(context.Background(), []byte(epochContext+p.Epoch))
			line, _, _ := encodeLine(p.Seq, p.Event, p.Epoch, key, p.Prev)
			l[2] = string(line)
			return l
		}, 3, "MAC does not match"},
		{"delete a line", func(_ *testing.T, l []string) []string {
			return append(l[:1], l[2:]...)
		}, 2, "missing"},
		{"insert a copy", func(_ *testing.T, l []string) []string {
			out := append([]string{}, l[:3]...)
			out = append(out, l[1])
			return append(out, l[3:]...)
		}, 4, "inserted"},
		{"swap two lines", func(_ *testing.T, l []string) []string {
			l[1], l[2] = l[2], l[1]
			return l
		}, 2, "missing"},
		{"drop the first line", func(_ *testing.T, l []string) []string { return l[1:] }, 1, "missing"},
		{"append garbage", func(_ *testing.T, l []string) []string { return append(l, "{\"not\":\"audit\"}\n") }, 6, "hash or MAC"},
		{"append a forged line", func(t *testing.T, l []string) []string {
			return append(l, forge(t, l[len(l)-1], Event{Actor: "cli:root", Action: "key.destroy", Key: "pii", Version: 1}))
		}, 6, "MAC does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, t.TempDir(), 5)
			writeLines(t, path, tc.mutate(t, readLines(t, path)))
			res := verify(t, path)
			if res.OK || res.Problem == nil {
				t.Fatalf("tampering not detected: %+v", res)
			}
			if res.Problem.Line != tc.wantLine || !strings.Contains(res.Problem.Reason, tc.wantText) {
				t.Fatalf("problem = %v, want line %d mentioning %q", res.Problem, tc.wantLine, tc.wantText)
			}
		})
	}
}

// TestRewrittenLogIsCaughtByMAC: an attacker who rewrites the whole log
// with a key of their own produces a consistent chain, but every MAC is
// wrong under the HSM's key, from the first line on.
func TestRewrittenLogIsCaughtByMAC(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	var out []string
	prev := ""
	for i, l := range readLines(t, path) {
		p := mustParse(t, l)
		if i == 1 {
			p.Event.Actor = "cli:someone-else"
		}
		key, _ := otherSigner.AuditMAC(context.Background(), []byte(epochContext+p.Epoch))
		line, mac, err := encodeLine(p.Seq, p.Event, p.Epoch, key, prev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(line))
		prev = mac
	}
	writeLines(t, path, out)

	// Without the key, the structure alone looks fine...
	res, err := VerifyFile(context.Background(), path, VerifyOptions{CheckpointFile: "-"})
	if err != nil || !res.OK || res.MACsChecked {
		t.Fatalf("sanity: rewritten chain should be self-consistent: %+v %v", res, err)
	}
	// ...with it, the first line gives the rewrite away.
	res = verify(t, path)
	if res.OK || res.Problem == nil || res.Problem.Line != 1 || !strings.Contains(res.Problem.Reason, "MAC does not match") {
		t.Fatalf("rewrite not caught: %+v %v", res, res.Problem)
	}
}

func TestTruncatedTailIsDetected(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	writeLines(t, path, readLines(t, path)[:4]) // a clean cut at a line boundary
	res := verify(t, path)
	if res.OK || res.Problem == nil || !strings.Contains(res.Problem.Reason, "truncated") || res.CheckpointFile != "log truncated" {
		t.Fatalf("truncation not detected: %+v %v", res, res.Problem)
	}
	// The writer refuses to continue a truncated log.
	if _, err := Open(path, Options{Signer: testSigner}); !errors.Is(err, ErrTampered) {
		t.Fatalf("Open of a truncated log: %v, want ErrTampered", err)
	}
}

// TestMissingCheckpointFailsVerify reproduces finding 13.3: with
// FILE.checkpoint deleted, a truncated log verified as OK.
func TestMissingCheckpointFailsVerify(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	writeLines(t, path, readLines(t, path)[:3])
	if err := os.Remove(path + ".checkpoint"); err != nil {
		t.Fatal(err)
	}
	res := verify(t, path)
	if res.OK || res.CheckpointFile != "missing" || !strings.Contains(res.Problem.Reason, "checkpoint file is missing") {
		t.Fatalf("truncated log without its checkpoint file: %+v %v", res, res.Problem)
	}
	// An empty log needs none.
	empty := filepath.Join(t.TempDir(), "audit.log")
	writeLines(t, empty, nil)
	if res := verify(t, empty); !res.OK {
		t.Fatalf("empty log: %+v %v", res, res.Problem)
	}
}

func TestForgedCheckpointFileIsRefused(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	lines := readLines(t, path)
	writeLines(t, path, lines[:3])
	// The forger names the new last line, but cannot sign the head.
	p := mustParse(t, lines[2])
	h := Head{V: 2, Log: mustParse(t, lines[0]).MAC, Seq: 3, MAC: p.MAC, Offset: int64(len(strings.Join(lines[:3], ""))), Time: time.Now().UTC()}
	if err := h.sign(context.Background(), otherSigner); err != nil {
		t.Fatal(err)
	}
	if err := writeCheckpointFile(path+".checkpoint", h); err != nil {
		t.Fatal(err)
	}
	res := verify(t, path)
	if res.OK || res.CheckpointFile != "bad signature" {
		t.Fatalf("forged checkpoint accepted: %+v %v", res, res.Problem)
	}
	if _, err := Open(path, Options{Signer: testSigner}); !errors.Is(err, ErrTampered) {
		t.Fatalf("Open with a forged checkpoint: %v, want ErrTampered", err)
	}
}

func TestWrongKeyFailsMAC(t *testing.T) {
	path := writeLog(t, t.TempDir(), 2)
	res, err := VerifyFile(context.Background(), path, VerifyOptions{Signer: otherSigner})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK {
		t.Fatal("a MAC made with another key verified")
	}
}

func TestOpenNeedsTheAuditKey(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "audit.log"), Options{}); err == nil {
		t.Fatal("Open without a Signer succeeded: every entry needs the HSM's key")
	}
}

// TestForeignLinesAreNotAdopted reproduces finding 13.3: a line appended
// by another writer (a back-dated key.destroy) was adopted by the next
// write and covered by the next signed checkpoint, and then verified as
// genuine. Now the writer finds it does not authenticate, moves it aside,
// records audit.tampering, and never chains onto it.
func TestForeignLinesAreNotAdopted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{})
	record(t, l, 2)
	lines := readLines(t, path)
	forged := forge(t, lines[len(lines)-1], Event{Actor: "cli:root", Action: "key.destroy", Key: "pii", Version: 1, Reason: "end of life"})
	// And a plausible version 1 line after it, hash and all.
	p := mustParse(t, forged)
	v1, _, _ := encodeLineV1(p.Seq+1, Event{Time: time.Now(), Actor: "cli:root", Action: "key.destroy", Key: "pii", Version: 2, Outcome: "ok"}, p.MAC)
	appendFile(t, path, forged+string(v1))

	record(t, l, 1)
	l.Close()

	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte(`"action":"key.destroy"`)) {
		t.Fatalf("the forged lines are still in the log:\n%s", b)
	}
	res := verify(t, path)
	if !res.OK {
		t.Fatalf("chain broken: %v", res.Problem)
	}
	if res.Clean() || len(res.Incidents) != 1 {
		t.Fatalf("tampering not reported by verify: %+v", res)
	}
	inc := res.Incidents[0]
	if inc.Seq != 3 || inc.Details["lines"] != "2" || inc.Details["after_seq"] != "2" || !strings.Contains(inc.Details["problem"], "MAC does not match") {
		t.Fatalf("incident %+v", inc)
	}
	aside, err := os.ReadFile(filepath.Join(filepath.Dir(path), inc.Details["moved_to"]))
	if err != nil || string(aside) != forged+string(v1) {
		t.Fatalf("the foreign lines were not kept aside intact: %q %v", aside, err)
	}
	// The event after the incident is the genuine one, chained to seq 2.
	if res.Entries != 4 {
		t.Fatalf("%d entries, want 2 events, the incident and 1 event", res.Entries)
	}
}

// TestForeignLinesWhileStopped: lines appended while no sidecrypt runs
// are found when the log is next opened.
func TestForeignLinesWhileStopped(t *testing.T) {
	path := writeLog(t, t.TempDir(), 3)
	lines := readLines(t, path)
	appendFile(t, path, forge(t, lines[2], Event{Actor: "cli:root", Action: "rules.reload", Details: map[string]string{"diff": "1 route REMOVED"}}))
	l := open(t, path, Options{})
	record(t, l, 1)
	l.Close()
	res := verify(t, path)
	if !res.OK || len(res.Incidents) != 1 || res.Entries != 5 {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestEditedLogIsRefusedByWriter: an edit among genuine lines is not a
// suffix that can be set aside: the writer refuses to continue.
func TestEditedLogIsRefusedByWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{})
	record(t, l, 3)
	lines := readLines(t, path)
	// Another process appends genuine lines... (simulated: a second Log)
	l2 := open(t, path, Options{})
	record(t, l2, 2)
	l2.Close()
	// ...and someone edits the first of them.
	lines2 := readLines(t, path)
	lines2[3] = strings.Replace(lines2[3], `"version":1`, `"version":7`, 1)
	writeLines(t, path, lines2)
	_ = lines
	err := l.Record(ctxActor(), Event{Action: "key.rotate", Key: "pii"})
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("Record after an edit: %v, want ErrTampered", err)
	}
	l.Close()
}

// TestRollbackIsCaughtByWitness: the log and its checkpoint file put
// back to an earlier authentic state verify on their own; the witness,
// which saw a later head, gives the rollback away.
func TestRollbackIsCaughtByWitness(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	w := FileWitness{Path: filepath.Join(t.TempDir(), "witness", "heads")}
	l := open(t, path, Options{Witness: w})
	record(t, l, 3)
	l.Close()
	snapLog, _ := os.ReadFile(path)
	snapCP, _ := os.ReadFile(path + ".checkpoint")

	l = open(t, path, Options{Witness: w})
	record(t, l, 2) // e.g. a key.destroy someone wants forgotten
	l.Close()
	res, err := VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: w})
	if err != nil || !res.Clean() || !strings.HasPrefix(res.Witness, "ok (3 head(s), the latest seq 5") {
		t.Fatalf("before the rollback: %+v %v %v", res, res.Problem, err)
	}

	os.WriteFile(path, snapLog, 0o600)
	os.WriteFile(path+".checkpoint", snapCP, 0o600)
	if res := verify(t, path); !res.OK {
		t.Fatalf("sanity: the rolled-back log verifies without the witness: %v", res.Problem)
	}
	res, err = VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: w})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.Witness != "log rolled back" || !strings.Contains(res.Problem.Reason, "reach seq 5") {
		t.Fatalf("rollback not detected: %+v %v", res, res.Problem)
	}

	// A rollback followed by new entries: the witness's seq 5 now
	// names another entry.
	l = open(t, path, Options{})
	record(t, l, 3)
	l.Close()
	res, _ = VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: w})
	if res.OK || res.Witness != "log rewritten" {
		t.Fatalf("rollback then rewrite not detected: %+v %v", res, res.Problem)
	}

	// A witness that never heard of this log says so.
	other := FileWitness{Path: filepath.Join(t.TempDir(), "other")}
	os.WriteFile(other.Path, nil, 0o600)
	res, _ = VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: other})
	if res.OK || res.Witness != "no record of this log" {
		t.Fatalf("unknown log: %+v", res)
	}
}

// TestV1LogStillVerifies: a log written by the version before the keyed
// chain (testdata/v1.log, with its checkpoint file) verifies unchanged.
func TestV1LogStillVerifies(t *testing.T) {
	path := copyV1(t)
	res := verify(t, path)
	if !res.Clean() || res.Entries != 5 || res.V1Entries != 5 || res.Checkpoints != 1 || !strings.HasPrefix(res.CheckpointFile, "ok (version 1") {
		t.Fatalf("v1 log: %+v %v", res, res.Problem)
	}
	lines := readLines(t, path)
	lines[1] = strings.Replace(lines[1], `"version":2`, `"version":3`, 1)
	writeLines(t, path, lines)
	if res := verify(t, path); res.OK {
		t.Fatal("an edited v1 log verified")
	}
}

func copyV1(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	for _, s := range []string{"", ".checkpoint"} {
		b, err := os.ReadFile("testdata/v1.log" + s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+s, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestV1LogIsContinuedInV2: after an upgrade the writer continues an old
// log with keyed lines chained to its last hash, and writes a version 2
// checkpoint.
func TestV1LogIsContinuedInV2(t *testing.T) {
	path := copyV1(t)
	old := readLines(t, path)
	l := open(t, path, Options{})
	record(t, l, 2)
	l.Close()
	lines := readLines(t, path)
	if len(lines) != 7 || mustParse(t, lines[5]).Prev != mustParse(t, old[4]).Hash {
		t.Fatalf("the first v2 line does not continue the v1 chain:\n%s", strings.Join(lines, ""))
	}
	res := verify(t, path)
	if !res.Clean() || res.V1Entries != 5 || res.Entries != 7 || !strings.HasPrefix(res.CheckpointFile, "ok (covers seq 7") {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestV1UnsignedTailIsNotAdopted: version 1 lines that no checkpoint
// covers (anyone can compute their hashes) are set aside at the upgrade.
func TestV1UnsignedTailIsNotAdopted(t *testing.T) {
	path := copyV1(t)
	old := readLines(t, path)
	last := mustParse(t, old[4])
	forged, _, _ := encodeLineV1(6, Event{Time: time.Now(), Actor: "cli:root", Action: "key.destroy", Key: "pii", Version: 1, Outcome: "ok"}, last.Hash)
	appendFile(t, path, string(forged))
	l := open(t, path, Options{})
	record(t, l, 1)
	l.Close()
	res := verify(t, path)
	if !res.OK || len(res.Incidents) != 1 || !strings.Contains(res.Incidents[0].Details["problem"], "not covered by a checkpoint") {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestRecordIsDurableBeforeReturn: once Record returns, the line is in the
// file (written and fsynced), without waiting for Close.
func TestRecordIsDurableBeforeReturn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{})
	defer l.Close()
	if err := l.Record(ctxActor(), Event{Action: "key.destroy", Key: "pii", Version: 2, Reason: "retired"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"action":"key.destroy"`)) {
		t.Fatalf("event not on disk after Record returned: %q", b)
	}
}

// TestCheckpointFollowsEvents: a new log gets its checkpoint file at
// once; later events are covered within CheckpointEvery without Close,
// even under steady traffic (the timer is not pushed back by every
// event).
func TestCheckpointFollowsEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{CheckpointEvery: 50 * time.Millisecond})
	defer l.Close()
	record(t, l, 1)
	cp, err := readCheckpointFile(path + ".checkpoint")
	if err != nil || cp.Seq != 1 {
		t.Fatalf("no checkpoint right after the first event: %+v %v", cp, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// An event every 10ms: a timer reset on each would never fire.
		record(t, l, 1)
		time.Sleep(10 * time.Millisecond)
		if cp, err := readCheckpointFile(path + ".checkpoint"); err == nil && cp.Seq > 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the checkpoint file never moved under steady traffic")
		}
	}
	if res := verify(t, path); !res.OK {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestEpochKeysRotate: the writer asks the HSM for a new epoch key every
// EpochEvery; the verifier derives each.
func TestEpochKeysRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := open(t, path, Options{EpochEvery: time.Minute, Now: clock})
	for range 3 {
		record(t, l, 2)
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
	}
	l.Close()
	res := verify(t, path)
	if !res.Clean() || res.Epochs != 3 {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestConcurrentWritersShareOneChain: many goroutines and two Log values
// on one file (as serve and the CLI would be) keep one valid chain, each
// authenticating the other's lines before continuing them.
func TestConcurrentWritersShareOneChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a := open(t, path, Options{CheckpointEvery: 5 * time.Millisecond})
	b := open(t, path, Options{CheckpointEvery: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			for j := range 10 {
				if err := l.Record(ctxActor(), Event{Action: "request.refused", Reason: fmt.Sprintf("w%d-%d", i, j)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	a.Close()
	b.Close()
	res := verify(t, path)
	if !res.Clean() {
		t.Fatalf("chain broken by concurrent writers: %+v %v", res, res.Problem)
	}
	if res.Entries != 400 || res.Epochs != 2 {
		t.Fatalf("%d entries in %d epochs, want 400 in 2", res.Entries, res.Epochs)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	path := writeLog(t, t.TempDir(), 2)
	l := open(t, path, Options{})
	record(t, l, 1)
	l.Close()
	res := verify(t, path)
	if !res.Clean() || res.Entries != 3 || res.Epochs != 2 {
		t.Fatalf("%+v %v", res, res.Problem)
	}
}

// TestOpenRecoversTornTail: a crash mid-append leaves a line without its
// newline. Open moves it aside, records that it did, and the chain stays
// valid; the sidecar can start again.
func TestOpenRecoversTornTail(t *testing.T) {
	path := writeLog(t, t.TempDir(), 2)
	appendFile(t, path, `{"v":2,"seq":3,"time":"2026`) // a crash mid-write
	l := open(t, path, Options{})
	record(t, l, 1)
	l.Close()
	res := verify(t, path)
	if !res.Clean() {
		t.Fatalf("chain broken after recovery: %+v %v", res, res.Problem)
	}
	b, _ := os.ReadFile(path)
	if !bytes.Contains(b, []byte(`"action":"audit.torn_tail"`)) {
		t.Fatal("recovery was not recorded in the log")
	}
	torn, _ := filepath.Glob(path + ".torn-*")
	if len(torn) != 1 {
		t.Fatalf("torn fragment not kept: %v", torn)
	}
	if frag, _ := os.ReadFile(torn[0]); string(frag) != `{"v":2,"seq":3,"time":"2026` {
		t.Fatalf("fragment %q", frag)
	}
}

// TestOpenSetsGarbageTailAside: a complete last line that is not an audit
// line is not a torn append: it is tampering, set aside and recorded.
func TestOpenSetsGarbageTailAside(t *testing.T) {
	path := writeLog(t, t.TempDir(), 2)
	appendFile(t, path, "not an audit line\n")
	l := open(t, path, Options{})
	l.Close()
	res := verify(t, path)
	if !res.OK || len(res.Incidents) != 1 {
		t.Fatalf("%+v %v", res, res.Problem)
	}
	q, _ := filepath.Glob(path + ".quarantine-*")
	if len(q) != 1 {
		t.Fatalf("quarantine files %v", q)
	}
}

func TestTail(t *testing.T) {
	path := writeLog(t, t.TempDir(), 5)
	got, err := Tail(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != 3 || got[2].Version != 5 || got[2].Format != 2 || got[2].MAC == "" {
		t.Fatalf("tail: %+v", got)
	}
	// Old lines read too.
	got, err = Tail(copyV1(t), 2)
	if err != nil || len(got) != 2 || got[1].Action != checkpointAction || got[1].Format != 1 {
		t.Fatalf("v1 tail: %+v %v", got, err)
	}
}

func TestFollow(t *testing.T) {
	path := writeLog(t, t.TempDir(), 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan FollowEvent, 100)
	go Follow(ctx, path, FollowOptions{Last: 2, Poll: 5 * time.Millisecond}, func(ev FollowEvent) error {
		got <- ev
		return nil
	})
	next := func() FollowEvent {
		select {
		case ev := <-got:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("Follow showed nothing")
		}
		return FollowEvent{}
	}
	if ev := next(); ev.Entry == nil || ev.Entry.Seq != 2 {
		t.Fatalf("first: %+v", ev)
	}
	next()
	time.Sleep(20 * time.Millisecond)
	l := open(t, path, Options{})
	if err := l.Record(ctxActor(), Event{Action: "rules.reload", Rules: "sha256:2", Details: map[string]string{"diff": "1 field NO LONGER protected (1 flagged)"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Entry == nil || ev.Entry.Seq != 4 || ev.Entry.Details["diff"] == "" || ev.Broken != "" {
		t.Fatalf("followed: %+v", ev)
	}
	lines := readLines(t, path)
	appendFile(t, path, lines[1])
	if ev := next(); ev.Broken == "" {
		t.Fatalf("a replayed line was not marked: %+v", ev)
	}
	// The writer moves the replayed line aside (a rewrite under the
	// view, or a truncation if seen between the cut and the append,
	// noted) and records the incident, which is shown.
	l.Close()
	if ev := next(); !strings.Contains(ev.Note, "rewritten") && !strings.Contains(ev.Note, "shrank") {
		t.Fatalf("rewrite not noted: %+v", ev)
	}
	if ev := next(); ev.Entry == nil || ev.Entry.Action != "audit.tampering" || ev.Entry.Seq != 5 || ev.Broken != "" {
		t.Fatalf("after the rewrite: %+v", ev)
	}
	// A cut, then lines: nothing is skipped, even with a seq seen before.
	// None of the lines shown is left where it was, so the view starts
	// again from the top.
	writeLines(t, path, lines[:2])
	if ev := next(); !strings.Contains(ev.Note, "shrank") {
		t.Fatalf("truncation not noted: %+v", ev)
	}
	appendFile(t, path, lines[2])
	for seq := uint64(1); seq <= 3; seq++ {
		if ev := next(); ev.Entry == nil || ev.Entry.Seq != seq || ev.Broken != "" {
			t.Fatalf("after the cut, want seq %d: %+v", seq, ev)
		}
	}
}

func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	path := writeLog(&testing.T{}, dir, 3)
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	v1, _ := os.ReadFile("testdata/v1.log")
	f.Add(v1)
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Verify(context.Background(), bytes.NewReader(data), testSigner)
		if err == nil && res.OK && len(bytes.TrimSpace(data)) > 0 {
			// Anything accepted must really be lines of a chain.
			for _, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
				if _, err := parseLine(l); err != nil {
					t.Fatalf("accepted a log with an invalid line: %v", err)
				}
			}
		}
	})
}

// TestVerifyWhileWriting: verify reads a consistent snapshot (the log's
// size and checkpoint file under a shared lock) while writers append.
func TestVerifyWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := FileWitness{Path: filepath.Join(t.TempDir(), "heads")}
	l := open(t, path, Options{CheckpointEvery: 2 * time.Millisecond, Witness: w})
	record(t, l, 1)
	for i := 0; ; i++ { // the witness takes heads in the background
		if _, err := os.Stat(w.Path); err == nil {
			break
		}
		if i > 1000 {
			t.Fatal("no head reached the witness")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := l.Record(ctxActor(), Event{Action: "request.refused", Reason: "x"}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 30 {
		res, err := VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: w})
		if err != nil || !res.Clean() {
			t.Fatalf("verify %d while writing: %+v %v %v", i, res, res.Problem, err)
		}
	}
	close(stop)
	<-done
	l.Close()
}
