package keystore_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// TestBackupRestoreProgress: Backup reports each version it seals and
// Restore each key it applies, ending at total/total.
func TestBackupRestoreProgress(t *testing.T) {
	open := func() *keystore.Manager {
		store, err := keystore.OpenBolt(filepath.Join(t.TempDir(), "keys.db"), keystore.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := keystore.NewManager(keystore.Config{Store: store, KEK: keystoretest.NewFakeKEK()})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx := context.Background()
	src := open()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := src.Create(ctx, name, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	src.Rotate(ctx, "a", 0)
	id, err := keystore.GenerateRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	var calls [][2]int
	record := func(done, total int) { calls = append(calls, [2]int{done, total}) }
	var buf strings.Builder
	if _, err := src.Backup(keystore.WithProgress(ctx, record), &buf, id.Recipient()); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 5 || calls[0] != [2]int{0, 4} || calls[4] != [2]int{4, 4} {
		t.Fatalf("backup progress %v, want 0/4 to 4/4", calls)
	}
	calls = nil
	dst := open()
	signer, _ := src.BackupSigner(ctx)
	if _, err := dst.Restore(keystore.WithProgress(ctx, record), strings.NewReader(buf.String()), id, keystore.RestoreOptions{Signers: []*keystore.BackupSigner{signer}}); err != nil {
		t.Fatal(err)
	}
	if len(calls) == 0 || calls[len(calls)-1] != [2]int{3, 3} {
		t.Fatalf("restore progress %v, want to end at 3/3", calls)
	}
}
