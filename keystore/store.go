package keystore

import (
	"context"
	"errors"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
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

	// Counter is the Incarnation of this version's seal counter record
	// (usage.go) when the counter was made; zero until then. A counter
	// whose incarnation differs was deleted and made again outside
	// sidecrypt (a reset), and is refused.
	Counter int64 `json:"counter,omitempty"`

	// Escrow is the second wrapped copy of the data key, under the
	// keystore's escrow provider (Config.Escrow, SIDECRYPT_HSM_ESCROW),
	// when it has one: either copy alone opens the key, so the loss of
	// one provider loses nothing (escrow.go). Empty once destroyed.
	Escrow *EscrowWrap `json:"escrow,omitempty"`
}

// EscrowWrap is a data key wrapped under the escrow provider.
type EscrowWrap struct {
	// Provider is the escrow provider's hsm.Description ID: which
	// provider made this copy ("awskms:eu-west-1:alias/sidecrypt").
	Provider   string `json:"provider"`
	KEKVersion uint32 `json:"kek_version"`
	Mechanism  string `json:"mechanism"`
	Wrapped    []byte `json:"wrapped"`
}

func (e *EscrowWrap) wrapped() hsm.Wrapped {
	return hsm.Wrapped{KEKVersion: e.KEKVersion, Mechanism: e.Mechanism, Bytes: e.Wrapped}
}

// wrapped returns the version's primary wrapped copy as the provider
// takes it.
func (v *Version) wrapped() hsm.Wrapped {
	return hsm.Wrapped{KEKVersion: v.KEKVersion, Mechanism: v.Mechanism, Bytes: v.Wrapped}
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
	// Seal is the record's integrity, set by Manager on every write and
	// checked on every read (seal.go; docs/KEYS.md, "Record integrity").
	// Stores keep it as they keep the rest of the record.
	Seal *Seal `json:"seal,omitempty"`
	// Revision is set by the Store: the value Put must be given to
	// update this record (compare-and-swap). Zero for a new key.
	Revision int64 `json:"-"`
	// Writes and Incarnation are set by the Store, like Revision: how
	// many times this record has been written since it was created, and
	// a number that identifies that creation. etcd: the key's Version and
	// CreateRevision, which no client can choose, so a record written
	// again through etcd (a replay) is told apart from the original. The
	// bbolt file keeps its own counters. Zero for a new key.
	Writes      uint64 `json:"-"`
	Incarnation int64  `json:"-"`
}

// Seal binds a record to its place in the store's history: Generation
// must equal the store's Writes, and (from generation 2 on) Incarnation
// the store's Incarnation; MAC is HMAC-SHA256 under the HSM's record key
// over the canonical encoding of the record with both (docs/KEYS.md).
type Seal struct {
	Generation  uint64 `json:"generation"`
	Incarnation int64  `json:"incarnation,omitempty"`
	MAC         []byte `json:"mac"`
	// EscrowMAC is the same MAC input under the escrow provider's record
	// key, written when the keystore has an escrow provider. Reads check
	// MAC only; a recovery from the escrow, when the primary provider and
	// its record key are gone, checks this one (escrow.go).
	EscrowMAC []byte `json:"escrow_mac,omitempty"`
}

// Meta is a small record the Manager keeps beside the keys, outside what
// Watch reports: the head record (every key's generation and revoked
// versions) and the per-version seal counters. Value is opaque to the
// store. Revision, Writes and Incarnation mean what they mean for Key.
type Meta struct {
	ID          string
	Value       []byte
	Revision    int64
	Writes      uint64
	Incarnation int64
}

// ValidMetaID reports whether id may name a Meta record: 1 to 200 bytes
// of a-z, 0-9, '-', '_', '.' and '/'.
func ValidMetaID(id string) bool {
	if id == "" || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/') {
			return false
		}
	}
	return true
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
	// coalesced; a watcher re-reads the key it is told about. Meta
	// records are not reported.
	Watch(ctx context.Context) (<-chan Event, error)
	// GetMeta returns the Meta record id, or ErrNotFound.
	GetMeta(ctx context.Context, id string) (*Meta, error)
	// PutMeta stores m with the same compare-and-swap as Put (Revision 0
	// creates), and returns it with its new Revision, Writes and
	// Incarnation.
	PutMeta(ctx context.Context, m *Meta) (*Meta, error)
	// ListMeta returns the Meta records whose id starts with prefix,
	// sorted by id.
	ListMeta(ctx context.Context, prefix string) ([]*Meta, error)
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
