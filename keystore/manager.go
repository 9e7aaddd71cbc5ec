package keystore

import (
	"context"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Algorithm names the kind of data key Manager generates: a 512-bit root
// from which fieldcrypt derives its subkeys with HKDF (fieldcrypt.DataKeySize).
const Algorithm = "sidecrypt-dek-v1"

// MaxOverride is the longest a compromised version may be opened for after
// one `keys override`. An override is an emergency measure (read the data
// out, then destroy the key); a week covers a long weekend's incident.
const MaxOverride = 7 * 24 * time.Hour

// maxReasonLen bounds the free-text reason stored in records and audit
// events.
const maxReasonLen = 1000

// maxCASAttempts bounds the retries of a read-modify-write that keeps
// losing compare-and-swap races to other writers.
const maxCASAttempts = 20

// KEK is what Manager needs from the key-encryption-key provider. Every
// hsm.Provider satisfies it; it is defined here so that tests and other
// callers can hand in something smaller.
type KEK interface {
	// Wrap and Unwrap are given the data key's name and version, which a
	// provider that can binds to the wrapped bytes (hsm.Binding).
	Wrap(ctx context.Context, dek []byte, b hsm.Binding) (hsm.Wrapped, error)
	Unwrap(ctx context.Context, w hsm.Wrapped, b hsm.Binding) ([]byte, error)
	CurrentKEK(ctx context.Context) (uint32, error)
	RotateKEK(ctx context.Context) (uint32, error)
	KEKs(ctx context.Context) ([]hsm.KEKInfo, error)
	RetireKEK(ctx context.Context, version uint32) error
	// RecordMAC and VerifyRecordMAC seal and check keystore records
	// (seal.go).
	RecordMAC(ctx context.Context, msg []byte) ([]byte, error)
	VerifyRecordMAC(ctx context.Context, msg, mac []byte) error
	// BackupPublicKey and SignBackup sign backups (backup.go).
	BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error)
	SignBackup(ctx context.Context, digest []byte) ([]byte, error)
}

// Config is what NewManager needs.
type Config struct {
	Store Store // required
	KEK   KEK   // required
	// Audit receives one event per operation and per refusal. Nil means
	// audit.Discard, which only tests should use.
	Audit audit.Recorder
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of new data keys; nil means crypto/rand.
	Rand io.Reader
	// Logger receives integrity failures (at ERROR) and other warnings;
	// nil discards them.
	Logger *slog.Logger
	// OnIntegrityFailure, when set, is called for every read of a record
	// that fails its integrity check (for a metric), with what failed.
	OnIntegrityFailure func(record string)
	// SealLimit is the most values one key version may seal across every
	// process (SIDECRYPT_SEAL_LIMIT); zero means DefaultSealLimit. It
	// may not exceed MaxSealLimit.
	SealLimit uint64
	// Escrow, when set, is a second provider (SIDECRYPT_HSM_ESCROW) that
	// wraps every data key too, and MACs every record too, so that either
	// provider alone recovers every key (escrow.go, Recover).
	Escrow EscrowKEK
}

// Manager runs the lifecycle of data keys: it generates them, keeps them
// wrapped in the Store, moves them through their states, and unwraps them
// for the key cache. It has no notion of a command line or of HTTP, so that
// the CLI, the admin API and the rotation scheduler share it.
//
// Every method is safe for concurrent use, also by several processes on the
// same Store: read-modify-write steps use the Store's compare-and-swap and
// are retried on conflict.
type Manager struct {
	store Store
	kek   KEK
	audit audit.Recorder
	now   func() time.Time
	rand  io.Reader

	integ     *integrity
	sealLimit uint64
	// denials aggregates refused unwraps and remembers the records that
	// refused them (denials.go).
	denials *denials

	// escrow is the second provider, escrowID its hsm.Description ID.
	escrow   EscrowKEK
	escrowID string
	// viaEscrow makes reads check records' escrow MACs under the escrow
	// provider's record key instead of their MACs: a recovery's view of
	// the store (escrowView).
	viaEscrow bool
}

