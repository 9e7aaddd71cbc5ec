//go:build !cgo || nopkcs11

package hsm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// A build without PKCS#11 says so, rather than falling back to the
// software provider; a malformed URI is still reported as such.
func TestPKCS11NotCompiled(t *testing.T) {
	_, err := hsm.Open(t.Context(), "pkcs11:token=prod?module-path=/usr/lib/softhsm/libsofthsm2.so", hsm.Options{PIN: "1234"})
	if !errors.Is(err, hsm.ErrNotCompiled) || !strings.Contains(err.Error(), "not compiled") || strings.Contains(err.Error(), "1234") {
		t.Errorf("Open = %v; want ErrNotCompiled", err)
	}
	_, err = hsm.Open(t.Context(), "pkcs11:token=prod", hsm.Options{PIN: "1234"})
	if !errors.Is(err, hsm.ErrConfig) {
		t.Errorf("Open(no module-path) = %v; want ErrConfig", err)
	}
}
