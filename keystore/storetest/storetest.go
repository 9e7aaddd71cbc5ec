// Package storetest is the conformance suite for keystore.Store: every
// implementation (the embedded bbolt file, etcd) must pass Run, so that the
// Manager, the key cache and the scheduler can rely on the same semantics
// whichever store a sidecar uses:
//
//   - Get of an absent key is ErrNotFound;
//   - Put with Revision 0 creates, and fails with ErrExists if the key
//     exists; Put with a revision updates only if it is still the stored
//     one, and fails with ErrConflict otherwise; a refused Put changes
//     nothing; every successful Put returns a new revision, which Get then
//     reports;
//   - List returns every key sorted by name;
//   - what Get, List and Put return are copies: editing them does not touch
//     the store;
//   - concurrent read-modify-write loops through two Stores on one backend
//     (two processes) lose no update;
//   - Watch reports a change made through another Store, and closes its
//     channel when its context ends;
//   - every record reports Writes (1 after the create, one more per Put)
//     and a non-zero Incarnation that stays the same across Puts, equal
//     in what Put returns and what Get and List read;
//   - Meta records have the same compare-and-swap, Writes and
//     Incarnation, are listed by prefix in id order, and are not reported
//     by Watch.
//
// Revisions are compared, never assumed: the embedded store counts from 1
// per key, etcd uses its cluster-wide revision.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/keystore"
)

// Backend makes a fresh, empty store for one test and returns a function
// that opens another Store on that same backend, as a second process
// would. Each Store it opens must be closed by the backend (t.Cleanup).
type Backend func(t *testing.T) (open func(t *testing.T) keystore.Store)

