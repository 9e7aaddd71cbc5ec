//go:build cgo && !nopkcs11

package hsm_test

import (
	"bytes"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// RFC 4231 test case 6 through the token's CKM_SHA256_HMAC, the mechanism
// RecordMAC and AuditMAC use: what the token calls HMAC-SHA256 is
// HMAC-SHA256, so record MACs made by a token and by the software
// provider are the same construction (docs/KEYS.md), and a flipped bit of
// the MAC fails C_Verify.
func TestPKCS11HMACVector(t *testing.T) {
	tok := testenv.UseSoftHSM(t).InitToken(t, "hmac-kat")
	p := openToken(t, tok, "", nil)
	c, slot := hsm.PKCS11Internals(p)
	sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseSession(sh)
	key := sessionKey(t, c, sh, pkcs11.CKK_GENERIC_SECRET, bytes.Repeat([]byte{0xaa}, 131),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	data := []byte("Test Using Larger Than Block-Size Key - Hash Key First")
	want := unhex("60e431591ee0b67f 0d8a26aacbf5b77f 8e0bc6213728c514 0546040f0ee37f54")
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}
	if err := c.SignInit(sh, mech, key); err != nil {
		t.Fatal(err)
	}
	got, err := c.Sign(sh, data)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("CKM_SHA256_HMAC = %x (%v); RFC 4231 case 6 says %x", got, err, want)
	}
	bad := bytes.Clone(want)
	bad[0] ^= 1
	if err := c.VerifyInit(sh, mech, key); err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(sh, data, bad); err == nil {
		t.Error("C_Verify accepted a flipped MAC")
	}
}
