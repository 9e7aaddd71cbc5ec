package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
	"github.com/sidecrypt/sidecrypt/keystore/storetest"
)

var etcdPrefixes atomic.Int32

// freshPrefix gives each test its own keystore prefix on a shared etcd.
func freshPrefix(name string) string {
	return fmt.Sprintf("/%s-%d", strings.ToLower(strings.NewReplacer("/", "-", " ", "-").Replace(name)), etcdPrefixes.Add(1))
}

// openEtcd opens a store on hosts (host:port,...) under prefix, as one
// sidecar would, closed when the test ends.
func openEtcd(t testing.TB, hosts, prefix string, opts keystore.EtcdOptions) *keystore.EtcdStore {
	t.Helper()
	s, err := keystore.OpenEtcd("etcd://"+hosts+prefix, keystore.EtcdTLS{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eventually polls cond until it holds; the deadline only keeps a broken
// build from hanging (nothing here asserts a timing).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectEvents reads events until every name in want has been seen.
func expectEvents(t testing.TB, ch <-chan keystore.Event, want ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	deadline := time.After(20 * time.Second)
	for len(left) > 0 {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed; still waiting for %v", left)
			}
			delete(left, ev.Name)
		case <-deadline:
			t.Fatalf("no watch events for %v", left)
		}
	}
}

func TestEtcdUnavailableWhilePartitioned(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartEtcd(t)
	proxy := testenv.StartTCPProxy(t, e.Hosts())
	prefix := freshPrefix(t.Name())
	s := openEtcd(t, proxy.Addr, prefix, keystore.EtcdOptions{RequestTimeout: time.Second, PingTimeout: 500 * time.Millisecond})
	created, err := s.Put(ctx, storetest.Key("pii", 1))
	if err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	ops := []struct {
		name string
		do   func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"Get", func() error { _, err := s.Get(ctx, "pii"); return err }},
		{"List", func() error { _, err := s.List(ctx); return err }},
		{"Put", func() error {
			k := storetest.Key("pii", 2)
			k.Revision = created.Revision
			_, err := s.Put(ctx, k)
			return err
		}},
		{"Create", func() error { _, err := s.Put(ctx, storetest.Key("other", 2)); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			err := op.do()
			if !errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("%s while partitioned: %v, want ErrUnavailable", op.name, err)
			}
			if !strings.HasPrefix(err.Error(), "keystore: ") {
				t.Fatalf("error does not name the package: %v", err)
			}
		})
	}
	// The caller's own cancellation is not an outage.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	<-cctx.Done()
	if _, err := s.Get(cctx, "pii"); errors.Is(err, keystore.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with an expired context: %v", err)
	}

	proxy.Heal()
	eventually(t, "store reachable again after the partition heals", func() bool { return s.Ping(ctx) == nil })
	got, err := s.Get(ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing written during the partition: a Put whose outcome was
	// unknown must not have gone through behind the caller's back.
	if got.Revision != created.Revision {
		t.Fatalf("revision moved during the partition: %d -> %d", created.Revision, got.Revision)
	}
	storetest.CheckKey(t, got, 1)
}

// TestEtcdWatchAcrossPartition: a watcher cut off from etcd gets every
// change made meanwhile when it reconnects, whether etcd still has the
// history (resume) or has compacted it away (resync: every key reported).
func TestEtcdWatchAcrossPartition(t *testing.T) {
	e := testenv.StartEtcd(t)
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacted=%v", compact), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			proxy := testenv.StartTCPProxy(t, e.Hosts())
			prefix := freshPrefix(t.Name())
			admin := openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{})
			watcher := openEtcd(t, proxy.Addr, prefix, keystore.EtcdOptions{RequestTimeout: time.Second, RetryInterval: 50 * time.Millisecond})
			for _, n := range []string{"pii", "contact", "idle"} {
				if _, err := admin.Put(ctx, storetest.Key(n, 1)); err != nil {
					t.Fatal(err)
				}
			}
			ch, err := watcher.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			k, _ := admin.Get(ctx, "pii")
			k.Primary = 0
			if _, err := admin.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
			expectEvents(t, ch, "pii")

			proxy.Cut()
			// Let the client notice the broken connection.
			eventually(t, "watcher sees the partition", func() bool { return watcher.Ping(ctx) != nil })
			k, _ = admin.Get(ctx, "contact")
			k.Versions[0].State = keystore.StateCompromised
			if _, err := admin.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
			if compact {
				// Compaction keeps the revision it is given: write once
				// more so that the revoke's own revision is compacted.
				bump, err := admin.Put(ctx, storetest.Key("bump", 1))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := admin.Client().Compact(ctx, bump.Revision); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case ev := <-ch:
				t.Fatalf("an event came through a cut connection: %+v", ev)
			case <-time.After(100 * time.Millisecond):
			}
			proxy.Heal()
			if compact {
				// The history is gone: the watcher reports every key.
				expectEvents(t, ch, "contact", "pii", "idle", "bump")
			} else {
				expectEvents(t, ch, "contact")
			}
			// And it keeps following.
			k, _ = admin.Get(ctx, "idle")
			k.Primary = 0
			if _, err := admin.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
			expectEvents(t, ch, "idle")
		})
	}
}

