package keystore_test

// Issue 12, finding 3: whoever can write the bbolt file or etcd flipped a
// compromised version back to active primary, and replaying an old
// wrapped key undid a destroy. Each test here is that attack; each is
// now refused, logged, counted and audited, and the key is not used.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// rawRecords reads the bbolt file's key bucket, as an attacker with the
// file would.
func rawRecord(t *testing.T, path, name string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []byte
	db.View(func(tx *bolt.Tx) error {
		out = bytes.Clone(tx.Bucket([]byte("sidecrypt-keys")).Get([]byte(name)))
		return nil
	})
	return out
}

// writeRaw puts b as key name's record in the bbolt file, bypassing
// sidecrypt entirely.
func writeRaw(t *testing.T, path, bucket, name string, b []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		if b == nil {
			return tx.Bucket([]byte(bucket)).Delete([]byte(name))
		}
		return tx.Bucket([]byte(bucket)).Put([]byte(name), b)
	}); err != nil {
		t.Fatal(err)
	}
}

// editRaw decodes a raw bbolt record, lets fn change it and writes it
// back, with no MAC to redo (the attacker has none).
func editRaw(t *testing.T, path, name string, fn func(rec map[string]any, key map[string]any)) {
	t.Helper()
	var rec map[string]any
	if err := json.Unmarshal(rawRecord(t, path, name), &rec); err != nil {
		t.Fatal(err)
	}
	fn(rec, rec["key"].(map[string]any))
	b, _ := json.Marshal(rec)
	writeRaw(t, path, "sidecrypt-keys", name, b)
}

func version(key map[string]any, i int) map[string]any {
	return key["versions"].([]any)[i].(map[string]any)
}

