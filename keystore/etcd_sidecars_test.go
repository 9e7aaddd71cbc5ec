package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
	"github.com/sidecrypt/sidecrypt/keystore/storetest"
)

// sidecarKeys is the key side of one sidecar on a shared etcd keystore:
// its own etcd connection, Manager, and key cache following the store's
// watch, exactly as `sidecrypt serve` wires them.
type sidecarKeys struct {
	store *keystore.EtcdStore
	m     *keystore.Manager
	cache *keycache.Cache
}

func startSidecarKeys(t *testing.T, hosts, prefix string, kek keystore.KEK, copts keycache.Options, sopts keystore.EtcdOptions) *sidecarKeys {
	t.Helper()
	s := &sidecarKeys{store: openEtcd(t, hosts, prefix, sopts)}
	var err error
	if s.m, err = keystore.NewManager(keystore.Config{Store: s.store, KEK: kek}); err != nil {
		t.Fatal(err)
	}
	if copts.ZeroGrace == 0 {
		copts.ZeroGrace = -1
	}
	s.cache = keycache.New(s.m, copts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.cache.Run(ctx, s.store) }()
	t.Cleanup(func() { cancel(); <-done; s.cache.Close() })
	return s
}

// warm makes the sidecar hold name's primary and version v.
func (s *sidecarKeys) warm(t *testing.T, name string, v uint32) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.cache.SealKey(ctx, name); err != nil {
		t.Fatalf("warm seal %s: %v", name, err)
	}
	if _, err := s.cache.OpenKey(ctx, name, v); err != nil {
		t.Fatalf("warm open %s v%d: %v", name, v, err)
	}
}

// TestEtcdRevocationPropagation measures, with five sidecars sharing an
// etcd keystore, the time from an operator's revoke or destroy call to
// the moment the last sidecar refuses the key version. Each sidecar holds
// the version in its cache (5-minute TTL) when the call is made, so only
// the watch can make it refuse. The times are logged (docs/BENCHMARKS.md,
// "propagation"); the test asserts only that all five refuse.
func TestEtcdRevocationPropagation(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "admin:test")
	e := testenv.StartEtcd(t)
	prefix := freshPrefix(t.Name())
	kek := keystoretest.NewFakeKEK()
	const n = 5
	var sidecars []*sidecarKeys
	for i := 0; i < n; i++ {
		sidecars = append(sidecars, startSidecarKeys(t, e.Hosts(), prefix, kek, keycache.Options{TTL: 5 * time.Minute}, keystore.EtcdOptions{}))
	}
	operator, err := keystore.NewManager(keystore.Config{Store: openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{}), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}

	const rounds = 6
	var lasts []time.Duration
	for r := 0; r < rounds; r++ {
		name := fmt.Sprintf("r%d", r)
		destroy := r%2 == 1
		if _, err := operator.Create(ctx, name, 0, false); err != nil {
			t.Fatal(err)
		}
		if destroy {
			// v1 stops sealing but still opens until it is destroyed.
			if _, err := operator.Rotate(ctx, name, 1); err != nil {
				t.Fatal(err)
			}
		}
		// Warm twice around a pause, so that the watch events of the
		// set-up have been handled and v1 is cached everywhere.
		for _, s := range sidecars {
			s.warm(t, name, 1)
		}
		time.Sleep(200 * time.Millisecond)
		for _, s := range sidecars {
			s.warm(t, name, 1)
		}

		refused := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		begin := make(chan struct{})
		var t0 time.Time
		for i, s := range sidecars {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-begin
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					if _, err := s.cache.OpenKey(ctx, name, 1); err != nil {
						refused[i], errs[i] = time.Since(t0), err
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
				errs[i] = errors.New("still opens after 20s")
			}()
		}
		t0 = time.Now()
		close(begin)
		var callErr error
		if destroy {
			_, callErr = operator.Destroy(ctx, name, 1, "propagation test")
		} else {
			_, callErr = operator.Revoke(ctx, name, 1, keystore.StateCompromised, "propagation test")
		}
		call := time.Since(t0)
		if callErr != nil {
			t.Fatal(callErr)
		}
		wg.Wait()
		want := keystore.ErrCompromised
		if destroy {
			want = keystore.ErrDestroyed
		}
		for i, err := range errs {
			if !errors.Is(err, want) {
				t.Fatalf("round %d: sidecar %d: %v, want %v", r, i, err, want)
			}
		}
		if !destroy {
			// The revoked version was the primary: nothing seals under
			// the key until it is rotated.
			for i, s := range sidecars {
				if _, err := s.cache.SealKey(ctx, name); !errors.Is(err, keystore.ErrNoPrimary) {
					t.Fatalf("round %d: sidecar %d still seals under a revoked primary: %v", r, i, err)
				}
			}
		}
		last := slices.Max(refused)
		lasts = append(lasts, last)
		what := "revoke (compromised)"
		if destroy {
			what = "destroy"
		}
		t.Logf("round %d, %s: operator call %v, first sidecar refused after %v, last of %d after %v",
			r, what, call.Round(time.Microsecond), slices.Min(refused).Round(time.Microsecond), n, last.Round(time.Microsecond))
	}
	slices.Sort(lasts)
	t.Logf("propagation to the last of %d sidecars over %d rounds: min %v, median %v, max %v",
		n, rounds, lasts[0].Round(time.Microsecond), lasts[len(lasts)/2].Round(time.Microsecond), lasts[len(lasts)-1].Round(time.Microsecond))
}