// TestEtcdWatchStartedWhileDown: Watch does not fail while etcd is down;
// once etcd answers, it reports every key (it cannot know what changed).
func TestEtcdWatchStartedWhileDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := testenv.StartEtcd(t)
	proxy := testenv.StartTCPProxy(t, e.Hosts())
	prefix := freshPrefix(t.Name())
	admin := openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{})
	if _, err := admin.Put(ctx, storetest.Key("pii", 1)); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	watcher := openEtcd(t, proxy.Addr, prefix, keystore.EtcdOptions{RequestTimeout: 300 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch while etcd is unreachable: %v", err)
	}
	proxy.Heal()
	expectEvents(t, ch, "pii")
	if _, err := admin.Put(ctx, storetest.Key("later", 1)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "later")
}

// TestEtcdConcurrentRotation: sidecars rotating the same key at once, each
// through its own etcd connection and Manager, end with exactly one new
// version between them.
func TestEtcdConcurrentRotation(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "scheduler")
	e := testenv.StartEtcd(t)
	prefix := freshPrefix(t.Name())
	kek := keystoretest.NewFakeKEK()
	const sidecars = 5
	var managers []*keystore.Manager
	for i := 0; i < sidecars; i++ {
		m, err := keystore.NewManager(keystore.Config{Store: openEtcd(t, e.Hosts(), prefix, keystore.EtcdOptions{}), KEK: kek})
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, m)
	}
	if _, err := managers[0].Create(ctx, "pii", time.Hour, false); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, sidecars)
		for _, m := range managers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// What the scheduler does when the cryptoperiod ends:
				// rotate from the primary it saw.
				if _, err := m.Rotate(ctx, "pii", uint32(round)); err != nil {
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		k, err := managers[sidecars-1].Get(ctx, "pii")
		if err != nil {
			t.Fatal(err)
		}
		if len(k.Versions) != round+1 || k.Primary != uint32(round+1) {
			t.Fatalf("round %d: %d versions, primary v%d; want exactly one new version (v%d)", round, len(k.Versions), k.Primary, round+1)
		}
		for _, v := range k.Versions[:round] {
			if v.State != keystore.StateDeactivated {
				t.Fatalf("round %d: old v%d is %s, want deactivated", round, v.Version, v.State)
			}
		}
		// Every sidecar opens the new version (the KEK is shared).
		for i, m := range managers {
			dek, err := m.Unwrap(ctx, "pii", k.Primary)
			if err != nil {
				t.Fatalf("sidecar %d: unwrap v%d: %v", i, k.Primary, err)
			}
			clear(dek)
		}
	}
}

// TestEtcdClusterMemberDown: with one of three members stopped, the store
// keeps reading, writing and watching through the others.
func TestEtcdClusterMemberDown(t *testing.T) {
	if testing.Short() {
		t.Skip("three-member cluster")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := testenv.StartEtcdCluster(t, 3)
	prefix := freshPrefix(t.Name())
	// A write in flight when the leader dies waits out its timeout (etcd
	// drops the proposal); keep that short here.
	opts := keystore.EtcdOptions{RequestTimeout: time.Second, RetryInterval: 50 * time.Millisecond}
	s := openEtcd(t, e.Hosts(), prefix, opts)
	watcher := openEtcd(t, e.Hosts(), prefix, opts)
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, storetest.Key("pii", 1)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "pii")

	// Stop each member in turn (the leader among them), with the other
	// two up.
	for i, m := range e.Members {
		start := time.Now()
		m.Kill()
		name := fmt.Sprintf("k%d", i)
		// A request in flight when its member died may fail; the
		// client moves to another endpoint and the next one works.
		eventually(t, "a write with member "+m.Name+" down", func() bool {
			_, err := s.Put(ctx, storetest.Key(name, i))
			if errors.Is(err, keystore.ErrExists) {
				return true
			}
			return err == nil
		})
		got, err := s.Get(ctx, name)
		if err != nil {
			t.Fatalf("read with %s down: %v", m.Name, err)
		}
		storetest.CheckKey(t, got, i)
		expectEvents(t, ch, name)
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping with %s down: %v", m.Name, err)
		}
		t.Logf("member %s down: write, read and watch went on within %v", m.Name, time.Since(start).Round(time.Millisecond))
		m.Restart(t)
	}
	keys, err := s.List(ctx)
	if err != nil || len(keys) != 4 {
		t.Fatalf("List after the member failures: %d keys, %v", len(keys), err)
	}
}

// BenchmarkEtcdGet is the store read behind a key cache miss with an etcd
// keystore: one linearizable range read on loopback.
func BenchmarkEtcdGet(b *testing.B) {
	ctx := context.Background()
	e := testenv.StartEtcd(b)
	s := openEtcd(b, e.Hosts(), "/bench-get", keystore.EtcdOptions{})
	for i := 0; i < 20; i++ {
		if _, err := s.Put(ctx, storetest.Key(fmt.Sprintf("k%d", i), i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Get(ctx, "k7"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEtcdPut is one compare-and-swap transaction (a lifecycle
// change), committed to etcd's WAL with fsync.
func BenchmarkEtcdPut(b *testing.B) {
	ctx := context.Background()
	e := testenv.StartEtcd(b)
	s := openEtcd(b, e.Hosts(), "/bench-put", keystore.EtcdOptions{})
	k, err := s.Put(ctx, storetest.Key("k", 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if k, err = s.Put(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
}
