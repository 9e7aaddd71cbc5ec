package keycache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// seal seals n values under name's primary through c, as the proxy does:
// one SealKey per request (of per values), then fieldcrypt seals. A
// rotation purges the key's cached versions at once (keycache.Run), so a
// request in flight may find its copy zeroed: it fails (the proxy answers
// 503) and the next one seals under the new primary.
func seal(t *testing.T, ctx context.Context, c *keycache.Cache, name string, n, per int) (versions map[uint32]int) {
	t.Helper()
	versions = map[uint32]int{}
	for done := 0; done < n; {
		k, err := c.SealKey(ctx, name)
		if err != nil {
			t.Fatalf("SealKey after %d seals: %v", done, err)
		}
		for i := 0; i < per && done < n; i++ {
			if _, err := fieldcrypt.SealString(k, fieldcrypt.ModeRandom, "value"); errors.Is(err, fieldcrypt.ErrKeyZeroed) {
				break
			} else if err != nil {
				t.Fatalf("seal: %v", err)
			}
			versions[k.Version()]++
			done++
		}
	}
	return versions
}

// reserved reads version's shared seal count from the keystore.
func reserved(t *testing.T, m *keystore.Manager, name string, version uint32) uint64 {
	t.Helper()
	keys, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	us, err := m.Usages(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	return keystore.UsageOf(us, name, version, m.SealLimit()).Reserved
}

// The count lives in the keystore, not in the process: a restarted
// sidecar (a new cache and manager on the same store) continues from it,
// and what the old one sealed past its last SealKey is charged when its
// copies are zeroed on Close.
func TestSealCountSurvivesRestart(t *testing.T) {
	f := newFixture(t, keycache.Options{SealBlock: 100})
	seal(t, f.ctx, f.c, "pii", 250, 7)
	f.c.Close()
	after := reserved(t, f.m, "pii", 1)
	if after < 250 {
		t.Fatalf("keystore count after sealing 250 values: %d; want at least 250", after)
	}

	m2, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	c2 := keycache.New(m2, keycache.Options{SealBlock: 100, ZeroGrace: -1})
	defer c2.Close()
	seal(t, f.ctx, c2, "pii", 150, 10)
	if got := reserved(t, m2, "pii", 1); got < after+150 {
		t.Fatalf("after a restart and 150 more: count %d; want at least %d (it restarted)", got, after+150)
	}
	if len(f.rec.Find("key.seals.reserve")) < 4 {
		t.Fatalf("reservations are audited: %d events", len(f.rec.Find("key.seals.reserve")))
	}
}

// A request that seals past the budget (a large bulk write) is charged at
// the next SealKey, and the refill reserves the overshoot too: the
// keystore's count is never below what was sealed.
func TestSealOvershootIsCharged(t *testing.T) {
	f := newFixture(t, keycache.Options{SealBlock: 50})
	seal(t, f.ctx, f.c, "pii", 1000, 400) // each request seals 400 > block
	if _, err := f.c.SealKey(f.ctx, "pii"); err != nil {
		t.Fatal(err)
	}
	if got := reserved(t, f.m, "pii", 1); got < 1000 {
		t.Fatalf("count %d after 1000 seals in requests of 400 with blocks of 50", got)
	}
}

// At the limit the key is rotated, in the request if need be, and sealing
// goes on under the new version; the rotation is audited with its reason.
func TestSealLimitRotates(t *testing.T) {
	f := newFixture(t, keycache.Options{SealBlock: 50, RotateAhead: 1})
	m, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now, SealLimit: 300})
	if err != nil {
		t.Fatal(err)
	}
	c := keycache.New(m, keycache.Options{SealBlock: 50, RotateAhead: 1, ZeroGrace: -1, Now: f.clock.Now})
	defer c.Close()
	go c.Run(f.ctx, f.store)
	vs := seal(t, f.ctx, c, "pii", 900, 5)
	if vs[1] > 300 || vs[1] < 250 {
		t.Fatalf("v1 sealed %d values; the limit is 300 (and a block is 50)", vs[1])
	}
	if len(vs) < 3 {
		t.Fatalf("900 seals at a limit of 300 used versions %v; want rotations to v3 at least", vs)
	}
	for v := range vs {
		if got := reserved(t, m, "pii", v); got > 300 {
			t.Errorf("v%d count %d is past the limit 300", v, got)
		}
	}
	k, err := m.Get(f.ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	if k.Lookup(1).State != keystore.StateDeactivated {
		t.Errorf("v1 after rotation: %s", k.Lookup(1).State)
	}
	rot := 0
	for _, e := range f.rec.Find("key.rotate") {
		if e.Details["trigger"] == "seal-limit" && e.Outcome == "ok" && e.Details["noop"] == "" {
			rot++
		}
	}
	if rot < 2 {
		t.Fatalf("%d rotations audited with trigger seal-limit; want 2 or more: %+v", rot, f.rec.Find("key.rotate"))
	}
	if st := c.Stats(); st.SealLimitRotations == 0 || st.SealReservations == 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// At the limit with rotation impossible (the HSM cannot wrap a new key),
// sealing is refused: fail closed, never past the limit.
func TestSealLimitWithoutRotationFailsClosed(t *testing.T) {
	f := newFixture(t, keycache.Options{})
	m, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now, SealLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	// One block is the whole limit: the version runs out without a
	// rotation racing the test.
	c := keycache.New(m, keycache.Options{SealBlock: 100, RotateAhead: 1, ZeroGrace: -1, Now: f.clock.Now})
	defer c.Close()
	seal(t, f.ctx, c, "pii", 100, 1) // exactly the limit
	f.kek.SetUnavailable(true)       // cached keys still seal; no new key can be made
	before := c.Stats().SealRefusals
	for range 3 {
		k, err := c.SealKey(f.ctx, "pii")
		if !errors.Is(err, keystore.ErrSealLimit) || k != nil {
			t.Fatalf("SealKey at the limit with the HSM down = %v, %v; want ErrSealLimit", k, err)
		}
	}
	if c.Stats().SealRefusals == before {
		t.Fatal("refusals not counted")
	}
	f.kek.SetUnavailable(false)
	if got := reserved(t, m, "pii", 1); got != 100 {
		t.Fatalf("count %d; want exactly the limit 100", got)
	}
	f.clock.Advance(2 * time.Second) // past the remembered failure
	k, err := c.SealKey(f.ctx, "pii")
	if err != nil || k.Version() != 2 {
		t.Fatalf("with the HSM back: %v, %v; want v2", k, err)
	}
}

// Two sidecars on one etcd share each version's count: their reservations
// add up, and neither goes past the limit.
func TestSealCountSharedOnEtcd(t *testing.T) {
	e := testenv.StartEtcd(t)
	kek := keystoretest.NewFakeKEK()
	ctx := audit.WithActor(context.Background(), "test")
	url := fmt.Sprintf("etcd://%s/seal-count", e.Hosts())
	var managers []*keystore.Manager
	var caches []*keycache.Cache
	for range 2 {
		st, err := keystore.OpenEtcd(url, keystore.EtcdTLS{}, keystore.EtcdOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		m, err := keystore.NewManager(keystore.Config{Store: st, KEK: kek, SealLimit: 2000})
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, m)
		c := keycache.New(m, keycache.Options{SealBlock: 64, RotateAhead: 1, ZeroGrace: -1})
		t.Cleanup(func() { c.Close() })
		caches = append(caches, c)
	}
	if _, err := managers[0].Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var v1 atomic.Int64
	for _, c := range caches {
		wg.Go(func() {
			vs := seal(t, ctx, c, "pii", 700, 3)
			v1.Add(int64(vs[1]))
		})
	}
	wg.Wait()
	for _, c := range caches {
		c.Close() // charges what was sealed since the last SealKey
	}
	got := reserved(t, managers[1], "pii", 1)
	if got < uint64(v1.Load()) || got > 2000 {
		t.Fatalf("shared count %d; the two sidecars sealed %d under v1 (limit 2000)", got, v1.Load())
	}
	if v1.Load() != 1400 {
		t.Fatalf("v1 sealed %d of 1400 values under a limit of 2000", v1.Load())
	}
	// Each reserved blocks of 64 from the same counter: together they
	// hold more than either alone could have reserved.
	if got < 1400 {
		t.Fatalf("count %d < 1400", got)
	}
}

// A rotation by another process while this one's primary is still cached
// and its budget empty: the reservation for the old primary is refused,
// and SealKey asks for the new primary instead of failing the request.
func TestSealAfterAnotherProcessRotated(t *testing.T) {
	f := newFixture(t, keycache.Options{SealBlock: 10, PrimaryTTL: time.Hour})
	seal(t, f.ctx, f.c, "pii", 10, 10) // the first block, used up
	m2, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Rotate(f.ctx, "pii", 1); err != nil {
		t.Fatal(err)
	}
	k, err := f.c.SealKey(f.ctx, "pii") // no watch running: v1 is still the cached primary
	if err != nil || k.Version() != 2 {
		t.Fatalf("SealKey after a rotation elsewhere = %v, %v; want v2", k, err)
	}
}
