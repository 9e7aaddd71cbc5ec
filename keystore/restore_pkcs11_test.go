//go:build cgo && !nopkcs11

package keystore_test

import (
	"log/slog"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// TestBackupRestoreIntoFreshToken is the disaster the backup exists for:
// the keys lived under a software KEK (or an HSM now lost); a freshly
// initialised SoftHSM2 token, which generates its first KEK on open, takes
// the restore, and values sealed before the backup open afterwards.
func TestBackupRestoreIntoFreshToken(t *testing.T) {
	tok := testenv.UseSoftHSM(t).InitToken(t, "restore")
	p, err := hsm.Open(t.Context(), tok.URI("kek"), hsm.Options{PIN: tok.PIN, Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open the fresh token: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if d := p.Describe(); d.Kind != "pkcs11" {
		t.Fatalf("provider kind %q", d.Kind)
	}
	backupRoundTrip(t, hsmtest.NewSoftware(t), p)
}
