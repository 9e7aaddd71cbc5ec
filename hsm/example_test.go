package hsm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// The software provider, as `sidecrypt serve` opens it with
// SIDECRYPT_HSM=software (the default) on a first start.
func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)

	p, err := hsm.Open(ctx, "software", hsm.Options{
		KEKFile:    filepath.Join(dir, "kek.json"),
		Passphrase: "from SIDECRYPT_MASTER_PASSPHRASE",
		Create:     true,
		Logger:     slog.New(slog.DiscardHandler), // it warns: not an HSM
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	dek := make([]byte, 64) // an AES-SIV-512 data key
	rand.Read(dek)
	w, err := p.Wrap(ctx, dek, hsm.Binding{})
	if err != nil {
		log.Fatal(err)
	}
	back, err := p.Unwrap(ctx, w, hsm.Binding{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.Mechanism, "under KEK version", w.KEKVersion, "-", len(w.Bytes), "bytes")
	fmt.Println("round trip:", bytes.Equal(back, dek))
	fmt.Println(p.Describe().Warning)
	// Output:
	// aes-kwp-rfc5649 under KEK version 1 - 72 bytes
	// round trip: true
	// not an HSM: KEKs live in a passphrase-sealed file and in this process's memory; for development only
}

// A PKCS#11 token, configured by an RFC 7512 URI. The PIN comes from the
// environment, never from the URI or a flag.
func ExampleOpen_pkcs11() {
	ctx := context.Background()
	p, err := hsm.Open(ctx,
		"pkcs11:token=sidecrypt;object=sidecrypt-kek?module-path=/usr/lib/softhsm/libsofthsm2.so",
		hsm.Options{PIN: os.Getenv("SIDECRYPT_HSM_PIN"), Create: true})
	if err != nil {
		log.Fatal(err) // e.g. hsm: pkcs11: open (token "sidecrypt", ...): hsm unavailable: login to token "sidecrypt" failed: wrong PIN ...
	}
	defer p.Close()
	fmt.Println(p.Describe().Kind)
}

// Rotating the KEK: new wraps use the new version, old ones still open
// until the old version is retired (after every DEK was re-wrapped).
func ExampleProvider_rotation() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	p, err := hsm.Open(ctx, "software", hsm.Options{KEKFile: filepath.Join(dir, "kek.json"), Passphrase: "pw", Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	dek := make([]byte, 32)
	old, _ := p.Wrap(ctx, dek, hsm.Binding{})
	v2, _ := p.RotateKEK(ctx)
	rewrapped, _ := p.Wrap(ctx, dek, hsm.Binding{}) // what a re-wrap job does, after Unwrap(old)
	if err := p.RetireKEK(ctx, old.KEKVersion); err != nil {
		log.Fatal(err)
	}
	_, err = p.Unwrap(ctx, old, hsm.Binding{})
	fmt.Println("new version:", v2, "re-wrapped under:", rewrapped.KEKVersion)
	fmt.Println("old wrap after retirement:", errors.Is(err, hsm.ErrKEKRetired))
	// Output:
	// new version: 2 re-wrapped under: 2
	// old wrap after retirement: true
}
