package keystore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
)

// Recovery keys and backups.
//
// A backup holds every data key that still has material, each sealed on
// its own with HPKE (RFC 9180, base mode) from the standard library's
// crypto/hpke, to a recovery public key, with the suite below. The KEM is
// the post-quantum hybrid ML-KEM-768 + X25519 (X-Wing), so a backup
// recorded today stays closed to someone who can later break X25519
// alone. Only the holder of the recovery private key can open it; the HSM
// that wrapped the keys is not needed, which is the point: it restores
// keys after the HSM is lost.
//
// HPKE base mode authenticates nothing about the sender: anyone with the
// public recovery key could seal keys of their choosing. So the whole
// backup is signed (ECDSA P-256) by the HSM's backup signing key, and
// restore checks the signature, against a signer key the operator names
// or the HSM's own, before it reads anything else. docs/KEYS.md,
// "Backup file format", specifies every byte.
const (
	backupFormat   = "sidecrypt-backup-v2"
	backupFormatV1 = "sidecrypt-backup-v1"
	// backupInfo starts the HPKE info string of each sealed key; the key
	// name, version and fingerprint follow, so a sealed key cannot be
	// moved to another name or version in the file.
	backupInfo   = "sidecrypt backup v2"
	backupInfoV1 = "sidecrypt backup v1"
	// backupSigContext starts the signed message: it keeps backup
	// signatures apart from anything else the key might ever sign.
	backupSigContext = "sidecrypt backup signature v2"
	backupSigAlg     = "ECDSA-P256-SHA256"
	pemSigner        = "SIDECRYPT BACKUP SIGNER"

	pemPublic  = "SIDECRYPT RECOVERY PUBLIC KEY"
	pemPrivate = "SIDECRYPT RECOVERY PRIVATE KEY"
	suiteKEM   = "MLKEM768X25519"
	suiteKDF   = "HKDF-SHA256"
	suiteAEAD  = "AES-256-GCM"
)

func recoveryKEM() hpke.KEM { return hpke.MLKEM768X25519() }

// RecoveryIdentity is the private half of a recovery key.
type RecoveryIdentity struct {
	priv hpke.PrivateKey
}

// RecoveryRecipient is the public half of a recovery key.
type RecoveryRecipient struct {
	pub hpke.PublicKey
}

// GenerateRecoveryKey makes a new recovery key pair (crypto/rand).
func GenerateRecoveryKey() (*RecoveryIdentity, error) {
	priv, err := recoveryKEM().GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("keystore: generate recovery key: %w", err)
	}
	return &RecoveryIdentity{priv: priv}, nil
}

// Recipient returns the public half.
func (id *RecoveryIdentity) Recipient() *RecoveryRecipient {
	return &RecoveryRecipient{pub: id.priv.PublicKey()}
}

// Fingerprint names a recovery key: the first 16 bytes of
// SHA-256("sidecrypt recovery key v1\x00" || public key), in hex. A backup
// records it, so that restore can say which recovery key it needs.
func (r *RecoveryRecipient) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte("sidecrypt recovery key v1\x00"))
	h.Write(r.pub.Bytes())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// MarshalText returns the public key in the armored form that
// ParseRecoveryRecipient reads: a PEM block of type "SIDECRYPT RECOVERY
// PUBLIC KEY" with KEM and Fingerprint headers, holding the KEM's
// serialised public key (RFC 9180 SerializePublicKey).
func (r *RecoveryRecipient) MarshalText() ([]byte, error) {
	return pem.EncodeToMemory(&pem.Block{
		Type:    pemPublic,
		Headers: map[string]string{"KEM": suiteKEM, "Fingerprint": r.Fingerprint()},
		Bytes:   r.pub.Bytes(),
	}), nil
}

// MarshalText returns the private key as a PEM block of type "SIDECRYPT
// RECOVERY PRIVATE KEY" (KEM and Fingerprint headers; the 32-byte seed of
// RFC 9180 SerializePrivateKey). Store it offline: it opens every backup
// sealed to its public half.
func (id *RecoveryIdentity) MarshalText() ([]byte, error) {
	b, err := id.priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("keystore: encode recovery key: %w", err)
	}
	defer clear(b)
	return pem.EncodeToMemory(&pem.Block{
		Type:    pemPrivate,
		Headers: map[string]string{"KEM": suiteKEM, "Fingerprint": id.Recipient().Fingerprint()},
		Bytes:   b,
	}), nil
}

func decodeArmor(text []byte, typ string) ([]byte, error) {
	block, rest := pem.Decode(bytes.TrimSpace(text))
	if block == nil {
		return nil, fmt.Errorf("keystore: %w: no %q block found", ErrRecoveryKey, typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("keystore: %w: found a %q block, want %q", ErrRecoveryKey, block.Type, typ)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("keystore: %w: text after the %q block", ErrRecoveryKey, typ)
	}
	if kem := block.Headers["KEM"]; kem != suiteKEM {
		return nil, fmt.Errorf("keystore: %w: KEM %q, want %s", ErrRecoveryKey, kem, suiteKEM)
	}
	return block.Bytes, nil
}

// ParseRecoveryRecipient reads an armored recovery public key.
func ParseRecoveryRecipient(text []byte) (*RecoveryRecipient, error) {
	b, err := decodeArmor(text, pemPublic)
	if err != nil {
		return nil, err
	}
	pub, err := recoveryKEM().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w: public key: %v", ErrRecoveryKey, err)
	}
	return &RecoveryRecipient{pub: pub}, nil
}

