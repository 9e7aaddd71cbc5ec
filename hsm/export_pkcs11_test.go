//go:build cgo && !nopkcs11

package hsm

import "github.com/miekg/pkcs11"

// PKCS11Internals gives the recovery and known-answer tests the loaded
// library and the token's slot, to act behind the provider's back.
func PKCS11Internals(p Provider) (*pkcs11.Ctx, uint) {
	pp := p.(*pkcs11Provider)
	pp.stateMu.Lock()
	defer pp.stateMu.Unlock()
	return pp.mod.ctx, pp.slot
}

// PKCS11IdleSessions returns the handles of the pool's idle sessions.
func PKCS11IdleSessions(p Provider) []pkcs11.SessionHandle {
	pp := p.(*pkcs11Provider)
	pp.pool.mu.Lock()
	defer pp.pool.mu.Unlock()
	var hs []pkcs11.SessionHandle
	for _, s := range pp.pool.idle {
		hs = append(hs, s.h)
	}
	return hs
}
