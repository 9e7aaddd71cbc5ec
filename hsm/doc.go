// Package hsm holds sidecrypt's key-encryption keys (KEKs) and wraps data
// keys (DEKs) under them. A Provider is a PKCS#11 token (any vendor's
// module; SoftHSM2 in tests), AWS KMS (local-kms in tests) or, for
// development, a file sealed under a passphrase. docs/KEK.md is the
// operator's guide; this is the programmer's.
//
// # Choosing a provider
//
// Open takes the SIDECRYPT_HSM setting:
//
//	software
//	pkcs11:token=prod;object=sidecrypt-kek?module-path=/usr/lib/softhsm/libsofthsm2.so
//	awskms:///alias/sidecrypt?region=eu-west-1
//
// The pkcs11: form is an RFC 7512 URI. Path attributes select the token
// (token, serial, manufacturer, model, slot-id; at least one of token,
// serial or slot-id) and name the KEKs (object, the label prefix, default
// "sidecrypt-kek"). Query attributes: module-path (required), pin-source
// (a file: URI or absolute path holding the PIN), pin-value (accepted as
// RFC 7512 allows, and warned about), and sidecrypt's own wrap-mechanism
// (kwp, kwp-v3, kw) and max-sessions. Unknown attributes are errors, not
// ignored. The PIN comes from Options.PIN (SIDECRYPT_HSM_PIN) first.
//
// The awskms: form names an alias prefix: KEK version N is the KMS key
// that alias "<prefix>-vN" names (each version its own key, so that a
// version can be chosen and retired), and the record MAC, audit MAC and
// backup signing keys are "<prefix>-records", "-audit" (HMAC_256) and
// "-backup-signing" (ECC_NIST_P256). Query attributes: region and endpoint
// (https, or http to loopback for an emulator). Credentials come from the
// AWS SDK for Go v2's default chain, never from the URI (awskms.go).
//
// # Binding
//
// Wrap and Unwrap take the data key's name and version (Binding). AWS KMS
// binds them as encryption context: a wrap presented for another data key
// fails. KWP takes no associated data, so the PKCS#11 and software
// providers record nothing, and the keystore's record MAC does the binding
// (Description.BindsContext tells which).
//
// # Wrapping
//
// Both providers wrap with AES key wrap with padding, RFC 5649 (NIST SP
// 800-38F KWP), under an AES-256 KEK, and record MechanismKWP in Wrapped;
// a PKCS#11 token may be told to use RFC 3394 instead (MechanismKW). KWP
// is deterministic and authenticated: the same DEK under the same KEK
// gives the same bytes, and any change to them, or unwrapping under
// another KEK, fails its integrity check (ErrUnwrap). Data keys are 16 to
// 8192 bytes, a multiple of 8 (MinDEKLen, MaxDEKLen): every AES and
// AES-SIV key qualifies, and SoftHSM2 mishandles other lengths.
//
// The AWS KMS provider does not use KWP: Wrap is KMS Encrypt under the
// current version's key with the Binding as encryption context, Unwrap is
// KMS Decrypt naming the version's key, and Wrapped holds KMS's
// ciphertext blob (MechanismAWSKMS). Data keys are at most 4096 bytes
// there (KMS's limit).
//
// The software provider wraps with tink's KWP
// (github.com/tink-crypto/tink-go/v2/kwp/subtle). The PKCS#11 provider
// imports the DEK as a short-lived session object and calls C_WrapKey
// with CKM_AES_KEY_WRAP_PAD (0x210A), which SoftHSM2 implements as RFC
// 5649; C_UnwrapKey brings it back as a session object whose value is
// read and which is then destroyed. Tests show that the two agree byte for
// byte, so wrapped keys look the same whichever provider made them.
//
// # KEK versions
//
// KEKs are numbered from 1. The highest version is current: Wrap uses it.
// RotateKEK adds the next version; older versions keep unwrapping until
// RetireKEK retires them (the current one cannot be retired). On a token,
// version N is the object labelled "<object>-vN", generated inside the
// token (CKA_SENSITIVE, not CKA_EXTRACTABLE, wrap and unwrap only);
// retiring clears its CKA_WRAP and CKA_UNWRAP so the token itself refuses
// it. Providers re-read the token or file when they meet a version they
// do not know, so a rotation by another sidecar is picked up.
//
// # Audit MACs
//
// AuditMAC is HMAC-SHA256 under a key that is separate from every KEK
// version, so KEK rotation does not invalidate old audit checkpoints: a
// non-extractable generic secret "<object>-audit" on a token (created on
// first use), or a random 32-byte key sealed in the software key file.
//
// # Record MACs and backup signatures
//
// RecordMAC and VerifyRecordMAC are HMAC-SHA256 under a third key, for the
// integrity of keystore records (package keystore, seal.go): on a token the
// non-extractable generic secret "<object>-records" (C_Sign and C_Verify
// with CKM_SHA256_HMAC); in the software provider, HKDF-SHA256 of the key
// file's sealed master secret under its own label. BackupPublicKey and
// SignBackup are an ECDSA P-256 key pair for signing backups: on a token
// "<object>-backup-signing", generated inside it (CKM_EC_KEY_PAIR_GEN,
// signing with CKM_ECDSA over a SHA-256 digest); in the software provider,
// derived from the master secret. Signatures are r || s (64 bytes). None of
// these keys is a KEK, so KEK rotation leaves records and backups valid.
// A software key file that group or others can read is refused at Open.
//
// With AWS KMS, the record and audit MACs are KMS GenerateMac over
// "sidecrypt awskms mac v1" || 0x00 || SHA-256(msg) (KMS takes 1 to 4096
// bytes), VerifyRecordMAC is KMS VerifyMac, and SignBackup is KMS Sign with
// MessageType DIGEST, its DER signature turned into r || s.
//
// # Errors
//
// Every error wraps one of the sentinels (ErrUnavailable, ErrUnknownKEK,
// ErrKEKRetired, ErrUnwrap, ErrNotCompiled, ErrConfig,
// ErrInvalidArgument, ErrRecordMAC), starts with "hsm: ", names the
// operation, the KEK version and the token, file or KMS key (with the AWS
// error code, never the AWS message), and holds no key byte, PIN or
// passphrase. The proxy answers ErrUnavailable with 503 and forwards
// nothing.
//
// # Build tags
//
// The PKCS#11 provider needs cgo; it is compiled when cgo is on and the
// nopkcs11 tag is absent. Otherwise Open refuses pkcs11: URIs with
// ErrNotCompiled rather than falling back to the software provider.
//
// # Concurrency
//
// Providers are safe for concurrent use. PKCS#11 sessions are not, so the
// PKCS#11 provider hands each caller its own session from a bounded pool
// (max-sessions, default 8). It logs in once per token, and recovers once
// per call from a closed session, a lost login, stale object handles, and
// a finalised library or removed device (by C_Finalize, C_Initialize and
// logging in again) before answering ErrUnavailable.
//
// # Memory
//
// Unwrap returns a fresh slice that the caller owns and should zero when
// done. The providers zero the key material they hold on Close. Some
// copies are out of reach: the AES key schedules inside crypto/aes, and
// the C buffers that the PKCS#11 binding allocates for CKA_VALUE and the
// PIN, which it frees without zeroing.
package hsm
