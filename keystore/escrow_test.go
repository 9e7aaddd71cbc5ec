package keystore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// escrowManager builds a Manager on f's store with primary and escrow.
func (f *fixture) escrowManager(t *testing.T, primary keystore.KEK, escrow keystore.EscrowKEK) *keystore.Manager {
	t.Helper()
	m, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: primary, Escrow: escrow, Audit: f.rec, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// deks unwraps every version with material, by "name/vN".
func deks(t *testing.T, f *fixture, m *keystore.Manager) map[string][]byte {
	t.Helper()
	keys, err := m.List(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, k := range keys {
		for _, v := range k.Versions {
			if len(v.Wrapped) == 0 {
				continue
			}
			d, err := m.Unwrap(f.ctx, k.Name, v.Version)
			if err != nil {
				t.Fatalf("unwrap %s v%d: %v", k.Name, v.Version, err)
			}
			out[k.Name+"/v"+strconv.FormatUint(uint64(v.Version), 10)] = d
		}
	}
	return out
}

func TestEscrowDualWrap(t *testing.T) {
	f := newFixture(t)
	escrow := keystoretest.NewFakeKEK()
	f.m = f.escrowManager(t, f.kek, escrow)
	f.create(t, "pii")
	if _, err := f.m.Rotate(f.ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	k, err := f.m.Get(f.ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	if k.Seal == nil || len(k.Seal.EscrowMAC) != 32 {
		t.Fatalf("the key record carries no escrow MAC: %+v", k.Seal)
	}
	for _, v := range k.Versions {
		if v.Escrow == nil || v.Escrow.Provider != escrow.Describe().ID() {
			t.Fatalf("v%d has no escrow copy: %+v", v.Version, v.Escrow)
		}
		// Either copy alone opens the key, and the escrow copy is bound
		// to its name and version.
		b := hsm.Binding{Key: "pii", Version: v.Version}
		fromPrimary, err := f.kek.Unwrap(f.ctx, hsm.Wrapped{KEKVersion: v.KEKVersion, Mechanism: v.Mechanism, Bytes: v.Wrapped}, b)
		if err != nil {
			t.Fatal(err)
		}
		ew := hsm.Wrapped{KEKVersion: v.Escrow.KEKVersion, Mechanism: v.Escrow.Mechanism, Bytes: v.Escrow.Wrapped}
		fromEscrow, err := escrow.Unwrap(f.ctx, ew, b)
		if err != nil || !bytes.Equal(fromPrimary, fromEscrow) {
			t.Fatalf("v%d: the escrow copy opens to another key (%v)", v.Version, err)
		}
		if _, err := escrow.Unwrap(f.ctx, ew, hsm.Binding{Key: "pii", Version: v.Version + 7}); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("v%d: the escrow copy opens as another version: %v", v.Version, err)
		}
	}
	// An edit of the escrow copy is an edit of the record: refused.
	editRaw(t, f.path, "pii", func(_, key map[string]any) {
		version(key, 0)["escrow"].(map[string]any)["kek_version"] = 9
	})
	if _, err := f.m.Get(f.ctx, "pii"); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("edited escrow copy: %v; want ErrIntegrity", err)
	}

	t.Run("DestroyErasesBoth", func(t *testing.T) {
		f := newFixture(t)
		f.m = f.escrowManager(t, f.kek, keystoretest.NewFakeKEK())
		f.create(t, "pii")
		f.m.Rotate(f.ctx, "pii", 0) // v1 is deactivated
		k, err := f.m.Destroy(f.ctx, "pii", 1, "shred")
		if err != nil {
			t.Fatal(err)
		}
		if v := k.Lookup(1); v.Escrow != nil || len(v.Wrapped) != 0 {
			t.Fatalf("destroyed v1 keeps a copy: %+v", v)
		}
		var rec map[string]any
		if err := json.Unmarshal(rawRecord(t, f.path, "pii"), &rec); err != nil {
			t.Fatal(err)
		}
		if e, ok := version(rec["key"].(map[string]any), 0)["escrow"]; ok {
			t.Fatalf("the stored record still holds v1's escrow copy: %v", e)
		}
	})

	t.Run("ProcessWithoutEscrowRefusesNewVersions", func(t *testing.T) {
		f := newFixture(t)
		f.m = f.escrowManager(t, f.kek, keystoretest.NewFakeKEK())
		f.create(t, "pii")
		plain := f.manager(t, f.store, f.kek)
		if _, err := plain.Create(f.ctx, "contact", 0, false); !errors.Is(err, keystore.ErrEscrowRequired) {
			t.Errorf("Create without the escrow in an escrow keystore: %v; want ErrEscrowRequired", err)
		}
	})
}

func TestEscrowAddedByRewrap(t *testing.T) {
	f := newFixture(t)
	f.create(t, "pii")
	f.create(t, "contact")
	if _, err := f.m.ReserveSeals(f.ctx, "pii", 1, 10); err != nil {
		t.Fatal(err)
	}
	before := deks(t, f, f.m)
	escrow := keystoretest.NewFakeKEK()
	m := f.escrowManager(t, f.kek, escrow)
	if _, pending, err := m.RewrapPending(f.ctx); err != nil || pending != 2 {
		t.Fatalf("pending = %d, %v; want both versions (no escrow copy yet)", pending, err)
	}
	if c, err := m.EscrowCoverage(f.ctx); err != nil || c.Covered != 0 || len(c.Missing) != 2 || c.UnsealedRecords < 4 {
		t.Fatalf("coverage before the re-wrap = %+v, %v", c, err)
	}
	res, err := m.Rewrap(f.ctx, keystore.RewrapOptions{})
	if err != nil || res.Rewrapped != 2 || res.EscrowMACs == 0 {
		t.Fatalf("Rewrap = %+v, %v", res, err)
	}
	if _, pending, _ := m.RewrapPending(f.ctx); pending != 0 {
		t.Fatalf("pending after Rewrap = %d", pending)
	}
	if c, err := m.EscrowCoverage(f.ctx); err != nil || c.Covered != 2 || c.Versions != 2 || c.UnsealedRecords != 0 {
		t.Fatalf("coverage after the re-wrap = %+v, %v", c, err)
	}
	// Every record now carries an escrow MAC, so a dry-run recovery
	// finds nothing unverified.
	rec, err := m.Recover(f.ctx, keystore.RecoverOptions{DryRun: true})
	if err != nil || len(rec.Unverified) != 0 || rec.Versions != 2 {
		t.Fatalf("dry-run recovery after Rewrap: %+v, %v", rec, err)
	}
	// A rotation of the escrow's KEK is re-wrapped too.
	if _, err := escrow.RotateKEK(f.ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Rewrap(f.ctx, keystore.RewrapOptions{}); err != nil || res.Rewrapped != 2 || res.EscrowKEKVersion != 2 {
		t.Fatalf("Rewrap after escrow KEK rotation = %+v, %v", res, err)
	}
	after := deks(t, f, m)
	for n, d := range before {
		if !bytes.Equal(after[n], d) {
			t.Fatalf("%s changed", n)
		}
	}
}

// TestRecoverFromEscrow: the primary provider is gone. A Manager on a new
// primary, with the same escrow, recovers every key and re-seals every
// record; the keys open to what they were.
func TestRecoverFromEscrow(t *testing.T) {
	setup := func(t *testing.T) (*fixture, *keystoretest.FakeKEK, map[string][]byte) {
		f := newFixture(t)
		escrow := keystoretest.NewFakeKEK()
		f.m = f.escrowManager(t, f.kek, escrow)
		f.create(t, "pii")
		f.create(t, "contact")
		if _, err := f.m.Rotate(f.ctx, "pii", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.ReserveSeals(f.ctx, "pii", 2, 100); err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "sweep/clinic", Value: []byte(`{"pii/2": 5}`)}); err != nil {
			t.Fatal(err)
		}
		want := deks(t, f, f.m)
		if _, err := f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "laptop"); err != nil {
			t.Fatal(err)
		}
		return f, escrow, want
	}

	t.Run("RecoversEverything", func(t *testing.T) {
		f, escrow, want := setup(t)
		f.kek.SetUnavailable(true) // the old HSM is gone for good
		newPrimary := keystoretest.NewFakeKEK()
		m := f.escrowManager(t, newPrimary, escrow)
		// Before: nothing verifies under the new primary.
		if _, err := m.List(f.ctx); !errors.Is(err, keystore.ErrIntegrity) {
			t.Fatalf("before recovery, List = %v; want ErrIntegrity", err)
		}
		dry, err := m.Recover(f.ctx, keystore.RecoverOptions{DryRun: true})
		if err != nil || dry.Keys != 2 || dry.Versions != 3 || dry.Records != 0 {
			t.Fatalf("dry run = %+v, %v", dry, err)
		}
		res, err := m.Recover(f.ctx, keystore.RecoverOptions{})
		if err != nil || res.Versions != 3 || res.Records < 5 {
			t.Fatalf("Recover = %+v, %v", res, err)
		}
		// A fresh process on the new primary: every record verifies,
		// every key opens to what it was, states are kept (v1 stays
		// compromised), counters and notes are there.
		fresh := f.escrowManager(t, newPrimary, escrow)
		if n, err := fresh.Verify(f.ctx); err != nil || n != 2 {
			t.Fatalf("Verify after recovery: %d, %v", n, err)
		}
		if _, err := fresh.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
			t.Errorf("pii v1 after recovery: %v; want ErrCompromised", err)
		}
		for _, n := range []string{"pii/v2", "contact/v1"} {
			name, v, _ := strings.Cut(n, "/v")
			ver := map[string]uint32{"2": 2, "1": 1}[v]
			got, err := fresh.Unwrap(f.ctx, name, ver)
			if err != nil || !bytes.Equal(got, want[n]) {
				t.Fatalf("%s after recovery: %v", n, err)
			}
		}
		us, err := fresh.Usages(f.ctx, mustList(t, f, fresh))
		if err != nil || keystore.UsageOf(us, "pii", 2, fresh.SealLimit()).Reserved != 100 {
			t.Errorf("seal counter after recovery: %v, %v", us, err)
		}
		if n, err := fresh.GetNote(f.ctx, "sweep/clinic"); err != nil || string(n.Value) != `{"pii/2": 5}` {
			t.Errorf("note after recovery: %v", err)
		}
		// The new primary takes new work.
		if _, err := fresh.Rotate(f.ctx, "contact", 0); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(f.rec.Find("key.recover"), func(e audit.Event) bool { return e.Key == "pii" && e.Version == 2 && e.Outcome == "ok" }) {
			t.Error("no key.recover audit event for pii v2")
		}
		// Running it again is harmless.
		if _, err := fresh.Recover(f.ctx, keystore.RecoverOptions{}); err != nil {
			t.Errorf("second Recover: %v", err)
		}
	})

	t.Run("EditWhileThePrimaryWasDownIsRefused", func(t *testing.T) {
		f, escrow, _ := setup(t)
		// Someone who can write the store un-compromises pii v1 while
		// the old HSM is gone and its MACs cannot be checked.
		editRaw(t, f.path, "pii", func(_, key map[string]any) { version(key, 0)["state"] = "deactivated" })
		m := f.escrowManager(t, keystoretest.NewFakeKEK(), escrow)
		res, err := m.Recover(f.ctx, keystore.RecoverOptions{TrustUnverified: true, AllowLoss: true})
		if !errors.Is(err, keystore.ErrRecoverRefused) || !strings.Contains(err.Error(), `key "pii"`) {
			t.Fatalf("Recover over an edited record = %+v, %v; want ErrRecoverRefused naming pii", res, err)
		}
		// Nothing was written: contact still fails under the new primary.
		if _, err := m.Get(f.ctx, "contact"); !errors.Is(err, keystore.ErrIntegrity) {
			t.Errorf("a refused recovery wrote something: %v", err)
		}
	})

	t.Run("UnverifiedAndLost", func(t *testing.T) {
		// A keystore that had its escrow only from some point on.
		f := newFixture(t)
		f.create(t, "old")
		escrow := keystoretest.NewFakeKEK()
		f.m = f.escrowManager(t, f.kek, escrow)
		f.create(t, "pii")
		m := f.escrowManager(t, keystoretest.NewFakeKEK(), escrow)
		_, err := m.Recover(f.ctx, keystore.RecoverOptions{})
		if !errors.Is(err, keystore.ErrRecoverRefused) || !strings.Contains(err.Error(), "no escrow MAC") || !strings.Contains(err.Error(), "old v1 has no escrow copy") {
			t.Fatalf("Recover = %v; want refusals for the unverified record and the lost version", err)
		}
		res, err := m.Recover(f.ctx, keystore.RecoverOptions{TrustUnverified: true, AllowLoss: true})
		if err != nil || !slices.Contains(res.Lost, "old v1") || len(res.Unverified) == 0 {
			t.Fatalf("Recover allowing both = %+v, %v", res, err)
		}
		if _, err := m.Unwrap(f.ctx, "pii", 1); err != nil {
			t.Errorf("pii v1 after recovery: %v", err)
		}
		if _, err := m.Unwrap(f.ctx, "old", 1); err == nil {
			t.Error("old v1, which had no escrow copy, opens after recovery")
		}
	})
}

