package keystore_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

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
	m     *keystore.Manager
	store *keystore.BoltStore
	kek   *keystoretest.FakeKEK
	rec   *keystoretest.Recorder
	clock *clock
	path  string
	ctx   context.Context
	logs  *testenv.SyncBuffer // set by tests that give the Manager a logger
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.db")
	st, err := keystore.OpenBolt(path, keystore.BoltOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, kek: keystoretest.NewFakeKEK(), rec: &keystoretest.Recorder{}, clock: newClock(), path: path,
		ctx: audit.WithActor(context.Background(), "cli:tester")}
	f.m = f.manager(t, st, f.kek)
	return f
}

// manager builds another Manager sharing the fixture's recorder and clock.
func (f *fixture) manager(t *testing.T, st keystore.Store, kek keystore.KEK) *keystore.Manager {
	t.Helper()
	m, err := keystore.NewManager(keystore.Config{Store: st, KEK: kek, Audit: f.rec, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) create(t *testing.T, name string) *keystore.Key {
	t.Helper()
	k, err := f.m.Create(f.ctx, name, 90*24*time.Hour, false)
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	return k
}

func (f *fixture) key(t *testing.T, name string) *keystore.Key {
	t.Helper()
	k, err := f.store.Get(f.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (f *fixture) state(t *testing.T, name string, v uint32) keystore.State {
	t.Helper()
	ver := f.key(t, name).Lookup(v)
	if ver == nil {
		t.Fatalf("%s v%d missing", name, v)
	}
	return ver.State
}

// lastEvent returns the last audit event with action.
func (f *fixture) lastEvent(t *testing.T, action string) audit.Event {
	t.Helper()
	evs := f.rec.Find(action)
	if len(evs) == 0 {
		t.Fatalf("no %s audit event; have %+v", action, f.rec.Events())
	}
	return evs[len(evs)-1]
}

func TestCreate(t *testing.T) {
	f := newFixture(t)
	k := f.create(t, "pii")
	if k.Primary != 1 || len(k.Versions) != 1 {
		t.Fatalf("new key: primary %d, %d versions", k.Primary, len(k.Versions))
	}
	v := k.Versions[0]
	if v.State != keystore.StateActive || v.Algorithm != keystore.Algorithm || v.KEKVersion != 1 || v.Mechanism != keystoretest.Mechanism {
		t.Fatalf("new version: %+v", v)
	}
	if !v.Created.Equal(f.clock.Now()) || !v.Activated.Equal(f.clock.Now()) {
		t.Fatalf("times not from the injected clock: %+v", v)
	}
	dek, err := f.m.Unwrap(f.ctx, "pii", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(dek) != fieldcrypt.DataKeySize {
		t.Fatalf("DEK is %d bytes, want %d", len(dek), fieldcrypt.DataKeySize)
	}
	if keystore.Fingerprint(dek) != v.Fingerprint || len(v.Fingerprint) != 32 {
		t.Fatalf("fingerprint %q does not match the DEK", v.Fingerprint)
	}
	if bytes.Contains(v.Wrapped, dek[:16]) {
		t.Fatal("wrapped copy contains the DEK in the clear")
	}
	if _, err := fieldcrypt.NewDataKey("pii", 1, dek); err != nil {
		t.Fatalf("DEK not usable by fieldcrypt: %v", err)
	}
	e := f.lastEvent(t, "key.create")
	if e.Actor != "cli:tester" || e.Key != "pii" || e.Version != 1 || e.Outcome != "ok" || !e.Time.Equal(f.clock.Now()) {
		t.Fatalf("create event: %+v", e)
	}
	if p, err := f.m.Primary(f.ctx, "pii"); err != nil || p != 1 {
		t.Fatalf("Primary = %d, %v", p, err)
	}
}

func TestCreateRefusals(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	tests := []struct {
		name, key    string
		period       time.Duration
		want         error
		wantText     string
		wantAuditKey string
	}{
		{"duplicate", "pii", 0, keystore.ErrExists, "already exists", "pii"},
		{"bad name", "Not-OK", 0, nil, "invalid key name", "Not-OK"},
		{"empty name", "", 0, nil, "invalid key name", ""},
		{"negative cryptoperiod", "neg", -time.Hour, nil, "negative", "neg"},
	}
	created := f.key(t, "pii").Revision
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.rec.Events())
			_, err := f.m.Create(f.ctx, tc.key, tc.period, false)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("err = %v, want %v / %q", err, tc.want, tc.wantText)
			}
			evs := f.rec.Events()[before:]
			if len(evs) != 1 || evs[0].Action != "key.create" || evs[0].Outcome != "denied" || evs[0].Key != tc.wantAuditKey {
				t.Fatalf("refusal not audited as denied: %+v", evs)
			}
		})
	}
	if k := f.key(t, "pii"); k.Revision != created {
		t.Fatalf("a refused create changed the existing key (revision %d, was %d)", k.Revision, created)
	}
}

