//go:build cgo && !nopkcs11

package keystore_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// TestRecoverSoftHSMFromAWSKMS is the disaster the second wrap exists
// for: the keys live under a SoftHSM2 token, with AWS KMS (local-kms) as
// the escrow; the token is destroyed (its directory deleted by
// softhsm2-util --delete-token), and a fresh token becomes the primary.
// Recovery from the KMS copies brings every key back, and values sealed
// before the loss open again.
func TestRecoverSoftHSMFromAWSKMS(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "cli:test")
	quiet := slog.New(slog.DiscardHandler)
	softhsm := testenv.UseSoftHSM(t)
	// Both tokens are made before the module is loaded (SoftHSM2 reads
	// its token directory only at C_Initialize).
	lost := softhsm.InitToken(t, "lost")
	fresh := softhsm.InitToken(t, "fresh")
	kms := testenv.StartLocalKMS(t)
	kms.SetEnv(t)

	escrow, err := hsm.Open(ctx, kms.URI("sidecrypt-escrow"), hsm.Options{Create: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { escrow.Close() })
	primary, err := hsm.Open(ctx, lost.URI("kek"), hsm.Options{PIN: lost.PIN, Create: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.db")
	st, err := keystore.OpenBolt(path, keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := &keystoretest.Recorder{}
	m, err := keystore.NewManager(keystore.Config{Store: st, KEK: primary, Escrow: escrow, Audit: rec, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}

	// Keys, a rotation of the data key and of the token's KEK (re-wrap),
	// and values sealed under them.
	for _, n := range []string{"pii", "contact"} {
		if _, err := m.Create(ctx, n, 90*24*time.Hour, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Rotate(ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Rewrap(ctx, keystore.RewrapOptions{}); err != nil || res.Rewrapped != 3 {
		t.Fatalf("rewrap: %+v, %v", res, err)
	}
	var sealed []sealedValue
	for _, kv := range []struct {
		name string
		v    uint32
	}{{"pii", 1}, {"pii", 2}, {"contact", 1}} {
		dk := dataKey(t, m, kv.name, kv.v)
		plain := kv.name + " value sealed before the token was lost"
		tok, err := fieldcrypt.SealString(dk, fieldcrypt.ModeRandom, plain)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, sealedValue{token: tok, plain: plain})
	}

	// The token is destroyed: its directory goes, as with a wiped HSM.
	primary.Close()
	lost.Delete()
	if _, err := hsm.Open(ctx, lost.URI("kek"), hsm.Options{PIN: lost.PIN, Logger: quiet}); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("the lost token still opens: %v", err)
	}

	// A fresh token is the new primary; the escrow is the same KMS.
	newPrimary, err := hsm.Open(ctx, fresh.URI("kek"), hsm.Options{PIN: fresh.PIN, Create: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { newPrimary.Close() })
	rm, err := keystore.NewManager(keystore.Config{Store: st, KEK: newPrimary, Escrow: escrow, Audit: rec, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rm.Get(ctx, "pii"); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("before recovery the records verify under the new token: %v", err)
	}
	res, err := rm.Recover(ctx, keystore.RecoverOptions{})
	if err != nil || res.Versions != 3 || res.Keys != 2 {
		t.Fatalf("Recover = %+v, %v", res, err)
	}

	// A new process on the new token: records verify, data sealed before
	// opens.
	after, err := keystore.NewManager(keystore.Config{Store: st, KEK: newPrimary, Escrow: escrow, Audit: rec, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := after.Verify(ctx); err != nil || n != 2 {
		t.Fatalf("Verify after recovery: %d, %v", n, err)
	}
	for i, kv := range []struct {
		name string
		v    uint32
	}{{"pii", 1}, {"pii", 2}, {"contact", 1}} {
		dk := dataKey(t, after, kv.name, kv.v)
		_, got, err := fieldcrypt.OpenToken(dk, sealed[i].token)
		if err != nil || string(got) != `"`+sealed[i].plain+`"` {
			t.Fatalf("%s v%d: a value sealed before the loss does not open: %v", kv.name, kv.v, err)
		}
	}
	k, _ := after.Get(ctx, "pii")
	if v := k.Lookup(2); v.Mechanism != hsm.MechanismKWP || v.Escrow == nil || v.Escrow.Mechanism != hsm.MechanismAWSKMS {
		t.Errorf("pii v2 after recovery: primary %q, escrow %+v", v.Mechanism, v.Escrow)
	}
}
