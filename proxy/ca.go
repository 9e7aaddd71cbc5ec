package proxy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names inside the CA directory (SIDECRYPT_CA_DIR).
const (
	CAKeyFile  = "ca.key" // PKCS#8 PEM private key, mode 0600
	CACertFile = "ca.crt" // PEM certificate, for the application's trust store
)

// Lifetimes. The CA lives long because every application that trusts it
// must be reconfigured when it changes; leaves live short because they are
// minted on demand and never leave the process.
const (
	CAValidity   = 5 * 365 * 24 * time.Hour
	leafValidity = 7 * 24 * time.Hour
	// leafRenewBefore: a cached leaf this close to expiry is re-minted.
	leafRenewBefore = 24 * time.Hour
	// maxCachedLeaves bounds the leaf cache. Forward mode intercepts only
	// the hosts the rules name, so this is rarely reached; when it is, an
	// arbitrary entry is dropped and re-minted on its next CONNECT.
	maxCachedLeaves = 1024
)

// CA is the local certificate authority that forward mode uses to
// intercept HTTPS to hosts the rules name. Its key is ECDSA P-256 (FIPS
// 186-5; small and fast to sign with, and accepted by every TLS stack the
// applications use), kept in a 0600 file. It is safe for concurrent use.
type CA struct {
	dir     string
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// InitCA creates a new CA in dir (created 0700 if missing) and writes
// ca.key (0600) and ca.crt. It refuses with ErrCAExists if either file is
// already there, unless force is set, in which case the old pair is
// replaced and every application must trust the new certificate.
func InitCA(dir string, force bool) (*CA, error) {
	if dir == "" {
		return nil, fmt.Errorf("proxy: CA directory: %w: empty path", ErrConfig)
	}
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	if !force {
		for _, p := range []string{keyPath, certPath} {
			if _, err := os.Stat(p); err == nil {
				return nil, fmt.Errorf("proxy: %s: %w (use --force to replace it)", p, ErrCAExists)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("proxy: CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	cn := "sidecrypt interception CA"
	if host != "" {
		cn += " (" + host + ")"
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"sidecrypt"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves only, never intermediates.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	clear(pkcs8)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key is written first: a crash in between leaves no certificate
	// that points at a missing key, and LoadCA reports the half pair.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	clear(keyPEM)
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return LoadCA(dir)
}

// LoadCA reads the CA from dir. It fails with ErrCANotFound when the files
// are missing and ErrCAInvalid when they are unusable, including a key file
// that others may read.
func LoadCA(dir string) (*CA, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	st, err := os.Stat(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("proxy: %s: %w", dir, ErrCANotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w", keyPath, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("proxy: %s: %w: mode %v lets other users read the key (chmod 600 it)", keyPath, ErrCAInvalid, st.Mode().Perm())
	}
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("proxy: %s: %w: key without certificate", dir, ErrCANotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w", keyPath, err)
	}
	defer clear(keyPEM)
	return parseCA(dir, certPEM, keyPEM, time.Now())
}

func parseCA(dir string, certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("proxy: %s: %w: no PEM certificate", CACertFile, ErrCAInvalid)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w: %v", CACertFile, ErrCAInvalid, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("proxy: %s: %w: not a CA certificate", CACertFile, ErrCAInvalid)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("proxy: %s: %w: expired on %s (run `sidecrypt ca init --force`)", CACertFile, ErrCAInvalid, cert.NotAfter.Format(time.DateOnly))
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		// Deliberately no detail: never echo any part of a key file.
		return nil, fmt.Errorf("proxy: %s: %w: no PKCS#8 PEM private key", CAKeyFile, ErrCAInvalid)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w: unparsable private key", CAKeyFile, ErrCAInvalid)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("proxy: %s: %w: unsupported key type", CAKeyFile, ErrCAInvalid)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("proxy: %w: %s does not belong to %s", ErrCAInvalid, CAKeyFile, CACertFile)
	}
	return &CA{
		dir:     dir,
		cert:    cert,
		certPEM: pem.EncodeToMemory(cb),
		key:     signer,
		leaves:  make(map[string]*tls.Certificate),
	}, nil
}

// Certificate returns the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// CertificatePEM returns the CA certificate in PEM, for the application's
// trust store.
func (c *CA) CertificatePEM() []byte { return append([]byte(nil), c.certPEM...) }

// Fingerprint returns the SHA-256 fingerprint of the certificate as
// colon-separated upper-case hex, the form browsers and openssl show.
func (c *CA) Fingerprint() string {
	sum := sha256.Sum256(c.cert.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// Dir returns the directory the CA was loaded from.
func (c *CA) Dir() string { return c.dir }

// leaf returns a certificate for host signed by the CA, from the cache
// when a fresh one is there. The lock is held while minting so that a burst
// of CONNECTs to one host signs once; CONNECT is per connection, not per
// request, so this is off the hot path.
func (c *CA) leaf(host string, now time.Time) (*tls.Certificate, error) {
	host = strings.ToLower(host)
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.leaves[host]; l != nil && now.Add(leafRenewBefore).Before(l.Leaf.NotAfter) {
		return l, nil
	}
	l, err := c.mint(host, now)
	if err != nil {
		return nil, err
	}
	if len(c.leaves) >= maxCachedLeaves {
		for h := range c.leaves {
			delete(c.leaves, h)
			break
		}
	}
	c.leaves[host] = l
	return l, nil
}

func (c *CA) mint(host string, now time.Time) (*tls.Certificate, error) {
	if host == "" {
		return nil, fmt.Errorf("proxy: leaf certificate: empty host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"sidecrypt interception"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("proxy: leaf certificate for %q: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("proxy: leaf certificate for %q: %w", host, err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits: RFC 5280 allows up to 20 octets, and CA/B Forum
	// rules ask for at least 64 bits of entropy.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("proxy: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so a crash leaves the old file or the
// new one, never half of one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
