// Package audit is sidecrypt's tamper-evident audit trail: an append-only
// file of JSON lines, one event per line, hash-chained and periodically
// checkpointed with a MAC whose key stays in the HSM.
//
// # Format
//
// Every line is one JSON object. Its fields, in this order:
//
//	seq      1, 2, 3, ... with no gaps
//	time     RFC 3339, UTC, nanoseconds
//	actor    who: "cli:alice", "admin:<token id>", "scheduler", "proxy"
//	action   what: "key.create", "rules.reload", "request.refused", ...
//	key, version, rules, outcome, reason, details   (see Event)
//	prev     the hash of the previous line (64 zeros for seq 1)
//	hash     SHA-256 of this line's bytes up to, not including, the
//	         `,"hash":` that ends it, followed by "}" — that is, of the
//	         line exactly as it would read without its hash field
//
// Hashing the bytes as written (not a re-encoding) means a verifier needs
// no canonical JSON: any edit of any byte changes the hash.
//
// # Checkpoints
//
// At most CheckpointEvery (default 1s) after new events, and when the log
// is closed, the writer appends an event with action "audit.checkpoint"
// whose details carry "covers" (the seq it signs) and "mac":
// HMAC-SHA256, computed by the HSM (hsm.Provider.AuditMAC), over
//
//	"sidecrypt audit checkpoint v1\n" + seq + "\n" + hash + "\n"
//
// of the line it covers. The same checkpoint is written, atomically, to
// FILE.checkpoint.
//
// # What verification detects (threat model)
//
// The adversary can read and write the log file but cannot use the HSM's
// audit key. Then:
//   - an edit of any byte, an inserted, deleted or reordered line breaks
//     the hash chain at that line (seq, prev or hash stops matching);
//   - rewriting the whole chain from some point on (recomputing every hash)
//     is caught by the first MAC checkpoint after that point, which the
//     adversary cannot recompute;
//   - cutting off the tail is caught against FILE.checkpoint, which names
//     a seq and hash that the log must contain.
//
// Not detected: rewriting the events written after the last checkpoint
// together with the chain (a window of at most CheckpointEvery, reported
// by verify as the "unsigned tail"), and replacing FILE.checkpoint with an
// older authentic copy while truncating the log to match. Ship the log and
// its checkpoints off the host (syslog, a SIEM, object storage with
// retention) to close those; docs/OPERATIONS.md says how.
//
// # Durability
//
// Record returns only after the event's line has been written and the
// file fsynced: an event that an API reported as done survives a crash.
// Concurrent Records share one write and one fsync (group commit).
// Several processes (serve and the CLI) may append to one file: each
// append holds an exclusive flock and re-reads the chain's tail if another
// process wrote since.
//
// A crash in the middle of an append can leave a last line without its
// newline. That line's Record never returned, so it was never a durable
// event: Open copies it to FILE.torn-<time>, truncates the file to its last
// complete line and records an "audit.torn_tail" event, so the sidecar
// starts again and the recovery itself is on the record.
package audit