// NewManager returns a Manager.
func NewManager(c Config) (*Manager, error) {
	if c.Store == nil || c.KEK == nil {
		return nil, errors.New("keystore: NewManager needs a Store and a KEK provider")
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	switch {
	case c.SealLimit == 0:
		c.SealLimit = DefaultSealLimit
	case c.SealLimit > MaxSealLimit:
		return nil, fmt.Errorf("keystore: seal limit %d is above 2^32, the most NIST SP 800-38D allows one AES-GCM key with random nonces", c.SealLimit)
	}
	m := &Manager{store: c.Store, kek: c.KEK, audit: c.Audit, now: c.Now, rand: c.Rand,
		integ: newIntegrity(c.Logger, c.OnIntegrityFailure), sealLimit: c.SealLimit, denials: newDenials()}
	if c.Escrow != nil {
		m.escrow, m.escrowID = c.Escrow, c.Escrow.Describe().ID()
	}
	return m, nil
}

// Store returns the manager's store (for Watch and Ping).
func (m *Manager) Store() Store { return m.store }

// Lookup returns the version numbered v, or nil.
func (k *Key) Lookup(v uint32) *Version {
	for i := range k.Versions {
		if k.Versions[i].Version == v {
			return &k.Versions[i]
		}
	}
	return nil
}

// latest returns the highest version number in k.
func (k *Key) latest() uint32 {
	var n uint32
	for _, v := range k.Versions {
		n = max(n, v.Version)
	}
	return n
}

// Fingerprint identifies a data key without revealing it: the first 16
// bytes of HKDF-SHA256(dek, salt none, info "sidecrypt v1 fingerprint"), in
// hex. HKDF is a PRF keyed by the 512-bit data key, so the fingerprint says
// nothing about the key, nor about the subkeys fieldcrypt derives under
// other labels; 128 bits make an accidental match impossible in practice.
func Fingerprint(dek []byte) string {
	fp, err := hkdf.Key(sha256.New, dek, nil, "sidecrypt v1 fingerprint", 16)
	if err != nil {
		// Only a length above 255*32 bytes can fail; 16 cannot.
		panic("keystore: fingerprint: " + err.Error())
	}
	return hex.EncodeToString(fp)
}

// fingerprintMatches compares in constant time, so that a mismatch reveals
// nothing about where the fingerprints differ.
func fingerprintMatches(dek []byte, want string) bool {
	return subtle.ConstantTimeCompare([]byte(Fingerprint(dek)), []byte(want)) == 1
}

// event writes one audit event; it never carries key bytes.
func (m *Manager) event(ctx context.Context, action, name string, version uint32, outcome, reason string, details map[string]string) error {
	e := audit.Event{
		Time:    m.now().UTC(),
		Actor:   audit.ActorFrom(ctx),
		Action:  action,
		Key:     name,
		Version: version,
		Outcome: outcome,
		Reason:  reason,
		Details: details,
	}
	if err := m.audit.Record(ctx, e); err != nil {
		return fmt.Errorf("keystore: audit %s %q v%d: %w", action, name, version, err)
	}
	return nil
}

// outcomeOf classifies err for the audit log: "ok", "error" when something
// was unavailable, "denied" when the request itself was refused.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrUnavailable), errors.Is(err, hsm.ErrUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrVerify), errors.Is(err, ErrConflict):
		return "error"
	}
	return "denied"
}

// finish audits the end of an operation. A failed operation is reported
// with its own error (the audit failure, if any, joined to it); a done
// operation whose event could not be written returns that error, since the
// caller must know the trail is incomplete.
func (m *Manager) finish(ctx context.Context, action, name string, version uint32, reason string, details map[string]string, opErr error) error {
	why := reason
	if opErr != nil {
		why = opErr.Error()
		if reason != "" {
			why = reason + ": " + why
		}
	}
	aerr := m.event(ctx, action, name, version, outcomeOf(opErr), why, details)
	if opErr != nil {
		return errors.Join(opErr, aerr)
	}
	if aerr != nil {
		return fmt.Errorf("keystore: %s %q v%d was done, but %w", action, name, version, aerr)
	}
	return nil
}