func TestPreActiveThenActivate(t *testing.T) {
	f := newFixture(t)
	k, err := f.m.Create(f.ctx, "later", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if k.Primary != 0 || k.Versions[0].State != keystore.StatePreActive {
		t.Fatalf("pre-active key: %+v", k)
	}
	if _, err := f.m.Primary(f.ctx, "later"); !errors.Is(err, keystore.ErrNoPrimary) {
		t.Fatalf("Primary of a pre-active key: %v, want ErrNoPrimary", err)
	}
	if _, err := f.m.Unwrap(f.ctx, "later", 1); !errors.Is(err, keystore.ErrPreActive) {
		t.Fatalf("Unwrap of a pre-active version: %v, want ErrPreActive", err)
	}
	if e := f.lastEvent(t, "key.unwrap"); e.Outcome != "denied" || e.Version != 1 {
		t.Fatalf("refused unwrap not audited: %+v", e)
	}
	f.clock.Advance(time.Hour)
	k, err = f.m.Activate(f.ctx, "later", 1)
	if err != nil {
		t.Fatal(err)
	}
	if k.Primary != 1 || k.Versions[0].State != keystore.StateActive || !k.Versions[0].Activated.Equal(f.clock.Now()) {
		t.Fatalf("after Activate: %+v", k)
	}
	if _, err := f.m.Activate(f.ctx, "later", 1); !errors.Is(err, keystore.ErrTransition) {
		t.Fatalf("second Activate: %v, want ErrTransition", err)
	}
}

func TestRotate(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	dek1, _ := f.m.Unwrap(f.ctx, "pii", 1)
	f.clock.Advance(time.Hour)
	k, err := f.m.Rotate(f.ctx, "pii", 0)
	if err != nil {
		t.Fatal(err)
	}
	if k.Primary != 2 || len(k.Versions) != 2 {
		t.Fatalf("after rotate: primary %d, %d versions", k.Primary, len(k.Versions))
	}
	if s := k.Lookup(1).State; s != keystore.StateDeactivated {
		t.Fatalf("old primary is %s, want deactivated", s)
	}
	if k.Lookup(1).Fingerprint == k.Lookup(2).Fingerprint {
		t.Fatal("rotation reused the old material")
	}
	// The old version still decrypts, with the same material.
	again, err := f.m.Unwrap(f.ctx, "pii", 1)
	if err != nil || !bytes.Equal(again, dek1) {
		t.Fatalf("old version after rotate: %v", err)
	}
	e := f.lastEvent(t, "key.rotate")
	if e.Version != 2 || e.Outcome != "ok" || e.Details["previous_primary"] != "1" {
		t.Fatalf("rotate event: %+v", e)
	}

	// A stale expectation is a no-op that returns the winner.
	k, err = f.m.Rotate(f.ctx, "pii", 1)
	if err != nil || k.Primary != 2 || len(k.Versions) != 2 {
		t.Fatalf("rotate with stale expectation: %v, primary %d, %d versions", err, k.Primary, len(k.Versions))
	}
	if _, err := f.m.Rotate(f.ctx, "nope", 0); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotate unknown key: %v", err)
	}
}

// Several managers, each with its own Store on the same file (as separate
// sidecars would be), rotate the same key at once with the same
// expectation: exactly one new version results.
func TestConcurrentRotateMakesOneVersion(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	const n = 6
	var wg sync.WaitGroup
	results := make(chan uint32, n)
	for i := 0; i < n; i++ {
		st, err := keystore.OpenBolt(f.path, keystore.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := f.manager(t, st, f.kek)
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := m.Rotate(f.ctx, "pii", 1)
			if err != nil {
				t.Error(err)
				return
			}
			results <- k.Primary
		}()
	}
	wg.Wait()
	close(results)
	for p := range results {
		if p != 2 {
			t.Errorf("a rotation returned primary %d, want 2", p)
		}
	}
	k := f.key(t, "pii")
	if len(k.Versions) != 2 || k.Primary != 2 {
		t.Fatalf("after %d concurrent rotations: %d versions, primary %d", n, len(k.Versions), k.Primary)
	}
}

