package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	kwp "github.com/tink-crypto/tink-go/v2/kwp/subtle"

	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

// SoftwareWarning is the software provider's Describe().Warning, also
// logged at Open.
const SoftwareWarning = "not an HSM: KEKs live in a passphrase-sealed file and in this process's memory; for development only"

// Limits on data key sizes, shared by both providers so that a key that
// wraps under one wraps under the other. tink's KWP takes 16 to 8192
// bytes: nothing shorter than an AES-128 key is a data key, and the upper
// bound follows SP 800-38F's advice to limit KWP inputs. The length must
// also be a multiple of 8 (every AES and AES-SIV key is): SoftHSM2 2.6
// zero-pads other lengths before RFC 5649 wrapping, so they would not
// come back at their length, and RFC 3394 (wrap-mechanism=kw) cannot
// take them at all.
const (
	MinDEKLen = kwp.MinWrapSize
	MaxDEKLen = kwp.MaxWrapSize
)

// checkDEKLen enforces the limits above.
func checkDEKLen(n int) error {
	if n < MinDEKLen || n > MaxDEKLen || n%8 != 0 {
		return fmt.Errorf("%w: data key of %d bytes; want a multiple of 8 from %d to %d", ErrInvalidArgument, n, MinDEKLen, MaxDEKLen)
	}
	return nil
}

// softKEK is one KEK version held in memory.
type softKEK struct {
	version uint32
	key     []byte
	kwp     *kwp.KWP
	created time.Time
	retired time.Time
}

// softwareProvider keeps KEKs in a file sealed under Argon2id(passphrase).
type softwareProvider struct {
	path string
	log  *slog.Logger

	mu      sync.RWMutex
	sealKey []byte // Argon2id output, kept to re-seal on rotate without the passphrase
	hdr     softHeader
	keks    map[uint32]*softKEK
	current uint32
	audit   []byte
	// master is the file's random master secret; recordKey and signKey
	// are derived from it (softKeys).
	master    []byte
	recordKey []byte
	signKey   *ecdsa.PrivateKey
	closed    bool
}

// HKDF labels of the keys the software provider derives from its master
// secret. Changing one invalidates every record MAC or backup signature
// made under it.
const (
	softLabelRecordMAC = "sidecrypt software provider v1 record-mac"
	softLabelSigning   = "sidecrypt software provider v1 backup-signing"
)

// softKeys derives the record MAC key (HKDF-SHA256, RFC 5869, no salt)
// and the backup signing key from master. The signing key is the first
// HKDF output, under the label followed by a counter byte 0, 1, ..., that
// is a valid P-256 scalar (non-zero, below the group order): the first one
// is, except with probability about 2^-32.
func softKeys(master []byte) (recordKey []byte, signKey *ecdsa.PrivateKey, err error) {
	recordKey, err = hkdf.Key(sha256.New, master, nil, softLabelRecordMAC, 32)
	if err != nil {
		return nil, nil, err
	}
	for i := range 256 {
		d, err := hkdf.Key(sha256.New, master, nil, softLabelSigning+string([]byte{byte(i)}), 32)
		if err != nil {
			clear(recordKey)
			return nil, nil, err
		}
		signKey, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		clear(d)
		if err == nil {
			return recordKey, signKey, nil
		}
	}
	clear(recordKey)
	return nil, nil, errors.New("no valid signing scalar derived")
}

// checkSoftFileMode refuses a key file that group or others may read: it
// holds every KEK, sealed only under a passphrase that an offline guesser
// could then attack at leisure.
func checkSoftFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return nil // absent: created with mode 0600; other errors surface on read
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return softErr("open", path, ErrConfig, fmt.Sprintf("the key file has mode %04o, so group or others can read the sealed KEKs and guess the passphrase offline; run: chmod 600 %s", perm, path))
	}
	return nil
}

func softErr(op, path string, sentinel error, detail string) error {
	if detail == "" {
		return fmt.Errorf("hsm: software: %s (file %q): %w", op, path, sentinel)
	}
	return fmt.Errorf("hsm: software: %s (file %q): %w: %s", op, path, sentinel, detail)
}

