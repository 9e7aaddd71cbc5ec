package hsm

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

// The keys the software provider derives from its master secret, checked
// against an independent computation from RFC 5869 and FIPS 198-1 as
// docs/KEK.md states them, and against fixed vectors so that a change of
// label or construction (which would invalidate every record MAC and
// backup signature) cannot go unnoticed.
func TestSoftwareDerivedKeysVectors(t *testing.T) {
	master := bytes.Repeat([]byte{0x4d}, 32)
	rk, sk, err := softKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	// Independent: HKDF-Extract with an all-zero salt, then one Expand block.
	prk := hmac.New(sha256.New, make([]byte, 32))
	prk.Write(master)
	exp := hmac.New(sha256.New, prk.Sum(nil))
	exp.Write([]byte("sidecrypt software provider v1 record-mac\x01"))
	if want := exp.Sum(nil); !bytes.Equal(rk, want) {
		t.Fatalf("record key = %x; independent HKDF gives %x", rk, want)
	}
	d, _ := hkdf.Key(sha256.New, master, nil, "sidecrypt software provider v1 backup-signing\x00", 32)
	if got := sk.D.FillBytes(make([]byte, 32)); !bytes.Equal(got, d) {
		t.Fatalf("signing scalar = %x; want HKDF(..., counter 0) = %x", got, d)
	}
	if got := hex.EncodeToString(rk); got != vecRecordKey {
		t.Errorf("record key %s; vector %s", got, vecRecordKey)
	}
	if got := hex.EncodeToString(sk.PublicKey.X.FillBytes(make([]byte, 32))); got != vecSignX {
		t.Errorf("signing public key x %s; vector %s", got, vecSignX)
	}
}

// Vectors for master = 32 bytes of 0x4d, computed once with the
// independent checks above passing.
const (
	vecRecordKey = "2c2703c74bd5f17bbc6685e664e98f0a6699487cbeecae5c30d2b60b74498892"
	vecSignX     = "9475712eb912da637bf06c34c29c0b9cc9f5e25f150b3ebb082ad5f1985a473b"
)

func TestSoftwareRefusesReadableKeyFile(t *testing.T) {
	ctx := kdf.WithParams(context.Background(), kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
	path := filepath.Join(t.TempDir(), "kek.json")
	opts := Options{KEKFile: path, Passphrase: "pw", Create: true, Logger: slog.New(slog.DiscardHandler)}
	p, err := Open(ctx, "software", opts)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, "software", opts)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: Open = %v; want ErrConfig telling to chmod 600", mode, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err = Open(ctx, "software", opts)
	if err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
	p.Close()
}

// A key file written before record MACs existed has no master secret: the
// provider adds one on open, keeps it from then on, and keeps the KEKs.
func TestSoftwareAddsMasterToOldFile(t *testing.T) {
	ctx := kdf.WithParams(context.Background(), kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
	path := filepath.Join(t.TempDir(), "kek.json")
	hdr, err := newSoftHeader(kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	key := deriveSealKey("pw", hdr)
	old := &softPayload{
		KEKs:     []softPayloadKEK{{Version: 1, Key: bytes.Repeat([]byte{1}, 32), Created: time.Unix(1700000000, 0).UTC()}},
		AuditKey: bytes.Repeat([]byte{2}, 32),
	}
	data, err := sealSoftFile(key, hdr, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
	opts := Options{KEKFile: path, Passphrase: "pw", Logger: slog.New(slog.DiscardHandler)}
	p, err := Open(ctx, "software", opts)
	if err != nil {
		t.Fatal(err)
	}
	mac, err := p.RecordMAC(ctx, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := p.Wrap(ctx, make([]byte, 32), Binding{})
	if err != nil || w.KEKVersion != 1 {
		t.Fatalf("Wrap after upgrade: %v, KEK v%d", err, w.KEKVersion)
	}
	p.Close()
	f, err := readSoftFile(path)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := openSoftFile(key, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(payload.Master) != 32 || !bytes.Equal(payload.AuditKey, old.AuditKey) {
		t.Fatalf("upgraded file: master %d bytes, audit key kept %v", len(payload.Master), bytes.Equal(payload.AuditKey, old.AuditKey))
	}
	q, err := Open(ctx, "software", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.VerifyRecordMAC(ctx, []byte("m"), mac); err != nil {
		t.Errorf("record MAC from before a reopen: %v", err)
	}
}