// TestTransitions walks every state through every operation and checks
// the SP 800-57 table: allowed moves succeed, the rest are refused with an
// error that lists what is allowed, and change nothing.
func TestTransitions(t *testing.T) {
	type op struct {
		name string
		to   keystore.State
		run  func(f *fixture, name string) error
	}
	ops := []op{
		{"activate", keystore.StateActive, func(f *fixture, n string) error { _, err := f.m.Activate(f.ctx, n, 1); return err }},
		{"deactivate", keystore.StateDeactivated, func(f *fixture, n string) error {
			_, err := f.m.Revoke(f.ctx, n, 1, keystore.StateDeactivated, "test")
			return err
		}},
		{"compromise", keystore.StateCompromised, func(f *fixture, n string) error {
			_, err := f.m.Revoke(f.ctx, n, 1, keystore.StateCompromised, "test")
			return err
		}},
		{"destroy", keystore.StateDestroyed, func(f *fixture, n string) error { _, err := f.m.Destroy(f.ctx, n, 1, "test"); return err }},
	}
	// setup brings version 1 of a fresh key to a state.
	setup := map[keystore.State][]string{
		keystore.StatePreActive:   nil,
		keystore.StateActive:      {"activate"},
		keystore.StateDeactivated: {"activate", "deactivate"},
		keystore.StateCompromised: {"compromise"},
		keystore.StateDestroyed:   {"destroy"},
	}
	allowed := map[keystore.State]map[keystore.State]bool{
		keystore.StatePreActive:   {keystore.StateActive: true, keystore.StateCompromised: true, keystore.StateDestroyed: true},
		keystore.StateActive:      {keystore.StateDeactivated: true, keystore.StateCompromised: true},
		keystore.StateDeactivated: {keystore.StateCompromised: true, keystore.StateDestroyed: true},
		keystore.StateCompromised: {keystore.StateDestroyed: true},
		keystore.StateDestroyed:   {},
	}
	f := newFixture(t)
	i := 0
	for _, from := range keystore.States() {
		for _, o := range ops {
			t.Run(string(from)+"/"+o.name, func(t *testing.T) {
				i++
				name := "k" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
				if _, err := f.m.Create(f.ctx, name, 0, true); err != nil {
					t.Fatal(err)
				}
				for _, s := range setup[from] {
					for _, so := range ops {
						if so.name == s {
							if err := so.run(f, name); err != nil {
								t.Fatalf("setup %s: %v", s, err)
							}
						}
					}
				}
				if got := f.state(t, name, 1); got != from {
					t.Fatalf("setup reached %s, want %s", got, from)
				}
				before := f.key(t, name)
				err := o.run(f, name)
				if allowed[from][o.to] {
					if err != nil {
						t.Fatalf("%s -> %s refused: %v", from, o.to, err)
					}
					if got := f.state(t, name, 1); got != o.to {
						t.Fatalf("state = %s, want %s", got, o.to)
					}
					return
				}
				if !errors.Is(err, keystore.ErrTransition) {
					t.Fatalf("%s -> %s: err = %v, want ErrTransition", from, o.to, err)
				}
				if !strings.Contains(err.Error(), "allowed from "+string(from)) || !strings.Contains(err.Error(), `"`+name+`" v1`) {
					t.Fatalf("error does not name the key or list the allowed transitions: %v", err)
				}
				for _, a := range keystore.AllowedTransitions(from) {
					if !strings.Contains(err.Error(), string(a)) {
						t.Fatalf("error does not list allowed %s: %v", a, err)
					}
				}
				if after := f.key(t, name); after.Revision != before.Revision {
					t.Fatal("a refused transition changed the record")
				}
			})
		}
	}
}

