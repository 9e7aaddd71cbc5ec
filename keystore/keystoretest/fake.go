// Package keystoretest provides an in-memory KEK provider for tests of code
// that uses keystore.Manager (the key cache, the CLI, the admin API), so
// that they need neither a passphrase-sealed file nor a PKCS#11 token.
//
// FakeKEK is not a key-management device and must never hold real keys:
// its KEKs live in ordinary memory and die with the process.
package keystoretest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// Mechanism is the name FakeKEK gives its wrapping: AES-256-GCM with a
// random nonce, the KEK version and the hsm.Binding (data key name and
// version) bound as additional data, as a KMS encryption context binds
// them: a caller that unwraps under the wrong name or version fails, so
// tests catch a keystore that passes the wrong binding.
const Mechanism = "test-aes-256-gcm"

// FakeKEK is an hsm.Provider that keeps versioned AES-256 KEKs in memory.
// It is safe for concurrent use.
type FakeKEK struct {
	mu      sync.Mutex
	keks    map[uint32][]byte
	info    map[uint32]*hsm.KEKInfo
	current uint32
	auditK  []byte
	recordK []byte
	signK   *ecdsa.PrivateKey

	unavailable atomic.Bool
	unwraps     atomic.Int64
	wraps       atomic.Int64
	recordMACs  atomic.Int64

	// UnwrapHook, when set, runs at the start of every Unwrap (before the
	// count is taken); tests use it to hold unwraps back.
	UnwrapHook func()
}