// openSoftware opens or, with opts.Create, creates the key file.
func openSoftware(ctx context.Context, opts Options, log *slog.Logger) (Provider, error) {
	if opts.KEKFile == "" {
		return nil, fmt.Errorf("hsm: software: no key file (SIDECRYPT_KEK_FILE): %w", ErrConfig)
	}
	if opts.Passphrase == "" {
		return nil, fmt.Errorf("hsm: software: the master passphrase (SIDECRYPT_MASTER_PASSPHRASE) is empty: %w", ErrConfig)
	}
	path, err := filepath.Abs(opts.KEKFile)
	if err != nil {
		return nil, fmt.Errorf("hsm: software: key file %q: %w: %v", opts.KEKFile, ErrConfig, err)
	}
	p := &softwareProvider{path: path, log: log}

	if opts.Create {
		if err := os.MkdirAll(filepath.Dir(path), softDirMode); err != nil {
			return nil, softErr("create directory", path, ErrUnavailable, err.Error())
		}
	}
	unlock, err := lockFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("hsm: software: open (file %q): %w: %w: its directory does not exist (Options.Create makes it)", path, ErrUnavailable, ErrNoKEK)
		}
		return nil, softErr("lock", path, ErrUnavailable, err.Error())
	}
	defer unlock()

	if err := checkSoftFileMode(path); err != nil {
		return nil, err
	}
	f, err := readSoftFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opts.Create:
		if err := p.create(ctx, opts.Passphrase); err != nil {
			return nil, err
		}
		log.Info("hsm: software provider created a new key file", "file", path, "kek_version", p.current)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("hsm: software: open (file %q): %w: %w: the file does not exist (Options.Create makes it)", path, ErrUnavailable, ErrNoKEK)
	case err != nil:
		return nil, softErr("open", path, ErrUnavailable, err.Error())
	default:
		key := deriveSealKey(opts.Passphrase, f.softHeader)
		payload, err := openSoftFile(key, f)
		if err != nil {
			clear(key)
			return nil, softErr("open", path, ErrUnavailable, err.Error())
		}
		p.sealKey, p.hdr = key, f.softHeader
		if err := p.install(payload); err != nil {
			return nil, softErr("open", path, ErrUnavailable, err.Error())
		}
		if p.master == nil {
			// A file from before record MACs and backup signatures: give
			// it a master secret now, under the lock already held.
			if err := p.addMaster(); err != nil {
				p.Close()
				return nil, err
			}
			log.Info("hsm: software provider added a master secret (record MAC and backup signing keys) to its key file", "file", path)
		}
		if f.KDF.params().Weaker() {
			log.Warn("hsm: software key file uses Argon2id parameters below RFC 9106's second recommended option; recreate it outside tests",
				"file", path, "time", f.KDF.Time, "memory_kib", f.KDF.MemoryKiB, "threads", f.KDF.Threads)
		}
	}
	log.Warn("hsm: software KEK provider: "+SoftwareWarning, "file", path)
	return p, nil
}

// create makes a new file with KEK v1 and an audit key. Called with the
// file lock held.
func (p *softwareProvider) create(ctx context.Context, passphrase string) error {
	params := kdf.FromContext(ctx)
	if err := params.Check(); err != nil {
		return softErr("create", p.path, ErrConfig, err.Error())
	}
	hdr, err := newSoftHeader(params)
	if err != nil {
		return softErr("create", p.path, ErrUnavailable, err.Error())
	}
	key := deriveSealKey(passphrase, hdr)
	payload := &softPayload{AuditKey: make([]byte, softKeyLen), Master: make([]byte, softKeyLen)}
	kek := softPayloadKEK{Version: 1, Key: make([]byte, softKeyLen), Created: time.Now().UTC()}
	payload.KEKs = append(payload.KEKs, kek)
	for _, b := range [][]byte{kek.Key, payload.AuditKey, payload.Master} {
		if _, err := rand.Read(b); err != nil {
			return softErr("create", p.path, ErrUnavailable, err.Error())
		}
	}
	if err := p.write(key, hdr, payload); err != nil {
		payload.zero()
		clear(key)
		return err
	}
	p.sealKey, p.hdr = key, hdr
	if err := p.install(payload); err != nil {
		return softErr("create", p.path, ErrUnavailable, err.Error())
	}
	return nil
}

