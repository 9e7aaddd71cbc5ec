package keystore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// The life of a data key: create, rotate, revoke, destroy. In production
// the KEK is an hsm.Provider from hsm.Open and Audit the hash-chained log.
func ExampleManager() {
	dir, _ := os.MkdirTemp("", "keystore-example")
	defer os.RemoveAll(dir)
	st, _ := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	m, _ := keystore.NewManager(keystore.Config{Store: st, KEK: keystoretest.NewFakeKEK(), Audit: audit.Discard})
	ctx := audit.WithActor(context.Background(), "cli:alice")

	m.Create(ctx, "pii", 90*24*time.Hour, false)
	k, _ := m.Rotate(ctx, "pii", 0)
	fmt.Println("primary:", k.Primary)

	m.Revoke(ctx, "pii", 1, keystore.StateCompromised, "laptop lost")
	_, err := m.Unwrap(ctx, "pii", 1)
	fmt.Println(err)

	_, err = m.Destroy(ctx, "pii", 2, "")
	fmt.Println(err)
	// Output:
	// primary: 2
	// keystore: key "pii" v1: key version compromised (decrypting needs `sidecrypt keys override`)
	// keystore: key "pii" v2: state transition not allowed: cannot go from active to destroyed (allowed from active: deactivated, compromised)
}

// A backup restored into a fresh keystore whose HSM has never seen the keys.
func ExampleManager_Backup() {
	dir, _ := os.MkdirTemp("", "keystore-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	st, _ := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	m, _ := keystore.NewManager(keystore.Config{Store: st, KEK: keystoretest.NewFakeKEK()})
	m.Create(ctx, "pii", 0, false)

	// The recovery key pair is made once; its private half goes offline.
	id, _ := keystore.GenerateRecoveryKey()
	var backup bytes.Buffer
	res, _ := m.Backup(ctx, &backup, id.Recipient())
	fmt.Println("backed up", res.Versions, "version(s)")
	// The old HSM's backup signing key (its public half) is kept with the
	// recovery public key: restore trusts backups it signed.
	signer, _ := m.BackupSigner(ctx)

	st2, _ := keystore.OpenBolt(filepath.Join(dir, "new.db"), keystore.BoltOptions{})
	m2, _ := keystore.NewManager(keystore.Config{Store: st2, KEK: keystoretest.NewFakeKEK()})
	rr, err := m2.Restore(ctx, &backup, id, keystore.RestoreOptions{Signers: []*keystore.BackupSigner{signer}})
	fmt.Println("restored", rr.Restored, "version(s), error:", err)
	// Output:
	// backed up 1 version(s)
	// restored 1 version(s), error: <nil>
}
