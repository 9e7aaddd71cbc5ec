package proxy

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitAndLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("CA directory mode %v, want 0700", st.Mode().Perm())
	}
	cert := ca.Certificate()
	if !cert.IsCA || !cert.MaxPathLenZero || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a leaf-only CA: %+v", cert)
	}
	block, _ := pem.Decode(ca.CertificatePEM())
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("CertificatePEM: %q", ca.CertificatePEM())
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() || len(ca.Fingerprint()) != 95 {
		t.Errorf("fingerprints %s / %s", loaded.Fingerprint(), ca.Fingerprint())
	}

	if _, err := InitCA(dir, false); !errors.Is(err, ErrCAExists) {
		t.Errorf("second init: %v, want ErrCAExists", err)
	}
	replaced, err := InitCA(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if replaced.Fingerprint() == ca.Fingerprint() {
		t.Error("--force kept the old CA")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestLoadCAFailures(t *testing.T) {
	good := t.TempDir()
	if _, err := InitCA(good, false); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := InitCA(other, false); err != nil {
		t.Fatal(err)
	}
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		key     []byte
		cert    []byte
		keyMode os.FileMode
		want    error
		text    string
	}{
		{name: "missing", want: ErrCANotFound},
		{name: "key without certificate", key: read(good, CAKeyFile), keyMode: 0o600, want: ErrCANotFound},
		{name: "world-readable key", key: read(good, CAKeyFile), cert: read(good, CACertFile), keyMode: 0o644, want: ErrCAInvalid, text: "chmod 600"},
		{name: "key of another CA", key: read(other, CAKeyFile), cert: read(good, CACertFile), keyMode: 0o600, want: ErrCAInvalid, text: "does not belong"},
		{name: "garbage certificate", key: read(good, CAKeyFile), cert: []byte("not pem"), keyMode: 0o600, want: ErrCAInvalid},
		{name: "garbage key", key: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), cert: read(good, CACertFile), keyMode: 0o600, want: ErrCAInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.key != nil {
				if err := os.WriteFile(filepath.Join(dir, CAKeyFile), tc.key, tc.keyMode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Join(dir, CAKeyFile), tc.keyMode)
			}
			if tc.cert != nil {
				if err := os.WriteFile(filepath.Join(dir, CACertFile), tc.cert, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadCA(dir)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) || strings.Contains(err.Error(), "AAAA") {
				t.Errorf("error %q", err)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		_, err := parseCA(good, read(good, CACertFile), read(good, CAKeyFile), time.Now().Add(CAValidity+time.Hour))
		if !errors.Is(err, ErrCAInvalid) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestLeafCertificates(t *testing.T) {
	ca, err := InitCA(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	now := time.Now()
	for _, host := range []string{"db.example.com", "127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			leaf, err := ca.leaf(host, now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: now}); err != nil {
				t.Errorf("leaf does not verify for %s: %v", host, err)
			}
			if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: roots, CurrentTime: now}); err == nil {
				t.Error("leaf verifies for another host")
			}
			again, _ := ca.leaf(strings.ToUpper(host), now.Add(time.Hour))
			if again != leaf {
				t.Error("leaf not cached")
			}
			renewed, _ := ca.leaf(host, now.Add(leafValidity-time.Hour))
			if renewed == leaf || !renewed.Leaf.NotAfter.After(leaf.Leaf.NotAfter) {
				t.Error("a leaf near its expiry was not renewed")
			}
		})
	}
}
