package fieldcrypt

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

// DataKeySize is the size in bytes of a data key's root material.
//
// Why 64: the deterministic mode is AES-SIV with two AES-256 keys (RFC 5297
// with a 512-bit key), and the root must carry at least as much entropy as
// the largest subkey drawn from it. Every subkey is derived with HKDF-SHA256
// (RFC 5869) under its own label, so the random mode, the deterministic mode
// and the keyed mask hash never share key bytes even though they share one
// stored, wrapped root.
const DataKeySize = 64

// HKDF labels. They are part of the format: changing one makes every existing
// token unreadable. See docs/FORMAT.md, "Key derivation".
const (
	labelGCM  = "sidecrypt v1 random aes-256-gcm"
	labelSIV  = "sidecrypt v1 deterministic aes-siv"
	labelMask = "sidecrypt v1 mask hmac-sha256"
)

// maxKeyNameLen bounds a key name; the token header stores its length in
// one byte. Names are also restricted to [a-z0-9_-] so that they are safe in
// file names, metric labels, URLs and log lines.
const maxKeyNameLen = 64

// ValidKeyName reports whether name is an acceptable key name: 1 to 64
// characters from a-z, 0-9, '-' and '_', starting with a letter.
func ValidKeyName(name string) bool {
	if len(name) == 0 || len(name) > maxKeyNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_'):
		default:
			return false
		}
	}
	return true
}

// DataKey is one unwrapped version of a named data key, ready to seal and
// open field tokens. It is safe for concurrent use.
//
// A DataKey never prints its material: String and GoString give only the
// name and version, so a key accidentally passed to a logger or fmt.Errorf
// cannot leak.
type DataKey struct {
	name    string
	version uint32

	// mu guards the key bytes below against Zero. Seal and Open hold it
	// for reading while they run: the AES-SIV object reads sivKey on every
	// call, so zeroing it mid-operation would otherwise seal under a
	// half-erased key.
	mu      sync.RWMutex
	root    []byte
	maskKey []byte
	sivKey  []byte // aliased by siv: tink keeps the slice it is given
	zeroed  bool

	gcm cipher.AEAD
	siv *subtle.AESSIV

	sealedMessages atomic.Uint64
	sealedBytes    atomic.Uint64
}

// NewDataKey derives the subkeys of one data key version from its root
// material. material must be DataKeySize bytes; it is copied, so the caller
// should zero its own copy once this returns.
func NewDataKey(name string, version uint32, material []byte) (*DataKey, error) {
	if !ValidKeyName(name) {
		return nil, fmt.Errorf("fieldcrypt: invalid key name %q", name)
	}
	if version == 0 {
		return nil, fmt.Errorf("fieldcrypt: key %q: version must be at least 1", name)
	}
	if len(material) != DataKeySize {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: material is %d bytes, want %d", name, version, len(material), DataKeySize)
	}
	k := &DataKey{name: name, version: version}
	k.root = append([]byte(nil), material...)

	gcmKey, err := hkdf.Key(sha256.New, k.root, nil, labelGCM, 32)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: derive: %w", name, version, err)
	}
	defer clear(gcmKey)
	block, err := aes.NewCipher(gcmKey)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: %w", name, version, err)
	}
	if k.gcm, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: %w", name, version, err)
	}

	// NewAESSIV keeps sivKey (its second half is the CTR key, expanded
	// again on every call), so it must stay alive and intact until Zero.
	if k.sivKey, err = hkdf.Key(sha256.New, k.root, nil, labelSIV, subtle.AESSIVKeySize); err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: derive: %w", name, version, err)
	}
	if k.siv, err = subtle.NewAESSIV(k.sivKey); err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: %w", name, version, err)
	}

	if k.maskKey, err = hkdf.Key(sha256.New, k.root, nil, labelMask, 32); err != nil {
		return nil, fmt.Errorf("fieldcrypt: key %q v%d: derive: %w", name, version, err)
	}
	return k, nil
}

// Name returns the key's name.
func (k *DataKey) Name() string { return k.name }

// Version returns the key's version.
func (k *DataKey) Version() uint32 { return k.version }

// String names the key without revealing material.
func (k *DataKey) String() string { return fmt.Sprintf("%s v%d", k.name, k.version) }

// GoString names the key without revealing material.
func (k *DataKey) GoString() string { return "fieldcrypt.DataKey(" + k.String() + ")" }

// Usage returns how many messages and plaintext bytes this in-memory copy
// has sealed. The key cache uses it to enforce usage limits per cached entry.
func (k *DataKey) Usage() (messages, bytes uint64) {
	return k.sealedMessages.Load(), k.sealedBytes.Load()
}

// countSeal records one sealed message of n plaintext bytes.
func (k *DataKey) countSeal(n int) {
	k.sealedMessages.Add(1)
	k.sealedBytes.Add(uint64(n))
}

