package keystore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

func TestRecoveryKeyArmor(t *testing.T) {
	id, err := keystore.GenerateRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Recipient().MarshalText()
	priv, _ := id.MarshalText()
	if !strings.HasPrefix(string(pub), "-----BEGIN SIDECRYPT RECOVERY PUBLIC KEY-----") || !strings.Contains(string(pub), "KEM: MLKEM768X25519") {
		t.Fatalf("public armor:\n%s", pub)
	}
	if !strings.Contains(string(pub), "Fingerprint: "+id.Recipient().Fingerprint()) {
		t.Fatal("public armor lacks its fingerprint header")
	}
	r2, err := keystore.ParseRecoveryRecipient(pub)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := keystore.ParseRecoveryIdentity(priv)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Fingerprint() != id.Recipient().Fingerprint() || id2.Recipient().Fingerprint() != id.Recipient().Fingerprint() {
		t.Fatal("fingerprints differ after a round trip")
	}
	// Re-marshalling gives the same text.
	if again, _ := r2.MarshalText(); !bytes.Equal(again, pub) {
		t.Fatal("public key armor does not round-trip byte for byte")
	}
	if again, _ := id2.MarshalText(); !bytes.Equal(again, priv) {
		t.Fatal("private key armor does not round-trip byte for byte")
	}

	for _, tc := range []struct {
		name, text string
		parse      func([]byte) error
		want       string
	}{
		{"private as public", string(priv), recipientErr, "want \"SIDECRYPT RECOVERY PUBLIC KEY\""},
		{"public as private", string(pub), identityErr, "want \"SIDECRYPT RECOVERY PRIVATE KEY\""},
		{"empty", "", recipientErr, "no \"SIDECRYPT RECOVERY PUBLIC KEY\" block"},
		{"garbage", "hello", recipientErr, "no \"SIDECRYPT"},
		{"other KEM", strings.Replace(string(pub), "KEM: MLKEM768X25519", "KEM: X25519", 1), recipientErr, "KEM \"X25519\""},
		{"short key", "-----BEGIN SIDECRYPT RECOVERY PUBLIC KEY-----\nKEM: MLKEM768X25519\n\nAAAA\n-----END SIDECRYPT RECOVERY PUBLIC KEY-----\n", recipientErr, "public key"},
		{"trailing text", string(pub) + "more", recipientErr, "text after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse([]byte(tc.text))
			if !errors.Is(err, keystore.ErrRecoveryKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrRecoveryKey with %q", err, tc.want)
			}
		})
	}
}

func recipientErr(b []byte) error { _, err := keystore.ParseRecoveryRecipient(b); return err }
func identityErr(b []byte) error  { _, err := keystore.ParseRecoveryIdentity(b); return err }

func FuzzParseRecoveryRecipient(f *testing.F) {
	id, _ := keystore.GenerateRecoveryKey()
	pub, _ := id.Recipient().MarshalText()
	priv, _ := id.MarshalText()
	f.Add(pub)
	f.Add(priv)
	f.Add([]byte("-----BEGIN SIDECRYPT RECOVERY PUBLIC KEY-----\n\n-----END SIDECRYPT RECOVERY PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := keystore.ParseRecoveryRecipient(b)
		if err != nil {
			if !errors.Is(err, keystore.ErrRecoveryKey) {
				t.Fatalf("error without ErrRecoveryKey: %v", err)
			}
			return
		}
		// What parses must marshal and parse to the same key.
		out, _ := r.MarshalText()
		r2, err := keystore.ParseRecoveryRecipient(out)
		if err != nil || r2.Fingerprint() != r.Fingerprint() {
			t.Fatalf("re-parse: %v", err)
		}
		_, _ = keystore.ParseRecoveryIdentity(b)
	})
}