// addMaster gives a file that lacks one a master secret and writes the
// file. Called with the file lock held, before p is shared.
func (p *softwareProvider) addMaster() error {
	m := make([]byte, softKeyLen)
	if _, err := rand.Read(m); err != nil {
		return softErr("add master secret", p.path, ErrUnavailable, err.Error())
	}
	rk, sk, err := softKeys(m)
	if err != nil {
		clear(m)
		return softErr("add master secret", p.path, ErrUnavailable, err.Error())
	}
	p.master, p.recordKey, p.signKey = m, rk, sk
	return p.write(p.sealKey, p.hdr, p.snapshot())
}

func (p *softwareProvider) write(key []byte, hdr softHeader, payload *softPayload) error {
	data, err := sealSoftFile(key, hdr, payload)
	if err != nil {
		return softErr("seal", p.path, ErrUnavailable, err.Error())
	}
	if err := writeFileAtomic(p.path, data); err != nil {
		return softErr("write", p.path, ErrUnavailable, err.Error())
	}
	return nil
}

// install replaces the in-memory state with payload, taking ownership of
// its key slices. Called with p.mu held for writing (or before p is
// shared). A payload without a master secret (rewritten by an older
// binary) keeps the one in memory, so that the next write restores it.
func (p *softwareProvider) install(payload *softPayload) error {
	if payload.Master != nil && !hmac.Equal(payload.Master, p.master) {
		rk, sk, err := softKeys(payload.Master)
		if err != nil {
			payload.zero()
			return err
		}
		clear(p.master)
		clear(p.recordKey)
		p.master, p.recordKey, p.signKey = payload.Master, rk, sk
	} else {
		clear(payload.Master)
	}
	old := p.keks
	p.keks = make(map[uint32]*softKEK, len(payload.KEKs))
	p.current = 0
	for _, k := range payload.KEKs {
		w, err := kwp.NewKWP(k.Key)
		if err != nil { // unreachable: check() enforced 32-byte keys
			panic("hsm: software: KEK of invalid length")
		}
		p.keks[k.Version] = &softKEK{version: k.Version, key: k.Key, kwp: w, created: k.Created, retired: k.Retired}
		p.current = max(p.current, k.Version)
	}
	clear(p.audit)
	p.audit = payload.AuditKey
	for _, k := range old {
		clear(k.key)
	}
	return nil
}

// snapshot returns the in-memory state as a payload (sharing key slices:
// do not zero it).
func (p *softwareProvider) snapshot() *softPayload {
	out := &softPayload{AuditKey: p.audit, Master: p.master}
	for _, v := range p.versions() {
		k := p.keks[v]
		out.KEKs = append(out.KEKs, softPayloadKEK{Version: k.version, Key: k.key, Created: k.created, Retired: k.retired})
	}
	return out
}