func checkReason(reason string, required bool) error {
	switch {
	case required && reason == "":
		return errors.New("keystore: a reason is required (it goes to the audit log)")
	case len(reason) > maxReasonLen:
		return fmt.Errorf("keystore: reason is %d bytes; at most %d", len(reason), maxReasonLen)
	}
	return nil
}

// update applies fn to a fresh copy of the named key and stores it with
// compare-and-swap, retrying when another writer got there first. fn must
// derive everything from the key it is given, since it may run again.
func (m *Manager) update(ctx context.Context, name string, fn func(k *Key) error) (*Key, error) {
	for attempt := 1; ; attempt++ {
		k, err := m.getKey(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := fn(k); err != nil {
			return nil, err
		}
		out, err := m.putKey(ctx, k)
		if errors.Is(err, ErrConflict) && attempt < maxCASAttempts {
			continue
		}
		return out, err
	}
}

// newDEK draws a fresh data key.
func (m *Manager) newDEK() ([]byte, error) {
	dek := make([]byte, fieldcrypt.DataKeySize)
	if _, err := io.ReadFull(m.rand, dek); err != nil {
		return nil, fmt.Errorf("keystore: read random data key: %w", err)
	}
	return dek, nil
}

// wrapVerified wraps dek under the current KEK and unwraps the result back,
// comparing in constant time: a record is only ever written with a wrapped
// copy known to open. It costs one extra unwrap per new or re-wrapped key.
func (m *Manager) wrapVerified(ctx context.Context, name string, version uint32, dek []byte) (hsm.Wrapped, error) {
	b := hsm.Binding{Key: name, Version: version}
	w, err := m.kek.Wrap(ctx, dek, b)
	if err != nil {
		return hsm.Wrapped{}, fmt.Errorf("keystore: key %q v%d: wrap: %w", name, version, err)
	}
	back, err := m.kek.Unwrap(ctx, w, b)
	if err != nil {
		return hsm.Wrapped{}, fmt.Errorf("keystore: key %q v%d: %w: unwrap of the new copy: %w", name, version, ErrVerify, err)
	}
	defer clear(back)
	if subtle.ConstantTimeCompare(back, dek) != 1 {
		return hsm.Wrapped{}, fmt.Errorf("keystore: key %q v%d: %w: the new copy unwraps to different bytes", name, version, ErrVerify)
	}
	return w, nil
}

// newVersion generates, wraps and describes a new data key version.
func (m *Manager) newVersion(ctx context.Context, name string, version uint32, state State) (Version, error) {
	if err := m.checkEscrowConfigured(ctx); err != nil {
		return Version{}, err
	}
	dek, err := m.newDEK()
	if err != nil {
		return Version{}, err
	}
	defer clear(dek)
	w, err := m.wrapVerified(ctx, name, version, dek)
	if err != nil {
		return Version{}, err
	}
	now := m.now().UTC()
	v := Version{
		Version:     version,
		State:       state,
		Algorithm:   Algorithm,
		Wrapped:     w.Bytes,
		KEKVersion:  w.KEKVersion,
		Mechanism:   w.Mechanism,
		Fingerprint: Fingerprint(dek),
		Created:     now,
		Escrow:      m.escrowWrapOrLater(ctx, name, version, dek),
	}
	if state == StateActive {
		v.Activated = now
	}
	return v, nil
}

// Get returns the named key, after checking its record's integrity.
func (m *Manager) Get(ctx context.Context, name string) (*Key, error) { return m.getKey(ctx, name) }

// List returns every key, sorted by name, after checking each record's
// integrity. When some records fail, it returns the others and an error
// that names each one that failed.
func (m *Manager) List(ctx context.Context) ([]*Key, error) { return m.listKeys(ctx) }

// Create makes a new key with version 1. Unless preActive, version 1 is
// active and primary at once; a pre-active version waits for Activate.
// cryptoperiod is how long a primary seals before the scheduler rotates
// it (0: only on demand).
func (m *Manager) Create(ctx context.Context, name string, cryptoperiod time.Duration, preActive bool) (*Key, error) {
	const action = "key.create"
	details := map[string]string{"cryptoperiod": cryptoperiod.String(), "pre_active": strconv.FormatBool(preActive)}
	var err error
	switch {
	case !fieldcrypt.ValidKeyName(name):
		err = fmt.Errorf("keystore: invalid key name %q (1-64 of a-z, 0-9, '-', '_', starting with a letter)", name)
	case cryptoperiod < 0:
		err = fmt.Errorf("keystore: key %q: cryptoperiod %v is negative", name, cryptoperiod)
	}
	// Refuse a duplicate before asking the HSM for anything; Put's
	// compare-and-swap still catches a create that races this one. A
	// placeholder left by a create that stopped half-way is taken over.
	k := &Key{Name: name}
	if err == nil {
		if cur, gerr := m.readKey(ctx, name); gerr == nil && !cur.isPlaceholder() {
			err = fmt.Errorf("keystore: key %q: %w", name, ErrExists)
		} else if gerr == nil {
			k = cur
		} else if !errors.Is(gerr, ErrNotFound) {
			err = gerr
		}
	}
	if err != nil {
		return nil, m.finish(ctx, action, name, 0, "", details, err)
	}
	state := StateActive
	if preActive {
		state = StatePreActive
	}
	v, err := m.newVersion(ctx, name, 1, state)
	if err != nil {
		return nil, m.finish(ctx, action, name, 1, "", details, err)
	}
	details["kek_version"] = strconv.FormatUint(uint64(v.KEKVersion), 10)
	details["fingerprint"] = v.Fingerprint
	if v.Counter, err = m.ensureCounter(ctx, name, 1); err != nil {
		return nil, m.finish(ctx, action, name, 1, "", details, err)
	}
	k.Cryptoperiod, k.Created, k.Versions = cryptoperiod, v.Created, []Version{v}
	if !preActive {
		k.Primary = 1
	}
	out, err := m.putKey(ctx, k)
	return out, m.finish(ctx, action, name, 1, "", withGeneration(details, out), err)
}

// withGeneration adds the record's new generation to an event's details,
// so that the audit log keeps each key's history of generations (and a
// rollback of the store shows as a generation lower than the log's).
func withGeneration(details map[string]string, k *Key) map[string]string {
	if k == nil || k.Seal == nil {
		return details
	}
	if details == nil {
		details = map[string]string{}
	}
	details["generation"] = strconv.FormatUint(k.Seal.Generation, 10)
	return details
}

// Activate moves a pre-active version to active and makes it primary; the
// previous primary, if any, is deactivated (it keeps decrypting).
func (m *Manager) Activate(ctx context.Context, name string, version uint32) (*Key, error) {
	const action = "key.activate"
	var old uint32
	var counter int64
	k, err := m.update(ctx, name, func(k *Key) error {
		v := k.Lookup(version)
		if v == nil {
			return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNotFound)
		}
		if err := checkTransition(name, version, v.State, StateActive); err != nil {
			return err
		}
		if v.Counter == 0 {
			if counter == 0 {
				var err error
				if counter, err = m.ensureCounter(ctx, name, version); err != nil {
					return err
				}
			}
			v.Counter = counter
		}
		now := m.now().UTC()
		old = k.Primary
		if p := k.Lookup(k.Primary); p != nil && p.State == StateActive {
			p.State, p.Deactivated = StateDeactivated, now
		}
		v.State, v.Activated = StateActive, now
		k.Primary = version
		return nil
	})
	var details map[string]string
	if old != 0 {
		details = map[string]string{"previous_primary": strconv.FormatUint(uint64(old), 10)}
	}
	return k, m.finish(ctx, action, name, version, "", withGeneration(details, k), err)
}

