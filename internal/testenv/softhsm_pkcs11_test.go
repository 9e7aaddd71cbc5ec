//go:build cgo

package testenv

import (
	"testing"

	"github.com/miekg/pkcs11"
)

func tokenLabels(t *testing.T, c *pkcs11.Ctx) map[string]bool {
	t.Helper()
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]bool{}
	for _, s := range slots {
		if ti, err := c.GetTokenInfo(s); err == nil {
			labels[ti.Label] = true
		}
	}
	return labels
}

// SoftHSM2 scans its token directory at C_Initialize only: a token made by
// softhsm2-util while the module is initialised in this process stays
// invisible until C_Finalize and C_Initialize. The file's design (one
// configuration per process, tokens made before providers open, the hsm
// package finalising the module when its last provider closes) rests on
// the second half of this; the first half is logged, not asserted, in
// case a later SoftHSM2 rescans on C_GetSlotList.
func TestSoftHSMTokenVisibility(t *testing.T) {
	s := UseSoftHSM(t)
	before := s.InitToken(t, "before")
	c := pkcs11.New(s.Module)
	if c == nil {
		t.Fatalf("cannot load %s", s.Module)
	}
	if err := c.Initialize(); err != nil {
		t.Fatal(err)
	}
	if !tokenLabels(t, c)[before.Label] {
		t.Fatalf("token %s made before C_Initialize is not visible", before.Label)
	}
	after := s.InitToken(t, "after")
	if tokenLabels(t, c)[after.Label] {
		t.Logf("this SoftHSM2 sees a token made after C_Initialize without re-initialising")
	} else {
		t.Logf("as expected, token %s made after C_Initialize is invisible until re-initialised", after.Label)
	}
	if err := c.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := c.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer c.Finalize()
	if !tokenLabels(t, c)[after.Label] {
		t.Fatalf("token %s not visible even after C_Finalize and C_Initialize", after.Label)
	}
}