// Run runs the conformance suite against the stores that newBackend makes.
func Run(t *testing.T, newBackend Backend) {
	t.Run("PutCAS", func(t *testing.T) { testPutCAS(t, newBackend(t)) })
	t.Run("ListSortedAndCopies", func(t *testing.T) { testListSortedAndCopies(t, newBackend(t)) })
	t.Run("ConcurrentStores", func(t *testing.T) { testConcurrentStores(t, newBackend(t)) })
	t.Run("WatchSeesOtherStore", func(t *testing.T) { testWatch(t, newBackend(t)) })
	t.Run("WritesAndIncarnation", func(t *testing.T) { testStamps(t, newBackend(t)) })
	t.Run("Meta", func(t *testing.T) { testMeta(t, newBackend(t)) })
	t.Run("Ping", func(t *testing.T) {
		s := newBackend(t)(t)
		if err := s.Ping(context.Background()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

// Key returns a key whose content encodes n, so that a reader can check it
// came through whole. The wrapped bytes are filler: no KEK is involved.
func Key(name string, n int) *keystore.Key {
	wrapped := make([]byte, 72)
	for i := range wrapped {
		wrapped[i] = byte(n + i)
	}
	created := time.Unix(1700000000, 0).UTC()
	return &keystore.Key{
		Name: name, Primary: 1, Cryptoperiod: time.Duration(n) * time.Hour, Created: created,
		Versions: []keystore.Version{{
			Version: 1, State: keystore.StateActive, Algorithm: keystore.Algorithm, Wrapped: wrapped,
			KEKVersion: 1, Mechanism: "test", Fingerprint: fmt.Sprintf("fp-%d", n), Created: created,
		}},
	}
}

// CheckKey fails t unless k holds what Key(k.Name, n) wrote.
func CheckKey(t testing.TB, k *keystore.Key, n int) {
	t.Helper()
	want := Key(k.Name, n)
	if k.Cryptoperiod != want.Cryptoperiod || len(k.Versions) != 1 ||
		k.Versions[0].Fingerprint != want.Versions[0].Fingerprint ||
		string(k.Versions[0].Wrapped) != string(want.Versions[0].Wrapped) ||
		!k.Created.Equal(want.Created) || k.Versions[0].State != keystore.StateActive {
		t.Fatalf("key %s: content does not match what was written for %d: %+v", k.Name, n, k)
	}
}

func testPutCAS(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx := context.Background()
	s := open(t)
	created, err := s.Put(ctx, Key("pii", 1))
	if err != nil {
		t.Fatal(err)
	}
	if created.Revision == 0 {
		t.Fatal("Put returned revision 0 for a new key")
	}
	got, err := s.Get(ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	CheckKey(t, got, 1)
	if got.Revision != created.Revision {
		t.Fatalf("Get revision %d, Put returned %d", got.Revision, created.Revision)
	}

	// Each step runs on the store as the previous steps left it; rev is
	// the stored revision before the step.
	rev := created.Revision
	var firstUpdateRev int64
	tests := []struct {
		name     string
		key      func() *keystore.Key
		wantErr  error
		wantText string
	}{
		{"create existing", func() *keystore.Key { return Key("pii", 2) }, keystore.ErrExists, ""},
		{"stale revision", func() *keystore.Key { k := Key("pii", 2); k.Revision = rev + 1000; return k }, keystore.ErrConflict, ""},
		{"update unknown", func() *keystore.Key { k := Key("nope", 2); k.Revision = rev; return k }, keystore.ErrConflict, ""},
		{"invalid name", func() *keystore.Key { return Key("Bad Name", 2) }, nil, "invalid key name"},
		{"path in name", func() *keystore.Key { return Key("a/b", 2) }, nil, "invalid key name"},
		{"update", func() *keystore.Key { k := Key("pii", 2); k.Revision = rev; return k }, nil, ""},
		{"update again", func() *keystore.Key { k := Key("pii", 3); k.Revision = rev; return k }, nil, ""},
		{"replay of first update", func() *keystore.Key { k := Key("pii", 2); k.Revision = firstUpdateRev; return k }, keystore.ErrConflict, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := s.Get(ctx, "pii")
			if err != nil {
				t.Fatal(err)
			}
			out, err := s.Put(ctx, tc.key())
			if tc.wantErr != nil || tc.wantText != "" {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("Put: err = %v, want %v %q", err, tc.wantErr, tc.wantText)
				}
				after, err := s.Get(ctx, "pii")
				if err != nil {
					t.Fatal(err)
				}
				if after.Revision != before.Revision || after.Cryptoperiod != before.Cryptoperiod {
					t.Fatalf("a refused Put changed the record: %+v -> %+v", before, after)
				}
				if _, err := s.Get(ctx, "nope"); !errors.Is(err, keystore.ErrNotFound) {
					t.Fatalf("a refused Put created a key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if out.Revision == before.Revision || out.Revision == 0 {
				t.Fatalf("revision after update = %d, before %d: it must change", out.Revision, before.Revision)
			}
			if firstUpdateRev == 0 {
				firstUpdateRev = before.Revision
			}
			rev = out.Revision
		})
	}
	k, err := s.Get(ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	CheckKey(t, k, 3)
	if k.Revision != rev {
		t.Fatalf("Get revision = %d, want %d", k.Revision, rev)
	}
	for _, name := range []string{"absent", "Bad Name", "../x"} {
		if _, err := s.Get(ctx, name); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("Get %q: %v, want ErrNotFound", name, err)
		}
	}
	// A cancelled context does nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, Key("later", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context: %v", err)
	}
	if _, err := s.Get(ctx, "later"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("a Put with a cancelled context stored the key: %v", err)
	}
}

func testListSortedAndCopies(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx := context.Background()
	s := open(t)
	if keys, err := s.List(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("List of an empty store: %v, %v", keys, err)
	}
	for i, n := range []string{"zeta", "alpha", "mid"} {
		if _, err := s.Put(ctx, Key(n, i)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
		if k.Revision == 0 {
			t.Errorf("List: key %s has revision 0", k.Name)
		}
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Fatalf("List order = %v", names)
	}
	// Editing what List or Get returned must not touch the store.
	keys[0].Versions[0].Wrapped[0] ^= 0xff
	again, err := s.Get(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	CheckKey(t, again, 1)
	again.Versions[0].Wrapped[0] ^= 0xff
	CheckKey(t, mustGet(t, s, "alpha"), 1)

	// Nor editing what Put was given or returned.
	in := Key("copies", 5)
	out, err := s.Put(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	in.Versions[0].Wrapped[0] ^= 0xff
	out.Versions[0].Wrapped[1] ^= 0xff
	CheckKey(t, mustGet(t, s, "copies"), 5)
}

func mustGet(t *testing.T, s keystore.Store, name string) *keystore.Key {
	t.Helper()
	k, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// increment adds one to the counter kept in a key's Cryptoperiod, with the
// compare-and-swap loop that Manager uses.
func increment(ctx context.Context, s keystore.Store, name string) error {
	for {
		k, err := s.Get(ctx, name)
		if err != nil {
			return err
		}
		k.Cryptoperiod++
		_, err = s.Put(ctx, k)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		return err
	}
}

func testConcurrentStores(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx := context.Background()
	s1, s2 := open(t), open(t)
	if _, err := s1.Put(ctx, Key("counter", 0)); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for _, s := range []keystore.Store{s1, s2} {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if err := increment(ctx, s, "counter"); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := mustGet(t, s2, "counter")
	if want := time.Duration(2 * workers * each); got.Cryptoperiod != want {
		t.Fatalf("counter = %d after %d increments: an update was lost", got.Cryptoperiod, want)
	}

	// Of several creates of one name racing, exactly one wins.
	var wins sync.Map
	var cwg sync.WaitGroup
	for i := 0; i < 8; i++ {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			s := []keystore.Store{s1, s2}[i%2]
			_, err := s.Put(ctx, Key("race", i))
			switch {
			case err == nil:
				wins.Store(i, true)
			case !errors.Is(err, keystore.ErrExists):
				t.Errorf("racing create %d: %v, want ErrExists", i, err)
			}
		}()
	}
	cwg.Wait()
	n := 0
	wins.Range(func(k, _ any) bool {
		n++
		CheckKey(t, mustGet(t, s1, "race"), k.(int))
		return true
	})
	if n != 1 {
		t.Fatalf("%d racing creates succeeded, want exactly 1", n)
	}
}

// WaitEvent waits for an event naming name; the generous deadline only
// stops a broken watcher from hanging the test.
func WaitEvent(t testing.TB, ch <-chan keystore.Event, name string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed before an event for %q", name)
			}
			if ev.Name == name {
				return
			}
		case <-deadline:
			t.Fatalf("no watch event for %q", name)
		}
	}
}

func testWatch(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1, s2 := open(t), open(t)
	if _, err := s1.Put(ctx, Key("before", 1)); err != nil {
		t.Fatal(err)
	}
	ch, err := s1.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A change made right after Watch returns is reported.
	if _, err := s2.Put(ctx, Key("pii", 1)); err != nil {
		t.Fatal(err)
	}
	WaitEvent(t, ch, "pii")
	k := mustGet(t, s2, "pii")
	k.Primary = 2
	if _, err := s2.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	WaitEvent(t, ch, "pii")

	cancel()
	done := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-done:
			t.Fatal("the watch channel stayed open after its context ended")
		}
	}
}

func testStamps(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx := context.Background()
	s := open(t)
	k, err := s.Put(ctx, Key("pii", 1))
	if err != nil {
		t.Fatal(err)
	}
	if k.Writes != 1 || k.Incarnation == 0 {
		t.Fatalf("after create: Writes %d, Incarnation %d; want 1 and non-zero", k.Writes, k.Incarnation)
	}
	inc := k.Incarnation
	other, err := s.Put(ctx, Key("other", 1))
	if err != nil {
		t.Fatal(err)
	}
	if other.Incarnation == inc {
		t.Errorf("two records share incarnation %d", inc)
	}
	for want := uint64(2); want <= 4; want++ {
		next := Key("pii", int(want))
		next.Revision = k.Revision
		if k, err = s.Put(ctx, next); err != nil {
			t.Fatal(err)
		}
		if k.Writes != want || k.Incarnation != inc {
			t.Fatalf("Put %d: Writes %d, Incarnation %d; want %d, %d", want, k.Writes, k.Incarnation, want, inc)
		}
		got, err := s.Get(ctx, "pii")
		if err != nil {
			t.Fatal(err)
		}
		if got.Writes != want || got.Incarnation != inc || got.Revision != k.Revision {
			t.Fatalf("Get after Put %d: Writes %d, Incarnation %d, Revision %d; want %d, %d, %d", want, got.Writes, got.Incarnation, got.Revision, want, inc, k.Revision)
		}
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range keys {
		if l.Name == "pii" && (l.Writes != 4 || l.Incarnation != inc) {
			t.Errorf("List: Writes %d, Incarnation %d; want 4, %d", l.Writes, l.Incarnation, inc)
		}
	}
}

func testMeta(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t)
	events, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta(ctx, "usage/pii/1"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("GetMeta of an absent record: %v", err)
	}
	m, err := s.PutMeta(ctx, &keystore.Meta{ID: "usage/pii/1", Value: []byte("one")})
	if err != nil {
		t.Fatal(err)
	}
	if m.Revision == 0 || m.Writes != 1 || m.Incarnation == 0 {
		t.Fatalf("after create: %+v", m)
	}
	if _, err := s.PutMeta(ctx, &keystore.Meta{ID: "usage/pii/1", Value: []byte("again")}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("second create: %v; want ErrExists", err)
	}
	if _, err := s.PutMeta(ctx, &keystore.Meta{ID: "usage/pii/1", Value: []byte("x"), Revision: m.Revision + 100}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale revision: %v; want ErrConflict", err)
	}
	m2, err := s.PutMeta(ctx, &keystore.Meta{ID: "usage/pii/1", Value: []byte("two"), Revision: m.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Writes != 2 || m2.Incarnation != m.Incarnation || m2.Revision == m.Revision {
		t.Fatalf("after update: %+v (created %+v)", m2, m)
	}
	got, err := s.GetMeta(ctx, "usage/pii/1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != "two" || got.Writes != 2 || got.Incarnation != m.Incarnation || got.Revision != m2.Revision {
		t.Fatalf("GetMeta: %+v; want what PutMeta returned, %+v", got, m2)
	}
	got.Value[0] = 'X'
	if again, _ := s.GetMeta(ctx, "usage/pii/1"); string(again.Value) != "two" {
		t.Fatal("editing what GetMeta returned changed the store")
	}
	for _, id := range []string{"usage/pii/2", "usage/contact/1", "head", "usage/pii/10"} {
		if _, err := s.PutMeta(ctx, &keystore.Meta{ID: id, Value: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutMeta(ctx, &keystore.Meta{ID: "Bad ID", Value: nil}); err == nil {
		t.Fatal("PutMeta accepted an invalid id")
	}
	list, err := s.ListMeta(ctx, "usage/pii/")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list {
		ids = append(ids, m.ID)
	}
	if want := "usage/pii/1 usage/pii/10 usage/pii/2"; strings.Join(ids, " ") != want {
		t.Fatalf("ListMeta = %q; want %q", ids, want)
	}
	// Meta writes are not key changes: a key cache must not purge on them.
	if _, err := s.Put(ctx, Key("marker", 1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Name != "marker" {
				t.Fatalf("Watch reported %q; Meta records must not be reported", ev.Name)
			}
			return
		case <-deadline:
			t.Fatal("Watch did not report the marker key")
		}
	}
}
