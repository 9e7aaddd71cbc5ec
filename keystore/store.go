package keystore

import (
	"context"
	"errors"
	"time"
)

// State is a key version's lifecycle state (NIST SP 800-57 Part 1, 5.3).
type State string

const (
	StatePreActive   State = "pre-active"  // generated, not yet used
	StateActive      State = "active"      // encrypts and decrypts
	StateDeactivated State = "deactivated" // decrypts only
	StateCompromised State = "compromised" // decrypts only with an audited override
	StateDestroyed   State = "destroyed"   // material erased: tokens unreadable
)

// Version is one version of a named data key.
type Version struct {
	Version   uint32 `json:"version"`
	State     State  `json:"state"`
	Algorithm string `json:"algorithm"` // "sidecrypt-dek-v1": 512-bit root, HKDF subkeys
	// Wrapped is the DEK wrapped by the KEK; empty once destroyed.
	Wrapped    []byte `json:"wrapped,omitempty"`
	KEKVersion uint32 `json:"kek_version,omitempty"`
	Mechanism  string `json:"mechanism,omitempty"`
	// Fingerprint identifies the key material without revealing it (see
	// docs/KEYS.md); restore checks every key against it.
	Fingerprint string `json:"fingerprint"`

	Created     time.Time `json:"created"`
	Activated   time.Time `json:"activated,omitzero"`
	Deactivated time.Time `json:"deactivated,omitzero"`
	Compromised time.Time `json:"compromised,omitzero"`
	Destroyed   time.Time `json:"destroyed,omitzero"`
	Reason      string    `json:"reason,omitempty"`

	// OverrideUntil, when in the future, lets a compromised version
	// decrypt (never encrypt) until then; set by Manager.Override, always
	// audited. OverrideReason says why.
	OverrideUntil  time.Time `json:"override_until,omitzero"`
	OverrideReason string    `json:"override_reason,omitempty"`
}

// Key is a named data key with all its versions.
type Key struct {
	Name string `json:"name"`
	// Primary is the version that seals new tokens; 0 when none.
	Primary uint32 `json:"primary"`
	// Cryptoperiod is how long a primary version seals before the
	// scheduler rotates it; 0 means never on its own.
	Cryptoperiod time.Duration `json:"cryptoperiod"`
	Created      time.Time     `json:"created"`
	Versions     []Version     `json:"versions"`
	// Revision is set by the Store: the value Put must be given to
	// update this record (compare-and-swap). Zero for a new key.
	Revision int64 `json:"-"`
}

// Event tells a watcher that a key changed.
type Event struct {
	Name string
}

// Store keeps keys. Implementations: the embedded bbolt file (default) and
// etcd. Every method is safe for concurrent use, including from several
// processes sharing the same store.
type Store interface {
	// Get returns the named key, or ErrNotFound.
	Get(ctx context.Context, name string) (*Key, error)
	// List returns every key, sorted by name.
	List(ctx context.Context) ([]*Key, error)
	// Put stores k if k.Revision equals the stored revision (zero: the
	// key must not exist yet), and returns it with its new revision.
	// Otherwise it fails with ErrConflict (or ErrExists) and changes
	// nothing.
	Put(ctx context.Context, k *Key) (*Key, error)
	// Watch reports changed keys until ctx is done. Events may be
	// coalesced; a watcher re-reads the key it is told about.
	Watch(ctx context.Context) (<-chan Event, error)
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Sentinel errors.
var (
	ErrNotFound = errors.New("no such key")
	ErrExists   = errors.New("key already exists")
	ErrConflict = errors.New("key changed concurrently (revision mismatch)")
	// ErrUnavailable: the store cannot be reached (etcd down, file locked
	// for too long).
	ErrUnavailable = errors.New("keystore unavailable")
)
