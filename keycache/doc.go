// Package keycache keeps unwrapped data keys in memory for a short time, so
// that the proxy does not ask the HSM for every field it seals or opens.
// A Cache implements fieldcrypt.Keyring in front of a keystore.Manager.
//
// # What is cached
//
// Entries are keyed by key name and version and held in an expirable LRU
// (github.com/hashicorp/golang-lru/v2/expirable) bounded by a TTL
// (SIDECRYPT_CACHE_TTL, default 5m) and a size (SIDECRYPT_CACHE_SIZE,
// default 1000). Each entry also carries usage limits, after the caching
// cryptographic materials manager of the AWS Encryption SDK: once one
// in-memory copy has sealed SIDECRYPT_CACHE_MAX_MESSAGES messages or
// SIDECRYPT_CACHE_MAX_BYTES bytes, SealKey drops it and unwraps a fresh
// copy. The limits bound how much data one long-lived copy of a key in
// memory seals, and so how much an attacker who reads this process's
// memory at one moment gains. They are not the key's cryptographic limits:
// those are the next section's.
//
// # Seal limits
//
// With a Source that reserves seals (keystore.Manager, see Reserver), every
// seal is charged to its version's counter in the keystore, which every
// sidecar shares and which survives restarts (budget.go): a block of seals
// (Options.SealBlock, 65536) is reserved at a time, charged with atomics
// once per SealKey call, refilled in the background when a quarter is
// left. Near the version's limit the key is rotated in the background; at
// the limit SealKey rotates it in the request and returns the new primary;
// if that fails, SealKey fails with keystore.ErrSealLimit (503: closed).
//
// The primary version of each key is cached for a second (Options.PrimaryTTL),
// and so is a refusal (destroyed, compromised, pre-active, unknown), so
// that a burst of tokens under a destroyed key costs one store read and one
// audit event, not thousands. Store and HSM outages are never remembered.
// While the store is unreachable (keystore.ErrUnavailable: a shared etcd
// down or partitioned away), SealKey keeps using the primary version it last
// learned as long as that version is still cached, just as OpenKey keeps
// opening cached versions: the sidecar serves from its cache until the keys
// expire (SIDECRYPT_CACHE_TTL), then fails closed. A purge forgets the
// primary, so this never revives a version that a watch event withdrew.
//
// # Misses
//
// Concurrent misses for one version collapse into one unwrap
// (golang.org/x/sync/singleflight): a cold start under load costs the HSM
// one call per key version, not one per request. The unwrap runs without
// the first caller's cancellation, so one client hanging up does not fail
// the others; each caller still stops waiting on its own context.
//
// Every miss goes to keystore.Manager, which reads the record and enforces
// its state: after a purge, a destroyed version fails, a deactivated one
// still opens, and SealKey only ever returns the current primary.
//
// # Purges and zeroing
//
// Key bytes are zeroed (fieldcrypt.DataKey.Zero) when an entry leaves the
// cache. Purge, PurgeKey, PurgeAll and Close zero at once: they are how a
// revoke or destroy takes effect, and a request that still holds the key
// fails closed with fieldcrypt.ErrKeyZeroed. Routine departures (expiry,
// size, usage limit) zero after Options.ZeroGrace (30s), because the key
// was not withdrawn and requests already holding it should finish.
//
// Run follows keystore.Store.Watch and purges every key that changed, in
// this process or another (`sidecrypt keys revoke` while `serve` runs): a
// revoke stops the cache handing the version out within the store's poll
// interval (250ms for the embedded store). An unwrap that was in flight
// across a purge is handed to its callers but not cached.
//
// What Go cannot zero: the AES key schedules inside crypto/cipher objects,
// and copies the runtime may have made while moving stacks. See
// docs/KEYS.md, "Key bytes in memory".
//
// # Errors
//
// A key or version that does not exist is fieldcrypt.ErrUnknownKey (and
// keystore.ErrNotFound). An unreachable store or HSM wraps
// keystore.ErrUnavailable or hsm.ErrUnavailable, which the proxy answers
// with 503. State refusals wrap keystore.ErrDestroyed, ErrCompromised,
// ErrPreActive and ErrNoPrimary. No error carries key bytes.
//
// # Counters
//
// Stats returns hits, misses, unwraps, unwrap errors, evictions (of which
// usage-limit drops), purges, entries, and the unwrap latency as a sum, a
// count and a cumulative histogram, for the metrics endpoint.
package keycache