// integrityFixture has pii v1 compromised, v2 active primary; failures
// are counted through the hook.
func integrityFixture(t *testing.T) (*fixture, *atomic.Int64) {
	t.Helper()
	f := newFixture(t)
	var fails atomic.Int64
	f.logs = &testenv.SyncBuffer{}
	m, err := keystore.NewManager(keystore.Config{Store: f.store, KEK: f.kek, Audit: f.rec, Now: f.clock.Now,
		Logger: slog.New(slog.NewTextHandler(f.logs, nil)), OnIntegrityFailure: func(string) { fails.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	f.create(t, "pii")
	f.create(t, "contact")
	if _, err := f.m.Rotate(f.ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Revoke(f.ctx, "pii", 1, keystore.StateCompromised, "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	return f, &fails
}

// mustRefuse checks that every way of using name fails with
// ErrIntegrity, that the failure was audited and counted.
func mustRefuse(t *testing.T, f *fixture, fails *atomic.Int64, name string) {
	t.Helper()
	before := fails.Load()
	if _, err := f.m.Primary(f.ctx, name); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("Primary(%s) = %v; want ErrIntegrity", name, err)
	}
	for _, v := range []uint32{1, 2} {
		if _, err := f.m.Unwrap(f.ctx, name, v); !errors.Is(err, keystore.ErrIntegrity) {
			t.Fatalf("Unwrap(%s v%d) = %v; want ErrIntegrity", name, v, err)
		}
	}
	if _, err := f.m.Get(f.ctx, name); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("Get(%s) = %v; want ErrIntegrity", name, err)
	}
	keys, err := f.m.List(f.ctx)
	if !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("List: %v; want ErrIntegrity", err)
	}
	for _, k := range keys {
		if k.Name == name {
			t.Fatalf("List returned the refused key %s", name)
		}
	}
	if fails.Load() <= before {
		t.Fatal("integrity failures were not counted")
	}
	if f.m.IntegrityFailures() == 0 {
		t.Fatal("IntegrityFailures() is 0")
	}
	e := f.lastEvent(t, "key.integrity")
	if e.Outcome != "denied" || e.Key != name {
		t.Fatalf("integrity failure audited as %+v", e)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "key="+name) {
		t.Fatalf("integrity failure not logged at ERROR:\n%s", logs)
	}
	// The proxy's path: a key cache refuses to seal (503) with it.
	c := keycache.New(f.m, keycache.Options{ZeroGrace: -1})
	defer c.Close()
	if _, err := c.SealKey(f.ctx, name); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("key cache SealKey(%s) = %v; want ErrIntegrity", name, err)
	}
}

func TestIntegrityFlipCompromisedBackToPrimary(t *testing.T) {
	f, fails := integrityFixture(t)
	editRaw(t, f.path, "pii", func(_, k map[string]any) {
		version(k, 0)["state"] = "active"
		version(k, 1)["state"] = "deactivated"
		k["primary"] = 1
	})
	mustRefuse(t, f, fails, "pii")
	// The other key is untouched and works.
	if _, err := f.m.Primary(f.ctx, "contact"); err != nil {
		t.Fatalf("an untouched key is refused too: %v", err)
	}
}

func TestIntegritySwapWrappedKeys(t *testing.T) {
	t.Run("between versions", func(t *testing.T) {
		f, fails := integrityFixture(t)
		editRaw(t, f.path, "pii", func(_, k map[string]any) {
			a, b := version(k, 0), version(k, 1)
			a["wrapped"], b["wrapped"] = b["wrapped"], a["wrapped"]
			a["fingerprint"], b["fingerprint"] = b["fingerprint"], a["fingerprint"]
		})
		mustRefuse(t, f, fails, "pii")
	})
	t.Run("between keys", func(t *testing.T) {
		f, fails := integrityFixture(t)
		var contact map[string]any
		json.Unmarshal(rawRecord(t, f.path, "contact"), &contact)
		cv := version(contact["key"].(map[string]any), 0)
		editRaw(t, f.path, "pii", func(_, k map[string]any) {
			version(k, 1)["wrapped"] = cv["wrapped"]
			version(k, 1)["fingerprint"] = cv["fingerprint"]
		})
		mustRefuse(t, f, fails, "pii")
	})
	t.Run("whole record under another name", func(t *testing.T) {
		f, fails := integrityFixture(t)
		var contact map[string]any
		json.Unmarshal(rawRecord(t, f.path, "contact"), &contact)
		contact["key"].(map[string]any)["name"] = "pii"
		b, _ := json.Marshal(contact)
		writeRaw(t, f.path, "sidecrypt-keys", "pii", b)
		mustRefuse(t, f, fails, "pii")
	})
}

// The replay: an authentic old record (with its own valid MAC), put back
// to undo a destroy.
func TestIntegrityReplayUndoesNoDestroy(t *testing.T) {
	f, fails := integrityFixture(t)
	old := rawRecord(t, f.path, "pii") // v1 compromised, still with material
	if _, err := f.m.Destroy(f.ctx, "pii", 1, "gdpr"); err != nil {
		t.Fatal(err)
	}
	t.Run("as it was", func(t *testing.T) {
		// bbolt would count the write: the revision moves on.
		var rec map[string]any
		json.Unmarshal(old, &rec)
		var cur map[string]any
		json.Unmarshal(rawRecord(t, f.path, "pii"), &cur)
		rec["revision"] = cur["revision"].(float64) + 1
		b, _ := json.Marshal(rec)
		writeRaw(t, f.path, "sidecrypt-keys", "pii", b)
		if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrIntegrity) {
			t.Fatalf("Unwrap of the replayed destroyed version: %v", err)
		}
	})
	t.Run("with the store's counters adjusted", func(t *testing.T) {
		// The attacker makes the record's write count match its seal,
		// as the file allows: then the head record's generation and its
		// list of destroyed versions still say no.
		var rec map[string]any
		json.Unmarshal(old, &rec)
		gen := rec["key"].(map[string]any)["seal"].(map[string]any)["generation"]
		rec["revision"] = gen
		b, _ := json.Marshal(rec)
		writeRaw(t, f.path, "sidecrypt-keys", "pii", b)
		m2 := f.manager(t, f.store, f.kek) // a fresh process: no memory of later generations
		if _, err := m2.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrIntegrity) || !strings.Contains(err.Error(), "head record") {
			t.Fatalf("Unwrap of the replayed destroyed version: %v", err)
		}
	})
	t.Run("record deleted", func(t *testing.T) {
		writeRaw(t, f.path, "sidecrypt-keys", "pii", nil)
		if _, err := f.m.Get(f.ctx, "pii"); !errors.Is(err, keystore.ErrIntegrity) {
			t.Fatalf("Get of a deleted key: %v; want ErrIntegrity, not ErrNotFound", err)
		}
		if _, err := f.m.Create(f.ctx, "pii", 0, false); !errors.Is(err, keystore.ErrIntegrity) {
			t.Fatalf("Create over a deleted key: %v", err)
		}
	})
	if fails.Load() == 0 {
		t.Fatal("no failure counted")
	}
}

