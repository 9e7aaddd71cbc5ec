package keystore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// makeKeys creates n keys with two versions each and returns their DEKs by
// "name/version".
func makeKeys(t *testing.T, f *fixture, n int) map[string][]byte {
	t.Helper()
	deks := map[string][]byte{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("key%d", i)
		f.create(t, name)
		if _, err := f.m.Rotate(f.ctx, name, 0); err != nil {
			t.Fatal(err)
		}
		for _, v := range []uint32{1, 2} {
			d, err := f.m.Unwrap(f.ctx, name, v)
			if err != nil {
				t.Fatal(err)
			}
			deks[fmt.Sprintf("%s/%d", name, v)] = d
		}
	}
	return deks
}

// checkDEKs verifies every key still opens to the same bytes, and under
// which KEK each is wrapped.
func checkDEKs(t *testing.T, f *fixture, deks map[string][]byte, wantKEK uint32) {
	t.Helper()
	keys, err := f.store.List(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		for _, v := range k.Versions {
			id := fmt.Sprintf("%s/%d", k.Name, v.Version)
			if v.State == keystore.StateDestroyed {
				continue
			}
			got, err := f.m.Unwrap(f.ctx, k.Name, v.Version)
			if err != nil || !bytes.Equal(got, deks[id]) {
				t.Fatalf("%s does not open to its original key after re-wrap: %v", id, err)
			}
			if wantKEK != 0 && v.KEKVersion != wantKEK {
				t.Fatalf("%s is under KEK v%d, want v%d", id, v.KEKVersion, wantKEK)
			}
		}
	}
}

type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) Wait(ctx context.Context) error { l.n.Add(1); return ctx.Err() }