// backupFixture makes a store with keys in every state, and a backup of it.
func backupFixture(t *testing.T) (*fixture, *keystore.RecoveryIdentity, []byte, map[string][]byte) {
	t.Helper()
	f := newFixture(t)
	deks := makeKeys(t, f, 2) // key0 v1..2, key1 v1..2
	if _, err := f.m.Create(f.ctx, "later", 0, true); err != nil {
		t.Fatal(err)
	}
	d, _ := f.kek.Unwrap(f.ctx, wrappedOf(t, f, "later", 1), hsm.Binding{Key: "later", Version: 1})
	deks["later/1"] = d
	if _, err := f.m.Revoke(f.ctx, "key1", 1, keystore.StateCompromised, "leak"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Destroy(f.ctx, "key0", 1, "shred"); err != nil {
		t.Fatal(err)
	}
	delete(deks, "key0/1")
	id, err := keystore.GenerateRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := f.m.Backup(f.ctx, &buf, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 3 || res.Versions != 4 || res.Destroyed != 1 {
		t.Fatalf("backup result: %+v", res)
	}
	if n := len(f.rec.Find("key.backup")); n != 4 {
		t.Fatalf("%d key.backup events, want one per sealed version (4)", n)
	}
	return f, id, buf.Bytes(), deks
}

// freshTarget is a new keystore with a new, unrelated KEK provider: the
// situation after the old HSM was lost.
func freshTarget(t *testing.T) *fixture {
	t.Helper()
	return newFixture(t)
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	src, id, backup, deks := backupFixture(t)
	for id, d := range deks {
		if bytes.Contains(backup, d[:16]) {
			t.Fatalf("backup holds %s in the clear", id)
		}
	}
	dst := freshTarget(t)
	// The new provider has moved on to KEK v3 before the restore.
	dst.kek.RotateKEK(dst.ctx)
	dst.kek.RotateKEK(dst.ctx)
	// A new HSM: its own backup signing key is not the one that signed,
	// so the old one is named, as the operator does with --signer.
	if _, err := dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, keystore.RestoreOptions{}); !errors.Is(err, keystore.ErrBackupSignature) {
		t.Fatalf("restore trusting only the new HSM's signer: %v, want ErrBackupSignature", err)
	}
	trust := keystore.RestoreOptions{Signers: []*keystore.BackupSigner{signerOf(t, src)}}
	res, err := dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, trust)
	if err != nil {
		t.Fatal(err)
	}
	if res.Restored != 5 || res.Keys != 3 || res.Replaced != 0 {
		t.Fatalf("restore result: %+v", res)
	}
	srcKeys, _ := src.store.List(src.ctx)
	for _, sk := range srcKeys {
		dk, err := dst.store.Get(dst.ctx, sk.Name)
		if err != nil {
			t.Fatal(err)
		}
		if dk.Primary != sk.Primary || dk.Cryptoperiod != sk.Cryptoperiod || len(dk.Versions) != len(sk.Versions) {
			t.Fatalf("%s: restored %+v, want %+v", sk.Name, dk, sk)
		}
		for _, sv := range sk.Versions {
			dv := dk.Lookup(sv.Version)
			if dv.State != sv.State || dv.Fingerprint != sv.Fingerprint || dv.Reason != sv.Reason {
				t.Fatalf("%s v%d: restored %+v, want %+v", sk.Name, sv.Version, dv, sv)
			}
			if sv.State == keystore.StateDestroyed {
				if len(dv.Wrapped) != 0 {
					t.Fatalf("%s v%d: a destroyed version came back with material", sk.Name, sv.Version)
				}
				continue
			}
			if dv.KEKVersion != 3 {
				t.Fatalf("%s v%d restored under KEK v%d, want the current v3", sk.Name, sv.Version, dv.KEKVersion)
			}
			got, err := dst.kek.Unwrap(dst.ctx, wrappedOf(t, dst, sk.Name, sv.Version), hsm.Binding{Key: sk.Name, Version: sv.Version})
			if err != nil || !bytes.Equal(got, deks[sk.Name+"/"+itoa(sv.Version)]) {
				t.Fatalf("%s v%d does not unwrap to the original key: %v", sk.Name, sv.Version, err)
			}
		}
	}
	// States still rule after the restore.
	if _, err := dst.m.Unwrap(dst.ctx, "key1", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("restored compromised version: %v", err)
	}
	if _, err := dst.m.Unwrap(dst.ctx, "key0", 1); !errors.Is(err, keystore.ErrDestroyed) {
		t.Fatalf("restored destroyed version: %v", err)
	}
	added := 0
	for _, e := range dst.rec.Find("key.restore") {
		if e.Details["result"] == "add version" && e.Outcome == "ok" && e.Details["signer"] == signerOf(t, src).Fingerprint() {
			added++
		}
	}
	if added != 5 {
		t.Fatalf("%d key.restore events for added versions, want 5: %+v", added, dst.rec.Find("key.restore"))
	}

	// Restoring again changes nothing and is not an error.
	res, err = dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, trust)
	if err != nil || res.Restored != 0 || res.Unchanged != 5 {
		t.Fatalf("second restore: %+v, %v", res, err)
	}
}