func TestRevokePrimaryLeavesNoPrimary(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	k, err := f.m.Revoke(f.ctx, "pii", 1, keystore.StateDeactivated, "retiring")
	if err != nil {
		t.Fatal(err)
	}
	if k.Primary != 0 || k.Lookup(1).Reason != "retiring" || !k.Lookup(1).Deactivated.Equal(f.clock.Now()) {
		t.Fatalf("after revoke: %+v", k)
	}
	if _, err := f.m.Primary(f.ctx, "pii"); !errors.Is(err, keystore.ErrNoPrimary) {
		t.Fatalf("Primary: %v, want ErrNoPrimary", err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); err != nil {
		t.Fatalf("a deactivated version must still decrypt: %v", err)
	}
	e := f.lastEvent(t, "key.revoke")
	if e.Reason != "retiring" || e.Details["to"] != "deactivated" || e.Details["from"] != "active" {
		t.Fatalf("revoke event: %+v", e)
	}
	// A rotation gives the key a primary again.
	if k, err := f.m.Rotate(f.ctx, "pii", 0); err != nil || k.Primary != 2 {
		t.Fatalf("rotate after revoke: %v", err)
	}

	for _, tc := range []struct {
		name   string
		to     keystore.State
		reason string
		want   string
	}{
		{"no reason", keystore.StateCompromised, "", "reason is required"},
		{"bad target", keystore.StateDestroyed, "x", "revoke goes to"},
		{"long reason", keystore.StateCompromised, strings.Repeat("x", 1001), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.m.Revoke(f.ctx, "pii", 2, tc.to, tc.reason); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if f.state(t, "pii", 2) != keystore.StateActive {
				t.Fatal("a refused revoke changed the state")
			}
		})
	}
}

func TestCompromisedAndOverride(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	f.m.Rotate(f.ctx, "pii", 0)
	if _, err := f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("Unwrap compromised: %v, want ErrCompromised", err)
	}

	now := f.clock.Now()
	for _, tc := range []struct {
		name, reason string
		version      uint32
		until        time.Time
		want         string
	}{
		{"past", "x", 1, now.Add(-time.Minute), "not in the future"},
		{"too long", "x", 1, now.Add(keystore.MaxOverride + time.Hour), "longer than the maximum"},
		{"no reason", "", 1, now.Add(time.Hour), "reason is required"},
		{"not compromised", "x", 2, now.Add(time.Hour), "only applies to a compromised version"},
		{"unknown version", "x", 9, now.Add(time.Hour), "no such key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.m.Override(f.ctx, "pii", tc.version, tc.until, tc.reason); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if e := f.lastEvent(t, "key.override"); e.Outcome != "denied" {
				t.Fatalf("refused override not audited as denied: %+v", e)
			}
		})
	}

	until := now.Add(time.Hour)
	if _, err := f.m.Override(f.ctx, "pii", 1, until, "incident 42: export records"); err != nil {
		t.Fatal(err)
	}
	mat, err := f.m.UnwrapMaterial(f.ctx, "pii", 1)
	if err != nil {
		t.Fatalf("Unwrap under override: %v", err)
	}
	if !mat.NotAfter.Equal(until) {
		t.Fatalf("NotAfter = %v, want %v", mat.NotAfter, until)
	}
	e := f.lastEvent(t, "key.unwrap")
	if e.Outcome != "ok" || !strings.Contains(e.Reason, "incident 42") {
		t.Fatalf("override unwrap not audited: %+v", e)
	}
	// An audit log that cannot be written blocks an override unwrap.
	f.rec.Err = errors.New("disk full")
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); err == nil {
		t.Fatal("override unwrap succeeded without an audit trail")
	}
	f.rec.Err = nil

	f.clock.Advance(time.Hour + time.Second)
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("Unwrap after the override expired: %v, want ErrCompromised", err)
	}
	// Ending an override early.
	f.m.Override(f.ctx, "pii", 1, f.clock.Now().Add(time.Hour), "again")
	if _, err := f.m.Override(f.ctx, "pii", 1, time.Time{}, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("Unwrap after the override was ended: %v", err)
	}
}

func TestDestroy(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	if _, err := f.m.Destroy(f.ctx, "pii", 1, "gdpr erasure"); !errors.Is(err, keystore.ErrTransition) ||
		!strings.Contains(err.Error(), "deactivated, compromised") {
		t.Fatalf("destroy of an active version: %v", err)
	}
	if e := f.lastEvent(t, "key.destroy"); e.Outcome != "denied" {
		t.Fatalf("refused destroy: %+v", e)
	}
	f.m.Rotate(f.ctx, "pii", 0)
	k, err := f.m.Destroy(f.ctx, "pii", 1, "gdpr erasure")
	if err != nil {
		t.Fatal(err)
	}
	v := k.Lookup(1)
	if v.State != keystore.StateDestroyed || len(v.Wrapped) != 0 || v.KEKVersion != 0 || v.Fingerprint == "" || !v.Destroyed.Equal(f.clock.Now()) {
		t.Fatalf("destroyed version: %+v", v)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrDestroyed) {
		t.Fatalf("Unwrap destroyed: %v, want ErrDestroyed", err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 2); err != nil {
		t.Fatalf("the other version must still open: %v", err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 7); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Unwrap unknown version: %v", err)
	}
	if _, err := f.m.Unwrap(f.ctx, "nokey", 1); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Unwrap unknown key: %v", err)
	}
}