// Zero overwrites the root material, the AES-SIV key and the mask key held by k and marks it
// unusable: every later Seal or Open with k fails with ErrKeyZeroed.
//
// Limitation: the AES key schedules inside the standard library's cipher
// objects cannot be reached from here; they become garbage once the last
// reference to k is dropped. See docs/KEYS.md, "Key bytes in memory".
func (k *DataKey) Zero() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.root)
	clear(k.maskKey)
	clear(k.sivKey)
	k.zeroed = true
}

// Zeroed reports whether Zero has been called.
func (k *DataKey) Zeroed() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.zeroed
}

// MaskKey calls fn with the key's HMAC-SHA256 mask subkey. The slice is only
// valid during fn and must not be retained.
func (k *DataKey) MaskKey(fn func(key []byte)) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.zeroed {
		return ErrKeyZeroed
	}
	fn(k.maskKey)
	return nil
}

// Keyring resolves data keys by name and version. The key cache implements
// it; tests use StaticKeyring.
type Keyring interface {
	// SealKey returns the primary (current) version of the named key, for
	// sealing new tokens. It fails if the key has no active primary.
	SealKey(ctx context.Context, name string) (*DataKey, error)
	// OpenKey returns the given version of the named key, for opening a
	// token. It fails if that version may not decrypt (destroyed, or
	// compromised without override).
	OpenKey(ctx context.Context, name string, version uint32) (*DataKey, error)
}

// StaticKeyring is a fixed in-memory Keyring: the highest version of each
// name is its primary. It is meant for tests, examples and `rules test`
// dry runs with throw-away keys.
type StaticKeyring struct {
	keys map[string]map[uint32]*DataKey
}

// NewStaticKeyring returns a keyring holding keys.
func NewStaticKeyring(keys ...*DataKey) *StaticKeyring {
	r := &StaticKeyring{keys: make(map[string]map[uint32]*DataKey)}
	for _, k := range keys {
		if r.keys[k.name] == nil {
			r.keys[k.name] = make(map[uint32]*DataKey)
		}
		r.keys[k.name][k.version] = k
	}
	return r
}

// SealKey implements Keyring.
func (r *StaticKeyring) SealKey(_ context.Context, name string) (*DataKey, error) {
	var best *DataKey
	for _, k := range r.keys[name] {
		if best == nil || k.version > best.version {
			best = k
		}
	}
	if best == nil {
		return nil, fmt.Errorf("fieldcrypt: %w: %q", ErrUnknownKey, name)
	}
	return best, nil
}

// OpenKey implements Keyring.
func (r *StaticKeyring) OpenKey(_ context.Context, name string, version uint32) (*DataKey, error) {
	k := r.keys[name][version]
	if k == nil {
		return nil, fmt.Errorf("fieldcrypt: %w: %q v%d", ErrUnknownKey, name, version)
	}
	return k, nil
}

// Sentinel errors. Callers match them with errors.Is; the wrapping error
// adds the key name, version and field path, never a field value.
var (
	// ErrUnknownKey: the keyring has no such key or version.
	ErrUnknownKey = errors.New("unknown key")
	// ErrKeyZeroed: the DataKey was zeroed (evicted, revoked or destroyed)
	// while a caller still held it.
	ErrKeyZeroed = errors.New("key material was zeroed")
)

var (
	_ Keyring      = (*StaticKeyring)(nil)
	_ fmt.Stringer = (*DataKey)(nil)
)

// sealRandom appends the AES-256-GCM sealing of plaintext under nonce to dst
// (ciphertext || tag). It holds the read lock so that Zero cannot race it.
func (k *DataKey) sealRandom(dst, nonce, plaintext, aad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.zeroed {
		return dst, ErrKeyZeroed
	}
	dst = k.gcm.Seal(dst, nonce, plaintext, aad)
	k.countSeal(len(plaintext))
	return dst, nil
}

// openRandom appends the plaintext of ciphertext || tag to dst.
func (k *DataKey) openRandom(dst, nonce, sealed, aad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.zeroed {
		return dst, ErrKeyZeroed
	}
	out, err := k.gcm.Open(dst, nonce, sealed, aad)
	if err != nil {
		return dst, ErrAuthentication
	}
	return out, nil
}

// sealDeterministic appends the AES-SIV output (SIV || ciphertext) to dst.
func (k *DataKey) sealDeterministic(dst, plaintext, aad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.zeroed {
		return dst, ErrKeyZeroed
	}
	ct, err := k.siv.EncryptDeterministically(plaintext, aad)
	if err != nil {
		// Only an absurd length can fail; do not pass tink's text on.
		return dst, errors.New("fieldcrypt: AES-SIV refused the value")
	}
	dst = append(dst, ct...)
	clear(ct)
	k.countSeal(len(plaintext))
	return dst, nil
}

// openDeterministic appends the plaintext of an AES-SIV output to dst.
func (k *DataKey) openDeterministic(dst, sealed, aad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.zeroed {
		return dst, ErrKeyZeroed
	}
	pt, err := k.siv.DecryptDeterministically(sealed, aad)
	if err != nil {
		return dst, ErrAuthentication
	}
	dst = append(dst, pt...)
	clear(pt)
	return dst, nil
}