func (p *softwareProvider) versions() []uint32 {
	vs := make([]uint32, 0, len(p.keks))
	for v := range p.keks {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// reload re-reads the file, which another process (a second sidecar, the
// CLI) may have rotated. Called with p.mu held for writing.
func (p *softwareProvider) reload() error {
	f, err := readSoftFile(p.path)
	if err != nil {
		return softErr("reload", p.path, ErrUnavailable, err.Error())
	}
	if string(f.KDF.Salt) != string(p.hdr.KDF.Salt) || f.KDF.params() != p.hdr.KDF.params() {
		return softErr("reload", p.path, ErrUnavailable, "the file was re-created with another salt since it was opened; reopen the provider")
	}
	payload, err := openSoftFile(p.sealKey, f)
	if err != nil {
		return softErr("reload", p.path, ErrUnavailable, err.Error())
	}
	if err := p.install(payload); err != nil {
		return softErr("reload", p.path, ErrUnavailable, err.Error())
	}
	return nil
}

// update runs change on a fresh copy of the file's state under the file
// lock and writes the result, so concurrent writers never lose a version.
func (p *softwareProvider) update(op string, change func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return softErr(op, p.path, ErrUnavailable, "provider is closed")
	}
	unlock, err := lockFile(p.path)
	if err != nil {
		return softErr(op, p.path, ErrUnavailable, err.Error())
	}
	defer unlock()
	if err := p.reload(); err != nil {
		return err
	}
	if err := change(); err != nil {
		// change may have touched memory; go back to what is on disk.
		_ = p.reload()
		return err
	}
	if err := p.write(p.sealKey, p.hdr, p.snapshot()); err != nil {
		_ = p.reload()
		return err
	}
	return nil
}

// Wrap wraps with RFC 5649, which takes no associated data: b is not
// bound to the bytes (see Binding; the keystore's record MAC binds them).
func (p *softwareProvider) Wrap(ctx context.Context, dek []byte, b Binding) (Wrapped, error) {
	if err := checkDEKLen(len(dek)); err != nil {
		return Wrapped{}, fmt.Errorf("hsm: software: wrap (file %q): %w", p.path, err)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return Wrapped{}, softErr("wrap", p.path, ErrUnavailable, "provider is closed")
	}
	k := p.keks[p.current]
	if !k.retired.IsZero() {
		return Wrapped{}, softErr(fmt.Sprintf("wrap under KEK v%d", k.version), p.path, ErrKEKRetired, "")
	}
	out, err := k.kwp.Wrap(dek)
	if err != nil {
		return Wrapped{}, softErr(fmt.Sprintf("wrap under KEK v%d", k.version), p.path, ErrInvalidArgument, "")
	}
	return Wrapped{KEKVersion: k.version, Mechanism: MechanismKWP, Bytes: out}, nil
}

func (p *softwareProvider) Unwrap(ctx context.Context, w Wrapped, b Binding) ([]byte, error) {
	op := fmt.Sprintf("unwrap under KEK v%d", w.KEKVersion)
	if w.Mechanism != MechanismKWP {
		return nil, softErr(op, p.path, ErrUnwrap, fmt.Sprintf("mechanism %q; this provider uses %q", w.Mechanism, MechanismKWP))
	}
	p.mu.RLock()
	if !p.closed && p.keks[w.KEKVersion] == nil {
		// Another process may have rotated: re-read the file once.
		p.mu.RUnlock()
		p.mu.Lock()
		var err error
		if !p.closed {
			err = p.reload()
		}
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		p.mu.RLock()
	}
	defer p.mu.RUnlock()
	k := p.keks[w.KEKVersion]
	switch {
	case p.closed:
		return nil, softErr(op, p.path, ErrUnavailable, "provider is closed")
	case k == nil:
		return nil, softErr(op, p.path, ErrUnknownKEK, "")
	case !k.retired.IsZero():
		return nil, softErr(op, p.path, ErrKEKRetired, "")
	}
	dek, err := k.kwp.Unwrap(w.Bytes)
	if err != nil {
		// tink's message says which check failed; it holds no key bytes,
		// but ErrUnwrap already says all a caller may act on.
		return nil, softErr(op, p.path, ErrUnwrap, "")
	}
	return dek, nil
}

func (p *softwareProvider) CurrentKEK(ctx context.Context) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, softErr("current KEK", p.path, ErrUnavailable, "provider is closed")
	}
	// Re-read: a rotation by another process must become visible here,
	// since a re-wrap job compares this with each record's version.
	if err := p.reload(); err != nil {
		return 0, err
	}
	return p.current, nil
}

func (p *softwareProvider) RotateKEK(ctx context.Context) (uint32, error) {
	var next uint32
	err := p.update("rotate KEK", func() error {
		next = p.current + 1
		key := make([]byte, softKeyLen)
		if _, err := rand.Read(key); err != nil {
			return softErr("rotate KEK", p.path, ErrUnavailable, err.Error())
		}
		w, err := kwp.NewKWP(key)
		if err != nil {
			return softErr("rotate KEK", p.path, ErrUnavailable, err.Error())
		}
		p.keks[next] = &softKEK{version: next, key: key, kwp: w, created: time.Now().UTC()}
		p.current = next
		return nil
	})
	if err != nil {
		return 0, err
	}
	p.log.Info("hsm: software provider rotated KEK", "file", p.path, "kek_version", next)
	return next, nil
}