func TestErrorsWrapUnavailable(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	f.kek.SetUnavailable(true)
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), `"pii" v1`) {
		t.Fatalf("Unwrap with the HSM down: %v, want hsm.ErrUnavailable naming the key", err)
	}
	if _, err := f.m.Create(f.ctx, "other", 0, false); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Create with the HSM down: %v", err)
	}
	if e := f.lastEvent(t, "key.create"); e.Outcome != "error" {
		t.Fatalf("HSM failure audited as %q, want error", e.Outcome)
	}
	if _, err := f.store.Get(f.ctx, "other"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal("a failed create left a record")
	}
}

// The fingerprint is checked after every unwrap, even of a record that
// passes its integrity check (one sealed by sidecrypt itself, as if the
// HSM unwrapped to another key). A record edited in the store is refused
// before that, by its MAC (integrity_test.go).
func TestFingerprintMismatchRefused(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	k, err := f.m.Get(f.ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	k.Versions[0].Fingerprint = strings.Repeat("0", 32)
	if _, err := keystore.PutSealedForTest(f.ctx, f.m, k); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrFingerprint) {
		t.Fatalf("Unwrap with a wrong fingerprint: %v, want ErrFingerprint", err)
	}
}

// TestAuditNeverHoldsKeyBytes runs every operation and then looks for any
// DEK, in hex or base64, anywhere in the audit trail.
func TestAuditNeverHoldsKeyBytes(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	f.m.Rotate(f.ctx, "pii", 0)
	f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "r")
	f.m.Override(f.ctx, "pii", 1, f.clock.Now().Add(time.Hour), "r")
	var deks [][]byte
	for _, v := range []uint32{1, 2} {
		d, err := f.m.Unwrap(f.ctx, "pii", v)
		if err != nil {
			t.Fatal(err)
		}
		deks = append(deks, d)
	}
	f.m.RotateKEK(f.ctx)
	f.m.Rewrap(f.ctx, keystore.RewrapOptions{})
	f.m.Destroy(f.ctx, "pii", 1, "r")
	id, _ := keystore.GenerateRecoveryKey()
	var buf bytes.Buffer
	if _, err := f.m.Backup(f.ctx, &buf, id.Recipient()); err != nil {
		t.Fatal(err)
	}
	all, err := json.Marshal(f.rec.Events())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deks {
		for _, enc := range []string{hex.EncodeToString(d[:12]), base64.StdEncoding.EncodeToString(d[:12]), base64.RawURLEncoding.EncodeToString(d[:12])} {
			if strings.Contains(string(all), enc) {
				t.Fatalf("audit trail contains key bytes (%s)", enc)
			}
		}
	}
	if len(f.rec.Events()) < 8 {
		t.Fatalf("only %d events for 8 operations", len(f.rec.Events()))
	}
}

func TestAuditFailureIsReported(t *testing.T) {
	f := newFixture(t)
	f.rec.Err = errors.New("disk full")
	_, err := f.m.Create(f.ctx, "pii", 0, false)
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "was done") {
		t.Fatalf("Create with a failing audit log: %v", err)
	}
}

// TestViewHasNoKeyMaterial: the view that the CLI and admin API print
// carries every lifecycle fact and no wrapped bytes.
func TestViewHasNoKeyMaterial(t *testing.T) {
	k := &keystore.Key{Name: "pii", Primary: 2, Cryptoperiod: 90 * 24 * time.Hour, Versions: []keystore.Version{
		{Version: 1, State: keystore.StateDeactivated, Wrapped: []byte("WRAPPED-MATERIAL-1"), KEKVersion: 1, Fingerprint: "ab"},
		{Version: 2, State: keystore.StateActive, Wrapped: []byte("WRAPPED-MATERIAL-2"), KEKVersion: 1, Fingerprint: "cd"},
	}}
	b, err := json.Marshal(k.View())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("WRAPPED")) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte("WRAPPED-MATERIAL-1")))) {
		t.Fatalf("view exposes wrapped material: %s", b)
	}
	for _, want := range []string{`"cryptoperiod_seconds":7776000`, `"state":"deactivated"`, `"fingerprint":"cd"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Fatalf("view lacks %s: %s", want, b)
		}
	}
}