// SetCryptoperiod changes how long a primary of key name seals before the
// scheduler rotates it (0: only on demand or at its seal limit). A key
// whose primary is older than the new period is rotated by the next
// scheduler pass, not here.
func (m *Manager) SetCryptoperiod(ctx context.Context, name string, cryptoperiod time.Duration) (*Key, error) {
	const action = "key.cryptoperiod"
	if cryptoperiod < 0 {
		err := fmt.Errorf("keystore: key %q: cryptoperiod %v is negative", name, cryptoperiod)
		return nil, m.finish(ctx, action, name, 0, "", nil, err)
	}
	var old time.Duration
	k, err := m.update(ctx, name, func(k *Key) error {
		old, k.Cryptoperiod = k.Cryptoperiod, cryptoperiod
		return nil
	})
	var details map[string]string
	if err == nil {
		details = withGeneration(map[string]string{"cryptoperiod": cryptoperiod.String(), "previous": old.String()}, k)
	}
	return k, m.finish(ctx, action, name, 0, "", details, err)
}

// Rotate adds a new version, makes it primary and deactivates the old
// primary, which keeps decrypting.
//
// expectPrimary makes concurrent rotation safe: when it is not zero and the
// key's primary is no longer that version, another process has rotated
// already, and Rotate returns the key as it is, doing nothing. Zero means
// "the primary as Rotate first reads it", which gives the same collapsing
// when two rotations race. Either way two sidecars rotating at once end
// with exactly one new version.
func (m *Manager) Rotate(ctx context.Context, name string, expectPrimary uint32) (*Key, error) {
	return m.rotate(ctx, name, expectPrimary, "")
}