// NewFakeKEK returns a provider with KEK version 1 current.
func NewFakeKEK() *FakeKEK {
	f := &FakeKEK{keks: map[uint32][]byte{}, info: map[uint32]*hsm.KEKInfo{}}
	f.auditK = random(32)
	f.recordK = random(32)
	var err error
	if f.signK, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	f.addVersion()
	return f
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func (f *FakeKEK) addVersion() uint32 {
	f.current++
	v := f.current
	f.keks[v] = random(32)
	for _, in := range f.info {
		if in.State == "current" {
			in.State = "active"
		}
	}
	f.info[v] = &hsm.KEKInfo{Version: v, State: "current", Created: time.Now().UTC(), Label: fmt.Sprintf("fake-kek-%d", v)}
	return v
}

// SetUnavailable makes every operation fail with hsm.ErrUnavailable (true)
// or work again (false), as a removed token would.
func (f *FakeKEK) SetUnavailable(down bool) { f.unavailable.Store(down) }

// Unwraps returns how many Unwrap calls have been made.
func (f *FakeKEK) Unwraps() int64 { return f.unwraps.Load() }

// Wraps returns how many Wrap calls have been made.
func (f *FakeKEK) Wraps() int64 { return f.wraps.Load() }

func (f *FakeKEK) check(op string) error {
	if f.unavailable.Load() {
		return fmt.Errorf("fake kek: %s: %w", op, hsm.ErrUnavailable)
	}
	return nil
}

func aead(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

func ad(v uint32, bd hsm.Binding) []byte {
	b := binary.BigEndian.AppendUint32(nil, v)
	b = binary.BigEndian.AppendUint32(b, bd.Version)
	return append(b, bd.Key...)
}

// Wrap implements hsm.Provider.
func (f *FakeKEK) Wrap(ctx context.Context, dek []byte, bd hsm.Binding) (hsm.Wrapped, error) {
	f.wraps.Add(1)
	if err := f.check("wrap"); err != nil {
		return hsm.Wrapped{}, err
	}
	f.mu.Lock()
	v, k := f.current, f.keks[f.current]
	f.mu.Unlock()
	g := aead(k)
	nonce := random(g.NonceSize())
	return hsm.Wrapped{KEKVersion: v, Mechanism: Mechanism, Bytes: g.Seal(nonce, nonce, dek, ad(v, bd))}, nil
}

// Unwrap implements hsm.Provider.
func (f *FakeKEK) Unwrap(ctx context.Context, w hsm.Wrapped, bd hsm.Binding) ([]byte, error) {
	if f.UnwrapHook != nil {
		f.UnwrapHook()
	}
	f.unwraps.Add(1)
	if err := f.check("unwrap"); err != nil {
		return nil, err
	}
	if w.Mechanism != Mechanism {
		return nil, fmt.Errorf("fake kek: unwrap: mechanism %q: %w", w.Mechanism, hsm.ErrUnwrap)
	}
	f.mu.Lock()
	k, info := f.keks[w.KEKVersion], f.info[w.KEKVersion]
	f.mu.Unlock()
	switch {
	case info == nil:
		return nil, fmt.Errorf("fake kek: unwrap: KEK v%d: %w", w.KEKVersion, hsm.ErrUnknownKEK)
	case info.State == "retired":
		return nil, fmt.Errorf("fake kek: unwrap: KEK v%d: %w", w.KEKVersion, hsm.ErrKEKRetired)
	}
	g := aead(k)
	if len(w.Bytes) < g.NonceSize() {
		return nil, fmt.Errorf("fake kek: unwrap: KEK v%d: %w", w.KEKVersion, hsm.ErrUnwrap)
	}
	dek, err := g.Open(nil, w.Bytes[:g.NonceSize()], w.Bytes[g.NonceSize():], ad(w.KEKVersion, bd))
	if err != nil {
		return nil, fmt.Errorf("fake kek: unwrap: KEK v%d: %w", w.KEKVersion, hsm.ErrUnwrap)
	}
	return dek, nil
}

// CurrentKEK implements hsm.Provider.
func (f *FakeKEK) CurrentKEK(ctx context.Context) (uint32, error) {
	if err := f.check("current"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current, nil
}

// RotateKEK implements hsm.Provider.
func (f *FakeKEK) RotateKEK(ctx context.Context) (uint32, error) {
	if err := f.check("rotate"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addVersion(), nil
}

// KEKs implements hsm.Provider.
func (f *FakeKEK) KEKs(ctx context.Context) ([]hsm.KEKInfo, error) {
	if err := f.check("list"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]hsm.KEKInfo, 0, len(f.info))
	for v := uint32(1); v <= f.current; v++ {
		out = append(out, *f.info[v])
	}
	return out, nil
}

// RetireKEK implements hsm.Provider.
func (f *FakeKEK) RetireKEK(ctx context.Context, version uint32) error {
	if err := f.check("retire"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.info[version]
	switch {
	case in == nil:
		return fmt.Errorf("fake kek: retire KEK v%d: %w", version, hsm.ErrUnknownKEK)
	case version == f.current:
		return fmt.Errorf("fake kek: retire KEK v%d: it is current", version)
	}
	in.State, in.Retired = "retired", time.Now().UTC()
	return nil
}

// AuditMAC implements hsm.Provider.
func (f *FakeKEK) AuditMAC(ctx context.Context, msg []byte) ([]byte, error) {
	if err := f.check("audit mac"); err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, f.auditK)
	h.Write(msg)
	return h.Sum(nil), nil
}

// RecordMAC implements hsm.Provider.
func (f *FakeKEK) RecordMAC(ctx context.Context, msg []byte) ([]byte, error) {
	f.recordMACs.Add(1)
	if err := f.check("record mac"); err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, f.recordK)
	h.Write(msg)
	return h.Sum(nil), nil
}

// VerifyRecordMAC implements hsm.Provider.
func (f *FakeKEK) VerifyRecordMAC(ctx context.Context, msg, mac []byte) error {
	want, err := f.RecordMAC(ctx, msg)
	if err != nil {
		return err
	}
	if !hmac.Equal(want, mac) {
		return fmt.Errorf("fake kek: verify record MAC: %w", hsm.ErrRecordMAC)
	}
	return nil
}

// RecordMACs returns how many record MACs were computed or verified.
func (f *FakeKEK) RecordMACs() int64 { return f.recordMACs.Load() }

// BackupPublicKey implements hsm.Provider.
func (f *FakeKEK) BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error) {
	if err := f.check("backup public key"); err != nil {
		return nil, err
	}
	pub := f.signK.PublicKey
	return &pub, nil
}

// SignBackup implements hsm.Provider.
func (f *FakeKEK) SignBackup(ctx context.Context, digest []byte) ([]byte, error) {
	if err := f.check("sign backup"); err != nil {
		return nil, err
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("fake kek: sign backup: %w: digest of %d bytes", hsm.ErrInvalidArgument, len(digest))
	}
	r, s, err := ecdsa.Sign(rand.Reader, f.signK, digest)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, hsm.BackupSignatureSize)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

// Ping implements hsm.Provider.
func (f *FakeKEK) Ping(ctx context.Context) error { return f.check("ping") }

// Describe implements hsm.Provider.
func (f *FakeKEK) Describe() hsm.Description {
	return hsm.Description{Kind: "fake", BindsContext: true, Warning: "in-memory test provider: not an HSM"}
}

// Close implements hsm.Provider.
func (f *FakeKEK) Close() error { return nil }

var _ hsm.Provider = (*FakeKEK)(nil)
