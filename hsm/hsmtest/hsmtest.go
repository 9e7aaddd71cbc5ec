// Package hsmtest is the conformance suite that every hsm.Provider must
// pass, and helpers for tests in other packages that need a provider.
//
// Run it from a provider's tests:
//
//	func TestConformance(t *testing.T) {
//		hsmtest.Run(t, func(t *testing.T) hsm.Provider { return newFreshProvider(t) })
//	}
//
// Each subtest asks for a fresh provider (its own KEK versions), so tests
// that rotate and retire do not disturb each other.
package hsmtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

// FastKDF returns a context under which hsm.Open creates software key
// files with the cheapest Argon2id parameters, for tests only: deriving
// the production 64 MiB key costs seconds under the race detector. Files
// created this way are logged as weak whenever they are opened.
func FastKDF(ctx context.Context) context.Context {
	return kdf.WithParams(ctx, kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
}

// NewSoftware returns a software provider on a new key file in a
// temporary directory, closed when t ends.
func NewSoftware(t testing.TB) hsm.Provider {
	t.Helper()
	p, err := hsm.Open(FastKDF(t.Context()), "software", hsm.Options{
		KEKFile:    filepath.Join(t.TempDir(), "kek.json"),
		Passphrase: "hsmtest passphrase",
		Create:     true,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("hsmtest: open software provider: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// bind is the Binding the suite wraps under: a data key name and version
// as the keystore would give them.
var bind = hsm.Binding{Key: "hsmtest-pii", Version: 3}

// DEKLen is the data key size sidecrypt wraps: a 64-byte AES-SIV-512 key
// (two AES-256 keys, RFC 5297), the largest it uses.
const DEKLen = 64

// Run runs the conformance suite. newProvider must return a provider with
// its own, fresh KEK versions; Run closes it when the subtest ends.
func Run(t *testing.T, newProvider func(t *testing.T) hsm.Provider) {
	RunWith(t, newProvider, Options{})
}

// Options adjust the suite to what a provider's backend can be tested
// against here. Every field must say why where it is set.
type Options struct {
	// UncheckedBits, when set, names bits of a wrapped key that the
	// backend under test does not authenticate, so EveryBitFlipFails
	// skips them; it must check separately that flipping them does no
	// harm. For an emulator's gap, not a provider's: the awskms tests
	// set it for the key ARN that local-kms writes into its ciphertext
	// blob and ignores when Decrypt names the key (AWS compares it and
	// answers IncorrectKeyException).
	UncheckedBits func(w hsm.Wrapped, bit int) bool

	// CrashesBackend, when set, reports malformed wrapped bytes that
	// the backend under test is known to crash on rather than refuse,
	// so EveryBitFlipFails accepts any error for them (never success).
	// For an emulator's bug, not a provider's: local-kms panics on a
	// blob whose first byte is 250 or more (uint8 overflow in its
	// length check), and a swapped blob starts with a random byte.
	CrashesBackend func(b []byte) bool
}

// RunWith is Run with Options.
func RunWith(t *testing.T, newProvider func(t *testing.T) hsm.Provider, opts Options) {
	open := func(t *testing.T) hsm.Provider {
		t.Helper()
		p := newProvider(t)
		t.Cleanup(func() { p.Close() })
		return p
	}
	ctx := t.Context()

	t.Run("RoundTrip", func(t *testing.T) {
		p := open(t)
		cur, err := p.CurrentKEK(ctx)
		if err != nil {
			t.Fatalf("CurrentKEK: %v", err)
		}
		for _, n := range []int{16, 32, DEKLen, 72, 4096} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				dek := randomBytes(t, n)
				w, err := p.Wrap(ctx, dek, bind)
				if err != nil {
					t.Fatalf("Wrap(%d bytes): %v", n, err)
				}
				if w.KEKVersion != cur {
					t.Errorf("Wrapped.KEKVersion = %d; CurrentKEK = %d", w.KEKVersion, cur)
				}
				if w.Mechanism == "" {
					t.Error("Wrapped.Mechanism is empty")
				}
				if len(w.Bytes) < n+8 || bytes.Contains(w.Bytes, dek[:16]) {
					t.Errorf("wrapped form (%d bytes) is too short or contains the key", len(w.Bytes))
				}
				got, err := p.Unwrap(ctx, w, bind)
				if err != nil {
					t.Fatalf("Unwrap: %v", err)
				}
				if !bytes.Equal(got, dek) {
					t.Fatal("Unwrap returned a different key")
				}
			})
		}
	})

	t.Run("InvalidDEK", func(t *testing.T) {
		p := open(t)
		for _, n := range []int{0, 1, 15, 20, 33, 8200} {
			_, err := p.Wrap(ctx, make([]byte, n), bind)
			if !errors.Is(err, hsm.ErrInvalidArgument) {
				t.Errorf("Wrap(%d bytes) = %v; want ErrInvalidArgument", n, err)
			}
		}
	})

	t.Run("EveryBitFlipFails", func(t *testing.T) {
		p := open(t)
		w := wrap(t, p, randomBytes(t, DEKLen))
		for i := range len(w.Bytes) * 8 {
			if opts.UncheckedBits != nil && opts.UncheckedBits(w, i) {
				continue
			}
			bad := w
			bad.Bytes = bytes.Clone(w.Bytes)
			bad.Bytes[i/8] ^= 1 << (i % 8)
			if _, err := p.Unwrap(ctx, bad, bind); !errors.Is(err, hsm.ErrUnwrap) {
				t.Fatalf("bit %d flipped: Unwrap = %v; want ErrUnwrap", i, err)
			}
		}
		for name, b := range map[string][]byte{
			"truncated":    w.Bytes[:len(w.Bytes)-8],
			"extended":     append(bytes.Clone(w.Bytes), make([]byte, 8)...),
			"odd length":   w.Bytes[:len(w.Bytes)-1],
			"empty":        nil,
			"zeros":        make([]byte, len(w.Bytes)),
			"one block":    w.Bytes[:16],
			"swap halves ": append(bytes.Clone(w.Bytes[len(w.Bytes)/2:]), w.Bytes[:len(w.Bytes)/2]...),
		} {
			bad := w
			bad.Bytes = b
			_, err := p.Unwrap(ctx, bad, bind)
			if err != nil && opts.CrashesBackend != nil && opts.CrashesBackend(b) {
				t.Logf("%s: the backend is known to crash on these bytes; Unwrap = %v", name, err)
				continue
			}
			if !errors.Is(err, hsm.ErrUnwrap) {
				t.Errorf("%s: Unwrap = %v; want ErrUnwrap", name, err)
			}
		}
	})

	t.Run("UnknownKEK", func(t *testing.T) {
		p := open(t)
		w := wrap(t, p, randomBytes(t, DEKLen))
		for _, v := range []uint32{w.KEKVersion + 1, w.KEKVersion + 1000, 0} {
			bad := w
			bad.KEKVersion = v
			if _, err := p.Unwrap(ctx, bad, bind); !errors.Is(err, hsm.ErrUnknownKEK) {
				t.Errorf("KEK v%d: Unwrap = %v; want ErrUnknownKEK", v, err)
			}
		}
	})

	t.Run("MechanismMismatch", func(t *testing.T) {
		p := open(t)
		w := wrap(t, p, randomBytes(t, DEKLen))
		for _, m := range []string{"", "aes-gcm", strings.ToUpper(w.Mechanism), w.Mechanism + " "} {
			bad := w
			bad.Mechanism = m
			if _, err := p.Unwrap(ctx, bad, bind); !errors.Is(err, hsm.ErrUnwrap) {
				t.Errorf("mechanism %q: Unwrap = %v; want ErrUnwrap", m, err)
			}
		}
	})

	t.Run("Rotate", func(t *testing.T) {
		p := open(t)
		dek1 := randomBytes(t, DEKLen)
		w1 := wrap(t, p, dek1)
		v2, err := p.RotateKEK(ctx)
		if err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if v2 != w1.KEKVersion+1 {
			t.Fatalf("RotateKEK = v%d; want v%d", v2, w1.KEKVersion+1)
		}
		if cur, err := p.CurrentKEK(ctx); err != nil || cur != v2 {
			t.Fatalf("CurrentKEK = %d, %v; want %d", cur, err, v2)
		}
		dek2 := randomBytes(t, DEKLen)
		w2 := wrap(t, p, dek2)
		if w2.KEKVersion != v2 {
			t.Errorf("new wrap uses KEK v%d; want v%d", w2.KEKVersion, v2)
		}
		mustUnwrap(t, p, w1, dek1)
		mustUnwrap(t, p, w2, dek2)
		// The same wrapped bytes under another KEK version must not open:
		// versions are distinct keys, not labels on one key.
		swapped := w1
		swapped.KEKVersion = v2
		if _, err := p.Unwrap(ctx, swapped, bind); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("v%d wrap presented as v%d: Unwrap = %v; want ErrUnwrap", w1.KEKVersion, v2, err)
		}
		infos, err := p.KEKs(ctx)
		if err != nil {
			t.Fatalf("KEKs: %v", err)
		}
		states := map[uint32]string{}
		for _, k := range infos {
			states[k.Version] = k.State
			if k.Created.IsZero() || k.Label == "" {
				t.Errorf("KEK v%d: Created %v, Label %q; want both set", k.Version, k.Created, k.Label)
			}
		}
		if states[w1.KEKVersion] != "active" || states[v2] != "current" {
			t.Errorf("KEK states = %v; want v%d active, v%d current", states, w1.KEKVersion, v2)
		}
	})

	t.Run("Retire", func(t *testing.T) {
		p := open(t)
		dek := randomBytes(t, DEKLen)
		old := wrap(t, p, dek)
		v2, err := p.RotateKEK(ctx)
		if err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if err := p.RetireKEK(ctx, v2); !errors.Is(err, hsm.ErrInvalidArgument) {
			t.Errorf("RetireKEK(current) = %v; want ErrInvalidArgument", err)
		}
		if err := p.RetireKEK(ctx, v2+7); !errors.Is(err, hsm.ErrUnknownKEK) {
			t.Errorf("RetireKEK(unknown) = %v; want ErrUnknownKEK", err)
		}
		mustUnwrap(t, p, old, dek) // still fine before retirement
		if err := p.RetireKEK(ctx, old.KEKVersion); err != nil {
			t.Fatalf("RetireKEK(v%d): %v", old.KEKVersion, err)
		}
		if err := p.RetireKEK(ctx, old.KEKVersion); err != nil {
			t.Errorf("RetireKEK twice = %v; want nil (idempotent)", err)
		}
		if _, err := p.Unwrap(ctx, old, bind); !errors.Is(err, hsm.ErrKEKRetired) {
			t.Errorf("Unwrap under retired KEK = %v; want ErrKEKRetired", err)
		}
		infos, err := p.KEKs(ctx)
		if err != nil {
			t.Fatalf("KEKs: %v", err)
		}
		for _, k := range infos {
			if k.Version == old.KEKVersion && (k.State != "retired" || k.Retired.IsZero()) {
				t.Errorf("retired KEK listed as %+v", k)
			}
		}
		dek2 := randomBytes(t, DEKLen)
		mustUnwrap(t, p, wrap(t, p, dek2), dek2)
	})

	t.Run("Concurrent", func(t *testing.T) {
		p := open(t)
		const goroutines, rounds = 32, 8
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for range goroutines {
			wg.Go(func() {
				for range rounds {
					dek := make([]byte, DEKLen)
					rand.Read(dek)
					w, err := p.Wrap(ctx, dek, bind)
					if err != nil {
						errs <- fmt.Errorf("Wrap: %w", err)
						return
					}
					got, err := p.Unwrap(ctx, w, bind)
					if err != nil {
						errs <- fmt.Errorf("Unwrap: %w", err)
						return
					}
					if !bytes.Equal(got, dek) {
						errs <- errors.New("Unwrap returned another goroutine's key or garbage")
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("Binding", func(t *testing.T) {
		p := open(t)
		dek := randomBytes(t, DEKLen)
		w := wrap(t, p, dek)
		others := []hsm.Binding{
			{Key: bind.Key, Version: bind.Version + 1},
			{Key: bind.Key + "x", Version: bind.Version},
			{Key: "", Version: 0},
			// A name that ends where the version begins must not
			// collide with another split of the same characters.
			{Key: bind.Key + "3", Version: 0},
		}
		for _, o := range others {
			got, err := p.Unwrap(ctx, w, o)
			if p.Describe().BindsContext {
				if !errors.Is(err, hsm.ErrUnwrap) {
					t.Errorf("wrapped for %+v, unwrapped as %+v: %v; want ErrUnwrap (the provider binds the data key's name and version)", bind, o, err)
				}
				continue
			}
			// RFC 5649 providers bind nothing (the keystore's record
			// MAC does); the key still opens.
			if err != nil || !bytes.Equal(got, dek) {
				t.Errorf("Unwrap as %+v: %v; a provider that does not bind must still open the key", o, err)
			}
		}
		mustUnwrap(t, p, w, dek)
	})

	t.Run("AuditMAC", func(t *testing.T) {
		p := open(t)
		m1, err := p.AuditMAC(ctx, []byte("checkpoint 1"))
		if err != nil {
			t.Fatalf("AuditMAC: %v", err)
		}
		if len(m1) != 32 {
			t.Fatalf("AuditMAC is %d bytes; HMAC-SHA256 gives 32", len(m1))
		}
		again, _ := p.AuditMAC(ctx, []byte("checkpoint 1"))
		other, _ := p.AuditMAC(ctx, []byte("checkpoint 2"))
		empty, err := p.AuditMAC(ctx, nil)
		if err != nil {
			t.Fatalf("AuditMAC(empty): %v", err)
		}
		if !bytes.Equal(m1, again) {
			t.Error("AuditMAC is not deterministic")
		}
		if bytes.Equal(m1, other) || bytes.Equal(m1, empty) {
			t.Error("AuditMAC gives equal MACs for different messages")
		}
		// The audit key is independent of the KEK versions: rotating
		// must not change it, or old checkpoints stop verifying.
		if _, err := p.RotateKEK(ctx); err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if after, err := p.AuditMAC(ctx, []byte("checkpoint 1")); err != nil || !bytes.Equal(after, m1) {
			t.Errorf("AuditMAC changed after RotateKEK (err %v)", err)
		}
		q := open(t)
		if m, err := q.AuditMAC(ctx, []byte("checkpoint 1")); err != nil || bytes.Equal(m, m1) {
			t.Errorf("two fresh providers share an audit key (err %v)", err)
		}
	})

	t.Run("RecordMAC", func(t *testing.T) {
		p := open(t)
		msg := []byte("sidecrypt record v1\x00 pii")
		m1, err := p.RecordMAC(ctx, msg)
		if err != nil {
			t.Fatalf("RecordMAC: %v", err)
		}
		if len(m1) != hsm.RecordMACSize {
			t.Fatalf("RecordMAC is %d bytes; want %d", len(m1), hsm.RecordMACSize)
		}
		again, _ := p.RecordMAC(ctx, msg)
		if !bytes.Equal(m1, again) {
			t.Error("RecordMAC is not deterministic")
		}
		if err := p.VerifyRecordMAC(ctx, msg, m1); err != nil {
			t.Errorf("VerifyRecordMAC(own MAC) = %v", err)
		}
		// The record key is its own key: not the audit key, and not moved
		// by a KEK rotation (records MAC'd before must keep verifying).
		if a, err := p.AuditMAC(ctx, msg); err != nil || bytes.Equal(a, m1) {
			t.Errorf("RecordMAC equals AuditMAC of the same message (err %v)", err)
		}
		if _, err := p.RotateKEK(ctx); err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if err := p.VerifyRecordMAC(ctx, msg, m1); err != nil {
			t.Errorf("VerifyRecordMAC after RotateKEK = %v", err)
		}
		bad := [][]byte{nil, m1[:31], append(bytes.Clone(m1), 0), make([]byte, 32)}
		for i := range len(m1) * 8 {
			b := bytes.Clone(m1)
			b[i/8] ^= 1 << (i % 8)
			bad = append(bad, b)
		}
		for i, b := range bad {
			if err := p.VerifyRecordMAC(ctx, msg, b); !errors.Is(err, hsm.ErrRecordMAC) {
				t.Fatalf("tampered MAC %d: VerifyRecordMAC = %v; want ErrRecordMAC", i, err)
			}
		}
		other := append(bytes.Clone(msg), '!')
		if err := p.VerifyRecordMAC(ctx, other, m1); !errors.Is(err, hsm.ErrRecordMAC) {
			t.Errorf("MAC of another message: VerifyRecordMAC = %v; want ErrRecordMAC", err)
		}
		q := open(t)
		if err := q.VerifyRecordMAC(ctx, msg, m1); !errors.Is(err, hsm.ErrRecordMAC) {
			t.Errorf("another provider accepts this one's record MAC (err %v)", err)
		}
	})

	t.Run("BackupSigning", func(t *testing.T) {
		p := open(t)
		pub, err := p.BackupPublicKey(ctx)
		if err != nil {
			t.Fatalf("BackupPublicKey: %v", err)
		}
		if pub.Curve != elliptic.P256() {
			t.Fatalf("backup signing key is on %s; want P-256", pub.Curve.Params().Name)
		}
		digest := sha256.Sum256([]byte("a backup"))
		sig, err := p.SignBackup(ctx, digest[:])
		if err != nil {
			t.Fatalf("SignBackup: %v", err)
		}
		if len(sig) != hsm.BackupSignatureSize {
			t.Fatalf("signature is %d bytes; want %d (r || s)", len(sig), hsm.BackupSignatureSize)
		}
		verify := func(pub *ecdsa.PublicKey, d, sig []byte) bool {
			return ecdsa.Verify(pub, d, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		}
		if !verify(pub, digest[:], sig) {
			t.Fatal("signature does not verify under BackupPublicKey")
		}
		other := sha256.Sum256([]byte("another backup"))
		if verify(pub, other[:], sig) {
			t.Error("signature verifies for another digest")
		}
		if _, err := p.RotateKEK(ctx); err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if again, err := p.BackupPublicKey(ctx); err != nil || !again.Equal(pub) {
			t.Errorf("backup public key changed after RotateKEK (err %v)", err)
		}
		for _, n := range []int{0, 20, 31, 33, 64} {
			if _, err := p.SignBackup(ctx, make([]byte, n)); !errors.Is(err, hsm.ErrInvalidArgument) {
				t.Errorf("SignBackup(%d-byte digest) = %v; want ErrInvalidArgument", n, err)
			}
		}
		q := open(t)
		if qp, err := q.BackupPublicKey(ctx); err != nil || qp.Equal(pub) {
			t.Errorf("two fresh providers share a backup signing key (err %v)", err)
		}
	})

	t.Run("ErrorsHoldNoKeyBytes", func(t *testing.T) {
		p := open(t)
		dek := randomBytes(t, DEKLen)
		w := wrap(t, p, dek)
		var errs []error
		record := func(err error) {
			if err == nil {
				t.Error("expected an error")
				return
			}
			errs = append(errs, err)
		}
		_, err := p.Wrap(ctx, dek[:15], bind)
		record(err)
		_, err = p.Wrap(ctx, append(bytes.Clone(dek), make([]byte, 8200)...), bind)
		record(err)
		for _, mutate := range []func(*hsm.Wrapped){
			func(w *hsm.Wrapped) { w.Bytes[len(w.Bytes)-3] ^= 0x40 },
			func(w *hsm.Wrapped) { w.Bytes = w.Bytes[:len(w.Bytes)-8] },
			func(w *hsm.Wrapped) { w.KEKVersion += 50 },
			func(w *hsm.Wrapped) { w.Mechanism = hex.EncodeToString(dek[:4]) + "-nope" },
		} {
			bad := w
			bad.Bytes = bytes.Clone(w.Bytes)
			mutate(&bad)
			_, err := p.Unwrap(ctx, bad, bind)
			record(err)
		}
		if _, err := p.RotateKEK(ctx); err != nil {
			t.Fatalf("RotateKEK: %v", err)
		}
		if err := p.RetireKEK(ctx, w.KEKVersion); err != nil {
			t.Fatalf("RetireKEK: %v", err)
		}
		_, err = p.Unwrap(ctx, w, bind)
		record(err)
		for _, err := range errs {
			msg := err.Error()
			if !strings.HasPrefix(msg, "hsm: ") {
				t.Errorf("error %q does not start with \"hsm: \"", msg)
			}
			if leaks(msg, dek[:16]) || leaks(msg, dek[16:32]) || leaks(msg, dek[32:]) {
				t.Errorf("error %q contains data key bytes", msg)
			}
		}
	})

	t.Run("Close", func(t *testing.T) {
		p := open(t)
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if d := p.Describe(); d.Kind != "software" && d.Kind != "pkcs11" && d.Kind != "awskms" {
			t.Errorf("Describe().Kind = %q", d.Kind)
		}
		w := wrap(t, p, randomBytes(t, DEKLen))
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := p.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
		}
		if _, err := p.Wrap(ctx, make([]byte, DEKLen), bind); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Wrap after Close = %v; want ErrUnavailable", err)
		}
		if _, err := p.Unwrap(ctx, w, bind); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Unwrap after Close = %v; want ErrUnavailable", err)
		}
		if _, err := p.RecordMAC(ctx, []byte("x")); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("RecordMAC after Close = %v; want ErrUnavailable", err)
		}
		if _, err := p.SignBackup(ctx, make([]byte, 32)); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("SignBackup after Close = %v; want ErrUnavailable", err)
		}
	})
}

// leaks reports whether msg contains b raw, as hex (either case) or as
// base64.
func leaks(msg string, b []byte) bool {
	h := hex.EncodeToString(b)
	return strings.Contains(msg, string(b)) ||
		strings.Contains(strings.ToLower(msg), h) ||
		strings.Contains(msg, base64.StdEncoding.EncodeToString(b)[:16]) ||
		strings.Contains(msg, base64.RawURLEncoding.EncodeToString(b)[:16]) ||
		strings.Contains(msg, strings.Trim(fmt.Sprint(b[:8]), "[]"))
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wrap(t testing.TB, p hsm.Provider, dek []byte) hsm.Wrapped {
	t.Helper()
	w, err := p.Wrap(t.Context(), dek, bind)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return w
}

func mustUnwrap(t testing.TB, p hsm.Provider, w hsm.Wrapped, want []byte) {
	t.Helper()
	got, err := p.Unwrap(t.Context(), w, bind)
	if err != nil {
		t.Fatalf("Unwrap(KEK v%d): %v", w.KEKVersion, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Unwrap(KEK v%d) returned a different key", w.KEKVersion)
	}
}