// RotateExhausted rotates key name because its primary, version, has
// (nearly) reached its seal limit; the key cache calls it. It is Rotate
// with expectPrimary = version, audited with the reason.
func (m *Manager) RotateExhausted(ctx context.Context, name string, version uint32) (*Key, error) {
	return m.rotate(ctx, name, version, "seal limit: the primary version has (nearly) sealed as many values as NIST SP 800-38D allows")
}

func (m *Manager) rotate(ctx context.Context, name string, expectPrimary uint32, reason string) (*Key, error) {
	const action = "key.rotate"
	k, err := m.getKey(ctx, name)
	if err != nil {
		return nil, m.finish(ctx, action, name, 0, "", nil, err)
	}
	if expectPrimary == 0 {
		expectPrimary = k.Primary
	} else if k.Primary != expectPrimary {
		return k, m.finish(ctx, action, name, k.Primary, "already rotated",
			map[string]string{"expected_primary": strconv.FormatUint(uint64(expectPrimary), 10), "noop": "true"}, nil)
	}
	counters := map[uint32]int64{}
	// The new material does not depend on the version number, so it is
	// made (and its wrap verified) once, outside the CAS loop.
	nv, err := m.newVersion(ctx, name, k.latest()+1, StateActive)
	if err != nil {
		return nil, m.finish(ctx, action, name, k.latest()+1, "", nil, err)
	}
	for attempt := 1; ; attempt++ {
		if k.Primary != expectPrimary {
			return k, m.finish(ctx, action, name, k.Primary, "already rotated",
				map[string]string{"expected_primary": strconv.FormatUint(uint64(expectPrimary), 10), "noop": "true"}, nil)
		}
		nv.Version = k.latest() + 1
		if counters[nv.Version] == 0 {
			c, err := m.ensureCounter(ctx, name, nv.Version)
			if err != nil {
				return nil, m.finish(ctx, action, name, nv.Version, reason, nil, err)
			}
			counters[nv.Version] = c
		}
		nv.Counter = counters[nv.Version]
		now := m.now().UTC()
		nv.Created, nv.Activated = now, now
		if p := k.Lookup(k.Primary); p != nil && p.State == StateActive {
			p.State, p.Deactivated = StateDeactivated, now
		}
		k.Versions = append(k.Versions, nv)
		k.Primary = nv.Version
		out, err := m.putKey(ctx, k)
		if errors.Is(err, ErrConflict) && attempt < maxCASAttempts {
			if k, err = m.getKey(ctx, name); err != nil {
				return nil, m.finish(ctx, action, name, nv.Version, reason, nil, err)
			}
			continue
		}
		details := map[string]string{
			"previous_primary": strconv.FormatUint(uint64(expectPrimary), 10),
			"kek_version":      strconv.FormatUint(uint64(nv.KEKVersion), 10),
			"fingerprint":      nv.Fingerprint,
		}
		if reason != "" {
			details["trigger"] = "seal-limit"
		}
		return out, m.finish(ctx, action, name, nv.Version, reason, withGeneration(details, out), err)
	}
}