// A rollback of the whole file (head and keys together) to an older copy
// is the one thing the file cannot show. A running process still refuses
// it (it has seen later generations); the audit log holds the later
// generations for `keys verify` to compare with (docs/KEYS.md).
func TestIntegrityWholeStoreRollback(t *testing.T) {
	f, _ := integrityFixture(t)
	snapshot := copyFile(t, f.path)
	if _, err := f.m.Destroy(f.ctx, "pii", 1, "gdpr"); err != nil {
		t.Fatal(err)
	}
	restoreFile(t, f.path, snapshot)
	if _, err := f.m.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrIntegrity) || !strings.Contains(err.Error(), "already seen") {
		t.Fatalf("a running process after a rollback: %v", err)
	}
	// A fresh process cannot tell from the file alone.
	m2 := f.manager(t, f.store, f.kek)
	if _, err := m2.Unwrap(f.ctx, "pii", 1); !errors.Is(err, keystore.ErrCompromised) {
		t.Fatalf("a fresh process after a rollback: %v (the old state, compromised, as documented)", err)
	}
	// The audit log recorded the destroy's generation.
	var destroyedGen string
	for _, e := range f.rec.Find("key.destroy") {
		if e.Outcome == "ok" {
			destroyedGen = e.Details["generation"]
		}
	}
	k, err := m2.Get(f.ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	if g, err := strconv.ParseUint(destroyedGen, 10, 64); err != nil || g <= k.Seal.Generation {
		t.Fatalf("the audit log's generation %q is not ahead of the rolled-back store's %d", destroyedGen, k.Seal.Generation)
	}
}