// ParseRecoveryIdentity reads an armored recovery private key.
func ParseRecoveryIdentity(text []byte) (*RecoveryIdentity, error) {
	b, err := decodeArmor(text, pemPrivate)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	priv, err := recoveryKEM().NewPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w: private key: %v", ErrRecoveryKey, err)
	}
	return &RecoveryIdentity{priv: priv}, nil
}

// BackupSigner is the public half of a backup signing key: what restore
// trusts. `sidecrypt keys backup-signer` exports it.
type BackupSigner struct {
	pub *ecdsa.PublicKey
}

// NewBackupSigner wraps a P-256 public key.
func NewBackupSigner(pub *ecdsa.PublicKey) (*BackupSigner, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("keystore: %w: a backup signer is an ECDSA P-256 key", ErrBackup)
	}
	return &BackupSigner{pub: pub}, nil
}

// point is the uncompressed SEC 1 encoding, 0x04 || X || Y.
func (s *BackupSigner) point() []byte {
	b, err := s.pub.Bytes()
	if err != nil {
		panic("keystore: backup signer: " + err.Error()) // P-256 keys always encode
	}
	return b
}

// Fingerprint names a signer: the first 16 bytes of SHA-256("sidecrypt
// backup signer v1" || 0x00 || uncompressed point), in hex.
func (s *BackupSigner) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte("sidecrypt backup signer v1\x00"))
	h.Write(s.point())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// MarshalText returns the PEM block "SIDECRYPT BACKUP SIGNER" (headers
// Algorithm and Fingerprint) holding the 65-byte uncompressed point.
func (s *BackupSigner) MarshalText() ([]byte, error) {
	return pem.EncodeToMemory(&pem.Block{
		Type:    pemSigner,
		Headers: map[string]string{"Algorithm": backupSigAlg, "Fingerprint": s.Fingerprint()},
		Bytes:   s.point(),
	}), nil
}

// ParseBackupSigner reads what MarshalText writes.
func ParseBackupSigner(text []byte) (*BackupSigner, error) {
	block, rest := pem.Decode(bytes.TrimSpace(text))
	switch {
	case block == nil || block.Type != pemSigner:
		return nil, fmt.Errorf("keystore: %w: no %q block found", ErrBackupSignature, pemSigner)
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, fmt.Errorf("keystore: %w: text after the %q block", ErrBackupSignature, pemSigner)
	case block.Headers["Algorithm"] != backupSigAlg:
		return nil, fmt.Errorf("keystore: %w: algorithm %q, want %s", ErrBackupSignature, block.Headers["Algorithm"], backupSigAlg)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w: public key: %v", ErrBackupSignature, err)
	}
	return &BackupSigner{pub: pub}, nil
}

// BackupSigner returns the provider's backup signing key (creating it on
// first use).
func (m *Manager) BackupSigner(ctx context.Context) (*BackupSigner, error) {
	pub, err := m.kek.BackupPublicKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: backup signing key: %w", err)
	}
	return NewBackupSigner(pub)
}

// ErrBackupSignature: a backup's signature does not verify, or its signer
// is not one restore was told to trust.
var ErrBackupSignature = errors.New("backup signature does not verify, or its signer is not trusted")

// backupEnvelope is the file: the payload, a JSON text carried as a JSON
// string (so that its exact bytes survive any reformatting of the
// envelope, and `jq -r .payload` shows it), and a signature over those
// bytes. See docs/KEYS.md, "Backup file format".
type backupEnvelope struct {
	Format    string          `json:"format"`
	Payload   string          `json:"payload"`
	Signature backupSignature `json:"signature"`
}

type backupSignature struct {
	Alg       string `json:"alg"`
	Signer    string `json:"signer"`
	PublicKey []byte `json:"public_key"`
	Value     []byte `json:"value"`
}

// backupPayload is what the signature covers.
type backupPayload struct {
	Format    string      `json:"format"`
	Created   time.Time   `json:"created"`
	KEM       string      `json:"kem"`
	KDF       string      `json:"kdf"`
	AEAD      string      `json:"aead"`
	Recipient string      `json:"recipient"` // recovery key fingerprint
	Signer    string      `json:"signer"`    // signer fingerprint, bound into the signed bytes
	Keys      []backupKey `json:"keys"`
	// Revoked is the head record's list of versions ever compromised or
	// destroyed, per key, so that a restore into a fresh keystore knows
	// them too.
	Revoked map[string]map[uint32]State `json:"revoked,omitempty"`
}

// backupFileV1 is the unsigned format of earlier releases.
type backupFileV1 struct {
	Format    string      `json:"format"`
	Created   time.Time   `json:"created"`
	KEM       string      `json:"kem"`
	KDF       string      `json:"kdf"`
	AEAD      string      `json:"aead"`
	Recipient string      `json:"recipient"`
	Keys      []backupKey `json:"keys"`
}

