// Package kdf carries the Argon2id cost parameters of the software KEK
// provider, and the test-only way to lower them.
//
// The parameters of a new key file are Recommended unless the context
// given to hsm.Open carries others (WithParams). Only tests do that, via
// hsm/hsmtest, because deriving a 64 MiB Argon2id key in every test that
// creates a key file would cost seconds under the race detector. The CLI
// and the server never call WithParams; an existing file always uses the
// parameters stored in it.
package kdf

import (
	"context"
	"fmt"
)

// Params are Argon2id cost parameters (RFC 9106 section 3.1).
type Params struct {
	Time      uint32 // passes over memory (t)
	MemoryKiB uint32 // memory in KiB (m)
	Threads   uint8  // lanes (p)
}

// Recommended is RFC 9106's second recommended option (section 4): t=3,
// m=64 MiB, p=4, for when the first option's 2 GiB of memory is too much,
// as it is for a sidecar next to an application.
var Recommended = Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Limits on parameters read from a key file, so that a damaged or hostile
// file cannot make Open allocate without bound or spin for hours.
const (
	MaxTime      = 64
	MaxMemoryKiB = 4 * 1024 * 1024 // 4 GiB
)

// Check reports whether p is within what Open accepts from a file.
func (p Params) Check() error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("argon2id time %d out of range 1..%d", p.Time, MaxTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB out of range %d..%d", p.MemoryKiB, 8*uint32(p.Threads), MaxMemoryKiB)
	}
	return nil
}

// Weaker reports whether p costs less than Recommended in any dimension.
func (p Params) Weaker() bool {
	return p.Time < Recommended.Time || p.MemoryKiB < Recommended.MemoryKiB
}

type ctxKey struct{}

// WithParams returns a context under which a newly created key file uses
// p. For tests only (see the package doc).
func WithParams(ctx context.Context, p Params) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the parameters for a new key file: those set by
// WithParams, or Recommended.
func FromContext(ctx context.Context) Params {
	if p, ok := ctx.Value(ctxKey{}).(Params); ok {
		return p
	}
	return Recommended
}