func copyFile(t *testing.T, path string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var buf bytes.Buffer
	if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func restoreFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// An unsealed record (a keystore from before record MACs) is refused
// until the operator seals it; a record whose seal was stripped after
// the migration is refused even then.
func TestSealRecordsMigration(t *testing.T) {
	f := newFixture(t)
	// A record as an older sidecrypt wrote it: no seal, no head.
	f.create(t, "pii")
	good := f.key(t, "pii")
	legacy := *good
	legacy.Seal = nil
	for i := range legacy.Versions {
		legacy.Versions[i].Counter = 0
	}
	var rec map[string]any
	json.Unmarshal(rawRecord(t, f.path, "pii"), &rec)
	kb, _ := json.Marshal(&legacy)
	var km map[string]any
	json.Unmarshal(kb, &km)
	rec["key"] = km
	b, _ := json.Marshal(rec)
	writeRaw(t, f.path, "sidecrypt-keys", "pii", b)
	writeRaw(t, f.path, "sidecrypt-records", "head", nil)
	writeRaw(t, f.path, "sidecrypt-records", "usage/pii/1", nil)

	m := f.manager(t, f.store, f.kek)
	if _, err := m.Primary(f.ctx, "pii"); !errors.Is(err, keystore.ErrUnsealed) {
		t.Fatalf("unsealed record: %v; want ErrUnsealed", err)
	}
	un, err := m.UnsealedKeys(f.ctx)
	if err != nil || len(un) != 1 || un[0].Name != "pii" {
		t.Fatalf("UnsealedKeys = %v, %v", un, err)
	}
	sealed, err := m.SealRecords(f.ctx)
	if err != nil || len(sealed) != 1 {
		t.Fatalf("SealRecords = %v, %v", sealed, err)
	}
	if v, err := m.Primary(f.ctx, "pii"); err != nil || v != 1 {
		t.Fatalf("after sealing: %d, %v", v, err)
	}
	if e := f.lastEvent(t, "key.seal-records"); e.Outcome != "ok" || e.Key != "pii" {
		t.Fatalf("migration audited as %+v", e)
	}
	if _, err := m.ReserveSeals(f.ctx, "pii", 1, 10); err != nil {
		t.Fatalf("seal counter after the migration: %v", err)
	}

	// Stripping the seal later does not get a record re-sealed.
	editRaw(t, f.path, "pii", func(_, k map[string]any) {
		delete(k, "seal")
		version(k, 0)["state"] = "active"
	})
	if _, err := m.SealRecords(f.ctx); !errors.Is(err, keystore.ErrIntegrity) || !strings.Contains(err.Error(), "sealed before") {
		t.Fatalf("SealRecords of a stripped record: %v", err)
	}
}

// Every field of a key record is in its MAC: a field added to Key or
// Version without being added to the MAC input fails this test.
func TestMACInputCoversEveryField(t *testing.T) {
	if n := reflect.TypeFor[keystore.Key]().NumField(); n != 9 {
		t.Errorf("Key has %d fields; keyMACInput covers 9 (5 stored, the seal, 3 from the store): add the new one to it and to docs/KEYS.md", n)
	}
	if n := reflect.TypeFor[keystore.Version]().NumField(); n != 17 {
		t.Errorf("Version has %d fields; keyMACInput covers 17 (the escrow copy in a trailer): add the new one to it and to docs/KEYS.md", n)
	}
	if n := reflect.TypeFor[keystore.EscrowWrap]().NumField(); n != 4 {
		t.Errorf("EscrowWrap has %d fields; keyMACInput covers 4: add the new one to it and to docs/KEYS.md", n)
	}
	// And every field's change changes the MAC: each edit is refused.
	for _, edit := range []func(k, v map[string]any){
		func(k, v map[string]any) { k["cryptoperiod"] = 1 },
		func(k, v map[string]any) { k["created"] = "2020-01-01T00:00:00Z" },
		func(k, v map[string]any) { v["algorithm"] = "x" },
		func(k, v map[string]any) { v["kek_version"] = 9 },
		func(k, v map[string]any) { v["mechanism"] = "x" },
		func(k, v map[string]any) { v["activated"] = "2020-01-01T00:00:00Z" },
		func(k, v map[string]any) { v["reason"] = "x" },
		func(k, v map[string]any) { v["override_until"] = "2099-01-01T00:00:00Z" },
		func(k, v map[string]any) { v["override_reason"] = "x" },
		func(k, v map[string]any) { v["counter"] = 77 },
		func(k, v map[string]any) { v["created"] = "2026-03-01T12:00:00.000000001Z" },
	} {
		f, fails := integrityFixture(t)
		editRaw(t, f.path, "contact", func(_, k map[string]any) { edit(k, version(k, 0)) })
		if _, err := f.m.Get(f.ctx, "contact"); !errors.Is(err, keystore.ErrIntegrity) || fails.Load() == 0 {
			t.Fatalf("an edit was not refused: %v", err)
		}
	}
}

// Through etcd's API an attacker cannot forge a key's write count or
// creation revision, so any record put back, alone or with the head, or
// deleted and made again, is refused, even by a fresh process.
func TestIntegrityEtcdReplay(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := audit.WithActor(context.Background(), "test")
	kek := keystoretest.NewFakeKEK()
	prefix := "/replay"
	open := func() *keystore.Manager {
		st, err := keystore.OpenEtcd(fmt.Sprintf("etcd://%s%s", e.Hosts(), prefix), keystore.EtcdTLS{}, keystore.EtcdOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		m, err := keystore.NewManager(keystore.Config{Store: st, KEK: kek})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	if _, err := m.Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Hosts()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	get := func(key string) string {
		r, err := cli.Get(ctx, prefix+key)
		if err != nil || len(r.Kvs) == 0 {
			t.Fatalf("get %s: %v", key, err)
		}
		return string(r.Kvs[0].Value)
	}
	oldKey, oldHead := get("/keys/pii"), get("/meta/head")
	if _, err := m.Destroy(ctx, "pii", 1, "shred"); err != nil { // v1 was deactivated by the rotation
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func()
	}{
		{"key record put back", func() { cli.Put(ctx, prefix+"/keys/pii", oldKey) }},
		{"key and head put back", func() {
			cli.Put(ctx, prefix+"/keys/pii", oldKey)
			cli.Put(ctx, prefix+"/meta/head", oldHead)
		}},
		{"deleted and put back", func() {
			cli.Delete(ctx, prefix+"/keys/pii")
			cli.Delete(ctx, prefix+"/meta/head")
			cli.Put(ctx, prefix+"/meta/head", oldHead)
			cli.Put(ctx, prefix+"/keys/pii", oldKey)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.do()
			fresh := open()
			if _, err := fresh.Unwrap(ctx, "pii", 1); !errors.Is(err, keystore.ErrIntegrity) {
				t.Fatalf("Unwrap of the destroyed version after the replay: %v; want ErrIntegrity", err)
			}
		})
	}
}