type backupKey struct {
	Name         string          `json:"name"`
	Primary      uint32          `json:"primary"`
	Cryptoperiod time.Duration   `json:"cryptoperiod"`
	Created      time.Time       `json:"created"`
	Versions     []backupVersion `json:"versions"`
}

type backupVersion struct {
	// Meta is the version's record without its wrapped copy, KEK version,
	// mechanism and counter incarnation, which mean nothing to another
	// HSM and keystore.
	Meta Version `json:"meta"`
	// Sealed is HPKE enc || ciphertext of the data key; absent for a
	// destroyed version, whose metadata is kept so that a restore into a
	// fresh keystore still knows it was destroyed.
	Sealed []byte `json:"sealed,omitempty"`
	// Reserved is how many seals the version had reserved when the backup
	// was taken; a restore continues its count from there.
	Reserved uint64 `json:"reserved,omitempty"`
}

func backupInfoFor(name string, version uint32, fingerprint string) []byte {
	return []byte(backupInfo + "\x00" + name + "\x00" + strconv.FormatUint(uint64(version), 10) + "\x00" + fingerprint)
}

func backupInfoForV1(name string, version uint32) []byte {
	return []byte(backupInfoV1 + "\x00" + name + "\x00" + strconv.FormatUint(uint64(version), 10))
}

// backupDigest is SHA-256 of the signed message: the context string, a
// zero byte, and the payload.
func backupDigest(payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(backupSigContext))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)
}

func verifyBackupSig(pub *ecdsa.PublicKey, payload, sig []byte) bool {
	if len(sig) != hsm.BackupSignatureSize {
		return false
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, backupDigest(payload), r, s)
}

// BackupResult counts what a backup holds.
type BackupResult struct {
	Keys, Versions, Destroyed int
	Recipient                 string
	Signer                    string
}