// Revoke moves a version to deactivated (decrypt only) or compromised
// (decrypt only under an override). Revoking the primary leaves the key
// without one: sealing under it fails (closed) until the key is rotated.
func (m *Manager) Revoke(ctx context.Context, name string, version uint32, to State, reason string) (*Key, error) {
	const action = "key.revoke"
	details := map[string]string{"to": string(to)}
	if to != StateDeactivated && to != StateCompromised {
		err := fmt.Errorf("keystore: key %q v%d: revoke goes to %s or %s, not %q", name, version, StateDeactivated, StateCompromised, to)
		return nil, m.finish(ctx, action, name, version, reason, details, err)
	}
	if err := checkReason(reason, true); err != nil {
		return nil, m.finish(ctx, action, name, version, "", details, err)
	}
	k, err := m.update(ctx, name, func(k *Key) error {
		v := k.Lookup(version)
		if v == nil {
			return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNotFound)
		}
		if err := checkTransition(name, version, v.State, to); err != nil {
			return err
		}
		details["from"] = string(v.State)
		now := m.now().UTC()
		v.State, v.Reason = to, reason
		if to == StateCompromised {
			v.Compromised = now
		} else {
			v.Deactivated = now
		}
		if k.Primary == version {
			k.Primary = 0
		}
		return nil
	})
	return k, m.finish(ctx, action, name, version, reason, withGeneration(details, k), err)
}

// Destroy erases a version's wrapped material; its metadata (state,
// times, fingerprint) stays. Every token sealed under that version becomes
// unreadable for good: crypto-shredding. Only a version that no longer
// encrypts may be destroyed (pre-active, deactivated or compromised).
func (m *Manager) Destroy(ctx context.Context, name string, version uint32, reason string) (*Key, error) {
	const action = "key.destroy"
	if err := checkReason(reason, false); err != nil {
		return nil, m.finish(ctx, action, name, version, "", nil, err)
	}
	details := map[string]string{}
	k, err := m.update(ctx, name, func(k *Key) error {
		v := k.Lookup(version)
		if v == nil {
			return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNotFound)
		}
		if err := checkTransition(name, version, v.State, StateDestroyed); err != nil {
			return err
		}
		details["from"] = string(v.State)
		clear(v.Wrapped)
		if v.Escrow != nil {
			// Both copies go: crypto-shredding needs every wrap erased.
			clear(v.Escrow.Wrapped)
		}
		v.State, v.Destroyed = StateDestroyed, m.now().UTC()
		v.Wrapped, v.KEKVersion, v.Mechanism, v.Escrow = nil, 0, "", nil
		v.OverrideUntil, v.OverrideReason = time.Time{}, ""
		if reason != "" {
			v.Reason = reason
		}
		if k.Primary == version {
			k.Primary = 0
		}
		return nil
	})
	return k, m.finish(ctx, action, name, version, reason, withGeneration(details, k), err)
}

