package hsm

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"time"
)

// Provider holds versioned key-encryption keys (KEKs) and wraps data keys
// under them. Implementations must be safe for concurrent use.
//
// Error contract: every error wraps one of the sentinel errors below (test
// with errors.Is), names the operation, the KEK version and the token or
// file, and never contains key bytes or the PIN or passphrase.
type Provider interface {
	// Wrap wraps dek under the current KEK version, for the data key that
	// b names.
	Wrap(ctx context.Context, dek []byte, b Binding) (Wrapped, error)
	// Unwrap returns the data key inside w, which the caller expects to
	// belong to the data key that b names. It fails with ErrUnwrap if w
	// was tampered with, belongs to another KEK or (with a provider that
	// binds, see Binding) to another data key, with ErrUnknownKEK if its
	// KEK version does not exist, and with ErrKEKRetired if that version
	// was retired.
	Unwrap(ctx context.Context, w Wrapped, b Binding) ([]byte, error)
	// CurrentKEK returns the version new wraps use.
	CurrentKEK(ctx context.Context) (uint32, error)
	// RotateKEK creates a new KEK version inside the provider and makes
	// it current. Older versions keep unwrapping until retired.
	RotateKEK(ctx context.Context) (uint32, error)
	// KEKs lists every KEK version and its state.
	KEKs(ctx context.Context) ([]KEKInfo, error)
	// RetireKEK deactivates an old KEK version: it no longer wraps or
	// unwraps. The current version cannot be retired.
	RetireKEK(ctx context.Context, version uint32) error
	// AuditMAC computes HMAC-SHA256 over msg with the provider's audit
	// key (created on first use, never exportable), for signed audit
	// checkpoints.
	AuditMAC(ctx context.Context, msg []byte) ([]byte, error)
	// RecordMAC computes HMAC-SHA256 over msg with the provider's record
	// key: a key of its own (neither a KEK nor the audit key), which
	// never leaves the provider, for the integrity of keystore records.
	// PKCS#11: a non-extractable generic secret "<object>-records",
	// created on first use; software: derived from the file's sealed
	// master secret (docs/KEK.md).
	RecordMAC(ctx context.Context, msg []byte) ([]byte, error)
	// VerifyRecordMAC returns nil if mac is RecordMAC(msg), compared in
	// constant time, and an error wrapping ErrRecordMAC otherwise.
	VerifyRecordMAC(ctx context.Context, msg, mac []byte) error
	// BackupPublicKey returns the public half of the provider's backup
	// signing key (ECDSA P-256), creating the key pair on first use. The
	// private half never leaves the provider.
	BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error)
	// SignBackup signs a SHA-256 digest (32 bytes) with the backup
	// signing key: ECDSA P-256 (FIPS 186-5), the signature as r || s,
	// each 32 bytes big-endian (IEEE P1363, the PKCS#11 CKM_ECDSA form).
	SignBackup(ctx context.Context, digest []byte) ([]byte, error)
	// Ping checks that the provider is reachable and logged in.
	Ping(ctx context.Context) error
	// Describe says what the provider is, for logs and `keys list`.
	Describe() Description
	// Close releases sessions and handles.
	Close() error
}

// Binding names the data key a wrap belongs to: its name and version in
// the keystore. Wrap is told it and Unwrap is told it again, from the
// record the caller read, never from the wrapped bytes.
//
// A provider that can authenticate context with the wrap binds it, so that
// a wrapped key moved to another name or version does not unwrap: AWS KMS
// puts it in the encryption context (docs/KEK.md), which KMS also writes
// to CloudTrail, so the cloud's own log says which data key each Decrypt
// opened. The RFC 5649 providers (PKCS#11 and software) record nothing:
// KWP takes no associated data, and both must keep producing the bytes
// they always have (existing keystores, and the byte-for-byte agreement
// between them). For them the keystore's record MAC does the binding: it
// covers every wrapped key together with its name and version, so a
// wrapped key moved to another record is refused before it is unwrapped
// (docs/KEYS.md, "Record integrity"). Describe().BindsContext says which
// kind a provider is.
type Binding struct {
	Key     string `json:"key"`     // data key name, "pii"
	Version uint32 `json:"version"` // data key version
}

// Wrapped is a data key wrapped under one KEK version.
type Wrapped struct {
	KEKVersion uint32 `json:"kek_version"`
	// Mechanism names the wrapping algorithm, for example
	// "aes-kwp-rfc5649". Unwrap refuses a mechanism it does not use.
	Mechanism string `json:"mechanism"`
	Bytes     []byte `json:"bytes"`
}

