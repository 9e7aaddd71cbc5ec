package keycache_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// flakySource is a Source whose store can go away: Primary and
// UnwrapMaterial fail with keystore.ErrUnavailable (etcd unreachable), or
// Primary answers with a refusal.
type flakySource struct {
	down    atomic.Bool
	noPrim  atomic.Bool
	primary atomic.Uint32
}

func (s *flakySource) Primary(ctx context.Context, name string) (uint32, error) {
	switch {
	case s.down.Load():
		return 0, fmt.Errorf("test store: %w", keystore.ErrUnavailable)
	case s.noPrim.Load():
		return 0, fmt.Errorf("test store: %w", keystore.ErrNoPrimary)
	}
	return s.primary.Load(), nil
}

func (s *flakySource) UnwrapMaterial(ctx context.Context, name string, version uint32) (keystore.Material, error) {
	if s.down.Load() {
		return keystore.Material{}, fmt.Errorf("test store: %w", keystore.ErrUnavailable)
	}
	dek := make([]byte, fieldcrypt.DataKeySize)
	dek[0] = byte(version)
	return keystore.Material{DEK: dek}, nil
}

// TestSealWithLastPrimaryWhileStoreUnavailable: a sidecar that loses its
// shared store keeps sealing with the primary it last learned while that
// key is cached, and refuses once it is not; a reachable store's refusal
// is never overridden.
func TestSealWithLastPrimaryWhileStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// after warming the cache
		prepare  func(c *keycache.Cache, src *flakySource)
		wantSeal bool
		wantErr  error
	}{
		{"store down, key cached", func(c *keycache.Cache, src *flakySource) { src.down.Store(true) }, true, nil},
		{"store down, key purged", func(c *keycache.Cache, src *flakySource) { c.PurgeKey("pii"); src.down.Store(true) }, false, keystore.ErrUnavailable},
		{"store down, key version purged", func(c *keycache.Cache, src *flakySource) { c.Purge("pii", 1); src.down.Store(true) }, false, keystore.ErrUnavailable},
		{"store up, no primary any more", func(c *keycache.Cache, src *flakySource) { src.noPrim.Store(true) }, false, keystore.ErrNoPrimary},
		{"store down, cache closed", func(c *keycache.Cache, src *flakySource) { c.Close(); src.down.Store(true) }, false, keycache.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &flakySource{}
			src.primary.Store(1)
			now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { return now }
			c := keycache.New(src, keycache.Options{TTL: time.Hour, PrimaryTTL: time.Second, ZeroGrace: -1, Now: clock})
			defer c.Close()
			if k, err := c.SealKey(ctx, "pii"); err != nil || k.Version() != 1 {
				t.Fatalf("warm: %v", err)
			}
			tc.prepare(c, src)
			now = now.Add(2 * time.Second) // past PrimaryTTL: the primary must be asked again
			k, err := c.SealKey(ctx, "pii")
			if tc.wantSeal {
				if err != nil || k.Version() != 1 {
					t.Fatalf("SealKey with the store down and the key cached: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, tc.wantErr) {
				t.Fatalf("SealKey: err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