func (p *softwareProvider) RetireKEK(ctx context.Context, version uint32) error {
	op := fmt.Sprintf("retire KEK v%d", version)
	return p.update(op, func() error {
		k := p.keks[version]
		switch {
		case k == nil:
			return softErr(op, p.path, ErrUnknownKEK, "")
		case version == p.current:
			return softErr(op, p.path, ErrInvalidArgument, "it is the current version; rotate first")
		case !k.retired.IsZero():
			return nil
		}
		k.retired = time.Now().UTC()
		return nil
	})
}

func (p *softwareProvider) KEKs(ctx context.Context) ([]KEKInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, softErr("list KEKs", p.path, ErrUnavailable, "provider is closed")
	}
	if err := p.reload(); err != nil {
		return nil, err
	}
	var out []KEKInfo
	for _, v := range p.versions() {
		k := p.keks[v]
		state := "active"
		switch {
		case !k.retired.IsZero():
			state = "retired"
		case v == p.current:
			state = "current"
		}
		out = append(out, KEKInfo{Version: v, State: state, Created: k.created, Retired: k.retired, Label: p.path})
	}
	return out, nil
}

func (p *softwareProvider) AuditMAC(ctx context.Context, msg []byte) ([]byte, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, softErr("audit MAC", p.path, ErrUnavailable, "provider is closed")
	}
	m := hmac.New(sha256.New, p.audit)
	m.Write(msg)
	return m.Sum(nil), nil
}

func (p *softwareProvider) RecordMAC(ctx context.Context, msg []byte) ([]byte, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, softErr("record MAC", p.path, ErrUnavailable, "provider is closed")
	}
	m := hmac.New(sha256.New, p.recordKey)
	m.Write(msg)
	return m.Sum(nil), nil
}

func (p *softwareProvider) VerifyRecordMAC(ctx context.Context, msg, mac []byte) error {
	want, err := p.RecordMAC(ctx, msg)
	if err != nil {
		return err
	}
	if !hmac.Equal(want, mac) {
		return softErr("verify record MAC", p.path, ErrRecordMAC, "")
	}
	return nil
}

func (p *softwareProvider) BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, softErr("backup public key", p.path, ErrUnavailable, "provider is closed")
	}
	pub := p.signKey.PublicKey
	return &pub, nil
}

func (p *softwareProvider) SignBackup(ctx context.Context, digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, softErr("sign backup", p.path, ErrInvalidArgument, fmt.Sprintf("digest of %d bytes; want a SHA-256 digest", len(digest)))
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, softErr("sign backup", p.path, ErrUnavailable, "provider is closed")
	}
	r, s, err := ecdsa.Sign(rand.Reader, p.signKey, digest)
	if err != nil {
		return nil, softErr("sign backup", p.path, ErrUnavailable, err.Error())
	}
	sig := make([]byte, BackupSignatureSize)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

func (p *softwareProvider) Ping(ctx context.Context) error {
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	if closed {
		return softErr("ping", p.path, ErrUnavailable, "provider is closed")
	}
	if _, err := os.Stat(p.path); err != nil {
		return softErr("ping", p.path, ErrUnavailable, err.Error())
	}
	return nil
}

func (p *softwareProvider) Describe() Description {
	return Description{Kind: "software", File: p.path, Warning: SoftwareWarning}
}

// Close zeroes the keys this process holds. The AES key schedules inside
// crypto/aes cannot be reached to zero; they become garbage.
func (p *softwareProvider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for _, k := range p.keks {
		clear(k.key)
		k.kwp = nil
	}
	clear(p.audit)
	clear(p.sealKey)
	clear(p.master)
	clear(p.recordKey)
	// The signing key's scalar lives in big.Int and crypto/internal
	// values that cannot be reached to zero; drop the reference.
	p.signKey = nil
	return nil
}

var _ Provider = (*softwareProvider)(nil)