// KEKInfo describes one KEK version.
type KEKInfo struct {
	Version uint32    `json:"version"`
	State   string    `json:"state"` // "current", "active" (unwrap only), "retired"
	Created time.Time `json:"created"`
	Retired time.Time `json:"retired,omitzero"`
	// Label is the object label inside the HSM, or the file for the
	// software provider.
	Label string `json:"label"`
}

// Description says what a provider is. It holds no secrets.
type Description struct {
	Kind   string `json:"kind"` // "software", "pkcs11" or "awskms"
	Module string `json:"module,omitempty"`
	Token  string `json:"token,omitempty"`
	// Object is the PKCS#11 label prefix, or the AWS KMS alias prefix
	// ("alias/sidecrypt").
	Object string `json:"object,omitempty"`
	File   string `json:"file,omitempty"`
	// Region is the AWS region of an awskms provider, and Endpoint the
	// KMS endpoint when not the region's public one.
	Region   string `json:"region,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	// BindsContext: Wrap authenticates the Binding with the wrapped key,
	// so Unwrap under another Binding fails (see Binding).
	BindsContext bool   `json:"binds_context,omitempty"`
	Warning      string `json:"warning,omitempty"` // e.g. "not an HSM: development only"
}

// ID names the provider's keys in a way that stays the same across
// processes and hosts: the kind and what selects the keys (token and label
// prefix, region and alias prefix, or the key file). The keystore records
// it beside a second wrap (keystore.EscrowWrap), to tell which provider
// made it. It holds no secret.
func (d Description) ID() string {
	switch d.Kind {
	case "pkcs11":
		return "pkcs11:token=" + d.Token + ";object=" + d.Object
	case "awskms":
		return "awskms:" + d.Region + ":" + d.Object
	case "software":
		return "software:" + d.File
	}
	return d.Kind
}

// Sentinel errors.
var (
	// ErrUnavailable: the HSM or key file cannot be reached or used right
	// now (module missing, token absent or locked, login failed, device
	// removed). The proxy answers 503 and forwards nothing.
	ErrUnavailable = errors.New("hsm unavailable")
	// ErrUnknownKEK: no KEK with that version exists.
	ErrUnknownKEK = errors.New("unknown KEK version")
	// ErrNoKEK: the provider holds no KEK version at all yet (a fresh
	// token, no key file, no alias), and Open was not allowed to create
	// the first (Options.Create). Always wrapped together with
	// ErrUnavailable.
	ErrNoKEK = errors.New("no KEK yet")
	// ErrKEKRetired: the KEK version was retired and no longer unwraps.
	ErrKEKRetired = errors.New("KEK version retired")
	// ErrUnwrap: the wrapped key failed its integrity check.
	ErrUnwrap = errors.New("unwrap failed: wrapped key is corrupt or belongs to another KEK")
	// ErrNotCompiled: PKCS#11 support was not compiled into this binary
	// (built without cgo or with the nopkcs11 tag).
	ErrNotCompiled = errors.New("PKCS#11 support was not compiled into this binary (built without cgo or with -tags nopkcs11)")
	// ErrConfig: the provider specification is malformed.
	ErrConfig = errors.New("invalid HSM configuration")
	// ErrInvalidArgument: the call itself is wrong and nothing was changed
	// (a data key of an unusable length, retiring the current KEK).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrRecordMAC: a record MAC does not verify under the record key:
	// the record was changed outside sidecrypt, or MAC'd by another
	// provider.
	ErrRecordMAC = errors.New("record MAC does not verify")
)

// isSentinel reports whether err wraps one of the sentinel errors.
func isSentinel(err error) bool {
	for _, s := range []error{ErrUnavailable, ErrUnknownKEK, ErrKEKRetired, ErrUnwrap, ErrNotCompiled, ErrConfig, ErrInvalidArgument, ErrRecordMAC} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// RecordMACSize is the length of a record MAC: HMAC-SHA256.
const RecordMACSize = 32

// BackupSignatureSize is the length of a backup signature: ECDSA P-256
// r || s.
const BackupSignatureSize = 64

// Mechanism names recorded in Wrapped.Mechanism. They name the algorithm,
// not a PKCS#11 mechanism code: every provider that implements RFC 5649
// writes MechanismKWP, whichever vendor code it used to get there.
const (
	// MechanismKWP is AES key wrap with padding (RFC 5649, NIST SP 800-38F
	// KWP). Both providers use it by default.
	MechanismKWP = "aes-kwp-rfc5649"
	// MechanismKW is AES key wrap without padding (RFC 3394, SP 800-38F
	// KW), selected with wrap-mechanism=kw for tokens that lack KWP.
	MechanismKW = "aes-kw-rfc3394"
)

// verifyP1363 checks an ECDSA r || s signature.
func verifyP1363(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	if pub == nil || len(sig) != BackupSignatureSize {
		return false
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest, r, s)
}