// Override lets a compromised version decrypt (never encrypt) until the
// given time, at most MaxOverride from now. A zero until ends an override
// early. Every override, and every unwrap under one, is audited.
func (m *Manager) Override(ctx context.Context, name string, version uint32, until time.Time, reason string) (*Key, error) {
	const action = "key.override"
	details := map[string]string{}
	if !until.IsZero() {
		details["until"] = until.UTC().Format(time.RFC3339)
	}
	now := m.now()
	var err error
	switch {
	case !until.IsZero() && !until.After(now):
		err = fmt.Errorf("keystore: key %q v%d: override end %s is not in the future", name, version, until.UTC().Format(time.RFC3339))
	case until.Sub(now) > MaxOverride:
		err = fmt.Errorf("keystore: key %q v%d: override of %v is longer than the maximum %v", name, version, until.Sub(now).Round(time.Second), MaxOverride)
	default:
		err = checkReason(reason, true)
	}
	if err != nil {
		return nil, m.finish(ctx, action, name, version, reason, details, err)
	}
	k, err := m.update(ctx, name, func(k *Key) error {
		v := k.Lookup(version)
		if v == nil {
			return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNotFound)
		}
		if v.State != StateCompromised {
			return fmt.Errorf("keystore: key %q v%d: an override only applies to a compromised version; this one is %s", name, version, v.State)
		}
		v.OverrideUntil, v.OverrideReason = until.UTC(), reason
		if until.IsZero() {
			v.OverrideReason = ""
		}
		return nil
	})
	return k, m.finish(ctx, action, name, version, reason, withGeneration(details, k), err)
}

// Material is an unwrapped data key and how long it may be used.
type Material struct {
	// DEK is the fieldcrypt.DataKeySize-byte root; the caller zeroes it.
	DEK []byte
	// NotAfter is zero, or the end of the override under which a
	// compromised version was opened: the caller must drop DEK by then.
	NotAfter time.Time
}

// Unwrap returns the data key of one version, enforcing its state:
// destroyed gives ErrDestroyed, compromised without a live override
// ErrCompromised, pre-active ErrPreActive, an unknown key or version
// ErrNotFound. Active and deactivated versions open. The caller must
// zero the returned slice when done.
func (m *Manager) Unwrap(ctx context.Context, name string, version uint32) ([]byte, error) {
	mat, err := m.UnwrapMaterial(ctx, name, version)
	return mat.DEK, err
}

// UnwrapMaterial is Unwrap that also says until when the key may be used.
//
// Routine unwraps are not audited (the key cache makes them on its misses,
// on the request path); refusals and unwraps under an override are.
func (m *Manager) UnwrapMaterial(ctx context.Context, name string, version uint32) (Material, error) {
	const action = "key.unwrap"
	// A record read for a refusal a moment ago refuses other versions
	// without another read (denials.go).
	if refusal := m.denials.remembered(name, version, m.now()); refusal != nil {
		return Material{}, m.deny(ctx, name, version, refusal)
	}
	k, err := m.getKey(ctx, name)
	if err != nil {
		return Material{}, err
	}
	v := k.Lookup(version)
	refusal, notAfter := refusalOf(k, name, version, m.now())
	if refusal != nil {
		m.denials.remember(k, m.now())
		return Material{}, m.deny(ctx, name, version, refusal)
	}
	dek, err := m.kek.Unwrap(ctx, v.wrapped(), hsm.Binding{Key: name, Version: version})
	if err != nil {
		return Material{}, fmt.Errorf("keystore: key %q v%d (KEK v%d): %w", name, version, v.KEKVersion, err)
	}
	if len(dek) != fieldcrypt.DataKeySize || !fingerprintMatches(dek, v.Fingerprint) {
		clear(dek)
		return Material{}, fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrFingerprint)
	}
	if !notAfter.IsZero() {
		if err := m.event(ctx, action, name, version, "ok", "override: "+v.OverrideReason,
			map[string]string{"override_until": notAfter.UTC().Format(time.RFC3339)}); err != nil {
			// An override unwrap must leave a trace; without one, refuse.
			clear(dek)
			return Material{}, err
		}
	}
	return Material{DEK: dek, NotAfter: notAfter}, nil
}

// Primary returns the version that seals new tokens under name, or
// ErrNoPrimary when it has none.
func (m *Manager) Primary(ctx context.Context, name string) (uint32, error) {
	k, err := m.getKey(ctx, name)
	if err != nil {
		return 0, err
	}
	if v := k.Lookup(k.Primary); v == nil || v.State != StateActive {
		return 0, fmt.Errorf("keystore: key %q: %w", name, ErrNoPrimary)
	}
	return k.Primary, nil
}

// Every hsm.Provider is a KEK.
var _ KEK = hsm.Provider(nil)