// Backup writes every key to w, each version's data key sealed to rcpt,
// the whole signed by the provider's backup signing key. It is all or
// nothing: if any record fails its integrity check or any version fails
// to unwrap, nothing is written and the error names it, since a backup
// that silently lacks a key is worse than none.
func (m *Manager) Backup(ctx context.Context, w io.Writer, rcpt *RecoveryRecipient) (BackupResult, error) {
	const action = "key.backup"
	res := BackupResult{Recipient: rcpt.Fingerprint()}
	signer, err := m.BackupSigner(ctx)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	res.Signer = signer.Fingerprint()
	keys, err := m.listKeys(ctx)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup refused: %w", err))
	}
	head, err := m.readHead(ctx)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	usages, err := m.Usages(ctx, keys)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup refused: %w", err))
	}
	p := backupPayload{
		Format: backupFormat, Created: m.now().UTC(),
		KEM: suiteKEM, KDF: suiteKDF, AEAD: suiteAEAD,
		Recipient: res.Recipient, Signer: res.Signer,
	}
	for name, e := range head.Keys {
		if len(e.Revoked) > 0 {
			if p.Revoked == nil {
				p.Revoked = map[string]map[uint32]State{}
			}
			p.Revoked[name] = e.Revoked
		}
	}
	type done struct {
		name    string
		version uint32
	}
	var sealed []done
	progress, total := progressOf(ctx), 0
	for _, k := range keys {
		for _, v := range k.Versions {
			if len(v.Wrapped) > 0 {
				total++
			}
		}
	}
	progress(0, total)
	for _, k := range keys {
		bk := backupKey{Name: k.Name, Primary: k.Primary, Cryptoperiod: k.Cryptoperiod, Created: k.Created}
		for _, v := range k.Versions {
			meta := v
			meta.Wrapped, meta.KEKVersion, meta.Mechanism, meta.Counter, meta.Escrow = nil, 0, "", 0, nil
			bv := backupVersion{Meta: meta, Reserved: UsageOf(usages, k.Name, v.Version, m.sealLimit).Reserved}
			if len(v.Wrapped) == 0 {
				res.Destroyed++
				bk.Versions = append(bk.Versions, bv)
				continue
			}
			dek, err := m.kek.Unwrap(ctx, v.wrapped(), hsm.Binding{Key: k.Name, Version: v.Version})
			if err != nil {
				err = fmt.Errorf("keystore: backup: key %q v%d (KEK v%d): %w", k.Name, v.Version, v.KEKVersion, err)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			if !fingerprintMatches(dek, v.Fingerprint) {
				clear(dek)
				err = fmt.Errorf("keystore: backup: key %q v%d: %w", k.Name, v.Version, ErrFingerprint)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			bv.Sealed, err = hpke.Seal(rcpt.pub, hpke.HKDFSHA256(), hpke.AES256GCM(), backupInfoFor(k.Name, v.Version, v.Fingerprint), dek)
			clear(dek)
			if err != nil {
				err = fmt.Errorf("keystore: backup: key %q v%d: seal: %w", k.Name, v.Version, err)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			bk.Versions = append(bk.Versions, bv)
			sealed = append(sealed, done{k.Name, v.Version})
			res.Versions++
			progress(res.Versions, total)
		}
		p.Keys = append(p.Keys, bk)
		res.Keys++
	}
	payload, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return BackupResult{}, m.finish(ctx, action, "", 0, "", nil, err)
	}
	sig, err := m.kek.SignBackup(ctx, backupDigest(payload))
	if err != nil {
		return BackupResult{}, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup: sign: %w", err))
	}
	if !verifyBackupSig(signer.pub, payload, sig) {
		return BackupResult{}, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup: %w: the provider's signature does not verify under its own public key", ErrBackupSignature))
	}
	env := backupEnvelope{Format: backupFormat, Payload: string(payload), Signature: backupSignature{
		Alg: backupSigAlg, Signer: res.Signer, PublicKey: signer.point(), Value: sig,
	}}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(env); err != nil {
		return BackupResult{}, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup: write: %w", err))
	}
	// One event per exported version: each is key material leaving the
	// HSM's protection (sealed), and the trail should say which.
	var errs []error
	for _, d := range sealed {
		if err := m.finish(ctx, action, d.name, d.version, "", map[string]string{"recipient": res.Recipient, "signer": res.Signer}, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

// RestoreOptions configure Restore and OpenBackup.
type RestoreOptions struct {
	// Force replaces versions that exist in the store with different
	// material, and records that failed their integrity check. A version
	// destroyed in the store (or listed as destroyed by its head record)
	// is never brought back, Force or not.
	Force bool
	// Signers are the backup signing keys to trust. Empty means the
	// provider's own: a restore into the same HSM. A restore into a new
	// HSM names the old one's (exported with `keys backup-signer`).
	Signers []*BackupSigner
	// AllowUnsigned accepts a backup of the unsigned v1 format, from
	// before backups were signed. Anyone with the recovery public key
	// could have written one: only for a file whose history is known.
	AllowUnsigned bool
}

// OpenedBackup is a backup whose signature was checked and whose data
// keys were opened and checked against their fingerprints. Close zeroes
// the keys.
type OpenedBackup struct {
	Created   time.Time
	Recipient string
	// Signer is the signer's fingerprint; empty for an unsigned backup.
	Signer  string
	keys    []backupKey
	revoked map[string]map[uint32]State
	deks    map[string]map[uint32][]byte
}

// Close zeroes the opened data keys.
func (b *OpenedBackup) Close() {
	for _, vs := range b.deks {
		for _, d := range vs {
			clear(d)
		}
	}
}

// Keys returns the key names in the backup.
func (b *OpenedBackup) Keys() []string {
	var out []string
	for _, k := range b.keys {
		out = append(out, k.Name)
	}
	return out
}

// maxBackup bounds what OpenBackup reads.
const maxBackup = 256 << 20

// OpenBackup reads a backup. The signature is checked first, against the
// trusted signers, before any other part of the file is decoded; then the
// payload's format, suite and recipient; then every data key is opened
// with id and checked against its fingerprint. Nothing is written.
func (m *Manager) OpenBackup(ctx context.Context, r io.Reader, id *RecoveryIdentity, opts RestoreOptions) (*OpenedBackup, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBackup+1))
	if err != nil {
		return nil, fmt.Errorf("keystore: %w: read: %v", ErrBackup, err)
	}
	if len(data) > maxBackup {
		return nil, fmt.Errorf("keystore: %w: larger than %d bytes", ErrBackup, maxBackup)
	}
	var env backupEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("keystore: %w: %v", ErrBackup, err)
	}
	if env.Format == backupFormatV1 {
		if !opts.AllowUnsigned {
			return nil, fmt.Errorf("keystore: %w: an unsigned %s backup, which anyone holding the recovery public key could have written; take a new (signed) backup, or, for a file whose history you know, allow unsigned backups explicitly", ErrBackupSignature, backupFormatV1)
		}
		return m.openBackupV1(data, id)
	}
	if env.Format != backupFormat {
		return nil, fmt.Errorf("keystore: %w: format %q, want %q", ErrBackup, env.Format, backupFormat)
	}
	// The signature, before anything else.
	sig := env.Signature
	if sig.Alg != backupSigAlg {
		return nil, fmt.Errorf("keystore: %w: signature algorithm %q, want %s", ErrBackupSignature, sig.Alg, backupSigAlg)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), sig.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w: signer public key: %v", ErrBackupSignature, err)
	}
	signer := &BackupSigner{pub: pub}
	trusted := opts.Signers
	if len(trusted) == 0 {
		own, err := m.BackupSigner(ctx)
		if err != nil {
			return nil, err
		}
		trusted = []*BackupSigner{own}
	}
	var names []string
	ok := false
	for _, t := range trusted {
		names = append(names, t.Fingerprint())
		ok = ok || t.pub.Equal(pub)
	}
	if !ok {
		return nil, fmt.Errorf("keystore: %w: it is signed by %s, and the trusted signers are %s (name the old HSM's signer when restoring into a new one)", ErrBackupSignature, signer.Fingerprint(), strings.Join(names, ", "))
	}
	payload := []byte(env.Payload)
	if !verifyBackupSig(pub, payload, sig.Value) {
		return nil, fmt.Errorf("keystore: %w: the signature by %s does not verify: the file was changed after it was signed", ErrBackupSignature, signer.Fingerprint())
	}
	// Signed: now the payload may be read.
	var p backupPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("keystore: %w: payload: %v", ErrBackup, err)
	}
	switch {
	case p.Format != backupFormat:
		return nil, fmt.Errorf("keystore: %w: payload format %q, want %q", ErrBackup, p.Format, backupFormat)
	case p.KEM != suiteKEM || p.KDF != suiteKDF || p.AEAD != suiteAEAD:
		return nil, fmt.Errorf("keystore: %w: suite %s/%s/%s, want %s/%s/%s", ErrBackup, p.KEM, p.KDF, p.AEAD, suiteKEM, suiteKDF, suiteAEAD)
	case p.Signer != signer.Fingerprint():
		return nil, fmt.Errorf("keystore: %w: the payload names signer %s, and it is signed by %s", ErrBackupSignature, p.Signer, signer.Fingerprint())
	case p.Recipient != id.Recipient().Fingerprint():
		return nil, fmt.Errorf("keystore: %w: it was sealed to recovery key %s, and this identity is %s", ErrBackup, p.Recipient, id.Recipient().Fingerprint())
	}
	b := &OpenedBackup{Created: p.Created, Recipient: p.Recipient, Signer: p.Signer, keys: p.Keys, revoked: p.Revoked}
	if err := b.open(id, func(name string, v *Version) []byte { return backupInfoFor(name, v.Version, v.Fingerprint) }); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (m *Manager) openBackupV1(data []byte, id *RecoveryIdentity) (*OpenedBackup, error) {
	var f backupFileV1
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("keystore: %w: %v", ErrBackup, err)
	}
	switch {
	case f.KEM != suiteKEM || f.KDF != suiteKDF || f.AEAD != suiteAEAD:
		return nil, fmt.Errorf("keystore: %w: suite %s/%s/%s, want %s/%s/%s", ErrBackup, f.KEM, f.KDF, f.AEAD, suiteKEM, suiteKDF, suiteAEAD)
	case f.Recipient != id.Recipient().Fingerprint():
		return nil, fmt.Errorf("keystore: %w: it was sealed to recovery key %s, and this identity is %s", ErrBackup, f.Recipient, id.Recipient().Fingerprint())
	}
	b := &OpenedBackup{Created: f.Created, Recipient: f.Recipient, keys: f.Keys}
	if err := b.open(id, func(name string, v *Version) []byte { return backupInfoForV1(name, v.Version) }); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// open checks the key list and opens every sealed data key.
