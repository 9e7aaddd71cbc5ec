package keystore

import "errors"

// Lifecycle errors from Manager. Each is wrapped in an error that names the
// key and version; match them with errors.Is. The store's own sentinels
// (ErrNotFound, ErrExists, ErrConflict, ErrUnavailable) are in store.go.
var (
	// ErrDestroyed: the version was destroyed; its material is gone and
	// its tokens can never be opened again.
	ErrDestroyed = errors.New("key version destroyed")
	// ErrCompromised: the version is compromised and has no live
	// override, so it may not decrypt.
	ErrCompromised = errors.New("key version compromised (decrypting needs `sidecrypt keys override`)")
	// ErrPreActive: the version has not been activated yet and may be
	// used for nothing.
	ErrPreActive = errors.New("key version is pre-active (not yet usable)")
	// ErrNoPrimary: the key has no active primary version, so nothing can
	// be sealed under it until it is rotated or a version is activated.
	ErrNoPrimary = errors.New("key has no active primary version")
	// ErrTransition: the requested state change is not allowed from the
	// version's current state. The message lists the allowed ones.
	ErrTransition = errors.New("state transition not allowed")
	// ErrKEKInUse: a KEK version still wraps data keys (or is current) and
	// cannot be retired; run `sidecrypt keys rewrap` first.
	ErrKEKInUse = errors.New("KEK version still in use")
	// ErrFingerprint: key material does not match its stored fingerprint
	// (a corrupt backup, or a wrapped key that unwrapped to something else).
	ErrFingerprint = errors.New("key material does not match its fingerprint")
	// ErrVerify: a freshly wrapped copy did not unwrap back to the same
	// key, so the record was left unchanged.
	ErrVerify = errors.New("wrapped copy failed verification")
	// ErrBackup: a backup file is malformed or was sealed to another
	// recovery key.
	ErrBackup = errors.New("invalid backup")
	// ErrRecoveryKey: a recovery key file is malformed.
	ErrRecoveryKey = errors.New("invalid recovery key")
)
