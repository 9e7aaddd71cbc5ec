package hsm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

// The software provider's key file is JSON:
//
//	{"format":"sidecrypt-kek-file","version":1,
//	 "kdf":{"alg":"argon2id","time":3,"memory_kib":65536,"threads":4,"salt":"..."},
//	 "aead":"aes-256-gcm","nonce":"...","sealed":"..."}
//
// sealed is AES-256-GCM under the Argon2id key, with the JSON encoding of
// the header (everything but nonce and sealed) as additional data, so the
// KDF parameters and salt cannot be swapped without detection. Inside is
// softPayload. docs/KEK.md describes the format for operators.
const (
	softFormat         = "sidecrypt-kek-file"
	softVersion        = 1
	softAEAD           = "aes-256-gcm"
	softKDF            = "argon2id"
	softSaltLen        = 16      // RFC 9106 recommends 128-bit salts
	softKeyLen         = 32      // AES-256, for both the sealing key and each KEK
	softMaxFile        = 1 << 20 // far above any real file; refuses to read a log by mistake
	softFileMode       = 0o600
	softDirMode        = 0o700
	errWrongPassphrase = "wrong passphrase or corrupt file"
)

type softKDFHeader struct {
	Alg       string `json:"alg"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      []byte `json:"salt"`
}

func (h softKDFHeader) params() kdf.Params {
	return kdf.Params{Time: h.Time, MemoryKiB: h.MemoryKiB, Threads: h.Threads}
}

// softHeader is authenticated but not encrypted.
type softHeader struct {
	Format  string        `json:"format"`
	Version int           `json:"version"`
	KDF     softKDFHeader `json:"kdf"`
	AEAD    string        `json:"aead"`
}

type softFile struct {
	softHeader
	Nonce  []byte `json:"nonce"`
	Sealed []byte `json:"sealed"`
}

// softPayload is the sealed content. Keys are []byte so that
// encoding/json decodes them straight into slices we can zero.
type softPayload struct {
	KEKs     []softPayloadKEK `json:"keks"`
	AuditKey []byte           `json:"audit_key"`
	// Master is a random 32-byte secret from which the record MAC key
	// and the backup signing key are derived (HKDF, one label each; see
	// softKeys). Files written before it existed lack it; the provider
	// adds one when it opens such a file.
	Master []byte `json:"master,omitempty"`
}

type softPayloadKEK struct {
	Version uint32    `json:"version"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
	Retired time.Time `json:"retired,omitzero"`
}

func (p *softPayload) zero() {
	for i := range p.KEKs {
		clear(p.KEKs[i].Key)
	}
	clear(p.AuditKey)
	clear(p.Master)
}

// newSoftHeader makes a header with a fresh salt.
func newSoftHeader(p kdf.Params) (softHeader, error) {
	salt := make([]byte, softSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return softHeader{}, err
	}
	return softHeader{
		Format:  softFormat,
		Version: softVersion,
		KDF:     softKDFHeader{Alg: softKDF, Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads, Salt: salt},
		AEAD:    softAEAD,
	}, nil
}

// deriveSealKey runs Argon2id over the passphrase.
func deriveSealKey(passphrase string, h softHeader) []byte {
	return argon2.IDKey([]byte(passphrase), h.KDF.Salt, h.KDF.Time, h.KDF.MemoryKiB, h.KDF.Threads, softKeyLen)
}

// checkHeader validates what is read from disk before any work is done
// with it.
func (h softHeader) check() error {
	switch {
	case h.Format != softFormat:
		return fmt.Errorf("not a sidecrypt KEK file (format %q)", h.Format)
	case h.Version != softVersion:
		return fmt.Errorf("unsupported file version %d (this build reads version %d)", h.Version, softVersion)
	case h.KDF.Alg != softKDF:
		return fmt.Errorf("unsupported kdf %q", h.KDF.Alg)
	case h.AEAD != softAEAD:
		return fmt.Errorf("unsupported aead %q", h.AEAD)
	case len(h.KDF.Salt) < softSaltLen || len(h.KDF.Salt) > 64:
		return fmt.Errorf("salt of %d bytes; want %d to 64", len(h.KDF.Salt), softSaltLen)
	}
	return h.KDF.params().Check()
}

func sealGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealSoftFile encrypts the payload under key and returns the file bytes.
// A fresh random 96-bit nonce per write is safe: a key file is rewritten
// once per rotation or retirement, nowhere near GCM's 2^32 random-nonce
// limit for one key.
func sealSoftFile(key []byte, h softHeader, p *softPayload) ([]byte, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	aad, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	aead, err := sealGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	f := softFile{softHeader: h, Nonce: nonce, Sealed: aead.Seal(nil, nonce, plain, aad)}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// readSoftFile reads and parses the file without decrypting it.
func readSoftFile(path string) (softFile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return softFile{}, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, softMaxFile+1))
	if err != nil {
		return softFile{}, err
	}
	if len(data) > softMaxFile {
		return softFile{}, fmt.Errorf("file is larger than %d bytes", softMaxFile)
	}
	var f softFile
	if err := json.Unmarshal(data, &f); err != nil {
		return softFile{}, errors.New(errWrongPassphrase + ": not valid JSON")
	}
	if err := f.check(); err != nil {
		return softFile{}, fmt.Errorf("%s: %v", errWrongPassphrase, err)
	}
	return f, nil
}

// openSoftFile decrypts f with key.
func openSoftFile(key []byte, f softFile) (*softPayload, error) {
	aad, err := json.Marshal(f.softHeader)
	if err != nil {
		return nil, err
	}
	aead, err := sealGCM(key)
	if err != nil {
		return nil, err
	}
	if len(f.Nonce) != aead.NonceSize() {
		return nil, errors.New(errWrongPassphrase)
	}
	plain, err := aead.Open(nil, f.Nonce, f.Sealed, aad)
	if err != nil {
		return nil, errors.New(errWrongPassphrase)
	}
	defer clear(plain)
	p := new(softPayload)
	if err := json.Unmarshal(plain, p); err != nil {
		p.zero()
		return nil, errors.New(errWrongPassphrase + ": sealed content is malformed")
	}
	if err := p.check(); err != nil {
		p.zero()
		return nil, fmt.Errorf("%s: %v", errWrongPassphrase, err)
	}
	return p, nil
}

// check validates the decrypted payload: authentic content written by a
// buggy or future version must still not be used half-understood.
func (p *softPayload) check() error {
	if len(p.KEKs) == 0 {
		return errors.New("no KEK versions")
	}
	if len(p.AuditKey) != softKeyLen {
		return errors.New("audit key missing")
	}
	if p.Master != nil && len(p.Master) != softKeyLen {
		return errors.New("master secret of the wrong length")
	}
	seen := map[uint32]bool{}
	for _, k := range p.KEKs {
		if k.Version == 0 || seen[k.Version] {
			return fmt.Errorf("KEK version %d is zero or repeated", k.Version)
		}
		seen[k.Version] = true
		if len(k.Key) != softKeyLen {
			return fmt.Errorf("KEK v%d has %d bytes; want %d", k.Version, len(k.Key), softKeyLen)
		}
	}
	return nil
}

// writeFileAtomic replaces path with data so that a crash at any point
// leaves either the old file or the new one, never a torn one: write a
// temporary file in the same directory, fsync it, rename it over path,
// then fsync the directory so the rename itself is durable.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(softFileMode); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