func (b *OpenedBackup) open(id *RecoveryIdentity, info func(string, *Version) []byte) error {
	b.deks = map[string]map[uint32][]byte{}
	seen := map[string]bool{}
	for ki := range b.keys {
		bk := &b.keys[ki]
		if !fieldcrypt.ValidKeyName(bk.Name) || seen[bk.Name] {
			return fmt.Errorf("keystore: %w: invalid or repeated key name %q", ErrBackup, bk.Name)
		}
		seen[bk.Name] = true
		b.deks[bk.Name] = map[uint32][]byte{}
		for vi := range bk.Versions {
			bv := &bk.Versions[vi]
			v := &bv.Meta
			if v.Version == 0 || b.deks[bk.Name][v.Version] != nil || !v.State.Valid() {
				return fmt.Errorf("keystore: %w: key %q: invalid or repeated version %d (state %q)", ErrBackup, bk.Name, v.Version, v.State)
			}
			v.Wrapped, v.KEKVersion, v.Mechanism, v.Counter, v.Escrow = nil, 0, "", 0, nil
			if v.State == StateDestroyed {
				if len(bv.Sealed) != 0 {
					return fmt.Errorf("keystore: %w: key %q v%d is destroyed yet carries material", ErrBackup, bk.Name, v.Version)
				}
				b.deks[bk.Name][v.Version] = []byte{} // seen, no material
				continue
			}
			if len(bv.Sealed) == 0 {
				return fmt.Errorf("keystore: %w: key %q v%d (%s) has no sealed material", ErrBackup, bk.Name, v.Version, v.State)
			}
			dek, err := hpke.Open(id.priv, hpke.HKDFSHA256(), hpke.AES256GCM(), info(bk.Name, v), bv.Sealed)
			if err != nil {
				return fmt.Errorf("keystore: %w: key %q v%d does not open with this recovery key: %v", ErrBackup, bk.Name, v.Version, err)
			}
			if len(dek) != fieldcrypt.DataKeySize || !fingerprintMatches(dek, v.Fingerprint) {
				clear(dek)
				return fmt.Errorf("keystore: key %q v%d: %w", bk.Name, v.Version, ErrFingerprint)
			}
			b.deks[bk.Name][v.Version] = dek
		}
	}
	return nil
}

// lifecycleRank orders states along the lifecycle; a restore never moves
// a version back.
func lifecycleRank(s State) int {
	switch s {
	case StatePreActive:
		return 0
	case StateActive:
		return 1
	case StateDeactivated:
		return 2
	case StateCompromised:
		return 3
	case StateDestroyed:
		return 4
	}
	return -1
}