// TestEtcdOutageServesFromCacheThenFailsClosed: a sidecar that loses etcd
// keeps sealing and opening with its cached keys, is not ready, refuses
// once they expire, and recovers on its own when etcd is back.
func TestEtcdOutageServesFromCacheThenFailsClosed(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "proxy")
	e := testenv.StartEtcd(t)
	prefix := freshPrefix(t.Name())
	kek := keystoretest.NewFakeKEK()
	operator, err := keystore.NewManager(keystore.Config{Store: openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{}), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := operator.Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartTCPProxy(t, e.Hosts())
	const ttl = 2 * time.Second
	s := startSidecarKeys(t, proxy.Addr, prefix, kek,
		keycache.Options{TTL: ttl, PrimaryTTL: 100 * time.Millisecond},
		keystore.EtcdOptions{RequestTimeout: 500 * time.Millisecond, PingTimeout: 300 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
	s.warm(t, "pii", 1)
	warmed := time.Now()

	proxy.Cut()
	if err := s.store.Ping(ctx); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Ping with etcd cut off: %v, want ErrUnavailable (the sidecar reports not-ready)", err)
	}
	// Within the TTL: still serving, past PrimaryTTL too.
	time.Sleep(200 * time.Millisecond)
	if time.Since(warmed) < ttl-300*time.Millisecond {
		if _, err := s.cache.SealKey(ctx, "pii"); err != nil {
			t.Fatalf("seal from the cache during the outage: %v", err)
		}
		if _, err := s.cache.OpenKey(ctx, "pii", 1); err != nil {
			t.Fatalf("open from the cache during the outage: %v", err)
		}
	} else {
		t.Log("machine too slow to check serving within the TTL; checking the rest")
	}
	// Past the TTL: fail closed, with the store's error.
	eventually(t, "sealing fails closed once the key expires", func() bool {
		_, err := s.cache.SealKey(ctx, "pii")
		return errors.Is(err, keystore.ErrUnavailable)
	})
	if _, err := s.cache.OpenKey(ctx, "pii", 1); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("open after the TTL during the outage: %v, want ErrUnavailable", err)
	}
	if s.cache.Cached([]string{"pii"}) {
		t.Fatal("Cached reports keys that expired")
	}

	proxy.Heal()
	eventually(t, "the sidecar recovers when etcd is back", func() bool {
		_, err := s.cache.SealKey(ctx, "pii")
		return err == nil && s.store.Ping(ctx) == nil
	})
	if _, err := s.cache.OpenKey(ctx, "pii", 1); err != nil {
		t.Fatalf("open after recovery: %v", err)
	}
}

// TestEtcdRevokeDuringOutageTakesEffectOnReconnect: a revoke made while a
// sidecar is cut off from etcd (but other sidecars and the operator are
// not) reaches it when it reconnects, whether etcd still has the history
// or compacted it away meanwhile.
func TestEtcdRevokeDuringOutageTakesEffectOnReconnect(t *testing.T) {
	e := testenv.StartEtcd(t)
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacted=%v", compact), func(t *testing.T) {
			ctx := audit.WithActor(context.Background(), "admin:test")
			prefix := freshPrefix(t.Name())
			kek := keystoretest.NewFakeKEK()
			opStore := openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{})
			operator, err := keystore.NewManager(keystore.Config{Store: opStore, KEK: kek})
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"pii", "contact"} {
				if _, err := operator.Create(ctx, name, 0, false); err != nil {
					t.Fatal(err)
				}
			}
			proxy := testenv.StartTCPProxy(t, e.Hosts())
			s := startSidecarKeys(t, proxy.Addr, prefix, kek, keycache.Options{TTL: 5 * time.Minute},
				keystore.EtcdOptions{RequestTimeout: 500 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
			s.warm(t, "pii", 1)
			s.warm(t, "contact", 1)

			proxy.Cut()
			eventually(t, "the sidecar sees the cut", func() bool { return s.store.Ping(ctx) != nil })
			if _, err := operator.Revoke(ctx, "pii", 1, keystore.StateCompromised, "leaked"); err != nil {
				t.Fatal(err)
			}
			if compact {
				bump, err := opStore.Put(ctx, storetest.Key("bump", 1))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := opStore.Client().Compact(ctx, bump.Revision); err != nil {
					t.Fatal(err)
				}
			}
			// Cut off, the sidecar cannot know yet: what it holds is
			// bounded by the cache TTL (docs/DEPLOY.md).
			if _, err := s.cache.OpenKey(ctx, "pii", 1); err != nil {
				t.Fatalf("cached key during the outage: %v", err)
			}
			proxy.Heal()
			eventually(t, "the revoke takes effect on reconnect", func() bool {
				_, err := s.cache.OpenKey(ctx, "pii", 1)
				return errors.Is(err, keystore.ErrCompromised)
			})
			if _, err := s.cache.SealKey(ctx, "pii"); !errors.Is(err, keystore.ErrNoPrimary) {
				t.Fatalf("seal under the revoked primary after reconnect: %v", err)
			}
			if _, err := s.cache.SealKey(ctx, "contact"); err != nil {
				t.Fatalf("an untouched key after reconnect: %v", err)
			}
		})
	}
}
