package keycache_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	ctx   context.Context
	path  string
	store *keystore.BoltStore
	kek   *keystoretest.FakeKEK
	rec   *keystoretest.Recorder
	clock *clock
	m     *keystore.Manager
	c     *keycache.Cache
}

// newFixture builds a manager on a fresh store with keys "pii" (v1 active)
// and "contact" (v1 active), and a cache in front of it. ZeroGrace is
// negative so that evicted keys are zeroed at once and tests can see it.
func newFixture(t *testing.T, opts keycache.Options) *fixture {
	t.Helper()
	f := &fixture{
		ctx:   audit.WithActor(context.Background(), "proxy"),
		path:  filepath.Join(t.TempDir(), "keys.db"),
		kek:   keystoretest.NewFakeKEK(),
		rec:   &keystoretest.Recorder{},
		clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	var err error
	if f.store, err = keystore.OpenBolt(f.path, keystore.BoltOptions{PollInterval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if f.m, err = keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pii", "contact"} {
		if _, err := f.m.Create(f.ctx, n, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if opts.ZeroGrace == 0 {
		opts.ZeroGrace = -1
	}
	if opts.Now == nil {
		opts.Now = f.clock.Now
	}
	f.c = keycache.New(f.m, opts)
	t.Cleanup(func() { f.c.Close() })
	return f
}

// eventually polls cond; the deadline only keeps a broken test from
// hanging, it is not a performance assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHitAndMiss(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	k1, err := f.c.OpenKey(f.ctx, "pii", 1)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := f.c.OpenKey(f.ctx, "pii", 1)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 || k1.Name() != "pii" || k1.Version() != 1 {
		t.Fatalf("second OpenKey returned %v, want the cached %v", k2, k1)
	}
	sk, err := f.c.SealKey(f.ctx, "pii")
	if err != nil || sk != k1 {
		t.Fatalf("SealKey = %v, %v; want the cached primary", sk, err)
	}
	st := f.c.Stats()
	if st.Misses != 1 || st.Hits != 2 || st.Unwraps != 1 || f.kek.Unwraps() != 3 || st.Entries != 1 {
		// 3 provider unwraps: create's verification, then one miss.
		t.Fatalf("stats %+v, provider unwraps %d", st, f.kek.Unwraps())
	}
	if st.UnwrapLatencyCount != 1 || st.UnwrapLatencySum <= 0 {
		t.Fatalf("latency not recorded: %+v", st)
	}
	last := st.UnwrapLatencyBuckets[len(st.UnwrapLatencyBuckets)-1]
	if last.Le != 0 || last.Count != 1 {
		t.Fatalf("histogram +Inf bucket = %+v, want count 1", last)
	}
	// The key really is the stored one: it opens what it sealed.
	tok, err := fieldcrypt.SealString(k1, fieldcrypt.ModeRandom, "123-45-6789")
	if err != nil {
		t.Fatal(err)
	}
	if _, pt, err := fieldcrypt.OpenToken(k2, tok); err != nil || string(pt) != `"123-45-6789"` {
		t.Fatalf("open = %q, %v", pt, err)
	}
}

// TestSingleflight: 256 goroutines miss the same version at once; the HSM
// sees exactly one unwrap.
func TestSingleflight(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	const n = 256
	before := f.kek.Unwraps()
	// Hold the unwrap until every goroutine has missed, so that without
	// singleflight all 256 would be unwrapping at once.
	f.kek.UnwrapHook = func() {
		eventually(t, "all goroutines to miss", func() bool { return f.c.Stats().Misses >= n })
	}
	var wg sync.WaitGroup
	keys := make([]*fieldcrypt.DataKey, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = f.c.OpenKey(f.ctx, "pii", 1)
		}()
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil || keys[i] != keys[0] {
			t.Fatalf("goroutine %d: %v, %v", i, keys[i], errs[i])
		}
	}
	if got := f.kek.Unwraps() - before; got != 1 {
		t.Fatalf("%d goroutines caused %d HSM unwraps, want 1", n, got)
	}
	if st := f.c.Stats(); st.Unwraps != 1 || st.Misses != n {
		t.Fatalf("stats: %+v", st)
	}
}

func TestUsageLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     keycache.Options
		seal     func(k *fieldcrypt.DataKey) error
		perEntry int // seals one copy may do
	}{
		{"messages", keycache.Options{MaxMessages: 3}, func(k *fieldcrypt.DataKey) error {
			_, err := fieldcrypt.SealString(k, fieldcrypt.ModeRandom, "x")
			return err
		}, 3},
		{"bytes", keycache.Options{MaxBytes: 100}, func(k *fieldcrypt.DataKey) error {
			// 42 bytes of JSON text a time: the third seal crosses 100.
			_, err := fieldcrypt.SealValue(k, fieldcrypt.ModeRandom, fieldcrypt.TypeString, []byte(`"0123456789012345678901234567890123456789"`))
			return err
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			first, err := f.c.SealKey(f.ctx, "pii")
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.perEntry; i++ {
				k, err := f.c.SealKey(f.ctx, "pii")
				if err != nil || k != first {
					t.Fatalf("seal %d: got a new copy before the limit", i)
				}
				if err := tc.seal(k); err != nil {
					t.Fatal(err)
				}
			}
			next, err := f.c.SealKey(f.ctx, "pii")
			if err != nil {
				t.Fatal(err)
			}
			if next == first {
				t.Fatal("a copy past its usage limit was handed out again")
			}
			if !first.Zeroed() {
				t.Fatal("the dropped copy was not zeroed")
			}
			if m, _ := next.Usage(); m != 0 {
				t.Fatalf("the fresh copy starts with %d messages", m)
			}
			st := f.c.Stats()
			if st.LimitDrops != 1 || st.Unwraps != 2 {
				t.Fatalf("stats: %+v", st)
			}
			// OpenKey is not limited: opening is not sealing.
			if _, err := f.c.OpenKey(f.ctx, "pii", 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExpiryAndSizeEviction(t *testing.T) {
	t.Run("ttl", func(t *testing.T) {
		f := newFixture(t, keycache.Options{TTL: 30 * time.Millisecond})
		k, err := f.c.OpenKey(f.ctx, "pii", 1)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the expired key to be zeroed", k.Zeroed)
		k2, err := f.c.OpenKey(f.ctx, "pii", 1)
		if err != nil || k2 == k || k2.Zeroed() {
			t.Fatalf("after expiry: %v, %v", k2, err)
		}
		if st := f.c.Stats(); st.Evictions < 1 || st.Unwraps != 2 {
			t.Fatalf("stats: %+v", st)
		}
	})
	t.Run("size", func(t *testing.T) {
		f := newFixture(t, keycache.Options{Size: 1})
		k1, _ := f.c.OpenKey(f.ctx, "pii", 1)
		k2, _ := f.c.OpenKey(f.ctx, "contact", 1)
		if !k1.Zeroed() || k2.Zeroed() {
			t.Fatalf("size eviction: pii zeroed %v, contact zeroed %v", k1.Zeroed(), k2.Zeroed())
		}
		if st := f.c.Stats(); st.Evictions != 1 || st.Entries != 1 {
			t.Fatalf("stats: %+v", st)
		}
	})
	t.Run("grace", func(t *testing.T) {
		f := newFixture(t, keycache.Options{Size: 1, ZeroGrace: time.Hour})
		k1, _ := f.c.OpenKey(f.ctx, "pii", 1)
		f.c.OpenKey(f.ctx, "contact", 1)
		if k1.Zeroed() {
			t.Fatal("an evicted key was zeroed before its grace period, under a request that may hold it")
		}
		// Close does not wait for the grace period.
		f.c.Close()
		if !k1.Zeroed() {
			t.Fatal("Close left an evicted key unzeroed")
		}
	})
}

func TestPurge(t *testing.T) {
	f := newFixture(t, keycache.Options{ZeroGrace: time.Hour})
	k, _ := f.c.OpenKey(f.ctx, "pii", 1)
	other, _ := f.c.OpenKey(f.ctx, "contact", 1)
	f.c.Purge("pii", 1)
	if !k.Zeroed() {
		t.Fatal("Purge did not zero at once")
	}
	if other.Zeroed() {
		t.Fatal("Purge zeroed another key")
	}
	k2, err := f.c.OpenKey(f.ctx, "pii", 1)
	if err != nil || k2 == k {
		t.Fatalf("after purge: %v, %v", k2, err)
	}
	f.c.PurgeKey("contact")
	if !other.Zeroed() || k2.Zeroed() {
		t.Fatal("PurgeKey zeroed the wrong keys")
	}
	f.c.PurgeAll()
	if !k2.Zeroed() || f.c.Len() != 0 {
		t.Fatal("PurgeAll left keys")
	}
	if st := f.c.Stats(); st.Purges != 3 {
		t.Fatalf("purges = %d, want 3", st.Purges)
	}
}

// TestStateChangesThroughWatch runs the cache's watcher on its own Store
// instance and changes keys through another, as `sidecrypt keys` in another
// process would.
func TestStateChangesThroughWatch(t *testing.T) {
	f := newFixture(t, keycache.Options{TTL: time.Hour, PrimaryTTL: time.Hour})
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	watchStore, err := keystore.OpenBolt(f.path, keystore.BoltOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx, watchStore) }()

	v1, err := f.c.SealKey(f.ctx, "pii")
	if err != nil || v1.Version() != 1 {
		t.Fatal(err)
	}
	// Rotate elsewhere: SealKey must move to v2 without waiting for the
	// (hour-long) primary TTL, and v1 still opens.
	if _, err := f.m.Rotate(f.ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher to purge pii", v1.Zeroed)
	v2, err := f.c.SealKey(f.ctx, "pii")
	if err != nil || v2.Version() != 2 {
		t.Fatalf("SealKey after rotation = %v, %v; want v2", v2, err)
	}
	if k, err := f.c.OpenKey(f.ctx, "pii", 1); err != nil || k.Zeroed() {
		t.Fatalf("a deactivated version must still open: %v", err)
	}

	// Destroy v1 elsewhere: the cached copy is zeroed and the version no
	// longer opens.
	k1, _ := f.c.OpenKey(f.ctx, "pii", 1)
	if _, err := f.m.Destroy(f.ctx, "pii", 1, "shred"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the destroyed version to be zeroed", k1.Zeroed)
	if _, err := f.c.OpenKey(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrDestroyed) {
		t.Fatalf("OpenKey of a destroyed version: %v", err)
	}

	// Compromise the primary: nothing seals under pii until a rotation.
	k2, _ := f.c.SealKey(f.ctx, "pii")
	if _, err := f.m.Revoke(f.ctx, "pii", 2, keystore.StateCompromised, "leak"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the compromised version to be zeroed", k2.Zeroed)
	if _, err := f.c.SealKey(f.ctx, "pii"); !errors.Is(err, keystore.ErrNoPrimary) {
		t.Fatalf("SealKey with the primary compromised: %v", err)
	}
	if _, err := f.c.OpenKey(f.ctx, "pii", 2); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("OpenKey of a compromised version: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestOverrideExpiresInCache(t *testing.T) {
	f := newFixture(t, keycache.Options{TTL: time.Hour})
	f.m.Rotate(f.ctx, "pii", 0)
	f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "leak")
	if _, err := f.m.Override(f.ctx, "pii", 1, f.clock.Now().Add(time.Hour), "export"); err != nil {
		t.Fatal(err)
	}
	k, err := f.c.OpenKey(f.ctx, "pii", 1)
	if err != nil {
		t.Fatalf("OpenKey under override: %v", err)
	}
	f.clock.Advance(time.Hour + time.Second)
	if _, err := f.c.OpenKey(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("OpenKey after the override ended: %v", err)
	}
	if !k.Zeroed() {
		t.Fatal("the overridden copy outlived its override")
	}
}

func TestRefusalsAreRememberedBriefly(t *testing.T) {
	f := newFixture(t, keycache.Options{PrimaryTTL: time.Minute})
	f.m.Rotate(f.ctx, "pii", 0)
	f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "leak")
	for i := 0; i < 5; i++ {
		if _, err := f.c.OpenKey(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
			t.Fatal(err)
		}
	}
	if n := len(f.rec.Find("key.unwrap")); n != 1 {
		t.Fatalf("%d refusal events for 5 tries within PrimaryTTL, want 1", n)
	}
	f.clock.Advance(2 * time.Minute)
	f.c.OpenKey(f.ctx, "pii", 1)
	if n := len(f.rec.Find("key.unwrap")); n != 2 {
		t.Fatalf("%d refusal events after PrimaryTTL, want 2", n)
	}
	// An override is seen at once after a purge (the watcher's job).
	f.m.Override(f.ctx, "pii", 1, f.clock.Now().Add(time.Hour), "export")
	f.c.PurgeKey("pii")
	if _, err := f.c.OpenKey(f.ctx, "pii", 1); err != nil {
		t.Fatalf("after override and purge: %v", err)
	}
}

func TestPurgeDuringUnwrapIsNotCached(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	release := make(chan struct{})
	entered := make(chan struct{})
	var once sync.Once
	f.kek.UnwrapHook = func() { once.Do(func() { close(entered); <-release }) }
	done := make(chan error, 1)
	go func() { _, err := f.c.OpenKey(f.ctx, "pii", 1); done <- err }()
	<-entered
	f.c.PurgeKey("pii") // e.g. a revoke seen while the unwrap was in flight
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.c.Len() != 0 {
		t.Fatal("a key unwrapped across a purge was cached")
	}
	before := f.c.Stats().Unwraps
	f.c.OpenKey(f.ctx, "pii", 1)
	if f.c.Stats().Unwraps != before+1 {
		t.Fatal("the next OpenKey did not go back to the store")
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	for _, tc := range []struct {
		name string
		call func() error
		want []error
	}{
		{"unknown key", func() error { _, err := f.c.OpenKey(f.ctx, "nope", 1); return err },
			[]error{fieldcrypt.ErrUnknownKey, keystore.ErrNotFound}},
		{"unknown version", func() error { _, err := f.c.OpenKey(f.ctx, "pii", 9); return err },
			[]error{fieldcrypt.ErrUnknownKey, keystore.ErrNotFound}},
		{"seal unknown key", func() error { _, err := f.c.SealKey(f.ctx, "nope"); return err },
			[]error{fieldcrypt.ErrUnknownKey}},
		{"hsm down", func() error {
			f.kek.SetUnavailable(true)
			defer f.kek.SetUnavailable(false)
			_, err := f.c.OpenKey(f.ctx, "contact", 1)
			return err
		}, []error{hsm.ErrUnavailable}},
		{"store locked", func() error {
			st, err := keystore.OpenBolt(f.path, keystore.BoltOptions{LockTimeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			m, _ := keystore.NewManager(keystore.Config{Store: st, KEK: f.kek})
			c := keycache.New(m, keycache.Options{})
			defer c.Close()
			fh, _ := os.OpenFile(f.path, os.O_RDWR, 0)
			defer fh.Close()
			syscall.Flock(int(fh.Fd()), syscall.LOCK_EX)
			defer syscall.Flock(int(fh.Fd()), syscall.LOCK_UN)
			_, err = c.OpenKey(f.ctx, "contact", 1)
			return err
		}, []error{keystore.ErrUnavailable}},
		{"closed", func() error {
			c := keycache.New(f.m, keycache.Options{})
			c.Close()
			_, err := c.OpenKey(f.ctx, "pii", 1)
			return err
		}, []error{keycache.ErrClosed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("err = %v, want it to wrap %v", err, w)
				}
			}
		})
	}
	if st := f.c.Stats(); st.UnwrapErrors != 1 {
		t.Fatalf("unwrap errors = %d, want 1 (the HSM outage)", st.UnwrapErrors)
	}
	// The outage was not remembered: the key opens once the HSM is back.
	if _, err := f.c.OpenKey(f.ctx, "contact", 1); err != nil {
		t.Fatal(err)
	}
}

func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	release := make(chan struct{})
	f.kek.UnwrapHook = func() { <-release }
	ctx, cancel := context.WithCancel(f.ctx)
	first := make(chan error, 1)
	go func() { _, err := f.c.OpenKey(ctx, "pii", 1); first <- err }()
	eventually(t, "the first miss", func() bool { return f.c.Stats().Misses == 1 })
	second := make(chan error, 1)
	go func() { _, err := f.c.OpenKey(f.ctx, "pii", 1); second <- err }()
	eventually(t, "the second miss", func() bool { return f.c.Stats().Misses == 2 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("the other caller failed with the first one's cancellation: %v", err)
	}
}

func TestCached(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	both := []string{"pii", "contact"}
	if f.c.Cached(both) {
		t.Fatal("an empty cache claims to hold keys")
	}
	f.c.SealKey(f.ctx, "pii")
	if !f.c.Cached([]string{"pii"}) || f.c.Cached(both) {
		t.Fatal("Cached does not reflect which primaries are held")
	}
	f.c.SealKey(f.ctx, "contact")
	// With the HSM gone, what is cached still seals.
	f.kek.SetUnavailable(true)
	if !f.c.Cached(both) {
		t.Fatal("both primaries are cached")
	}
	if _, err := f.c.SealKey(f.ctx, "pii"); err != nil {
		t.Fatalf("sealing from the cache with the HSM down: %v", err)
	}
	f.c.PurgeKey("contact")
	if f.c.Cached(both) {
		t.Fatal("a purged key still counts as cached")
	}
	if _, err := f.c.SealKey(f.ctx, "contact"); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("sealing an uncached key with the HSM down: %v", err)
	}
	if f.c.Cached([]string{}) != true {
		t.Fatal("no keys needed: nothing missing")
	}
}
