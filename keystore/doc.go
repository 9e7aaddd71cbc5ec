// Package keystore keeps sidecrypt's data keys (DEKs) wrapped under the
// HSM's key-encryption key (KEK), with their metadata, and runs their
// lifecycle.
//
// # Records
//
// A Key is a name (pii, contact, ...) with numbered versions. Each Version
// holds its state, the DEK wrapped by one KEK version (never the DEK
// itself), the KEK version and mechanism that wrapped it, the algorithm
// ("sidecrypt-dek-v1": a 512-bit root from which fieldcrypt derives its
// subkeys), a fingerprint, and the times of its transitions. Key.Revision
// is the compare-and-swap token: Store.Put succeeds only if the stored
// revision is the one the caller read.
//
// # The embedded store
//
// BoltStore keeps every key in one go.etcd.io/bbolt file (mode 0600, its
// directory 0700; a file others can read is refused). Records are JSON,
// one per key name, with a per-record revision and a store-wide
// generation counter in a meta bucket.
//
// Crash safety comes from bbolt's design, not from code here: a write
// transaction writes its new pages, fdatasyncs, then writes the meta page
// that points at them and fdatasyncs again, so a crash or power loss at any
// point leaves either the old or the new state, and once Put returns the
// record is on disk. TestBoltSurvivesKill SIGKILLs a child process in the
// middle of a stream of Puts and checks every acknowledged key.
//
// Several processes may share the file (`sidecrypt serve` and `sidecrypt
// keys revoke`). bbolt holds an flock for as long as a DB is open, so
// BoltStore opens the file for each operation and closes it at once: reads
// take a shared lock, writes an exclusive one, each waiting up to
// BoltOptions.LockTimeout (5s) before failing with ErrUnavailable. An open
// costs about 35µs on a small file (BenchmarkBoltGet), far below the cost of
// the HSM unwrap that follows a key cache miss. Watch polls the generation
// counter every 250ms and reports the names whose records changed since,
// so a revoke in one process reaches the others' key caches within about
// a quarter of a second.
//
// # The etcd store
//
// EtcdStore is the Store that several sidecars share (SIDECRYPT_KEYSTORE=
// etcd://host:2379,host:2379/prefix, or etcds:// and SIDECRYPT_ETCD_CA,
// _CERT, _KEY for TLS with client certificates; ParseEtcdURL). Each key is
// one JSON record at <prefix>/keys/<name>, and Key.Revision is that etcd
// key's ModRevision. Put is one transaction that writes only if the
// ModRevision is still the caller's (CreateRevision == 0 for a create), so
// the semantics are the embedded store's, which the conformance suite in
// keystore/storetest checks against both. Reads are linearizable.
//
// Watch follows <prefix>/keys/ with an etcd watch. A watch whose
// connection breaks is resumed by the etcd client from the last revision
// delivered; one that ends (its member lost the cluster leader) is started
// again from the last revision seen; if that revision was compacted, or
// etcd was unreachable when Watch was called, every key is reported
// changed (a resync), so a key cache purges whatever may have changed
// meanwhile. The channel stays open until the caller's context ends.
//
// Every operation has a timeout (EtcdOptions.RequestTimeout, 5s; Ping 1s),
// fails at once while no endpoint is connected, and wraps ErrUnavailable
// when etcd cannot answer. A write whose outcome is unknown is reported as
// ErrUnavailable too; the Manager's compare-and-swap retry re-reads the
// record. docs/DEPLOY.md describes running many sidecars on etcd.
//
// # Lifecycle
//
// Manager runs the NIST SP 800-57 lifecycle over a Store, a KEK provider
// (any hsm.Provider), an audit.Recorder, a clock and a random source:
//
//	pre-active  -> active, compromised, destroyed
//	active      -> deactivated, compromised
//	deactivated -> compromised, destroyed
//	compromised -> destroyed
//	destroyed   (final)
//
// Create makes version 1 (active and primary, or pre-active); Activate
// makes a pre-active version primary; Rotate adds a version, makes it
// primary and deactivates the old primary (with an expected primary, so
// that sidecars rotating at once make one version between them); Revoke
// moves a version to deactivated or compromised; Override lets a
// compromised version decrypt for a bounded time (MaxOverride); Destroy
// erases the wrapped material (crypto-shredding: the version's tokens can
// never be opened again, while its metadata stays). Any other move is
// refused with ErrTransition and an error that lists the allowed ones.
//
// Unwrap enforces the states: destroyed is ErrDestroyed, compromised
// without a live override ErrCompromised, pre-active ErrPreActive, unknown
// ErrNotFound. Every unwrapped DEK is checked against its fingerprint.
//
// # Record integrity
//
// The store is not trusted with the records' content. Every record the
// Manager writes (key records, the head record, seal counters) carries a
// Seal: an HMAC-SHA256 by the HSM's record key (hsm.Provider.RecordMAC)
// over a canonical, versioned, length-prefixed encoding of all its fields
// and of a generation, which must equal the store's own count of writes of
// the record (Key.Writes), and from generation 2 on the record's
// incarnation (Key.Incarnation; etcd's Version and CreateRevision, which
// no client can set). Generation 1 is an empty placeholder. The head
// record holds each key's generation and every version ever compromised or
// destroyed; a key record must be at that generation or one ahead, and no
// less revoked. Every read checks all of this (Get, List, Primary,
// UnwrapMaterial, and everything built on them); a record that fails is
// refused with ErrIntegrity (ErrUnsealed for a record from before seals),
// logged at ERROR, counted (Config.OnIntegrityFailure, IntegrityFailures)
// and audited (key.integrity), never used. SealRecords is the one-time
// migration of an unsealed store; Verify checks everything. docs/KEYS.md,
// "Record integrity", states what this stops and what a rollback of the
// whole store can still do.
//
// # Seal counters
//
// Each version that may seal has a counter record shared by every process
// on the store. ReserveSeals hands out blocks of seals with
// compare-and-swap, up to Config.SealLimit (DefaultSealLimit, 2^30: NIST
// SP 800-38D 8.3 with a margin), audited (key.seals.reserve);
// RotateExhausted rotates a key whose primary is at its limit. The key
// cache (package keycache) does the counting.
//
// Every operation and every refusal is written to the audit log, with the
// actor from audit.WithActor, the key, the version, the outcome ("ok",
// "denied", "error") and the reason; never key bytes. Routine unwraps are
// not audited (they happen on key cache misses, on the request path);
// refused unwraps and unwraps under an override are. If the audit event
// of a completed operation cannot be written, the operation's error says
// so.
//
// # Fingerprints
//
// Fingerprint(dek) is HKDF-SHA256 (RFC 5869) of the DEK with no salt and
// the info "sidecrypt v1 fingerprint", truncated to 16 bytes and written
// in hex. HKDF with a 512-bit secret key is a PRF, so the fingerprint
// reveals nothing about the DEK or about the subkeys fieldcrypt derives
// under other labels, yet it identifies the key: restore and unwrap check
// every DEK against it.
//
// # KEK rotation and re-wrap
//
// RotateKEK makes a new KEK version current; new DEKs are wrapped under it
// at once. Rewrap moves the older DEKs: its work list is simply "every
// version whose KEK version is not the current one", so it keeps no state,
// and a run stopped at any point (crash, kill -9, cancel) is finished by
// running it again. Each version is unwrapped, wrapped under the current
// KEK, the new copy unwrapped back and compared in constant time, and only
// then is the record switched by compare-and-swap; a version whose copy
// fails this check keeps its old one (ErrVerify). Retirable lists the KEK
// versions no DEK uses any more; RetireKEK refuses one that is still used
// (ErrKEKInUse).
//
// # Backup and restore
//
// Backup writes every key's metadata and each non-destroyed DEK sealed on
// its own with HPKE (RFC 9180, crypto/hpke) to a recovery public key:
// KEM X-Wing (ML-KEM-768 + X25519, post-quantum hybrid), KDF HKDF-SHA256,
// AEAD AES-256-GCM, info "sidecrypt backup v2" || 0x00 || name || 0x00 ||
// version || 0x00 || fingerprint; the whole payload is signed by the
// provider's backup signing key (ECDSA P-256). OpenBackup checks the
// signature, against the trusted signers, before it decodes anything else,
// then opens each key with the recovery private key and checks it against
// its fingerprint; PlanRestore lists every difference from the store;
// ApplyRestore wraps each new key under the current KEK of whatever
// provider it is given (a new HSM) and writes it. A restore never moves a
// version back in its lifecycle, never makes a compromised version
// primary, never replaces a version with other material unless forced,
// and refuses outright to bring back a destroyed one. docs/KEYS.md,
// "Backup file format", specifies every byte.
//
// # Two wraps: the escrow provider
//
// With Config.Escrow, a second provider wraps every DEK too
// (Version.Escrow) and MACs every record too (Seal.EscrowMAC), so either
// provider alone recovers every key; Destroy erases both copies. The
// escrow is best effort when writing (Rewrap adds what an outage left
// out), and a keystore that has escrow copies refuses new versions from a
// Manager without one (ErrEscrowRequired). Recover rebuilds the keystore
// on a new primary when the old one is lost: it checks every record
// against its escrow MAC under the escrow's record key and every escrow
// copy against its fingerprint before it writes anything, then re-wraps
// and re-seals. escrow.go has the details, docs/KEK.md the procedure.
package keystore
