// Package audit is sidecrypt's tamper-evident audit trail: an append-only
// file of JSON lines, one event per line, in which every line carries a
// MAC under a key that only the HSM can produce, chained to the line
// before it; a signed head of the chain is kept beside the log and
// published to a witness outside it.
//
// # Format (version 2, the keyed chain)
//
// Every line is one JSON object. Its fields, in this order:
//
//	v        2: the format version (version 1 lines have no "v")
//	seq      1, 2, 3, ... with no gaps
//	time     RFC 3339, UTC, nanoseconds
//	actor    who: "cli:alice", "admin:alice", "admin:alice+bob" (dual
//	         control: requester+approver), "scheduler", "proxy"
//	action   what: "key.create", "rules.reload", "request.refused", ...
//	key, version, rules, outcome, reason, details   (see Event)
//	epoch    which epoch key MACs this line (16 characters, base64url)
//	prev     the MAC of the previous line ("" for seq 1; the hash of the
//	         last version 1 line for the first line after an upgrade)
//	mac      HMAC-SHA256, unpadded base64url, under the epoch key, of
//
//	           "sidecrypt audit entry v2\n" || the line's bytes up to, not
//	           including, the `,"mac":` that ends it, followed by "}"
//
// The MAC covers the line exactly as written (no canonical JSON), and,
// through prev, every line before it: entry i's MAC covers entry i-1's
// MAC and entry i's bytes.
//
// # Keys
//
// An epoch key is HMAC-SHA256 under the HSM's audit key
// (hsm.Provider.AuditMAC, a key that never leaves the HSM) of
//
//	"sidecrypt audit epoch key v2\n" || epoch
//
// where epoch is 12 random bytes chosen by the writer when it opens the
// log and again every Options.EpochEvery (default one hour). The writer
// holds the current epoch key in memory only, forgets the previous one
// when it moves on, and a verifier asks the HSM for each epoch's key
// again. Why not one HSM call per entry: a SoftHSM2 MAC costs about 44 µs
// and a network HSM a millisecond or more, and an entry is written for
// every refused request; one HSM call per epoch keeps the log's
// throughput that of its fsyncs (BenchmarkRecord*), while a forger still
// needs the HSM for every epoch.
//
// # The head: FILE.checkpoint and the witness
//
// After the first events of a log, and then at most CheckpointEvery
// (default 1s) after new events and at Close, the writer replaces
// FILE.checkpoint (atomically) with the chain's head:
//
//	{"v":2,"log":L,"seq":N,"mac":M,"offset":O,"time":T,"sig":S}
//
// L names the log (the MAC, or for a log begun in version 1 the hash, of
// line 1), N and M are the last line's seq and MAC, O the byte offset
// just after it, and S is HMAC-SHA256 under the HSM's audit key of
// "sidecrypt audit head v2\n" L "\n" N "\n" M "\n" O "\n" T "\n".
// The same head goes to the witness, if one is configured: a file
// (appended, one head per line), syslog, or etcd (the latest head per
// log) — storage that the log's host cannot rewrite.
//
// # Writers and lines they did not write
//
// Several processes (serve and the CLI) append to one log: each append
// holds an exclusive flock and first authenticates every line added since
// this process last looked (seq, prev and MAC). When a process opens the
// log it starts from the head in FILE.checkpoint (checking that the log
// still holds that line at that offset) and authenticates what follows.
//
//   - Lines at the end that do not authenticate (appended by anyone who is
//     not sidecrypt with this HSM) are never adopted: they are moved to
//     FILE.quarantine-<time>, the file is cut back to the last genuine
//     line, and an "audit.tampering" event records how many lines, where
//     they went and the first problem. `audit verify` lists these
//     incidents.
//   - A last line without its newline is what a crash mid-append leaves:
//     it never became a durable event (its Record had not returned); it
//     is moved to FILE.torn-<time> and an "audit.torn_tail" event records
//     it.
//   - A log that no longer holds the line its checkpoint names (edited or
//     truncated), a checkpoint file whose signature fails, or genuine
//     lines after a bad one (an edit, not an append) are refused with
//     ErrTampered: nothing more is written until an operator has looked.
//   - A missing checkpoint file for a non-empty log is recorded as an
//     "audit.tampering" event and the log is authenticated from line 1.
//
// # What verification detects (threat model)
//
// The adversary can read and write the log, its checkpoint file and its
// directory, but cannot use the HSM's audit key. Then:
//   - an edit of any byte, an inserted, deleted, reordered or appended
//     line fails the MAC or the chain at that line;
//   - rewriting the whole log with MACs of their own fails at line 1;
//   - cutting off the tail is caught against FILE.checkpoint, which names
//     a line the log must hold and cannot be forged for a shorter log;
//     deleting FILE.checkpoint fails verification;
//   - rolling back the log and FILE.checkpoint together, to an older
//     authentic pair, is caught by `audit verify --witness`: the witness
//     saw a later head that the log no longer holds.
//
// Not detected without a witness: that rollback. Not detected with one: a
// rollback of the events after the last head the witness received (at
// most CheckpointEvery). An adversary who reads the sidecar's memory gets
// the current epoch key and can forge entries of the current epoch after
// the head last published; the HSM's audit key itself stays out of reach.
//
// # Version 1 logs
//
// Logs written before the keyed chain (a hash chain with MAC'd checkpoint
// lines, no "v" field) still verify, with their weaker guarantees. A
// writer continues such a log in version 2: it reads it once, adopts it
// up to its last MAC-checked checkpoint line (any version 1 lines after
// that are set aside as above), chains its first line to the last version
// 1 hash, and writes a version 2 checkpoint file.
//
// # Durability
//
// Record returns only after the event's line has been written and the
// file fsynced: an event that an API reported as done survives a crash.
// Concurrent Records share one write and one fsync (group commit).
package audit
