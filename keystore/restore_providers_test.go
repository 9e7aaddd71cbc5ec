package keystore_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// sealedValue is a field token sealed before a backup, with its plaintext.
type sealedValue struct {
	token []byte
	plain string
}

// managerOn builds a Manager over a new store with kek.
func managerOn(t *testing.T, kek keystore.KEK) (*keystore.Manager, *keystoretest.Recorder) {
	t.Helper()
	st, err := keystore.OpenBolt(filepath.Join(t.TempDir(), "keys.db"), keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &keystoretest.Recorder{}
	m, err := keystore.NewManager(keystore.Config{Store: st, KEK: kek, Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	return m, rec
}

func dataKey(t *testing.T, m *keystore.Manager, name string, v uint32) *fieldcrypt.DataKey {
	t.Helper()
	dek, err := m.Unwrap(context.Background(), name, v)
	if err != nil {
		t.Fatalf("unwrap %s v%d: %v", name, v, err)
	}
	defer clear(dek)
	k, err := fieldcrypt.NewDataKey(name, v, dek)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// backupRoundTrip seals field values under keys held by src, backs the
// keys up, restores them into dst (a fresh store over another provider),
// and opens every token with the restored keys.
func backupRoundTrip(t *testing.T, src, dst keystore.KEK) {
	ctx := audit.WithActor(context.Background(), "cli:test")
	from, _ := managerOn(t, src)
	for _, n := range []string{"pii", "contact"} {
		if _, err := from.Create(ctx, n, 90*24*time.Hour, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := from.Rotate(ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	var sealed []sealedValue
	for _, kv := range []struct {
		name    string
		version uint32
		mode    fieldcrypt.Mode
		plain   string
	}{
		{"pii", 1, fieldcrypt.ModeRandom, "123-45-6789"},
		{"pii", 2, fieldcrypt.ModeRandom, "987-65-4321"},
		{"contact", 1, fieldcrypt.ModeDeterministic, "alice@example.com"},
	} {
		tok, err := fieldcrypt.SealString(dataKey(t, from, kv.name, kv.version), kv.mode, kv.plain)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, sealedValue{tok, kv.plain})
	}

	id, err := keystore.GenerateRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := from.Backup(ctx, &backup, id.Recipient()); err != nil {
		t.Fatal(err)
	}

	// The old HSM's signing key, exported before it was lost.
	signer, err := from.BackupSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to, rec := managerOn(t, dst)
	res, err := to.Restore(ctx, bytes.NewReader(backup.Bytes()), id, keystore.RestoreOptions{Signers: []*keystore.BackupSigner{signer}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Restored != 3 {
		t.Fatalf("restore: %+v", res)
	}
	added := 0
	for _, e := range rec.Find("key.restore") {
		if e.Details["result"] == "add version" {
			added++
		}
	}
	if added != 3 {
		t.Fatalf("restore events: %+v", rec.Events())
	}
	for _, s := range sealed {
		info, err := fieldcrypt.ParseTokenInfo(s.token)
		if err != nil {
			t.Fatal(err)
		}
		_, plain, err := fieldcrypt.OpenToken(dataKey(t, to, info.Key, info.KeyVersion), s.token)
		if err != nil || string(plain) != `"`+s.plain+`"` {
			t.Fatalf("token under %s v%d after restore: %q, %v", info.Key, info.KeyVersion, plain, err)
		}
	}
	// The restored store seals new values under the same primary.
	if p, err := to.Primary(ctx, "pii"); err != nil || p != 2 {
		t.Fatalf("primary after restore: %d, %v", p, err)
	}
	// And the restored keys are wrapped by the new provider only: the
	// old one cannot open them.
	k, _ := to.Get(ctx, "pii")
	v := k.Lookup(2)
	if _, err := src.Unwrap(ctx, hsm.Wrapped{KEKVersion: v.KEKVersion, Mechanism: v.Mechanism, Bytes: v.Wrapped}, hsm.Binding{Key: "pii", Version: 2}); err == nil {
		t.Fatal("the old provider unwraps a key restored under the new one")
	}
}

// TestBackupRestoreSoftwareProviders: the old software KEK file is gone; a
// new one, under another passphrase, takes the restore.
func TestBackupRestoreSoftwareProviders(t *testing.T) {
	backupRoundTrip(t, hsmtest.NewSoftware(t), hsmtest.NewSoftware(t))
}
