package keystore_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sidecrypt/sidecrypt/keystore"
)

func TestNotes(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.GetNote(f.ctx, "sweep/clinic"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("GetNote of a missing note: %v; want ErrNotFound", err)
	}
	n, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "sweep/clinic", Value: []byte(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "sweep/clinic", Value: []byte(`{"a":9}`)}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("a second create: %v; want ErrExists", err)
	}
	n2, err := f.m.PutNote(f.ctx, &keystore.Note{ID: n.ID, Value: []byte(`{"a":2}`), Revision: n.Revision})
	if err != nil {
		t.Fatal(err)
	}
	// The first revision is stale now: compare-and-swap refuses it.
	if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: n.ID, Value: []byte(`{"a":3}`), Revision: n.Revision}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("a stale revision: %v; want ErrConflict", err)
	}
	got, err := f.m.GetNote(f.ctx, "sweep/clinic")
	if err != nil || string(got.Value) != `{"a":2}` || got.Revision != n2.Revision {
		t.Fatalf("GetNote = %+v, %v", got, err)
	}
	if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "sweep/other", Value: []byte(`x`)}); err != nil {
		t.Fatal(err)
	}
	all, err := f.m.ListNotes(f.ctx, "sweep/")
	if err != nil || len(all) != 2 || all[0].ID != "sweep/clinic" || all[1].ID != "sweep/other" {
		t.Fatalf("ListNotes = %+v, %v", all, err)
	}
	// Another Manager on the same store (another process) reads it.
	m2 := f.manager(t, f.store, f.kek)
	if got, err := m2.GetNote(f.ctx, "sweep/clinic"); err != nil || string(got.Value) != `{"a":2}` {
		t.Fatalf("second manager: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "Sweep/X", "a b"} {
		if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: bad, Value: []byte("x")}); err == nil {
			t.Errorf("PutNote(%q) accepted", bad)
		}
	}
}

// A note edited in the store (a sweep count set to zero, so that a
// version looks unused before a destroy) is refused, not believed.
func TestNoteEditedOutsideIsRefused(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "sweep/clinic", Value: []byte(`{"remaining":12}`)}); err != nil {
		t.Fatal(err)
	}
	meta, err := f.store.GetMeta(f.ctx, "note/sweep/clinic")
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(meta.Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec["value"] = []byte(`{"remaining":0}`)
	b, _ := json.Marshal(rec)
	if _, err := f.store.PutMeta(f.ctx, &keystore.Meta{ID: meta.ID, Value: b, Revision: meta.Revision}); err != nil {
		t.Fatal(err)
	}
	// A fresh process, which has not seen the note before, checks the MAC.
	m2 := f.manager(t, f.store, f.kek)
	if _, err := m2.GetNote(f.ctx, "sweep/clinic"); !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("edited note: %v; want ErrIntegrity", err)
	}
	if notes, err := m2.ListNotes(f.ctx, "sweep/"); len(notes) != 0 || !errors.Is(err, keystore.ErrIntegrity) {
		t.Fatalf("ListNotes of an edited note: %+v, %v", notes, err)
	}
}

// A writer that dies between the placeholder and the content leaves a
// placeholder, which reads as no note and which the next create reuses.
func TestNotePlaceholderIsReused(t *testing.T) {
	f := newFixture(t)
	crash := &crashingStore{Store: f.store}
	m := f.manager(t, crash, f.kek)
	if _, err := m.PutNote(f.ctx, &keystore.Note{ID: "n", Value: []byte("v1")}); !errors.Is(err, errCrash) {
		t.Fatalf("PutNote through a store that fails the second write: %v", err)
	}
	if _, err := f.m.GetNote(f.ctx, "n"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("a placeholder reads as %v; want ErrNotFound", err)
	}
	n, err := f.m.PutNote(f.ctx, &keystore.Note{ID: "n", Value: []byte("v2")})
	if err != nil {
		t.Fatalf("create over a placeholder: %v", err)
	}
	if got, err := f.manager(t, f.store, f.kek).GetNote(f.ctx, "n"); err != nil || string(got.Value) != "v2" || got.Revision != n.Revision {
		t.Fatalf("GetNote = %+v, %v", got, err)
	}
}

var errCrash = errors.New("crash")

// crashingStore fails every PutMeta that updates a record, as a process
// killed between a note's two writes would leave it.
type crashingStore struct {
	keystore.Store
}

func (c *crashingStore) PutMeta(ctx context.Context, m *keystore.Meta) (*keystore.Meta, error) {
	if m.Revision != 0 {
		return nil, errCrash
	}
	return c.Store.PutMeta(ctx, m)
}
