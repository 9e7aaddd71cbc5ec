package keystore

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
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
// the post-quantum hybrid ML-KEM-768 + X25519, so a backup recorded today
// stays closed to someone who can later break X25519 alone. Only the holder
// of the recovery private key can open it; the HSM that wrapped the keys is
// not needed, which is the point: it restores keys after the HSM is lost.
//
// HPKE base mode authenticates nothing about the sender: anyone with the
// public key could write a backup. Restore checks every key against the
// fingerprint stored beside it, which catches corruption and mix-ups, but
// keep backups where only operators can write, as with any key material.
const (
	backupFormat = "sidecrypt-backup-v1"
	// backupInfo starts the HPKE info string of each sealed key; the key
	// name and version follow, so a sealed key cannot be moved to another
	// name or version in the file.
	backupInfo = "sidecrypt backup v1"

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

// backupFile is the JSON document a backup is. See docs/KEYS.md.
type backupFile struct {
	Format    string      `json:"format"`
	Created   time.Time   `json:"created"`
	KEM       string      `json:"kem"`
	KDF       string      `json:"kdf"`
	AEAD      string      `json:"aead"`
	Recipient string      `json:"recipient"` // recovery key fingerprint
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
	// Meta is the version's record without its wrapped copy, which is
	// useless without the old HSM.
	Meta Version `json:"meta"`
	// Sealed is HPKE enc || ciphertext of the data key; absent for a
	// destroyed version, whose metadata is kept so that a restore into a
	// fresh keystore still knows it was destroyed.
	Sealed []byte `json:"sealed,omitempty"`
}

func backupInfoFor(name string, version uint32) []byte {
	return []byte(backupInfo + "\x00" + name + "\x00" + strconv.FormatUint(uint64(version), 10))
}

// BackupResult counts what a backup holds.
type BackupResult struct {
	Keys, Versions, Destroyed int
	Recipient                 string
}

// Backup writes every key to w, each version's data key sealed to rcpt.
// It is all or nothing: if any version fails to unwrap, nothing is written
// and the error names it, since a backup that silently lacks a key is
// worse than none.
func (m *Manager) Backup(ctx context.Context, w io.Writer, rcpt *RecoveryRecipient) (BackupResult, error) {
	const action = "key.backup"
	res := BackupResult{Recipient: rcpt.Fingerprint()}
	keys, err := m.store.List(ctx)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	f := backupFile{
		Format: backupFormat, Created: m.now().UTC(),
		KEM: suiteKEM, KDF: suiteKDF, AEAD: suiteAEAD,
		Recipient: res.Recipient,
	}
	type done struct {
		name    string
		version uint32
	}
	var sealed []done
	for _, k := range keys {
		bk := backupKey{Name: k.Name, Primary: k.Primary, Cryptoperiod: k.Cryptoperiod, Created: k.Created}
		for _, v := range k.Versions {
			meta := v
			meta.Wrapped, meta.KEKVersion, meta.Mechanism = nil, 0, ""
			bv := backupVersion{Meta: meta}
			if len(v.Wrapped) == 0 {
				res.Destroyed++
				bk.Versions = append(bk.Versions, bv)
				continue
			}
			dek, err := m.kek.Unwrap(ctx, hsm.Wrapped{KEKVersion: v.KEKVersion, Mechanism: v.Mechanism, Bytes: v.Wrapped})
			if err != nil {
				err = fmt.Errorf("keystore: backup: key %q v%d (KEK v%d): %w", k.Name, v.Version, v.KEKVersion, err)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			if !fingerprintMatches(dek, v.Fingerprint) {
				clear(dek)
				err = fmt.Errorf("keystore: backup: key %q v%d: %w", k.Name, v.Version, ErrFingerprint)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			bv.Sealed, err = hpke.Seal(rcpt.pub, hpke.HKDFSHA256(), hpke.AES256GCM(), backupInfoFor(k.Name, v.Version), dek)
			clear(dek)
			if err != nil {
				err = fmt.Errorf("keystore: backup: key %q v%d: seal: %w", k.Name, v.Version, err)
				return BackupResult{}, m.finish(ctx, action, k.Name, v.Version, "", nil, err)
			}
			bk.Versions = append(bk.Versions, bv)
			sealed = append(sealed, done{k.Name, v.Version})
			res.Versions++
		}
		f.Keys = append(f.Keys, bk)
		res.Keys++
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return BackupResult{}, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: backup: write: %w", err))
	}
	// One event per exported version: each is key material leaving the
	// HSM's protection (sealed), and the trail should say which.
	var errs []error
	for _, d := range sealed {
		if err := m.finish(ctx, action, d.name, d.version, "", map[string]string{"recipient": res.Recipient}, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Force replaces versions that exist in the store with different
	// material. Versions with the same material are always left as they
	// are (their state in the store is newer than the backup's), and a
	// version destroyed in the store is never brought back.
	Force bool
}

// RestoreResult counts what Restore did.
type RestoreResult struct {
	Restored  int // versions written
	Unchanged int // versions already present with the same material
	Replaced  int // versions overwritten (Force)
	Keys      int
}

type restoreVersion struct {
	meta Version
	dek  []byte // nil for a destroyed version
}

// Restore reads a backup from r, opens each data key with id, checks it
// against its fingerprint, wraps it under the provider's current KEK and
// stores it. Every version is opened and checked, and every conflict
// found, before anything is written: a bad backup or a refused overwrite
// changes nothing. Restore is idempotent, so running it again after an
// interruption finishes the job.
func (m *Manager) Restore(ctx context.Context, r io.Reader, id *RecoveryIdentity, opts RestoreOptions) (RestoreResult, error) {
	const action = "key.restore"
	var res RestoreResult
	var f backupFile
	dec := json.NewDecoder(io.LimitReader(r, 256<<20))
	if err := dec.Decode(&f); err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: %w: %v", ErrBackup, err))
	}
	if err := checkBackupHeader(&f, id); err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	// Open everything first.
	plan := map[string][]restoreVersion{}
	defer func() {
		for _, vs := range plan {
			for _, v := range vs {
				clear(v.dek)
			}
		}
	}()
	seen := map[string]bool{}
	for _, bk := range f.Keys {
		if !fieldcrypt.ValidKeyName(bk.Name) || seen[bk.Name] {
			return res, m.finish(ctx, action, bk.Name, 0, "", nil, fmt.Errorf("keystore: %w: invalid or repeated key name %q", ErrBackup, bk.Name))
		}
		seen[bk.Name] = true
		versions := map[uint32]bool{}
		for _, bv := range bk.Versions {
			v := bv.Meta
			if v.Version == 0 || versions[v.Version] || !v.State.Valid() {
				return res, m.finish(ctx, action, bk.Name, v.Version, "", nil, fmt.Errorf("keystore: %w: key %q: invalid or repeated version %d (state %q)", ErrBackup, bk.Name, v.Version, v.State))
			}
			versions[v.Version] = true
			rv := restoreVersion{meta: v}
			if v.State != StateDestroyed {
				if len(bv.Sealed) == 0 {
					return res, m.finish(ctx, action, bk.Name, v.Version, "", nil, fmt.Errorf("keystore: %w: key %q v%d (%s) has no sealed material", ErrBackup, bk.Name, v.Version, v.State))
				}
				dek, err := hpke.Open(id.priv, hpke.HKDFSHA256(), hpke.AES256GCM(), backupInfoFor(bk.Name, v.Version), bv.Sealed)
				if err != nil {
					return res, m.finish(ctx, action, bk.Name, v.Version, "", nil, fmt.Errorf("keystore: %w: key %q v%d does not open with this recovery key: %v", ErrBackup, bk.Name, v.Version, err))
				}
				if len(dek) != fieldcrypt.DataKeySize || !fingerprintMatches(dek, v.Fingerprint) {
					clear(dek)
					return res, m.finish(ctx, action, bk.Name, v.Version, "", nil, fmt.Errorf("keystore: key %q v%d: %w", bk.Name, v.Version, ErrFingerprint))
				}
				rv.dek = dek
			}
			plan[bk.Name] = append(plan[bk.Name], rv)
		}
	}
	// Then find conflicts, all of them, so the operator sees the whole list.
	existing := map[string]*Key{}
	var conflicts []string
	for _, bk := range f.Keys {
		k, err := m.store.Get(ctx, bk.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return res, m.finish(ctx, action, bk.Name, 0, "", nil, err)
		}
		existing[bk.Name] = k
		for _, rv := range plan[bk.Name] {
			cur := k.Lookup(rv.meta.Version)
			switch {
			case cur == nil || cur.Fingerprint == rv.meta.Fingerprint:
			case rv.dek == nil:
				// Destroyed in the backup: never replaces what is here.
			case cur.State == StateDestroyed:
				conflicts = append(conflicts, fmt.Sprintf("%s v%d is destroyed in this keystore (a restore never undoes a destroy)", bk.Name, rv.meta.Version))
			case !opts.Force:
				conflicts = append(conflicts, fmt.Sprintf("%s v%d exists with different material (--force replaces it)", bk.Name, rv.meta.Version))
			}
		}
	}
	if len(conflicts) > 0 {
		err := fmt.Errorf("keystore: restore refused, nothing changed: %w: %s", ErrExists, strings.Join(conflicts, "; "))
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	// Write key by key.
	var errs []error
	for _, bk := range f.Keys {
		n, err := m.restoreKey(ctx, bk, plan[bk.Name], existing[bk.Name], &res)
		if err != nil {
			errs = append(errs, err)
		}
		if n > 0 {
			res.Keys++
		}
	}
	return res, errors.Join(errs...)
}

func checkBackupHeader(f *backupFile, id *RecoveryIdentity) error {
	switch {
	case f.Format != backupFormat:
		return fmt.Errorf("keystore: %w: format %q, want %q", ErrBackup, f.Format, backupFormat)
	case f.KEM != suiteKEM || f.KDF != suiteKDF || f.AEAD != suiteAEAD:
		return fmt.Errorf("keystore: %w: suite %s/%s/%s, want %s/%s/%s", ErrBackup, f.KEM, f.KDF, f.AEAD, suiteKEM, suiteKDF, suiteAEAD)
	case f.Recipient != id.Recipient().Fingerprint():
		return fmt.Errorf("keystore: %w: it was sealed to recovery key %s, and this identity is %s", ErrBackup, f.Recipient, id.Recipient().Fingerprint())
	}
	return nil
}

// restoreKey writes one key's versions, wrapping each under the current
// KEK. It returns how many versions it wrote.
func (m *Manager) restoreKey(ctx context.Context, bk backupKey, vs []restoreVersion, cur *Key, res *RestoreResult) (int, error) {
	const action = "key.restore"
	wrapped := map[uint32]hsm.Wrapped{}
	for _, rv := range vs {
		if rv.dek == nil {
			continue
		}
		if cur != nil {
			if c := cur.Lookup(rv.meta.Version); c != nil && c.Fingerprint == rv.meta.Fingerprint {
				continue
			}
		}
		w, err := m.wrapVerified(ctx, bk.Name, rv.meta.Version, rv.dek)
		if err != nil {
			return 0, m.finish(ctx, action, bk.Name, rv.meta.Version, "", nil, err)
		}
		wrapped[rv.meta.Version] = w
	}
	type change struct {
		version uint32
		kind    string
	}
	var changes []change
	_, err := m.putMerged(ctx, bk.Name, func(k *Key) error {
		changes = changes[:0]
		if k.Name == "" {
			*k = Key{Name: bk.Name, Cryptoperiod: bk.Cryptoperiod, Created: bk.Created}
		}
		for _, rv := range vs {
			nv := rv.meta
			if w, ok := wrapped[nv.Version]; ok {
				nv.Wrapped, nv.KEKVersion, nv.Mechanism = w.Bytes, w.KEKVersion, w.Mechanism
			} else if rv.dek != nil {
				continue // same material already there
			}
			old := k.Lookup(nv.Version)
			switch {
			case old == nil:
				k.Versions = append(k.Versions, nv)
				changes = append(changes, change{nv.Version, "restored"})
			case old.Fingerprint == nv.Fingerprint, rv.dek == nil:
				// Restored meanwhile, or destroyed in the backup: a
				// backup's record of a destroy never replaces a key.
			case old.State == StateDestroyed:
				return fmt.Errorf("keystore: key %q v%d: %w: destroyed in this keystore", bk.Name, nv.Version, ErrExists)
			default:
				*old = nv
				changes = append(changes, change{nv.Version, "replaced"})
			}
		}
		sort.Slice(k.Versions, func(i, j int) bool { return k.Versions[i].Version < k.Versions[j].Version })
		if p := k.Lookup(k.Primary); p == nil || p.State != StateActive {
			k.Primary = 0
			if p := k.Lookup(bk.Primary); p != nil && p.State == StateActive {
				k.Primary = bk.Primary
			}
		}
		return nil
	})
	if err != nil {
		return 0, m.finish(ctx, action, bk.Name, 0, "", nil, err)
	}
	var errs []error
	for _, c := range changes {
		if c.kind == "replaced" {
			res.Replaced++
		} else {
			res.Restored++
		}
		errs = append(errs, m.finish(ctx, action, bk.Name, c.version, "", map[string]string{"result": c.kind}, nil))
	}
	res.Unchanged += len(vs) - len(changes)
	return len(changes), errors.Join(errs...)
}

// putMerged is update for a key that may not exist yet: fn gets an empty
// Key (Name "") when it does not.
func (m *Manager) putMerged(ctx context.Context, name string, fn func(k *Key) error) (*Key, error) {
	for attempt := 1; ; attempt++ {
		k, err := m.store.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			k, err = &Key{}, nil
		}
		if err != nil {
			return nil, err
		}
		if err := fn(k); err != nil {
			return nil, err
		}
		out, err := m.store.Put(ctx, k)
		if (errors.Is(err, ErrConflict) || errors.Is(err, ErrExists)) && attempt < maxCASAttempts {
			continue
		}
		return out, err
	}
}