// RestoreChange is one difference between a backup and the keystore.
type RestoreChange struct {
	Key     string `json:"key"`
	Version uint32 `json:"version,omitempty"`
	// Kind: "new key", "add version", "replace material", "state",
	// "primary", "replace record" (a record that failed its integrity
	// check, or whose record is missing, rebuilt from the backup).
	Kind string `json:"kind"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	Note string `json:"note,omitempty"`
}

func (c RestoreChange) String() string {
	s := c.Key
	if c.Version != 0 {
		s += fmt.Sprintf(" v%d", c.Version)
	}
	s += ": " + c.Kind
	switch {
	case c.From != "" && c.To != "":
		s += fmt.Sprintf(": %s -> %s", c.From, c.To)
	case c.To != "":
		s += ": " + c.To
	}
	if c.Note != "" {
		s += " (" + c.Note + ")"
	}
	return s
}

// RestorePlan is what a restore would change, computed by PlanRestore
// and carried out by ApplyRestore.
type RestorePlan struct {
	// Changes lists every state difference the restore makes.
	Changes []RestoreChange
	// Refusals lists what the restore will not do; ApplyRestore refuses
	// the whole plan while any remain.
	Refusals []string
	// Notes lists differences the restore leaves as they are (a version
	// further along here than in the backup, one destroyed only in the
	// backup), for the operator to see.
	Notes []string
	// Unchanged counts versions already present with the same material.
	Unchanged int

	backup *OpenedBackup
	keys   []*plannedKey
}

type plannedKey struct {
	name    string
	cur     *Key // nil when absent (or when its record is replaced)
	replace bool // the record is missing or failed its check
	target  *Key // the key as it will be, without new wrapped copies
	newMat  map[uint32]bool
	counts  map[uint32]uint64
	changes []RestoreChange
	added   int
	repl    int
}

// PlanRestore compares an opened backup with the keystore and returns
// every difference. Nothing is written. A restore never moves a version
// back in its lifecycle (a compromised version stays compromised, and is
// never made primary), never brings back a version destroyed here, and
// keeps the keystore's primary when it is active.
func (m *Manager) PlanRestore(ctx context.Context, b *OpenedBackup, opts RestoreOptions) (*RestorePlan, error) {
	head, err := m.readHead(ctx)
	if err != nil {
		return nil, err
	}
	plan := &RestorePlan{backup: b}
	for _, bk := range b.keys {
		pk := &plannedKey{name: bk.Name, newMat: map[uint32]bool{}, counts: map[uint32]uint64{}}
		cur, err := m.getKey(ctx, bk.Name)
		switch {
		case err == nil:
			pk.cur = cur
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrIntegrity) || errors.Is(err, ErrUnsealed):
			pk.replace = true
			pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Kind: "replace record", Note: "its record in this keystore failed its integrity check or is missing"})
			if !opts.Force {
				plan.Refusals = append(plan.Refusals, fmt.Sprintf("%s: its record here failed its integrity check or is missing (--force rebuilds it from the backup; versions revoked here stay revoked)", bk.Name))
			}
		default:
			return nil, err
		}
		revoked := map[uint32]State{}
		for v, s := range head.Keys[bk.Name].Revoked {
			revoked[v] = s
		}
		for v, s := range b.revoked[bk.Name] {
			if revokedRank(s) > revokedRank(revoked[v]) {
				revoked[v] = s
			}
		}
		var t Key
		if pk.cur != nil {
			t = *cloneKey(pk.cur)
		} else {
			t = Key{Name: bk.Name, Cryptoperiod: bk.Cryptoperiod, Created: bk.Created}
			pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Kind: "new key", To: fmt.Sprintf("cryptoperiod %v", bk.Cryptoperiod)})
		}
		for _, bv := range bk.Versions {
			nv := bv.Meta
			hasMat := nv.State != StateDestroyed
			old := t.Lookup(nv.Version)
			tomb := revoked[nv.Version]
			if hasMat && (tomb == StateDestroyed || old != nil && old.State == StateDestroyed) {
				plan.Refusals = append(plan.Refusals, fmt.Sprintf("%s v%d is destroyed in this keystore (a restore never undoes a destroy)", bk.Name, nv.Version))
				continue
			}
			if bv.Reserved > 0 {
				pk.counts[nv.Version] = bv.Reserved
			}
			// The furthest state any source knows.
			state := nv.State
			if lifecycleRank(tomb) > lifecycleRank(state) {
				state = tomb
			}
			switch {
			case old == nil:
				nv.State = state
				if nv.State == StateCompromised && nv.Compromised.IsZero() {
					nv.Compromised = m.now().UTC()
				}
				t.Versions = append(t.Versions, nv)
				note := ""
				if state != bv.Meta.State {
					note = fmt.Sprintf("%s in the backup; this keystore recorded it %s", bv.Meta.State, state)
				}
				pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Version: nv.Version, Kind: "add version", To: string(state), Note: note})
				pk.newMat[nv.Version] = hasMat
				pk.added++
			case !hasMat:
				// Destroyed in the backup. A backup's record of a destroy
				// never destroys material here (same key or not): that
				// takes `keys destroy`.
				if old.State != StateDestroyed {
					plan.Notes = append(plan.Notes, fmt.Sprintf("%s v%d is destroyed in the backup and %s here: left as it is (run keys destroy to destroy it)", bk.Name, nv.Version, old.State))
				}
				plan.Unchanged++
			case old.Fingerprint == nv.Fingerprint:
				if lifecycleRank(state) > lifecycleRank(old.State) {
					pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Version: nv.Version, Kind: "state", From: string(old.State), To: string(state), Note: "the backup is further along"})
					old.State = state
					old.Activated, old.Deactivated, old.Compromised = latest(old.Activated, nv.Activated), latest(old.Deactivated, nv.Deactivated), latest(old.Compromised, nv.Compromised)
					if state == StateCompromised && old.Compromised.IsZero() {
						old.Compromised = m.now().UTC()
					}
					if old.Reason == "" {
						old.Reason = nv.Reason
					}
				} else {
					if lifecycleRank(state) < lifecycleRank(old.State) {
						plan.Notes = append(plan.Notes, fmt.Sprintf("%s v%d is %s in the backup and %s here: kept %s (a restore never moves a version back)", bk.Name, nv.Version, state, old.State, old.State))
					}
					plan.Unchanged++
				}
			default:
				if !opts.Force {
					plan.Refusals = append(plan.Refusals, fmt.Sprintf("%s v%d exists with different material (--force replaces it)", bk.Name, nv.Version))
					continue
				}
				if lifecycleRank(old.State) > lifecycleRank(state) {
					state = old.State
				}
				pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Version: nv.Version, Kind: "replace material", From: old.Fingerprint, To: nv.Fingerprint, Note: "state " + string(state)})
				counter := old.Counter
				*old = nv
				old.State, old.Counter = state, counter
				pk.newMat[nv.Version] = true
				pk.repl++
			}
		}
		sort.Slice(t.Versions, func(i, j int) bool { return t.Versions[i].Version < t.Versions[j].Version })
		// The primary: the keystore's if it is still active, else the
		// backup's if that is active after the merge.
		before := t.Primary
		if p := t.Lookup(t.Primary); p == nil || p.State != StateActive {
			t.Primary = 0
			if p := t.Lookup(bk.Primary); p != nil && p.State == StateActive {
				t.Primary = bk.Primary
			}
		}
		if t.Primary != before || pk.cur == nil && t.Primary != 0 {
			from := "none"
			if before != 0 {
				from = fmt.Sprintf("v%d", before)
			}
			to := "none"
			if t.Primary != 0 {
				to = fmt.Sprintf("v%d", t.Primary)
			}
			pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Kind: "primary", From: from, To: to})
		}
		if bk.Primary != 0 && t.Primary != bk.Primary {
			if p := t.Lookup(bk.Primary); p != nil && p.State != StateActive {
				pk.changes = append(pk.changes, RestoreChange{Key: bk.Name, Version: bk.Primary, Kind: "primary", Note: fmt.Sprintf("primary in the backup, but %s here: not made primary", p.State)})
			}
		}
		pk.target = &t
		plan.Changes = append(plan.Changes, pk.changes...)
		plan.keys = append(plan.keys, pk)
	}
	return plan, nil
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// RestoreResult counts what Restore did.
type RestoreResult struct {
	Restored  int // versions written
	Unchanged int // versions already present with the same material
	Replaced  int // versions overwritten (Force)
	Keys      int
}

// ApplyRestore carries out a plan: each new data key is wrapped under the
// provider's current KEK (and unwrapped back to check), each key record
// written with compare-and-swap against the record the plan was made
// from. If the keystore changed since PlanRestore, the key is refused
// with ErrConflict: plan again.
func (m *Manager) ApplyRestore(ctx context.Context, plan *RestorePlan) (RestoreResult, error) {
	const action = "key.restore"
	res := RestoreResult{Unchanged: plan.Unchanged}
	if len(plan.Refusals) > 0 {
		err := fmt.Errorf("keystore: restore refused, nothing changed: %w: %s", ErrExists, strings.Join(plan.Refusals, "; "))
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	var errs []error
	progress, total, applied := progressOf(ctx), 0, 0
	for _, pk := range plan.keys {
		if len(pk.changes) > 0 || len(pk.counts) > 0 {
			total++
		}
	}
	progress(0, total)
	for _, pk := range plan.keys {
		if len(pk.changes) == 0 && len(pk.counts) == 0 {
			continue
		}
		applied++
		err := m.applyKey(ctx, plan.backup, pk)
		progress(applied, total)
		if err != nil {
			errs = append(errs, m.finish(ctx, action, pk.name, 0, "", nil, err))
			continue
		}
		res.Restored += pk.added
		res.Replaced += pk.repl
		if len(pk.changes) > 0 {
			res.Keys++
		}
		for _, c := range pk.changes {
			details := map[string]string{"result": c.Kind}
			if c.From != "" {
				details["from"] = c.From
			}
			if c.To != "" {
				details["to"] = c.To
			}
			if plan.backup.Signer != "" {
				details["signer"] = plan.backup.Signer
			} else {
				details["unsigned"] = "true"
			}
			errs = append(errs, m.finish(ctx, action, pk.name, c.Version, c.Note, details, nil))
		}
	}
	return res, errors.Join(errs...)
}

func (m *Manager) applyKey(ctx context.Context, b *OpenedBackup, pk *plannedKey) error {
	t := cloneKey(pk.target)
	for v, has := range pk.newMat {
		if !has {
			continue
		}
		w, err := m.wrapVerified(ctx, pk.name, v, b.deks[pk.name][v])
		if err != nil {
			return err
		}
		tv := t.Lookup(v)
		tv.Wrapped, tv.KEKVersion, tv.Mechanism = w.Bytes, w.KEKVersion, w.Mechanism
		tv.Escrow = m.escrowWrapOrLater(ctx, pk.name, v, b.deks[pk.name][v])
	}
	// Counters: every version that may seal gets one, continuing from
	// the backup's count when that is higher.
	for i := range t.Versions {
		tv := &t.Versions[i]
		if tv.State != StateActive && tv.State != StatePreActive {
			continue
		}
		if pk.replace || pk.cur == nil || tv.Counter == 0 {
			inc, err := m.ensureCounter(ctx, pk.name, tv.Version)
			if err != nil {
				return err
			}
			tv.Counter = inc
		}
		if n := pk.counts[tv.Version]; n > 0 {
			if err := m.raiseCounter(ctx, pk.name, tv, n); err != nil {
				return err
			}
		}
	}
	if pk.cur == nil {
		t.Revision, t.Writes, t.Incarnation, t.Seal = 0, 0, 0, nil
	}
	if pk.replace {
		raw, err := m.forgetRecord(ctx, pk.name)
		if err != nil {
			return err
		}
		if raw != nil {
			t.Revision, t.Writes, t.Incarnation = raw.Revision, raw.Writes, raw.Incarnation
		}
	} else if pk.cur == nil {
		// A placeholder left by an earlier, interrupted restore or create
		// is taken over.
		if cur, err := m.readKey(ctx, pk.name); err == nil && cur.isPlaceholder() {
			t.Revision, t.Writes, t.Incarnation = cur.Revision, cur.Writes, cur.Incarnation
		}
	}
	if len(pk.changes) == 0 {
		return nil
	}
	_, err := m.putKey(ctx, t)
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("keystore: restore %q: the key changed since the restore was planned; run the restore again: %w", pk.name, err)
	}
	return err
}

// raiseCounter raises a version's seal counter to at least n.
func (m *Manager) raiseCounter(ctx context.Context, name string, v *Version, n uint64) error {
	for attempt := 1; ; attempt++ {
		floor := m.hwOf(usageID(name, v.Version))
		meta, err := m.store.GetMeta(ctx, usageID(name, v.Version))
		if err != nil {
			return err
		}
		u, err := m.readUsage(ctx, meta, floor, name, v)
		if err != nil {
			return err
		}
		if u.Reserved >= n {
			return nil
		}
		u.Reserved = n
		err = m.writeUsage(ctx, u)
		if errors.Is(err, ErrConflict) && attempt < maxCASAttempts {
			continue
		}
		return err
	}
}

// forgetRecord lets a restore rebuild a key whose record failed its check
// or went missing: the head record's generation for it is reset (its
// revoked versions are kept). It returns the bad record's store stamp
// when one is still there, so that the rebuilt record replaces it with
// compare-and-swap; nil when the record is missing.
func (m *Manager) forgetRecord(ctx context.Context, name string) (*Key, error) {
	for attempt := 1; ; attempt++ {
		h, err := m.readHead(ctx)
		if err != nil {
			return nil, err
		}
		e := h.Keys[name]
		if e.Generation == 0 {
			break
		}
		e.Generation = 0
		h.Keys[name] = e
		err = m.writeHead(ctx, h)
		if errors.Is(err, ErrConflict) && attempt < maxCASAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	m.integ.mu.Lock()
	delete(m.integ.hw, "key/"+name)
	m.integ.mu.Unlock()
	raw, err := m.store.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Key{Name: name, Revision: raw.Revision, Writes: raw.Writes, Incarnation: raw.Incarnation}, nil
}

// Restore reads a backup from r (OpenBackup), compares it with the
// keystore (PlanRestore) and applies it (ApplyRestore) unless anything is
// refused, in which case nothing is written. The CLI shows the plan and
// asks before applying; Restore is for callers that have decided.
// Restore is idempotent, so running it again after an interruption
// finishes the job.
func (m *Manager) Restore(ctx context.Context, r io.Reader, id *RecoveryIdentity, opts RestoreOptions) (RestoreResult, error) {
	const action = "key.restore"
	b, err := m.OpenBackup(ctx, r, id, opts)
	if err != nil {
		return RestoreResult{}, m.finish(ctx, action, "", 0, "", nil, err)
	}
	defer b.Close()
	plan, err := m.PlanRestore(ctx, b, opts)
	if err != nil {
		return RestoreResult{}, m.finish(ctx, action, "", 0, "", nil, err)
	}
	return m.ApplyRestore(ctx, plan)
}