func mustList(t *testing.T, f *fixture, m *keystore.Manager) []*keystore.Key {
	t.Helper()
	ks, err := m.List(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestEscrowKEKs(t *testing.T) {
	f := newFixture(t)
	escrow := keystoretest.NewFakeKEK()
	f.m = f.escrowManager(t, f.kek, escrow)
	f.create(t, "pii")
	if err := f.m.RetireEscrowKEK(f.ctx, 1); !errors.Is(err, keystore.ErrKEKInUse) {
		t.Fatalf("retire the current escrow KEK: %v", err)
	}
	if v, err := f.m.RotateEscrowKEK(f.ctx); err != nil || v != 2 {
		t.Fatalf("RotateEscrowKEK = %d, %v", v, err)
	}
	if err := f.m.RetireEscrowKEK(f.ctx, 1); !errors.Is(err, keystore.ErrKEKInUse) {
		t.Fatalf("retire an escrow KEK still in use: %v", err)
	}
	if _, err := f.m.Rewrap(f.ctx, keystore.RewrapOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := f.m.EscrowKEKs(f.ctx)
	if err != nil || len(st) != 2 || st[0].DEKs != 0 || !st[0].Retirable || st[1].DEKs != 1 {
		t.Fatalf("EscrowKEKs = %+v, %v", st, err)
	}
	if err := f.m.RetireEscrowKEK(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The primary's KEKs are not the escrow's.
	if st, _ := f.m.KEKs(f.ctx); len(st) != 1 || st[0].DEKs != 1 {
		t.Errorf("primary KEKs = %+v", st)
	}
}