// wrappedOf returns the stored wrapped copy of a version.
func wrappedOf(t *testing.T, f *fixture, name string, v uint32) hsm.Wrapped {
	t.Helper()
	k := f.key(t, name)
	ver := k.Lookup(v)
	return hsm.Wrapped{KEKVersion: ver.KEKVersion, Mechanism: ver.Mechanism, Bytes: ver.Wrapped}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// signerOf returns the backup signing key of f's provider.
func signerOf(t *testing.T, f *fixture) *keystore.BackupSigner {
	t.Helper()
	s, err := f.m.BackupSigner(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// envelope is the outer JSON of a v2 backup, for tamper tests.
type envelope struct {
	Format    string `json:"format"`
	Payload   string `json:"payload"`
	Signature struct {
		Alg       string `json:"alg"`
		Signer    string `json:"signer"`
		PublicKey []byte `json:"public_key"`
		Value     []byte `json:"value"`
	} `json:"signature"`
}

func parseEnvelope(t *testing.T, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// editPayload applies fn to the decoded payload of backup and, when
// signer is not nil, signs the result again with it: a forger who holds
// a signing key (the right one, or their own).
func editPayload(t *testing.T, backup []byte, signer keystore.KEK, fn func(m map[string]any)) []byte {
	t.Helper()
	e := parseEnvelope(t, backup)
	var m map[string]any
	if err := json.Unmarshal([]byte(e.Payload), &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, _ := json.Marshal(m)
	e.Payload = string(b)
	if signer != nil {
		pub, err := signer.BackupPublicKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		h.Write([]byte("sidecrypt backup signature v2\x00"))
		h.Write([]byte(e.Payload))
		if e.Signature.Value, err = signer.SignBackup(t.Context(), h.Sum(nil)); err != nil {
			t.Fatal(err)
		}
		e.Signature.PublicKey, _ = pub.Bytes()
		s, _ := keystore.NewBackupSigner(pub)
		e.Signature.Signer = s.Fingerprint()
	}
	out, _ := json.Marshal(e)
	return out
}

func TestRestoreRefusals(t *testing.T) {
	src, id, backup, _ := backupFixture(t)
	other, _ := keystore.GenerateRecoveryKey()
	forger := keystoretest.NewFakeKEK()

	// resigned edits the payload and signs it again with the source HSM's
	// own key: the checks after the signature, as defence in depth.
	resigned := func(fn func(m map[string]any)) []byte { return editPayload(t, backup, src.kek, fn) }
	version := func(m map[string]any, key, ver int) map[string]any {
		return m["keys"].([]any)[key].(map[string]any)["versions"].([]any)[ver].(map[string]any)
	}
	envEdit := func(fn func(e *envelope)) []byte {
		e := parseEnvelope(t, backup)
		fn(&e)
		b, _ := json.Marshal(e)
		return b
	}
	for _, tc := range []struct {
		name   string
		backup []byte
		id     *keystore.RecoveryIdentity
		want   error
		text   string
	}{
		// The signature comes first: every edit without the signing key
		// is refused before the payload is read or anything decrypted.
		{"payload edited, not re-signed", editPayload(t, backup, nil, func(m map[string]any) {
			version(m, 1, 0)["meta"].(map[string]any)["state"] = "active"
		}), id, keystore.ErrBackupSignature, "does not verify"},
		{"one payload bit flipped", envEdit(func(e *envelope) {
			b := []byte(e.Payload)
			b[len(b)/2] ^= 1
			e.Payload = string(b)
		}), id, keystore.ErrBackupSignature, "does not verify"},
		{"signature bit flipped", envEdit(func(e *envelope) { e.Signature.Value[5] ^= 1 }), id, keystore.ErrBackupSignature, "does not verify"},
		{"signature truncated", envEdit(func(e *envelope) { e.Signature.Value = e.Signature.Value[:63] }), id, keystore.ErrBackupSignature, "does not verify"},
		{"signature missing", envEdit(func(e *envelope) { e.Signature.Value = nil }), id, keystore.ErrBackupSignature, ""},
		{"other algorithm", envEdit(func(e *envelope) { e.Signature.Alg = "Ed25519" }), id, keystore.ErrBackupSignature, "algorithm"},
		{"forger's own key", editPayload(t, backup, forger, func(m map[string]any) {}), id, keystore.ErrBackupSignature, "trusted signers"},
		{"public key swapped, signature kept", envEdit(func(e *envelope) {
			pub, _ := forger.BackupPublicKey(t.Context())
			e.Signature.PublicKey, _ = pub.Bytes()
		}), id, keystore.ErrBackupSignature, "trusted signers"},
		{"unsigned v1 backup", editPayload(t, backup, nil, func(m map[string]any) {}), id, keystore.ErrBackupSignature, ""},
		{"wrong identity", backup, other, keystore.ErrBackup, "sealed to recovery key"},
		{"not json", []byte("{"), id, keystore.ErrBackup, ""},
		{"other format", envEdit(func(e *envelope) { e.Format = "v9" }), id, keystore.ErrBackup, "format"},
		{"payload names another signer", resigned(func(m map[string]any) { m["signer"] = strings.Repeat("ab", 16) }), id, keystore.ErrBackupSignature, "names signer"},
		{"flipped ciphertext", resigned(func(m map[string]any) {
			v := version(m, 0, 1)
			b, err := base64.StdEncoding.DecodeString(v["sealed"].(string))
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-3] ^= 1
			v["sealed"] = base64.StdEncoding.EncodeToString(b)
		}), id, keystore.ErrBackup, "does not open"},
		{"sealed moved to another version", resigned(func(m map[string]any) {
			k1 := m["keys"].([]any)[1].(map[string]any)["versions"].([]any)
			a, b := k1[0].(map[string]any), k1[1].(map[string]any)
			a["sealed"], b["sealed"] = b["sealed"], a["sealed"]
		}), id, keystore.ErrBackup, "does not open"},
		{"wrong fingerprint", resigned(func(m map[string]any) {
			version(m, 0, 1)["meta"].(map[string]any)["fingerprint"] = strings.Repeat("ab", 16)
		}), id, keystore.ErrBackup, "does not open"},
		{"material missing", resigned(func(m map[string]any) { delete(version(m, 0, 1), "sealed") }), id, keystore.ErrBackup, "no sealed material"},
		{"bad state", resigned(func(m map[string]any) { version(m, 0, 1)["meta"].(map[string]any)["state"] = "sleepy" }), id, keystore.ErrBackup, "state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.backup
			if tc.name == "unsigned v1 backup" {
				b = []byte(`{"format":"sidecrypt-backup-v1","kem":"MLKEM768X25519","kdf":"HKDF-SHA256","aead":"AES-256-GCM","keys":[]}`)
			}
			dst := freshTarget(t)
			trust := keystore.RestoreOptions{Force: true, Signers: []*keystore.BackupSigner{signerOf(t, src)}}
			_, err := dst.m.Restore(dst.ctx, bytes.NewReader(b), tc.id, trust)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want %v with %q", err, tc.want, tc.text)
			}
			if keys, _ := dst.store.List(dst.ctx); len(keys) != 0 {
				t.Fatalf("a refused restore wrote %d keys", len(keys))
			}
			if e := dst.lastEvent(t, "key.restore"); e.Outcome != "denied" {
				t.Fatalf("refused restore audited as %q", e.Outcome)
			}
		})
	}
}

func TestRestoreOverwriteNeedsForce(t *testing.T) {
	src, id, backup, deks := backupFixture(t)
	dst := freshTarget(t)
	// Keys of the same names with other material already live here.
	dst.create(t, "key0")
	dst.create(t, "key1")
	before0, before1 := dst.key(t, "key0"), dst.key(t, "key1")

	_, err := dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, keystore.RestoreOptions{Signers: []*keystore.BackupSigner{signerOf(t, src)}})
	if !errors.Is(err, keystore.ErrExists) || !strings.Contains(err.Error(), "key1 v1 exists") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over an existing version: %v", err)
	}
	if strings.Contains(err.Error(), "key0 v1") {
		t.Fatalf("key0 v1 is destroyed in the backup and conflicts with nothing: %v", err)
	}
	if dst.key(t, "key0").Revision != before0.Revision || dst.key(t, "key1").Revision != before1.Revision {
		t.Fatal("a refused restore changed a key")
	}
	if _, err := dst.store.Get(dst.ctx, "later"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal("a refused restore wrote other keys")
	}

	res, err := dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, keystore.RestoreOptions{Force: true, Signers: []*keystore.BackupSigner{signerOf(t, src)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced != 1 {
		t.Fatalf("result: %+v", res)
	}
	// key1 v1 is now the backup's (compromised) version; v2 is primary.
	k1 := dst.key(t, "key1")
	if v := k1.Lookup(1); v.State != keystore.StateCompromised || v.Fingerprint == before1.Lookup(1).Fingerprint || k1.Primary != 2 {
		t.Fatalf("key1 after forced restore: primary %d, v1 %+v", k1.Primary, v)
	}
	// A backup's record of a destroy never replaces a live key, even
	// with --force: key0 v1 here is untouched, and v2 arrived.
	k0 := dst.key(t, "key0")
	if k0.Lookup(1).Fingerprint != before0.Lookup(1).Fingerprint || k0.Lookup(1).State == keystore.StateDestroyed {
		t.Fatalf("key0 v1 after forced restore: %+v", k0.Lookup(1))
	}
	if got, err := dst.m.Unwrap(dst.ctx, "key0", 2); err != nil || !bytes.Equal(got, deks["key0/2"]) {
		t.Fatalf("key0 v2 after forced restore: %v", err)
	}
}

func TestRestoreNeverUndoesDestroy(t *testing.T) {
	f, id, backup, _ := backupFixture(t)
	// key1 v2 is alive in the backup, then destroyed here: a restore that
	// would bring it back is refused outright, --force or not.
	f.m.Revoke(f.ctx, "key1", 2, keystore.StateDeactivated, "x")
	if _, err := f.m.Destroy(f.ctx, "key1", 2, "shred"); err != nil {
		t.Fatal(err)
	}
	before := f.key(t, "key1").Revision
	_, err := f.m.Restore(f.ctx, bytes.NewReader(backup), id, keystore.RestoreOptions{Force: true})
	if !errors.Is(err, keystore.ErrExists) || !strings.Contains(err.Error(), "key1 v2 is destroyed in this keystore") {
		t.Fatalf("restore into its own store: %v", err)
	}
	if f.state(t, "key1", 2) != keystore.StateDestroyed || f.key(t, "key1").Revision != before {
		t.Fatal("restore brought a destroyed version back")
	}

	// A version destroyed here with other material is a conflict that
	// --force does not override.
	dst := freshTarget(t)
	dst.create(t, "later")
	dst.m.Revoke(dst.ctx, "later", 1, keystore.StateDeactivated, "x")
	dst.m.Destroy(dst.ctx, "later", 1, "shred")
	_, err = dst.m.Restore(dst.ctx, bytes.NewReader(backup), id, keystore.RestoreOptions{Force: true, Signers: []*keystore.BackupSigner{signerOf(t, f)}})
	if !errors.Is(err, keystore.ErrExists) || !strings.Contains(err.Error(), "never undoes a destroy") {
		t.Fatalf("restore over a destroyed version: %v", err)
	}
	if dst.state(t, "later", 1) != keystore.StateDestroyed {
		t.Fatal("restore brought a destroyed version back")
	}
}

func TestBackupFailsWholeWhenAKeyWillNotUnwrap(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	id, _ := keystore.GenerateRecoveryKey()
	f.kek.SetUnavailable(true)
	var buf bytes.Buffer
	if _, err := f.m.Backup(f.ctx, &buf, id.Recipient()); err == nil || buf.Len() != 0 {
		t.Fatalf("backup with the HSM down: err %v, wrote %d bytes", err, buf.Len())
	}
}

// FuzzRestore feeds arbitrary bytes to Restore: it must refuse them with
// an error, never panic, and never write a key.
func FuzzRestore(f *testing.F) {
	id, _ := keystore.GenerateRecoveryKey()
	f.Add([]byte(`{"format":"sidecrypt-backup-v1","kem":"MLKEM768X25519","kdf":"HKDF-SHA256","aead":"AES-256-GCM","keys":[]}`))
	f.Add([]byte(`{"format":"sidecrypt-backup-v1","keys":[{"name":"a","versions":[{"meta":{"version":1,"state":"active"},"sealed":"AAAA"}]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dst := newFixture(t)
		if _, err := dst.m.Restore(dst.ctx, bytes.NewReader(b), id, keystore.RestoreOptions{Force: true}); err == nil {
			// Only a backup with no keys at all can succeed without
			// the recovery key having sealed anything.
			if keys, _ := dst.store.List(dst.ctx); len(keys) != 0 {
				t.Fatalf("restore of unsealed input wrote %d keys", len(keys))
			}
			return
		}
		if keys, _ := dst.store.List(dst.ctx); len(keys) != 0 {
			t.Fatalf("a failed restore wrote %d keys", len(keys))
		}
	})
}