func TestRewrapAndRetire(t *testing.T) {
	f := newFixture(t)
	deks := makeKeys(t, f, 4)
	// Destroyed versions have nothing to re-wrap.
	f.m.Destroy(f.ctx, "key0", 1, "x")
	delete(deks, "key0/1")

	if _, pending, _ := f.m.RewrapPending(f.ctx); pending != 0 {
		t.Fatalf("pending before KEK rotation = %d", pending)
	}
	newKEK, err := f.m.RotateKEK(f.ctx)
	if err != nil || newKEK != 2 {
		t.Fatalf("RotateKEK = %d, %v", newKEK, err)
	}
	if e := f.lastEvent(t, "kek.rotate"); e.Version != 2 || e.Outcome != "ok" {
		t.Fatalf("kek.rotate event: %+v", e)
	}
	if err := f.m.RetireKEK(f.ctx, 1); !errors.Is(err, keystore.ErrKEKInUse) {
		t.Fatalf("retire a KEK in use: %v, want ErrKEKInUse", err)
	}
	if r, _ := f.m.Retirable(f.ctx); len(r) != 0 {
		t.Fatalf("retirable before re-wrap: %v", r)
	}
	_, pending, _ := f.m.RewrapPending(f.ctx)
	if pending != 7 {
		t.Fatalf("pending = %d, want 7", pending)
	}

	var calls []int
	lim := &countingLimiter{}
	res, err := f.m.Rewrap(f.ctx, keystore.RewrapOptions{Limiter: lim, Progress: func(done, total int) {
		if total != 7 {
			t.Errorf("progress total = %d", total)
		}
		calls = append(calls, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != 7 || res.Rewrapped != 7 || res.Failed != 0 || res.KEKVersion != 2 {
		t.Fatalf("result: %+v", res)
	}
	if len(calls) != 7 || calls[6] != 7 || lim.n.Load() != 7 {
		t.Fatalf("progress calls %v, limiter waits %d", calls, lim.n.Load())
	}
	checkDEKs(t, f, deks, 2)
	if got := len(f.rec.Find("key.rewrap")); got != 7 {
		t.Fatalf("%d key.rewrap events, want 7", got)
	}

	// Nothing left: a second run is a no-op.
	if res, err := f.m.Rewrap(f.ctx, keystore.RewrapOptions{}); err != nil || res.Total != 0 {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	st, err := f.m.KEKs(f.ctx)
	if err != nil || len(st) != 2 || st[0].DEKs != 0 || st[1].DEKs != 7 || !st[0].Retirable || st[1].Retirable {
		t.Fatalf("KEKs: %+v, %v", st, err)
	}
	if r, _ := f.m.Retirable(f.ctx); len(r) != 1 || r[0] != 1 {
		t.Fatalf("retirable = %v, want [1]", r)
	}
	if err := f.m.RetireKEK(f.ctx, 2); !errors.Is(err, keystore.ErrKEKInUse) {
		t.Fatalf("retire the current KEK: %v", err)
	}
	if err := f.m.RetireKEK(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if e := f.lastEvent(t, "kek.retire"); e.Version != 1 || e.Outcome != "ok" {
		t.Fatalf("kek.retire event: %+v", e)
	}
	checkDEKs(t, f, deks, 2)
}

// TestRewrapResumes stops a re-wrap half way (as a crash or cancel would)
// and checks that nothing is lost and a second run finishes the job.
func TestRewrapResumes(t *testing.T) {
	f := newFixture(t)
	deks := makeKeys(t, f, 5)
	f.m.RotateKEK(f.ctx)
	ctx, cancel := context.WithCancel(f.ctx)
	res, err := f.m.Rewrap(ctx, keystore.RewrapOptions{Progress: func(done, total int) {
		if done == 4 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || res.Rewrapped != 4 {
		t.Fatalf("interrupted run: %+v, %v", res, err)
	}
	checkDEKs(t, f, deks, 0) // mixed KEKs, every key opens
	if _, pending, _ := f.m.RewrapPending(f.ctx); pending != 6 {
		t.Fatalf("pending after interruption = %d, want 6", pending)
	}
	res, err = f.m.Rewrap(f.ctx, keystore.RewrapOptions{})
	if err != nil || res.Rewrapped != 6 {
		t.Fatalf("resumed run: %+v, %v", res, err)
	}
	checkDEKs(t, f, deks, 2)
}

// badWrapKEK wraps under KEK v2 into something that does not unwrap back
// to the key: the verification step must catch it.
type badWrapKEK struct {
	*keystoretest.FakeKEK
	broken atomic.Bool
}

func (b *badWrapKEK) Wrap(ctx context.Context, dek []byte, bd hsm.Binding) (hsm.Wrapped, error) {
	if b.broken.Load() {
		other := bytes.Clone(dek)
		other[0] ^= 1
		return b.FakeKEK.Wrap(ctx, other, bd)
	}
	return b.FakeKEK.Wrap(ctx, dek, bd)
}

func TestRewrapVerifiesBeforeSwitching(t *testing.T) {
	f := newFixture(t)
	bad := &badWrapKEK{FakeKEK: f.kek}
	f.m = f.manager(t, f.store, bad)
	deks := makeKeys(t, f, 2)
	f.m.RotateKEK(f.ctx)
	bad.broken.Store(true)
	res, err := f.m.Rewrap(f.ctx, keystore.RewrapOptions{})
	if !errors.Is(err, keystore.ErrVerify) || res.Failed != 4 || res.Rewrapped != 0 {
		t.Fatalf("re-wrap with a bad wrapper: %+v, %v", res, err)
	}
	checkDEKs(t, f, deks, 1) // all still under the old KEK, all open
	if e := f.lastEvent(t, "key.rewrap"); e.Outcome != "error" {
		t.Fatalf("failed re-wrap audited as %q", e.Outcome)
	}
	bad.broken.Store(false)
	if res, err := f.m.Rewrap(f.ctx, keystore.RewrapOptions{}); err != nil || res.Rewrapped != 4 {
		t.Fatalf("re-wrap after repair: %+v, %v", res, err)
	}
	checkDEKs(t, f, deks, 2)
}

// Two re-wraps at once (the CLI and a sidecar's background job) must not
// fight: each version is moved once and every key still opens.
func TestRewrapConcurrent(t *testing.T) {
	f := newFixture(t)
	deks := makeKeys(t, f, 4)
	f.m.RotateKEK(f.ctx)
	st2, err := keystore.OpenBolt(f.path, keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m2 := f.manager(t, st2, f.kek)
	errs := make(chan error, 2)
	var moved atomic.Int64
	for _, m := range []*keystore.Manager{f.m, m2} {
		go func() {
			res, err := m.Rewrap(f.ctx, keystore.RewrapOptions{})
			moved.Add(int64(res.Rewrapped))
			errs <- err
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if moved.Load() != 8 {
		t.Fatalf("versions moved in total = %d, want 8 (each exactly once)", moved.Load())
	}
	checkDEKs(t, f, deks, 2)
}
