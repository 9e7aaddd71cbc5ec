//go:build cgo && !nopkcs11

package hsm_test

import (
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func BenchmarkSoftHSMWrap(b *testing.B) {
	tok := testenv.UseSoftHSM(b).InitToken(b, "bench")
	benchWraps(b, openToken(b, tok, "", nil))
}

// Unwrap latency with one caller: ns/op.
func BenchmarkSoftHSMUnwrap(b *testing.B) {
	tok := testenv.UseSoftHSM(b).InitToken(b, "bench")
	benchUnwraps(b, openToken(b, tok, "", nil), 1)
}

// Unwraps per second with 8 concurrent callers (the default pool of 8
// sessions).
func BenchmarkSoftHSMUnwrap8(b *testing.B) {
	tok := testenv.UseSoftHSM(b).InitToken(b, "bench")
	benchUnwraps(b, openToken(b, tok, "", nil), 8)
}
