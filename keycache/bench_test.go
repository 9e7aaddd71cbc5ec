package keycache_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// benchCache returns a cache over a store holding "pii" v1, with kek as
// the provider.
func benchCache(b *testing.B, kek keystore.KEK) *keycache.Cache {
	b.Helper()
	st, err := keystore.OpenBolt(filepath.Join(b.TempDir(), "keys.db"), keystore.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	m, err := keystore.NewManager(keystore.Config{Store: st, KEK: kek})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Create(context.Background(), "pii", 0, false); err != nil {
		b.Fatal(err)
	}
	c := keycache.New(m, keycache.Options{})
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkOpenKeyHit is the request path with a warm cache: every field
// token opened asks for its key version once.
func BenchmarkOpenKeyHit(b *testing.B) {
	c := benchCache(b, keystoretest.NewFakeKEK())
	ctx := context.Background()
	if _, err := c.OpenKey(ctx, "pii", 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.OpenKey(ctx, "pii", 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSealKeyHit adds the cached primary lookup and the usage check.
func BenchmarkSealKeyHit(b *testing.B) {
	c := benchCache(b, keystoretest.NewFakeKEK())
	ctx := context.Background()
	if _, err := c.SealKey(ctx, "pii"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.SealKey(ctx, "pii"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchMiss measures a miss: store read (bbolt open per operation), state
// check, unwrap, fingerprint check and the fieldcrypt subkey derivation.
func benchMiss(b *testing.B, kek keystore.KEK) {
	c := benchCache(b, kek)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Purge("pii", 1)
		if _, err := c.OpenKey(ctx, "pii", 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMissFake uses the in-memory test provider (AES-GCM wrap).
func BenchmarkMissFake(b *testing.B) { benchMiss(b, keystoretest.NewFakeKEK()) }

// BenchmarkMissSoftware uses the software provider (AES-KWP, RFC 5649,
// under a KEK held in memory). The SoftHSM2 unwrap latency is measured by
// the hsm package's benchmarks; a miss against an HSM costs that plus the
// rest of this benchmark.
func BenchmarkMissSoftware(b *testing.B) { benchMiss(b, hsmtest.NewSoftware(b)) }
