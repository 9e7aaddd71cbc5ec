package scheduler

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// clock is a settable clock shared by the manager and the scheduler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	m     *keystore.Manager
	kek   *keystoretest.FakeKEK
	clock *clock
	path  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.db")
	store, err := keystore.OpenBolt(path, keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	kek := keystoretest.NewFakeKEK()
	m, err := keystore.NewManager(keystore.Config{Store: store, KEK: kek, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, kek: kek, clock: c, path: path}
}

func (f *fixture) scheduler(opts Options) *Scheduler {
	opts.Now = f.clock.Now
	if opts.RewrapRate == 0 {
		opts.RewrapRate = 10000 // tests do not wait for pacing
	}
	return New(f.m, opts)
}

func TestRotatesWhenCryptoperiodEnds(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, "pii", 90*24*time.Hour, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Create(ctx, "forever", 0, false); err != nil {
		t.Fatal(err)
	}
	var rotated []string
	s := f.scheduler(Options{Hooks: Hooks{Rotated: func(k, trigger string) { rotated = append(rotated, k+":"+trigger) }}})

	// Before the cryptoperiod ends: nothing.
	f.clock.Advance(89 * 24 * time.Hour)
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := f.m.Get(ctx, "pii"); k.Primary != 1 {
		t.Fatalf("rotated early: primary v%d", k.Primary)
	}

	// After it: exactly one new primary; the old one decrypts only.
	f.clock.Advance(2 * 24 * time.Hour)
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ := f.m.Get(ctx, "pii")
	if k.Primary != 2 || len(k.Versions) != 2 {
		t.Fatalf("after cryptoperiod: primary v%d, %d versions", k.Primary, len(k.Versions))
	}
	if st := k.Lookup(1).State; st != keystore.StateDeactivated {
		t.Fatalf("old primary is %s, want deactivated", st)
	}
	if _, err := f.m.Unwrap(ctx, "pii", 1); err != nil {
		t.Fatalf("deactivated version must still decrypt: %v", err)
	}
	if k, _ := f.m.Get(ctx, "forever"); k.Primary != 1 {
		t.Fatal("a key without cryptoperiod was rotated")
	}
	// Running again at the same time does nothing more: v2 is fresh.
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := f.m.Get(ctx, "pii"); k.Primary != 2 {
		t.Fatalf("rotated twice: primary v%d", k.Primary)
	}
	if len(rotated) != 1 || rotated[0] != "pii:schedule" {
		t.Fatalf("hooks saw %v", rotated)
	}
}

// A key whose record fails its integrity check (edited in the file) is
// reported, and the other keys are still rotated on time.
func TestRotatesOthersWhenARecordFailsIntegrity(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, n := range []string{"pii", "tampered"} {
		if _, err := f.m.Create(ctx, n, 24*time.Hour, false); err != nil {
			t.Fatal(err)
		}
	}
	db, err := bolt.Open(f.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("sidecrypt-keys"))
		v := bytes.Replace(b.Get([]byte("tampered")), []byte(`"cryptoperiod":86400000000000`), []byte(`"cryptoperiod":1`), 1)
		return b.Put([]byte("tampered"), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(25 * time.Hour)
	err = f.scheduler(Options{}).RunOnce(ctx)
	if !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("RunOnce = %v; want the integrity failure reported", err)
	}
	if k, _ := f.m.Get(ctx, "pii"); k.Primary != 2 {
		t.Fatalf("the good key was not rotated: primary v%d", k.Primary)
	}
}

// TestTwoSchedulersRotateOnce: two sidecars' schedulers reaching the same
// due key at once make one new version, not two.
func TestTwoSchedulersRotateOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, "pii", time.Hour, false); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Hour)
	a, b := f.scheduler(Options{}), f.scheduler(Options{})
	var wg sync.WaitGroup
	for _, s := range []*Scheduler{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.RunOnce(ctx) }()
	}
	wg.Wait()
	k, _ := f.m.Get(ctx, "pii")
	if k.Primary != 2 || len(k.Versions) != 2 {
		t.Fatalf("concurrent schedulers: primary v%d, %d versions (want exactly one rotation)", k.Primary, len(k.Versions))
	}
}

func TestRewrapAfterKEKRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, name := range []string{"pii", "contact", "card"} {
		if _, err := f.m.Create(ctx, name, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.m.Rotate(ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	newKEK, err := f.m.RotateKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var retirable int
	s := f.scheduler(Options{Hooks: Hooks{Retirable: func(n int) { retirable = n }}})
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := f.m.List(ctx)
	for _, k := range keys {
		for _, v := range k.Versions {
			if v.KEKVersion != newKEK {
				t.Errorf("%s v%d still under KEK v%d", k.Name, v.Version, v.KEKVersion)
			}
			if _, err := f.m.Unwrap(ctx, k.Name, v.Version); err != nil {
				t.Errorf("%s v%d unreadable after re-wrap: %v", k.Name, v.Version, err)
			}
		}
	}
	st := s.Status()
	if st.Running || st.Done != 4 || st.Total != 4 || st.KEKVersion != newKEK {
		t.Fatalf("status %+v", st)
	}
	if retirable != 1 || len(st.Retirable) != 1 || st.Retirable[0] != 1 {
		t.Fatalf("KEK v1 should be reported retirable: hook %d, status %v", retirable, st.Retirable)
	}
}

func TestKEKCryptoperiod(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	s := f.scheduler(Options{KEKCryptoperiod: 365 * 24 * time.Hour})
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.kek.CurrentKEK(ctx); cur != 1 {
		t.Fatalf("KEK rotated early: v%d", cur)
	}
	// The fake KEK stamps versions with the real clock; move the
	// scheduler's clock past a year from now.
	f.clock.t = time.Now().Add(366 * 24 * time.Hour)
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.kek.CurrentKEK(ctx); cur != 2 {
		t.Fatalf("KEK not rotated after its cryptoperiod: v%d", cur)
	}
	// The same round re-wrapped the data key under it.
	k, _ := f.m.Get(ctx, "pii")
	if k.Lookup(1).KEKVersion != 2 {
		t.Fatalf("data key still under KEK v%d", k.Lookup(1).KEKVersion)
	}
}

func TestFollowerDoesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, "pii", time.Hour, false); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Hour)
	s := f.scheduler(Options{Leader: func() bool { return false }})
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := f.m.Get(ctx, "pii"); k.Primary != 1 {
		t.Fatal("a follower rotated")
	}
}

// TestHSMDownDuringRewrap: failures keep the old wrapped copy; the next
// round finishes the job.
func TestHSMDownDuringRewrap(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	s := f.scheduler(Options{})
	f.kek.SetUnavailable(true)
	_ = s.RunOnce(ctx)
	k, _ := f.m.Get(ctx, "pii")
	if k.Lookup(1).KEKVersion != 1 || len(k.Lookup(1).Wrapped) == 0 {
		t.Fatal("a failed re-wrap lost or changed the old wrapped copy")
	}
	f.kek.SetUnavailable(false)
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = f.m.Get(ctx, "pii")
	if k.Lookup(1).KEKVersion != 2 {
		t.Fatal("re-wrap did not resume")
	}
	if _, err := f.m.Unwrap(ctx, "pii", 1); err != nil {
		t.Fatal(err)
	}
}

func TestRunStopsAndRecoversPanics(t *testing.T) {
	f := newFixture(t)
	var calls atomic.Int32
	s := f.scheduler(Options{Interval: time.Millisecond, Leader: func() bool {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return false
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	for i := 0; calls.Load() < 3; i++ {
		if i > 5000 {
			t.Fatal("Run stopped after a panic")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}
